//! What caller identity costs a cached GetCosts: the same query against two servers on loopback in
//! this process, over the same sandbox (the three team accounts), one without `[auth]` and one with
//! `[auth.jwt]` (a JWK Set file, an ES256 key made here) and a grant covering every account. Each
//! call to the second carries the same bearer token, so after the first call the guard pays the
//! token's SHA-256 and a cache lookup, not a signature check (`auth::jwt` remembers verified tokens).
//!
//! Figures are ratios measured side by side: each round drives the JWT server, the open one, and the
//! open one sent the same header as a control (the order rotates every round), for `RUN_FOR` each, at
//! 1 and at 100 calls in flight; the median of `ROUNDS` rounds. Goals (issue #15): a throughput
//! ratio of at least 0.9, a p99 ratio of at most 1.2. The CPU time per call (this process's threads,
//! client and servers) is printed beside them, as a ratio less moved by other work on the machine.
//! The control's ratio is the guard's own cost; the rest is the token on the wire (h2 never indexes
//! `authorization` in HPACK, so every call encodes and decodes the whole token). The verifier's own
//! cost is measured in process too: a remembered token, one by one for the tail, and a fresh one
//! (signature checked).

use costd::{
    auth::JwtVerifier,
    config::{AuthConfig, FileRef, GrantConfig, JobVisibility, JwtConfig},
    proto::{self as pb, cost_service_client::CostServiceClient},
    sandbox::Sandbox,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use std::time::{Duration, Instant};
use tonic::{metadata::MetadataValue, transport::Channel};

#[path = "support/mod.rs"]
mod support;

use support::{cached_months, cpu_ns, drive, median, serve, team_settings};

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Many short rounds rather than a few long ones: on a shared machine a burst of other work then
/// lands in one round's ratio, which the median discards.
const ROUNDS: usize = 11;
const RUN_FOR: Duration = Duration::from_millis(600);
const ISSUER: &str = "https://issuer.bench";
const AUDIENCE: &str = "costd";
const KID: &str = "bench-key";
/// Tokens signed for the in-process measurement of a fresh verification.
const FRESH_TOKENS: usize = 2_000;

/// An ES256 key: the token signer and the JWK Set that trusts it.
struct Signer {
    encoding: EncodingKey,
    jwks: serde_json::Value,
}

impl Signer {
    fn new() -> Self {
        use base64::Engine as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a key");
        let raw = key.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Signer {
            encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("pkcs8"),
            jwks: serde_json::json!({ "keys": [{
                "kty": "EC", "crv": "P-256", "kid": KID, "use": "sig", "alg": "ES256",
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
            }]}),
        }
    }

    fn token(&self, subject: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 3600,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(KID.to_string());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("signed")
    }
}

fn jwt_config(jwks: &std::path::Path) -> JwtConfig {
    JwtConfig {
        jwks: Some(FileRef {
            file: jwks.to_path_buf(),
        }),
        jwks_url: None,
        issuer: ISSUER.to_string(),
        audience: AUDIENCE.to_string(),
        algorithms: ["RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
        leeway_seconds: 30,
        principal_claim: "sub".to_string(),
        jwks_refresh_seconds: 300,
    }
}

fn cached_query() -> pb::GetCostsRequest {
    cached_months("2026-01-01", "2026-02-01")
}

/// One cached GetCosts, with `authorization` when given; the answer's row count.
async fn get_costs(
    channel: Channel,
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
) -> usize {
    let mut request = tonic::Request::new(cached_query());
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value);
    }
    let answer = CostServiceClient::new(channel)
        .get_costs(request)
        .await
        .expect("answers")
        .into_inner();
    answer.report.map_or(0, |report| report.rows.len())
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let sandbox = Sandbox::start(Default::default()).expect("sandbox");
    let settings = team_settings(&sandbox);
    let files = tempfile::tempdir().expect("a temporary directory");
    let jwks = files.path().join("jwks.json");
    let signer = Signer::new();
    std::fs::write(&jwks, signer.jwks.to_string()).expect("written");

    let open = serve(settings.clone()).await;
    let mut with_auth = settings;
    with_auth.auth = Some(AuthConfig {
        jwt: Some(jwt_config(&jwks)),
        grants: vec![GrantConfig {
            principal: "svc-*".to_string(),
            accounts: vec!["*".to_string()],
            jobs: JobVisibility::Own,
        }],
    });
    let guarded = serve(with_auth).await;
    let bearer: MetadataValue<_> = format!("Bearer {}", signer.token("svc-bench"))
        .parse()
        .expect("ascii");

    // Warm both caches; the same grant-covered answer either way.
    let rows_open = get_costs(open.clone(), None).await;
    let rows_guarded = get_costs(guarded.clone(), Some(bearer.clone())).await;
    assert_eq!(rows_open, rows_guarded, "the grant covers every account");
    println!("cached GetCosts answer: {rows_open} rows");

    for in_flight in [1, 100] {
        // The control: the open server sent the same header, which it ignores. Against it, the JWT
        // side's ratio is what costd's guard costs; against the open side without the header, what a
        // caller pays in all, the token's bytes on the wire included.
        let sides = [
            (guarded.clone(), Some(bearer.clone())),
            (open.clone(), None),
            (open.clone(), Some(bearer.clone())),
        ];
        let mut runs: [Vec<Run>; 3] = Default::default();
        for round in 0..ROUNDS {
            for turn in 0..sides.len() {
                // Each side goes first, second and third in turn.
                let side = (round + turn) % sides.len();
                let (channel, authorization) = sides[side].clone();
                let call = move || {
                    let (channel, authorization) = (channel.clone(), authorization.clone());
                    async move {
                        get_costs(channel, authorization).await;
                    }
                };
                runs[side].push(measured(in_flight, call).await);
            }
        }
        let [jwt, open_runs, control] = &runs;
        println!(
            "cached GetCosts with a verified JWT vs without auth at {in_flight} in flight: {}",
            ratios(jwt, open_runs)
        );
        println!(
            "  the same, against the open server sent the same header (the guard alone): {}",
            ratios(jwt, control)
        );
    }

    verifier_cost(&signer, &jwks).await;
}

