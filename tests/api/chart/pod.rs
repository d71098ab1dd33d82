//! The rendered pod against what it runs: the ports, probes and stop costd's rendered config implies,
//! and the binary and user of the image the Dockerfile builds.

use super::{
    container, documented_cases, file_name, helm_chart, objects, only, render, rendered_config,
    repo,
};
use crate::binary::COSTD;
use costd::config::parse_toml;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::{path::Path, process::Command};

#[test]
fn the_pod_listens_probes_and_stops_as_its_rendered_config_says() {
    let mut cases = documented_cases();
    cases.push(json!({"name": "ports moved, longer stop", "set": {
        "config.server.listen": "0.0.0.0:7000",
        "config.metrics.listen": "[::]:7001",
        "config.server.drain_timeout_ms": 30500,
        "config.telemetry": {"flush_timeout_ms": 1},
    }}));
    cases.push(json!({"name": "metrics off", "set": {"config.metrics": {"enabled": false}}}));
    cases.push(json!({"name": "TLS, health port moved", "values": repo().join("helm/costd/ci/auth-tls-values.yaml"), "set": {
        "config.server.health_listen": "[::]:9443",
    }}));
    // The chart's fallbacks for unset keys must be costd's own defaults.
    cases.push(json!({"name": "costd's defaults", "set": {"config": {}}}));

    for case in render(cases) {
        assert!(case["render_error"].is_null(), "{}", case["render_error"]);
        let name = &case["name"];
        let (_, config) = rendered_config(&case);
        let deployment = only(&case, "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        let container = container(&case);
        let port_named = |port: &str| {
            container["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .find(|p| p["name"] == port)
                .map(|p| p["containerPort"].as_u64().expect("a number"))
        };

        let grpc = u64::from(config.server.listen.port());
        assert_eq!(port_named("grpc"), Some(grpc), "{name}: grpc port");
        let metrics = config
            .metrics
            .enabled
            .then(|| u64::from(config.metrics.listen.port()));
        assert_eq!(port_named("metrics"), metrics, "{name}: metrics port");
        // The kubelet's gRPC probes cannot speak TLS: with TLS on they go to the plaintext health port.
        let health = config.server.tls.as_ref().map(|_| {
            u64::from(
                config
                    .server
                    .health_listen
                    .expect("TLS comes with health_listen")
                    .port(),
            )
        });
        assert_eq!(port_named("health"), health, "{name}: health port");
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            // Service "" is costd's overall health, the one that turns NOT_SERVING on SIGTERM.
            assert_eq!(
                container[probe]["grpc"],
                json!({"port": health.unwrap_or(grpc)}),
                "{name}: {probe}"
            );
        }

        // The kubelet's own sleep: the distroless image has no `sleep` to exec.
        let pre_stop = &container["lifecycle"]["preStop"];
        assert_eq!(
            pre_stop.as_object().map(|o| o.len()),
            Some(1),
            "{name}: {pre_stop}"
        );
        let sleep = pre_stop["sleep"]["seconds"]
            .as_u64()
            .expect("preStop sleeps");
        let stop_seconds = sleep
            + config.server.drain_timeout_ms.div_ceil(1000)
            + config.telemetry.flush_timeout_ms.div_ceil(1000);
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace period");
        // Exactly the documented sum, so a second lost to rounding is not hidden by the margin.
        let margin = case["merged_values"]["terminationGraceMarginSeconds"]
            .as_u64()
            .expect("margin");
        assert!(margin >= 1, "{name}: a margin");
        assert_eq!(
            grace,
            stop_seconds + margin,
            "{name}: preStop, drain and flush ({stop_seconds}s) and the margin"
        );

        // A Service named costd would otherwise inject COSTD_SERVICE_HOST, which costd refuses.
        assert_eq!(pod["enableServiceLinks"], false, "{name}");
        let configmap = case["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["template"] == "templates/configmap.yaml")
            .expect("configmap.yaml");
        let checksum = hex::encode(Sha256::digest(
            configmap["text"].as_str().expect("text").as_bytes(),
        ));
        assert_eq!(
            pod_annotation(deployment, "checksum/config"),
            checksum,
            "{name}: a new config rolls the pods"
        );
        let args = container["args"].as_array().expect("args");
        let config_path = Path::new(args[2].as_str().expect("a path"));
        assert_eq!(args[..2], [json!("serve"), json!("--config")], "{name}");
        let config_mount = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == "config")
            .expect("config mount");
        assert_eq!(
            Path::new(config_mount["mountPath"].as_str().expect("path")),
            config_path.parent().expect("dir"),
            "{name}"
        );
        assert!(
            only(&case, "ConfigMap")["data"]
                .get(file_name(config_path))
                .is_some(),
            "{name}: {}",
            config_path.display()
        );

        let service = only(&case, "Service");
        let service_ports = service["spec"]["ports"].as_array().expect("ports");
        assert!(
            service_ports.iter().any(|p| p["name"] == "grpc"
                && p["targetPort"] == "grpc"
                && p["appProtocol"] == "grpc"),
            "{name}: {service_ports:?}"
        );
        assert_eq!(
            service_ports
                .iter()
                .any(|p| p["name"] == "metrics" && p["targetPort"] == "metrics"),
            metrics.is_some(),
            "{name}: {service_ports:?}"
        );
        if let Some(monitor) = objects(&case)
            .into_iter()
            .find(|o| o["kind"] == "ServiceMonitor")
        {
            assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics", "{name}");
            for (label, value) in monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .expect("selector")
            {
                assert_eq!(
                    &service["metadata"]["labels"][label], value,
                    "{name}: the ServiceMonitor selects the Service"
                );
            }
        }
    }
}

fn pod_annotation(deployment: &Value, key: &str) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_else(|| panic!("annotation {key}"))
        .to_string()
}

