//! The Helm chart and the image, checked without a cluster: Helm's own lint and rendering (through
//! `scripts/helm_chart.py` and helm-sdkpy) for the default values and every documented values set,
//! Kubernetes' schemas for the rendered objects, costd's own config loader for the rendered
//! ConfigMap; `pod.rs` checks the rendered pod against costd's config and against the Dockerfile.

use crate::auth::kit::Ca;
use costd::{
    auth::TlsAcceptor,
    config::{FileConfig, SecretRef, Settings, TlsConfig, parse_toml},
};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

mod pod;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the helper on a request. Missing tools fail the test: they are installed by the test command.
fn helm_chart(request: Value) -> Value {
    let python = repo().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/install-tools installs the chart tools (scripts/test runs it)",
        python.display()
    );
    let mut child = Command::new(&python)
        .arg(repo().join("scripts/helm_chart.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .expect("request written");
    drop(stdin);
    let output = child.wait_with_output().expect("helper finishes");
    assert!(
        output.status.success(),
        "scripts/helm_chart.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the helper answers JSON")
}

/// The default values, the README's example and every documented values set under helm/costd/ci/.
fn documented_cases() -> Vec<Value> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(repo().join("helm/costd/ci"))
        .expect("helm/costd/ci exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    sets.sort();
    let names: Vec<String> = sets.iter().map(|p| file_name(p)).collect();
    for expected in [
        "minimal-values.yaml",
        "production-values.yaml",
        "redis-replicas-values.yaml",
        "auth-tls-values.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "ci/{expected} is documented: {names:?}"
        );
    }
    // The README's example is a documented set too.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let example = readme
        .split_once("cat > my-values.yaml <<'EOF'\n")
        .and_then(|(_, rest)| rest.split_once("\nEOF\n"))
        .map(|(values, _)| values)
        .expect("the README's install example");
    std::iter::once(json!({"name": "default values"}))
        .chain([json!({"name": "README example", "values_text": example})])
        .chain(
            sets.iter()
                .map(|path| json!({"name": format!("ci/{}", file_name(path)), "values": path})),
        )
        .collect()
}

fn render(cases: Vec<Value>) -> Vec<Value> {
    let answer = helm_chart(json!({"chart": repo().join("helm/costd"), "cases": cases}));
    answer["cases"].as_array().expect("cases").clone()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("a file")
        .to_string_lossy()
        .into_owned()
}

