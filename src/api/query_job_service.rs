//! QueryJobService. Jobs exist for the asynchronous Atlas upstream; until its job table lands every
//! method says so instead of pretending.

use super::status;
use crate::proto as pb;
use std::pin::Pin;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const ARRIVES_WITH: &str = "the Atlas job table (issue 4)";

#[derive(Default)]
pub struct QueryJobApi;

#[tonic::async_trait]
impl pb::query_job_service_server::QueryJobService for QueryJobApi {
    type WatchJobStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

    async fn start_query(
        &self,
        _: Request<pb::StartQueryRequest>,
    ) -> Result<Response<pb::StartQueryResponse>, Status> {
        Err(status::not_yet("StartQuery", ARRIVES_WITH))
    }

    async fn get_job(
        &self,
        _: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(status::not_yet("GetJob", ARRIVES_WITH))
    }

    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(status::not_yet("ListJobs", ARRIVES_WITH))
    }

    async fn cancel_job(
        &self,
        _: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        Err(status::not_yet("CancelJob", ARRIVES_WITH))
    }

    async fn watch_job(
        &self,
        _: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        Err(status::not_yet("WatchJob", ARRIVES_WITH))
    }
}
