//! `costd jobs`: start, inspect, list, cancel and watch query jobs. `watch` draws a live line per part
//! (on a terminal) and prints the report at the end; `--output json` streams events as JSON lines.

use super::{
    Connected, Connection, OutputFormat, QueryArgs, output,
    query::{describe_status, query_of},
};
use crate::proto::{self as pb, query_job_service_client::QueryJobServiceClient};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use std::{collections::HashMap, io::Write, time::Duration};

#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Start a job for a query; with --watch, follow it to the end.
    Start {
        #[command(flatten)]
        query: QueryArgs,
        #[arg(long)]
        watch: bool,
    },
    /// Show a job.
    Get {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// List jobs, newest first.
    List {
        /// Only jobs in these states (queued, running, succeeded, failed, cancelled); comma-separated
        /// or repeated.
        #[arg(long = "state", value_delimiter = ',')]
        states: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Cancel a job.
    Cancel {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Follow a job to its end.
    Watch {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the server is and how to print.
#[derive(Debug, clap::Args)]
pub struct Target {
    #[command(flatten)]
    pub connection: Connection,
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
}

pub async fn run_jobs(command: JobsCommand) -> Result<(), String> {
    match command {
        JobsCommand::Start { query, watch } => {
            let target = Target {
                connection: query.connection.clone(),
                output: query.output,
            };
            let mut client = connect(&target).await?;
            let job = client
                .start_query(pb::StartQueryRequest {
                    query: Some(query_of(&query)),
                })
                .await
                .map_err(describe_status)?
                .into_inner()
                .job
                .ok_or("the server sent no job")?;
            if watch {
                follow(&mut client, &job.name, target.output).await
            } else {
                print_job(&job, target.output)
            }
        }
        JobsCommand::Get { name, target } => {
            let job = connect(&target)
                .await?
                .get_job(pb::GetJobRequest { name })
                .await
                .map_err(describe_status)?
                .into_inner()
                .job;
            print_job(&job.ok_or("the server sent no job")?, target.output)
        }
        JobsCommand::Cancel { name, target } => {
            let job = connect(&target)
                .await?
                .cancel_job(pb::CancelJobRequest { name })
                .await
                .map_err(describe_status)?
                .into_inner()
                .job;
            print_job(&job.ok_or("the server sent no job")?, target.output)
        }
        JobsCommand::List { states, target } => {
            let states = states
                .iter()
                .map(|s| state_value(s))
                .collect::<Result<Vec<i32>, String>>()?;
            let mut client = connect(&target).await?;
            let mut token = String::new();
            loop {
                let page = client
                    .list_jobs(pb::ListJobsRequest {
                        states: states.clone(),
                        page_size: 100,
                        page_token: token,
                    })
                    .await
                    .map_err(describe_status)?
                    .into_inner();
                for job in &page.jobs {
                    print_job(job, target.output)?;
                }
                if page.next_page_token.is_empty() {
                    return Ok(());
                }
                token = page.next_page_token;
            }
        }
        JobsCommand::Watch { name, target } => {
            follow(&mut connect(&target).await?, &name, target.output).await
        }
    }
}

async fn connect(target: &Target) -> Result<QueryJobServiceClient<Connected>, String> {
    Ok(QueryJobServiceClient::new(
        target.connection.connect().await?,
    ))
}

fn state_value(text: &str) -> Result<i32, String> {
    let name = format!("JOB_STATE_{}", text.to_uppercase());
    pb::JobState::from_str_name(&name)
        .filter(|s| *s != pb::JobState::Unspecified)
        .map(|s| s as i32)
        .ok_or_else(|| {
            format!("`{text}` is not a job state (queued, running, succeeded, failed, cancelled)")
        })
}

fn name_of<T: Copy>(
    value: i32,
    parse: impl Fn(i32) -> Option<T>,
    name: impl Fn(T) -> &'static str,
    prefix: &str,
) -> String {
    parse(value)
        .map(|v| name(v).trim_start_matches(prefix).to_lowercase())
        .unwrap_or_default()
}

fn state_name(value: i32) -> String {
    name_of(
        value,
        |v| pb::JobState::try_from(v).ok(),
        |s| s.as_str_name(),
        "JOB_STATE_",
    )
}

#[derive(Serialize)]
struct JsonPart {
    provider_account: String,
    state: String,
    progress_note: String,
    polls: i32,
}

#[derive(Serialize)]
struct JsonJob {
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<String>,
    name: String,
    state: String,
    parts: Vec<JsonPart>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<output::JsonReport>,
}

fn json_job(job: &pb::Job, event: Option<i32>) -> JsonJob {
    JsonJob {
        event: event.map(|kind| {
            name_of(
                kind,
                |v| pb::JobEventKind::try_from(v).ok(),
                |k| k.as_str_name(),
                "JOB_EVENT_KIND_",
            )
        }),
        name: job.name.clone(),
        state: state_name(job.state),
        parts: job
            .parts
            .iter()
            .map(|p| JsonPart {
                provider_account: p.provider_account.clone(),
                state: state_name(p.state),
                progress_note: p.progress_note.clone(),
                polls: p.polls,
            })
            .collect(),
        error: job.error.as_ref().map(|e| e.message.clone()),
        report: job.report.as_ref().map(output::JsonReport::from),
    }
}

fn print_job(job: &pb::Job, format: OutputFormat) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let written = match format {
        OutputFormat::Json => serde_json::to_writer(&mut out, &json_job(job, None))
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        OutputFormat::Table | OutputFormat::Csv => {
            let mut text = format!("{}  {}\n", job.name, state_name(job.state));
            for part in &job.parts {
                text.push_str(&format!(
                    "  {:<24} {:<10} {}\n",
                    part.provider_account,
                    state_name(part.state),
                    part.progress_note
                ));
            }
            write!(out, "{text}").and_then(|()| match &job.report {
                Some(report) => output::print_report(&mut out, report, format),
                None => Ok(()),
            })
        }
    };
    written.map_err(|e| format!("cannot write the output: {e}"))
}

/// Follows a job to its final event: JSON lines, or a live line per part and the report at the end.
async fn follow(
    client: &mut QueryJobServiceClient<Connected>,
    name: &str,
    format: OutputFormat,
) -> Result<(), String> {
    let mut events = client
        .watch_job(pb::WatchJobRequest {
            name: name.to_string(),
        })
        .await
        .map_err(describe_status)?
        .into_inner();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut lines: HashMap<String, ProgressBar> = HashMap::new();
    let mut last: Option<pb::Job> = None;
    while let Some(event) = events.message().await.map_err(describe_status)? {
        let Some(job) = event.job else { continue };
        if format == OutputFormat::Json {
            let line = serde_json::to_string(&json_job(&job, Some(event.kind)))
                .map_err(|e| e.to_string())?;
            println!("{line}");
        } else {
            for part in &job.parts {
                let bar = lines
                    .entry(part.provider_account.clone())
                    .or_insert_with(|| {
                        let bar = bars.add(
                            ProgressBar::new_spinner()
                                .with_style(style.clone())
                                .with_prefix(part.provider_account.clone()),
                        );
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar
                    });
                bar.set_message(format!("{} {}", state_name(part.state), part.progress_note));
            }
        }
        last = Some(job);
    }
    for bar in lines.values() {
        bar.finish();
    }
    let job = last.ok_or("the job ended without an event")?;
    if format != OutputFormat::Json {
        print_job(&job, format)?;
    }
    if job.state == pb::JobState::Succeeded as i32 {
        Ok(())
    } else {
        Err(format!("{} ended {}", job.name, state_name(job.state)))
    }
}
