//! Every export checked by the FinOps Foundation's focus-validator (installed by
//! scripts/install-tools into .tools/focus-venv): each provider alone and all together, both
//! formats, failing exactly the rules no such file can pass and nothing else.

use super::*;

/// The test cases focus-validator reported as failed or errored, as `rule: message`, and how many
/// it ran.
struct Verdict {
    tests: usize,
    failed: Vec<String>,
}

impl Verdict {
    fn failed_rules(&self) -> Vec<&str> {
        let mut rules: Vec<&str> = self
            .failed
            .iter()
            .map(|line| line.split(':').next().unwrap_or(line))
            .collect();
        rules.sort_unstable();
        rules
    }
}

/// Runs focus-validator 2.2 (FOCUS 1.2 rules, offline) on `file` and reads its JUnit XML. The
/// validator opens its rule files relative to the working directory and writes a log there, so it
/// runs in a directory of its own holding a link to its package.
fn validate(file: &[u8], format: pb::ExportFormat) -> Verdict {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/focus-venv");
    let package = std::fs::read_dir(venv.join("lib"))
        .expect("scripts/install-tools made .tools/focus-venv")
        .map(|e| {
            e.expect("an entry")
                .path()
                .join("site-packages/focus_validator")
        })
        .find(|p| p.is_dir())
        .expect("focus_validator is installed");
    let dir = tempfile::tempdir().expect("a temp dir");
    std::os::unix::fs::symlink(&package, dir.path().join("focus_validator"))
        .expect("links the package");
    let extension = if format == pb::ExportFormat::FocusCsv {
        "csv"
    } else {
        "parquet"
    };
    let data = dir.path().join(format!("export.{extension}"));
    std::fs::write(&data, file).expect("writes the file");
    let report = dir.path().join("report.xml");
    let output = Command::new(venv.join("bin/python"))
        .current_dir(dir.path())
        .args(["-m", "focus_validator.main", "--validate-version", "1.2"])
        .args(["--block-download", "--output-type", "unittest"])
        .arg("--data-file")
        .arg(&data)
        .arg("--output-destination")
        .arg(&report)
        .output()
        .expect("the validator runs");
    let xml = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "the validator wrote no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut tests = 0;
    let mut failures = Vec::new();
    for case in xml.split("<testcase ").skip(1) {
        tests += 1;
        let body = case.split("</testcase>").next().unwrap_or(case);
        let attribute = |name: &str| {
            body.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        if body.contains("<failure") || body.contains("<error") {
            let name = attribute("name");
            let rule = name.split(" :: ").next().unwrap_or(&name).to_string();
            failures.push((rule, attribute("message")));
        }
    }
    Verdict {
        tests,
        failed: failures
            .iter()
            .map(|(rule, message)| format!("{rule}: {message}"))
            .collect(),
    }
}

/// The test cases no file can pass whole in focus-validator 2.2.1, given its InvoiceId column.
///
/// FOCUS 1.2 wants InvoiceId null on a charge without an invoice and not null on one with an
/// invoice (or a provisional one). The validator's model (rules/model-1.2.0.1.json) states that as
/// the OR InvoiceId-C-003-C of InvoiceId-C-004-C "MUST be null" and InvoiceId-C-005-C "MUST NOT
/// be null", both without a condition (nothing in a row says whether its charge has an invoice),
/// and runs each alternative over every row as a test case of its own: `InvoiceId IS NOT NULL`
/// must match no row, and `InvoiceId IS NULL` must match no row. No file with rows passes both:
/// - rows all with invoices (Atlas) fail C-004-C, the alternative not taken;
/// - rows all without (Elastic, the team API) fail C-005-C, the alternative not taken;
/// - rows of both (a file of several invoice issuers, each row as the spec wants) fail both
///   alternatives, so the OR and the column's composite InvoiceId-C-000-O fail too.
///
/// Leaving the column out is no way round it: its presence rule (CostAndUsage-D-033-O) then
/// fails and the column's rules error. What is asserted is exactly this consequence of the
/// file's own InvoiceId values, and that every other rule passes.
fn unpassable_invoice_id_cases(invoice_ids: &[Option<String>]) -> Vec<&'static str> {
    let with = invoice_ids.iter().filter(|id| id.is_some()).count();
    let without = invoice_ids.len() - with;
    match (with, without) {
        (_, 0) => vec!["InvoiceId-C-004-C"],
        (0, _) => vec!["InvoiceId-C-005-C"],
        _ => vec![
            "InvoiceId-C-000-O",
            "InvoiceId-C-003-C",
            "InvoiceId-C-004-C",
            "InvoiceId-C-005-C",
        ],
    }
}