#[test]
fn the_image_runs_the_binary_and_the_user_that_the_chart_expects() {
    let answer = helm_chart(json!({
        "chart": repo().join("helm/costd"),
        "cases": [{"name": "default values"}],
        "dockerfile": repo().join("Dockerfile"),
    }));
    let case = &answer["cases"][0];
    let instructions = answer["dockerfile"]
        .as_array()
        .expect("the Dockerfile parses");
    let mut stages: Vec<&[Value]> = Vec::new();
    let mut rest = &instructions[..];
    while let Some(next) = rest.iter().skip(1).position(|i| i["cmd"] == "FROM") {
        let (stage, after) = rest.split_at(next + 1);
        stages.push(stage);
        rest = after;
    }
    stages.push(rest);
    assert!(stages.len() >= 2, "a multi-stage build");
    let (build, runtime) = (stages[0], stages[stages.len() - 1]);
    let values = |stage: &[Value], cmd: &str| -> Vec<Vec<String>> {
        stage
            .iter()
            .filter(|i| i["cmd"] == cmd)
            .map(|i| serde_json::from_value(i["value"].clone()).expect("strings"))
            .collect()
    };
    let binary = file_name(Path::new(COSTD));

    // The build stage compiles the release binary and names the revision costd --version reports.
    let build_from = &values(build, "FROM")[0];
    let build_stage = build_from.last().expect("AS <name>").clone();
    let runs = values(build, "RUN").concat().join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    assert!(runs.contains(&format!("target/release/{binary}")), "{runs}");
    assert!(
        values(build, "ARG")
            .concat()
            .iter()
            .any(|a| a.starts_with("COSTD_GIT_REVISION")),
        "build arg"
    );
    // Linked against the runtime image's glibc or an older one: the same Debian release.
    let runtime_image = &values(runtime, "FROM")[0][0];
    assert!(
        runtime_image.starts_with("gcr.io/distroless/cc-debian")
            && runtime_image.ends_with(":nonroot"),
        "{runtime_image}"
    );
    let codename = [("debian12", "bookworm"), ("debian13", "trixie")]
        .iter()
        .find(|(release, _)| runtime_image.contains(release))
        .map(|(_, codename)| format!("-{codename}"))
        .expect("a known Debian release");
    assert!(
        build_from[0].ends_with(&codename),
        "{build_from:?} is the Debian of {runtime_image}"
    );

    // The runtime stage copies that binary in and runs it as the chart's non-root user.
    let copy = runtime.iter().find(|i| i["cmd"] == "COPY").expect("COPY");
    assert_eq!(copy["flags"], json!([format!("--from={build_stage}")]));
    let destination = copy["value"][1].as_str().expect("destination");
    assert!(
        copy["value"][0]
            .as_str()
            .expect("source")
            .ends_with(&format!("/{binary}")),
        "{copy}"
    );
    assert_eq!(
        values(runtime, "ENTRYPOINT"),
        [vec![destination.to_string()]]
    );
    let user = values(runtime, "USER").concat().join("");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    let pod = &only(case, "Deployment")["spec"]["template"]["spec"];
    let container = container(case);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["runAsUser"].to_string(),
        uid,
        "the image's UID"
    );
    assert_eq!(
        pod["securityContext"]["runAsGroup"].to_string(),
        gid,
        "the image's GID"
    );
    assert_ne!(uid, "0");
    assert!(
        container.get("command").is_none(),
        "the image's entrypoint runs: {container}"
    );

    // The chart's args are a command line the binary accepts (--help stops before serving).
    let args: Vec<String> = serde_json::from_value(container["args"].clone()).expect("args");
    let help = Command::new(COSTD)
        .args(&args)
        .arg("--help")
        .output()
        .expect("costd runs");
    assert!(
        help.status.success(),
        "costd {args:?}: {}",
        String::from_utf8_lossy(&help.stderr)
    );
    // EXPOSE documents costd's default ports.
    let defaults = parse_toml("").expect("empty config");
    let ports = [
        defaults.server.listen.port(),
        defaults.metrics.listen.port(),
    ]
    .map(|p| p.to_string());
    assert_eq!(values(runtime, "EXPOSE").concat(), ports);
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).expect(".dockerignore");
    for excluded in [".git", "target", ".tools"] {
        assert!(
            ignored.lines().any(|l| l.trim() == excluded),
            ".dockerignore leaves out {excluded}"
        );
    }
}
