//! GetCosts on a replica while another replica's job runs the same query: the asynchronous accounts
//! join that job (PENDING, naming it, nothing asked of Atlas here), the synchronous ones are answered
//! here, exactly. Real redis-server, two real servers on one sandbox whose counters are the truth.

use crate::{
    helpers::*,
    jobs::{org, start},
    redis_kit::RedisServer,
    replica_process::poll_after,
    replicas::{replica, sandbox},
};
use costd::proto as pb;

#[tokio::test]
async fn get_costs_beside_another_replicas_job_answers_team_here_and_atlas_pending_naming_the_job()
{
    // Arrange: A's job for Atlas and team polls Atlas for as long as the test runs.
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let accounts = &["atlas-kestrel", "team-acme"];
    let a = replica(&sandbox, &redis.url(), accounts).await;
    let b = replica(&sandbox, &redis.url(), accounts).await;
    let kestrel = org(&a, "Kestrel");
    sandbox.atlas().set_org_processing_polls(kestrel, 10_000);
    let asked = query("2025-04-01", "2025-05-01", &[], pb::Granularity::None);
    let job = start(&a, asked.clone()).await;
    within(poll_after(&sandbox, kestrel, 0)).await;

    // Act
    let answer = b.get_costs(asked).await.expect("answered");

    // Assert
    let team = result_of(&answer, "team-acme");
    let expected = b.expected_nanos("team_acme", at("2025-04-01"), at("2025-05-01"));
    assert_eq!(team.state, pb::ResultState::Ok as i32, "{team:?}");
    assert_eq!(nanos(team.billed_cost.as_ref()), expected, "exact, from B");
    // From B's engine: its upstream, or the settled chunk A shared through redis.
    assert_eq!(team.job, "", "not waiting for A's job");
    assert_eq!(
        nanos(answer.totals.as_ref().and_then(|t| t.billed_cost.as_ref())),
        expected,
        "the totals cover what is answered"
    );
    let atlas = result_of(&answer, "atlas-kestrel");
    assert_eq!(atlas.state, pb::ResultState::Pending as i32, "{atlas:?}");
    assert_eq!(atlas.job, job.name, "Atlas waits in A's job");
    assert_eq!(atlas.upstream_requests, 0);
    assert_eq!(answer.job, job.name);
    assert_eq!(
        sandbox.atlas().counters(kestrel).queries_created,
        1,
        "A's one create"
    );
    let b_polls: f64 = crate::metrics::scrape(&b)
        .await
        .iter()
        .filter(|(name, _)| name.starts_with("costd_atlas_polls_total"))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(b_polls, 0.0, "B polled nothing");
}