/// Exports `providers`' records in both formats and checks each file: its BilledCost sums to
/// GetCosts' total, its rows are ListCostRecords' and the header's count, and the validator passes
/// every rule but those no such file can pass ([`unpassable_invoice_id_cases`],
/// [`unreadable_as_text_in_csv`]), which must fail exactly as predicted from the file's values.
async fn exports_pass_the_validator(providers: &[pb::ProviderKind]) {
    let app = every_provider().await;
    let mut query = query(FROM, TO, &[], pb::Granularity::Monthly);
    query.filter = Some(pb::CostFilter {
        providers: providers.iter().map(|p| *p as i32).collect(),
        ..Default::default()
    });
    let report = within(app.get_costs(query.clone())).await.expect("answers");
    let totals = report.totals.expect("totals");
    assert!(totals.complete, "{:?}", report.provider_results);
    let total = nanos(totals.billed_cost.as_ref());
    let listed = listed_records(&app, &query).await;
    assert!(listed > 0);

    let mut verdicts = Vec::new();
    for format in [pb::ExportFormat::FocusCsv, pb::ExportFormat::FocusParquet] {
        let exported = export(&app, query.clone(), format, 7)
            .await
            .expect("exports");
        let header = &exported.header;
        assert_eq!(header.focus_version, "1.2");
        assert_eq!(header.row_count, Some(listed as i64), "{format:?}");
        assert!(
            header
                .provider_results
                .iter()
                .all(|r| r.state == pb::ResultState::Ok as i32),
            "{:?}",
            header.provider_results
        );
        let (rows, _) = rows(&exported);
        assert_eq!(rows.len(), listed, "{format:?}: ListCostRecords' records");
        assert_eq!(exported.progress.last(), Some(&(listed as i64)));
        assert!(
            exported.progress.windows(2).all(|w| w[0] <= w[1]),
            "progress only grows"
        );
        let summed: i128 = rows.iter().map(|row| row.nanos).sum();
        assert_eq!(summed, total, "{format:?}: GetCosts' total to the nano");

        let verdict = validate(&exported.file, format);
        assert!(
            verdict.tests > 400,
            "the validator ran its rules: {}",
            verdict.tests
        );
        let invoice_ids: Vec<Option<String>> =
            rows.iter().map(|row| row.invoice_id.clone()).collect();
        let mut expected = unpassable_invoice_id_cases(&invoice_ids);
        if format == pb::ExportFormat::FocusCsv {
            let ids: Vec<&str> = rows.iter().map(|r| r.billing_account_id.as_str()).collect();
            expected.extend(unreadable_as_text_in_csv(&ids));
        }
        expected.sort_unstable();
        verdicts.push((format, verdict, expected));
    }
    for (format, verdict, expected) in &verdicts {
        eprintln!(
            "{format:?}: failed {:?}, predicted {expected:?}",
            verdict.failed
        );
    }
    for (format, verdict, expected) in &verdicts {
        assert_eq!(
            verdict.failed_rules(),
            *expected,
            "{format:?}: {:?}",
            verdict.failed
        );
    }
}

/// The BillingAccountId cases a CSV file of these ids cannot pass. CSV has no types, and the
/// validator reads it with polars, which infers a column of digits as integers (quoted or not), so
/// BillingAccountId's String type check (C-002-M, and its composite C-000-M) fails on a file whose
/// ids are all numbers, as Elastic organization ids are. The id is not rewritten to make it read
/// as text: it is the upstream's, and a warehouse joins on it. The Parquet file, typed, passes.
fn unreadable_as_text_in_csv(billing_account_ids: &[&str]) -> Vec<&'static str> {
    let all_digits = billing_account_ids
        .iter()
        .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    if all_digits && !billing_account_ids.is_empty() {
        vec!["BillingAccountId-C-000-M", "BillingAccountId-C-002-M"]
    } else {
        Vec::new()
    }
}

#[tokio::test]
async fn a_team_billing_export_passes_the_focus_validator_in_both_formats() {
    exports_pass_the_validator(&[pb::ProviderKind::TeamBilling]).await;
}

#[tokio::test]
async fn an_elastic_export_passes_the_focus_validator_in_both_formats() {
    exports_pass_the_validator(&[pb::ProviderKind::Elastic]).await;
}

#[tokio::test]
async fn an_atlas_export_passes_the_focus_validator_in_both_formats() {
    exports_pass_the_validator(&[pb::ProviderKind::Atlas]).await;
}

#[tokio::test]
async fn an_export_of_every_provider_together_passes_the_focus_validator_in_both_formats() {
    exports_pass_the_validator(&[]).await;
}
