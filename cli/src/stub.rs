//! A real gRPC Query server on loopback for the CLI's unit tests: it answers the calls
//! a test gives a handler for, and every other one `unimplemented`, as an aggregator
//! without that part does.

use goroscope_proto::v1;
use goroscope_proto::v1::query_client::QueryClient;
use goroscope_proto::v1::query_server::{Query, QueryServer};
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

type Handler<Req, Resp> = Box<dyn Fn(Req) -> Result<Resp, Status> + Send + Sync>;

#[derive(Default)]
pub struct Stub {
    pub list_targets: Option<Handler<v1::ListTargetsRequest, v1::ListTargetsResponse>>,
    pub describe_target: Option<Handler<v1::DescribeTargetRequest, v1::DescribeTargetResponse>>,
}

fn answer<Req, Resp>(
    handler: &Option<Handler<Req, Resp>>,
    name: &str,
    request: Request<Req>,
) -> Result<Response<Resp>, Status> {
    match handler {
        Some(f) => f(request.into_inner()).map(Response::new),
        None => Err(Status::unimplemented(name.to_owned())),
    }
}

/// The `Query` implementation: the calls with a handler, and the others answered
/// `unimplemented` (written by a macro before `async_trait` rewrites the impl).
macro_rules! query_impl {
    ($($name:ident: $req:ty => $resp:ty;)*) => {
        #[tonic::async_trait]
        impl Query for Stub {
            type CaptureStream =
                tokio_stream::wrappers::ReceiverStream<Result<v1::CaptureProgress, Status>>;
            type GetCaptureStream =
                tokio_stream::wrappers::ReceiverStream<Result<v1::CaptureData, Status>>;

            async fn list_targets(
                &self,
                request: Request<v1::ListTargetsRequest>,
            ) -> Result<Response<v1::ListTargetsResponse>, Status> {
                answer(&self.list_targets, "list_targets", request)
            }

            async fn describe_target(
                &self,
                request: Request<v1::DescribeTargetRequest>,
            ) -> Result<Response<v1::DescribeTargetResponse>, Status> {
                answer(&self.describe_target, "describe_target", request)
            }

            $(
                async fn $name(&self, _: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

query_impl! {
    query_range: v1::QueryRangeRequest => v1::QueryRangeResponse;
    stacks: v1::StacksRequest => v1::StacksResponse;
    capture: v1::CaptureRequest => Self::CaptureStream;
    list_captures: v1::ListCapturesRequest => v1::ListCapturesResponse;
    get_capture: v1::GetCaptureRequest => Self::GetCaptureStream;
    anomalies: v1::AnomaliesRequest => v1::AnomaliesResponse;
    incidents: v1::IncidentsRequest => v1::IncidentsResponse;
    get_incident: v1::GetIncidentRequest => v1::Incident;
    status: v1::StatusRequest => v1::StatusResponse;
    evaluate: v1::EvaluateRequest => v1::EvaluateResponse;
}

/// Serves `stub` on a loopback port (plain HTTP/2) and connects a client to it.
pub async fn serve(stub: Stub) -> QueryClient<Channel> {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(QueryServer::new(stub))
            .serve_with_incoming(incoming),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    QueryClient::new(channel)
}