fn objects(case: &Value) -> Vec<&Value> {
    case["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .flat_map(|manifest| manifest["objects"].as_array().expect("objects"))
        .collect()
}

fn only<'a>(case: &'a Value, kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects(case)
        .into_iter()
        .filter(|o| o["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "{}: one {kind}", case["name"]);
    found[0]
}

fn container(case: &Value) -> &Value {
    &only(case, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// Where the container mounts the volume `name`, if it does.
fn mount_path(case: &Value, name: &str) -> Option<String> {
    container(case)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == name)
        .map(|m| m["mountPath"].as_str().expect("path").to_string())
}

/// The config file the chart renders, as costd reads it.
fn rendered_config(case: &Value) -> (String, FileConfig) {
    let text = only(case, "ConfigMap")["data"]["costd.toml"]
        .as_str()
        .expect("costd.toml in the ConfigMap")
        .to_string();
    let config = parse_toml(&text).unwrap_or_else(|e| {
        panic!(
            "{}: costd refuses the rendered config: {e}\n{text}",
            case["name"]
        )
    });
    (text, config)
}

#[test]
fn the_chart_passes_helm_lint_and_kubernetes_schemas_with_its_defaults_and_every_documented_set() {
    let cases = render(documented_cases());

    let mut failures = Vec::new();
    for case in &cases {
        let name = &case["name"];
        for message in case["lint"]["messages"].as_array().expect("messages") {
            failures.push(format!(
                "{name}: helm lint {} in {}",
                message["severity"], message["path"]
            ));
        }
        for error in case["schema_errors"].as_array().expect("schema errors") {
            failures.push(format!(
                "{name}: values.schema.json at {}: {}",
                error["path"], error["message"]
            ));
        }
        if !case["render_error"].is_null() {
            failures.push(format!("{name}: {}", case["render_error"]));
        }
        for error in case["kube_errors"].as_array().expect("kube errors") {
            failures.push(format!(
                "{name}: {} in {} is not a valid Kubernetes {} object at {}: {}",
                error["object"],
                error["template"],
                error["kube_version"],
                error["path"],
                error["message"]
            ));
        }
        // Only the prometheus-operator's custom resource has no schema to check against.
        for unvalidated in case["kube_unvalidated"].as_array().expect("unvalidated") {
            let unvalidated = unvalidated.as_str().expect("a name");
            if !unvalidated.starts_with("ServiceMonitor/") {
                failures.push(format!(
                    "{name}: no Kubernetes schema checked {unvalidated}"
                ));
            }
        }
    }

    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let production = cases
        .iter()
        .find(|c| c["name"] == "ci/production-values.yaml")
        .expect("set");
    for kind in [
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "ServiceMonitor",
        "PodDisruptionBudget",
    ] {
        only(production, kind);
    }
    // The locked-down set: gRPC from the client namespace only, /metrics from monitoring only, and
    // the plaintext health port opened to nobody (the kubelet probes from the node).
    let locked = cases
        .iter()
        .find(|c| c["name"] == "ci/auth-tls-values.yaml")
        .expect("set");
    let ingress = only(locked, "NetworkPolicy")["spec"]["ingress"]
        .as_array()
        .expect("ingress rules")
        .clone();
    let opened: Vec<&Value> = ingress
        .iter()
        .map(|rule| &rule["ports"][0]["port"])
        .collect();
    assert_eq!(opened, [&json!("grpc"), &json!("metrics")], "{ingress:?}");
    assert!(
        ingress
            .iter()
            .all(|rule| rule["ports"].as_array().map(Vec::len) == Some(1)
                && rule["from"].as_array().is_some_and(|from| !from.is_empty())),
        "every opened port names who may reach it: {ingress:?}"
    );
    let (_, locked_config) = rendered_config(locked);
    assert!(locked_config.auth.is_some() && locked_config.server.tls.is_some());
    let replicas = cases
        .iter()
        .find(|c| c["name"] == "ci/redis-replicas-values.yaml")
        .expect("set");
    assert_eq!(only(replicas, "Deployment")["spec"]["replicas"], 3);
    let budget = &only(replicas, "PodDisruptionBudget")["spec"];
    assert_eq!(
        budget["minAvailable"], 2,
        "a drain keeps two replicas serving"
    );
    assert!(budget.get("maxUnavailable").is_none());
}

/// An invalid values set under tests/fixtures/chart-invalid/, which names in its header the key it
/// breaks (`# Refused at: a.b`) and the change that makes it valid (`# Valid with: {"a.b": 1}`).
struct InvalidSet {
    file: PathBuf,
    key: String,
    fix: Value,
}

fn invalid_sets() -> Vec<InvalidSet> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/fixtures/chart-invalid"))
        .expect("fixtures")
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("readable");
            let header = |name: &str| {
                text.lines()
                    .find_map(|line| line.strip_prefix(name))
                    .unwrap_or_else(|| panic!("{} has a `{name}` line", file.display()))
                    .trim()
                    .to_string()
            };
            let key = header("# Refused at:");
            let fix = serde_json::from_str(&header("# Valid with:")).expect("the fix is JSON");
            InvalidSet { file, key, fix }
        })
        .collect()
}

#[test]
fn values_that_break_a_rule_fail_lint_through_the_schema_and_pass_once_that_key_is_fixed() {
    let sets = invalid_sets();
    assert!(sets.len() >= 2, "invalid sets are kept");
    let cases: Vec<Value> = sets
        .iter()
        .flat_map(|set| {
            [
                json!({"name": "as written", "values": set.file}),
                json!({"name": "fixed", "values": set.file, "set": set.fix}),
            ]
        })
        .collect();

    let answer = helm_chart(json!({"chart": repo().join("helm/costd"), "cases": cases}));

    for (set, pair) in sets
        .iter()
        .zip(answer["cases"].as_array().expect("cases").chunks(2))
    {
        let (broken, fixed, file, key) = (&pair[0], &pair[1], file_name(&set.file), &set.key);
        let messages = broken["lint"]["messages"].as_array().expect("messages");
        assert!(
            messages
                .iter()
                .any(|m| m["severity"] == "error" && m["path"] == "values.yaml"),
            "{file}: Helm's lint refuses it through the schema: {messages:?}"
        );
        // Refused for that key and nothing else, and valid once that key is changed.
        let errors = broken["schema_errors"].as_array().expect("schema errors");
        assert!(
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|e| e["path"].as_str().expect("path").starts_with(key.as_str())),
            "{file}: refused for `{key}` only: {errors:?}"
        );
        assert!(
            fixed["lint"]["passed"] == true && fixed["schema_errors"] == json!([]),
            "{file} with `{key}` fixed passes: {} {}",
            fixed["lint"],
            fixed["schema_errors"]
        );
    }
}