/// Medians over rounds of `a` / `b`, round by round; the goals are issue #15's.
fn ratios(a: &[Run], b: &[Run]) -> String {
    let each = |of: &dyn Fn(&Run, &Run) -> f64| -> Vec<f64> {
        a.iter().zip(b).map(|(a, b)| of(a, b)).collect()
    };
    let throughput = each(&|a, b| a.rate / b.rate);
    let p99 = each(&|a, b| a.p99.as_secs_f64() / b.p99.as_secs_f64().max(1e-6));
    let cpu = each(&|a, b| a.cpu_per_call / b.cpu_per_call);
    format!(
        "throughput ratio {:.3} (goal >= 0.9), p99 ratio {:.3} (goal <= 1.2), CPU per call ratio \
         {:.3}; median calls/s {:.0} vs {:.0}; per round: throughput {}, p99 {}",
        median(throughput.clone()),
        median(p99.clone()),
        median(cpu),
        median(a.iter().map(|r| r.rate).collect()),
        median(b.iter().map(|r| r.rate).collect()),
        rounded(&throughput),
        rounded(&p99),
    )
}

/// One side of a round: calls per second, p99, and this process's CPU time per call (server and
/// client together, both in this process).
struct Run {
    rate: f64,
    p99: Duration,
    cpu_per_call: f64,
}

async fn measured<F, Fut>(in_flight: usize, call: F) -> Run
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let (cpu, began) = (cpu_ns(), Instant::now());
    let (rate, p99) = drive(in_flight, RUN_FOR, call).await;
    let calls = rate * began.elapsed().as_secs_f64();
    Run {
        rate,
        p99,
        cpu_per_call: (cpu_ns() - cpu) / calls.max(1.0),
    }
}

fn rounded(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The verifier alone, in process: a remembered token against a fresh one.
async fn verifier_cost(signer: &Signer, jwks: &std::path::Path) {
    let verifier = JwtVerifier::new(&jwt_config(jwks), reqwest::Client::new())
        .await
        .expect("the JWK Set loads");
    let remembered = signer.token("svc-remembered");
    verifier.verify(&remembered).await.expect("verifies");
    let fresh: Vec<String> = (0..FRESH_TOKENS)
        .map(|n| signer.token(&format!("svc-{n}")))
        .collect();
    let per_call =
        |began: Instant, calls: usize| began.elapsed().as_secs_f64() * 1e6 / calls as f64;

    let (mut remembered_us, mut fresh_us) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let began = Instant::now();
        for _ in 0..FRESH_TOKENS {
            std::hint::black_box(verifier.verify(&remembered).await.expect("verifies"));
        }
        remembered_us.push(per_call(began, FRESH_TOKENS));
        // Each round verifies its own share of the fresh tokens, so none of them is remembered yet.
        let share = &fresh[round * FRESH_TOKENS / ROUNDS..(round + 1) * FRESH_TOKENS / ROUNDS];
        let began = Instant::now();
        for token in share {
            std::hint::black_box(verifier.verify(token).await.expect("verifies"));
        }
        fresh_us.push(per_call(began, share.len()));
    }
    // One by one, for the tail: a remembered token's lookup must not stall now and then.
    let mut each = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..20 * FRESH_TOKENS {
        let began = Instant::now();
        std::hint::black_box(verifier.verify(&remembered).await.expect("verifies"));
        let _ = each.record(began.elapsed().as_nanos() as u64);
    }
    println!(
        "JwtVerifier::verify in process: remembered token {:.2} us, fresh token (ES256 signature) \
         {:.1} us (medians of {ROUNDS}); remembered one by one: p50 {:.2} us, p99 {:.2} us, \
         p99.9 {:.2} us, max {:.1} us",
        median(remembered_us),
        median(fresh_us),
        each.value_at_quantile(0.5) as f64 / 1e3,
        each.value_at_quantile(0.99) as f64 / 1e3,
        each.value_at_quantile(0.999) as f64 / 1e3,
        each.max() as f64 / 1e3,
    );
}
