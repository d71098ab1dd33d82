//! The server's own surface: health, reflection, and a graceful stop that reports NOT_SERVING first.

use crate::helpers::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// One request to one reflection version's generated client; the answer's `message_response`.
macro_rules! reflect {
    ($version:ident, $channel:expr, $ask:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        };
        let mut client = ServerReflectionClient::new($channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some($ask),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection answers")
            .into_inner();
        responses
            .message()
            .await
            .expect("a message")
            .expect("not the end")
            .message_response
    }};
}

/// Lists the services through one reflection version.
macro_rules! list_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        match reflect!(
            $version,
            $channel,
            MessageRequest::ListServices(String::new())
        ) {
            Some(MessageResponse::ListServicesResponse(list)) => list
                .service
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<String>>(),
            other => panic!("unexpected reflection answer: {other:?}"),
        }
    }};
}

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel.clone());

    for service in ["", "costd.v1.CostService", "costd.v1.QueryJobService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .expect("health answers")
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_both_services() {
    let app = spawn_app().await;

    let v1 = list_services!(v1, app.channel.clone());
    let v1alpha = list_services!(v1alpha, app.channel.clone());

    for services in [&v1, &v1alpha] {
        for expected in [
            "costd.v1.CostService",
            "costd.v1.QueryJobService",
            "grpc.health.v1.Health",
        ] {
            assert!(
                services.iter().any(|s| s == expected),
                "{expected} missing from {services:?}"
            );
        }
    }
}

/// Asks reflection v1 for the files answering one request.
async fn reflected_files(
    channel: tonic::transport::Channel,
    ask: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> Vec<prost_types::FileDescriptorProto> {
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let Some(MessageResponse::FileDescriptorResponse(files)) = reflect!(v1, channel, ask) else {
        panic!("expected file descriptors");
    };
    files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                .expect("a descriptor")
        })
        .collect()
}

#[tokio::test]
async fn reflection_resolves_a_service_and_every_file_it_imports() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    let app = spawn_app().await;

    let service_files = reflected_files(
        app.channel.clone(),
        MessageRequest::FileContainingSymbol("costd.v1.CostService".into()),
    )
    .await;

    let service_file = service_files
        .iter()
        .find(|f| f.name() == "costd/v1/cost_service.proto")
        .expect("the service's file");
    assert!(
        service_file
            .dependency
            .iter()
            .any(|d| d == "google/rpc/status.proto")
    );
    // A client such as grpcurl then asks for each import by name; every one must resolve.
    for dependency in &service_file.dependency {
        let files = reflected_files(
            app.channel.clone(),
            MessageRequest::FileByFilename(dependency.clone()),
        )
        .await;
        assert!(
            files.iter().any(|f| f.name() == dependency),
            "{dependency} did not resolve"
        );
    }
}

#[tokio::test]
async fn stopping_reports_not_serving_before_the_server_goes_away() {
    let mut app = spawn_app_with(|s| s.server.drain_timeout_ms = 300).await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch starts")
        .into_inner();
    let first = within(watch.message())
        .await
        .expect("message")
        .expect("not ended");
    assert_eq!(first.status(), ServingStatus::Serving);

    let server = app.begin_stop();

    let next = within(watch.message())
        .await
        .expect("message")
        .expect("not ended");
    assert_eq!(next.status(), ServingStatus::NotServing);
    within(server).await.expect("joins").expect("stops cleanly");
}