#[test]
fn the_checks_catch_a_template_that_is_not_yaml_and_objects_kubernetes_would_refuse() {
    let service = |port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - {port}\n"
        )
    };
    let answer = helm_chart(json!({"chart": repo().join("helm/costd"), "cases": [
        {"name": "not yaml", "extra_templates": {"templates/zz-bad.yaml": "kind: ConfigMap\ndata: [unclosed\n"}},
        {"name": "wrong type", "extra_templates": {"templates/zz-bad.yaml": service("port: grpc")}},
        {"name": "unknown field", "extra_templates": {"templates/zz-bad.yaml": service("port: 1\n      colour: blue")}},
    ]}));

    let cases = answer["cases"].as_array().expect("cases");
    let lint_errors_in = |case: &Value| -> Vec<String> {
        case["lint"]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter(|m| m["severity"] == "error")
            .map(|m| m["path"].as_str().expect("path").to_string())
            .collect()
    };
    assert!(
        lint_errors_in(&cases[0]).contains(&"templates/zz-bad.yaml".to_string()),
        "{}",
        cases[0]["lint"]
    );
    // Helm's lint passes these two (it checks no object against Kubernetes' schema); the schema does not.
    for (case, path) in cases[1..].iter().zip(["spec.ports.0.port", "spec.ports.0"]) {
        assert_eq!(case["lint"]["passed"], true, "{}", case["lint"]);
        let errors = case["kube_errors"].as_array().expect("kube errors");
        assert!(
            errors
                .iter()
                .any(|e| e["template"] == "templates/zz-bad.yaml" && e["path"] == path),
            "{}: {errors:?}",
            case["name"]
        );
    }
}

#[test]
fn the_config_the_chart_renders_is_values_config_and_costd_loads_it_with_the_pods_env_and_secret() {
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut cases = documented_cases();
    cases.push(json!({
        "name": "auth and TLS, the JWK Set from the Secret",
        "values": repo().join("helm/costd/ci/auth-tls-values.yaml"),
        "set": {
            "config.auth.jwt.jwks_url": null,
            "config.auth.jwt.jwks": {"file": "/var/run/secrets/costd/jwks.json"},
        },
    }));

    for case in render(cases) {
        let name = &case["name"];
        let (text, mut config) = rendered_config(&case);
        // Every key and type survives the rendering (Helm reads numbers as floats: 10000 must not
        // come out as 10000.0).
        let as_toml: toml::Table = toml::from_str(&text).expect("TOML");
        assert_eq!(
            serde_json::to_value(&as_toml).expect("JSON"),
            case["merged_values"]["config"],
            "{name}: the ConfigMap is values.config\n{text}"
        );

        // Credentials resolve from what the pod has: env vars the Deployment sets, files of the Secret.
        let env: HashMap<String, String> = container(&case)["env"]
            .as_array()
            .map(|vars| {
                vars.iter()
                    .map(|v| {
                        (
                            v["name"].as_str().expect("name").to_string(),
                            "x".to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mount = mount_path(&case, "credentials");
        let check = |reference: &mut SecretRef| {
            point_at_a_scratch_file(name, reference, mount.as_deref(), scratch.path());
            if let Some(var) = &reference.env {
                assert!(
                    env.contains_key(var),
                    "{name}: `{var}` is referenced, so secretEnv sets it"
                );
            }
        };
        // Provider accounts stay TOML tables until the loader parses them by kind.
        for credentials in config
            .providers
            .iter_mut()
            .filter_map(|p| p.get_mut("credentials")?.as_table_mut())
        {
            for (_, value) in credentials.iter_mut() {
                let mut reference: SecretRef = value.clone().try_into().expect("a reference");
                check(&mut reference);
                if let (Some(file), Some(table)) = (&reference.file, value.as_table_mut()) {
                    table.insert("file".into(), file.display().to_string().into());
                }
            }
        }
        // A JWK Set file is a key of the same Secret as the providers' credentials.
        if let Some(jwks) = config
            .auth
            .as_mut()
            .and_then(|auth| auth.jwt.as_mut())
            .and_then(|jwt| jwt.jwks.as_mut())
        {
            let mut reference = SecretRef {
                env: None,
                file: Some(jwks.file.clone()),
            };
            check(&mut reference);
            jwks.file = reference.file.expect("a file");
        }
        if let Some(tls) = config.server.tls.as_mut() {
            point_at_a_cert_manager_secret(&case, tls, scratch.path());
        }
        let mut env = env.clone();
        if let Some(redis) = config.jobs.redis.as_mut() {
            check(&mut redis.url);
            // costd checks the URL's scheme: a stand-in of that shape where the pod reads the real one.
            let stand_in = "redis://redis.example:6379";
            if let Some(file) = &redis.url.file {
                std::fs::write(file, format!("{stand_in}\n")).expect("written");
            }
            if let Some(var) = &redis.url.env {
                env.insert(var.clone(), stand_in.to_string());
            }
        }
        if let Err(error) = Settings::from_file_config(config, &env) {
            panic!("{name}: costd refuses the chart's config with the pod's env: {error}");
        }
    }
}

/// `config.server.tls` must name keys of the Secret mounted from `tls.existingSecret`, as cert-manager
/// writes it; the test writes such a Secret (a CA, and a server certificate it issued) to a scratch
/// directory, points the config there, and builds costd's TLS acceptor from it.
fn point_at_a_cert_manager_secret(case: &Value, tls: &mut TlsConfig, scratch: &Path) {
    let name = &case["name"];
    let mount = mount_path(case, "tls").unwrap_or_else(|| {
        panic!("{name}: config.server.tls names files, so tls.existingSecret is mounted")
    });
    // Read-only, and the whole Secret: a subPath mount would never see cert-manager's renewals.
    let tls_mount = container(case)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the tls mount");
    assert_eq!(tls_mount["readOnly"], true, "{name}");
    assert!(tls_mount.get("subPath").is_none(), "{name}");
    let volume = only(case, "Deployment")["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("the tls volume")
        .clone();
    assert_eq!(
        volume["secret"]["secretName"], case["merged_values"]["tls"]["existingSecret"],
        "{name}"
    );
    let ca = Ca::new("chart test CA");
    let server = ca.server(1);
    let secret = scratch.join("tls");
    std::fs::create_dir_all(&secret).expect("created");
    for (key, text) in [
        ("tls.crt", server.cert),
        ("tls.key", server.key),
        ("ca.crt", ca.pem()),
    ] {
        std::fs::write(secret.join(key), text).expect("written");
    }
    for reference in [&mut tls.cert, &mut tls.key]
        .into_iter()
        .chain(tls.client_ca.as_mut())
    {
        assert_eq!(
            reference.file.parent(),
            Some(Path::new(&mount)),
            "{name}: {} is in the TLS Secret's mount",
            reference.file.display()
        );
        let key = reference.file.file_name().expect("a file name");
        assert!(
            secret.join(key).exists(),
            "{name}: {} is a key cert-manager writes",
            reference.file.display()
        );
        reference.file = secret.join(key);
    }
    if let Err(error) = TlsAcceptor::new(tls) {
        panic!("{name}: costd cannot serve TLS from the Secret's files: {error}");
    }
}

/// A file reference must point into the mounted Secret; the test reads a stand-in file instead.
fn point_at_a_scratch_file(
    set: &Value,
    reference: &mut SecretRef,
    mount: Option<&str>,
    scratch: &Path,
) {
    let Some(file) = &reference.file else { return };
    let mount = mount.unwrap_or_else(|| {
        panic!(
            "{set}: {} is referenced, so the Secret is mounted",
            file.display()
        )
    });
    assert_eq!(
        file.parent().expect("a directory"),
        Path::new(mount),
        "{set}: {} is a key of the Secret mounted at {mount}",
        file.display()
    );
    let stand_in = scratch.join(file.file_name().expect("a file name"));
    std::fs::write(&stand_in, "x\n").expect("written");
    reference.file = Some(stand_in);
}
