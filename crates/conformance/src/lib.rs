//! `connectrpc.conformance.v1.ConformanceService` on tonic, for the Connect conformance
//! runner to test our server stack (`platform::server`) in gRPC, gRPC-Web and Connect.
//!
//! The service does what each request's response definition says: echo the request
//! (headers, timeout, the message, a Connect GET's query), send headers, messages,
//! trailers or an error. tonic has no API for trailers on a successful answer, so the
//! handlers put them in a response extension and [`WithTrailers`] adds them to the
//! gRPC trailers.

#![warn(missing_docs)]

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt, future::BoxFuture};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use prost::Message;
use tonic::{Request, Response, Status, Streaming, body::Body, server::NamedService};

pub use api::conformance::{FILE_DESCRIPTOR_SET, v1 as pb};

use pb::{
    BidiStreamRequest, BidiStreamResponse, ClientStreamRequest, ClientStreamResponse, ConformancePayload, Header,
    IdempotentUnaryRequest, IdempotentUnaryResponse, ServerStreamRequest, ServerStreamResponse, UnaryRequest,
    UnaryResponse, UnaryResponseDefinition, UnimplementedRequest, UnimplementedResponse,
    conformance_payload::{ConnectGetInfo, RequestInfo},
    conformance_service_server::ConformanceService,
};

/// The service the runner calls (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conformance;

/// Trailers a handler wants sent after its answer (see [`WithTrailers`]).
#[derive(Clone, Debug, Default)]
struct ResponseTrailers(HeaderMap);

fn any<M: Message>(name: &str, message: &M) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{name}"), value: message.encode_to_vec() }
}

fn to_headers(headers: &[Header]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for header in headers {
        let Ok(name) = HeaderName::try_from(header.name.to_ascii_lowercase()) else { continue };
        for value in &header.value {
            if let Ok(value) = HeaderValue::try_from(value.as_str()) {
                map.append(name.clone(), value);
            }
        }
    }
    map
}

fn from_headers(map: &HeaderMap) -> Vec<Header> {
    map.keys()
        .map(|name| Header {
            name: name.as_str().to_owned(),
            value: map
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect(),
        })
        .collect()
}

/// What the server observed of a request: headers, timeout, the message, a GET's query.
fn request_info<T>(request: &Request<T>, message: prost_types::Any) -> RequestInfo {
    let timeout_ms = platform::deadline::incoming().map(|deadline| {
        i64::try_from(deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis()).unwrap_or(i64::MAX)
    });
    let connect_get_info = request.extensions().get::<connect::ConnectGet>().map(|get| ConnectGetInfo {
        query_params: get
            .query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let value =
                    percent_encoding::percent_decode_str(&value.replace('+', " ")).decode_utf8_lossy().into_owned();
                Header { name: name.to_owned(), value: vec![value] }
            })
            .collect(),
    });
    RequestInfo {
        request_headers: from_headers(&request.metadata().clone().into_headers()),
        timeout_ms,
        requests: vec![message],
        connect_get_info,
    }
}

/// The status for a definition's error, with the request info appended to its details.
fn status(error: &pb::Error, info: Option<&RequestInfo>, metadata: HeaderMap) -> Status {
    let code = tonic::Code::from(error.code);
    let message = error.message.clone().unwrap_or_default();
    let mut details = error.details.clone();
    if let Some(info) = info {
        details.push(any("connectrpc.conformance.v1.ConformancePayload.RequestInfo", info));
    }
    let encoded = tonic_types::Status { code: code as i32, message: message.clone(), details }.encode_to_vec();
    Status::with_details_and_metadata(
        code,
        message,
        encoded.into(),
        tonic::metadata::MetadataMap::from_headers(metadata),
    )
}

/// Answers a unary call as `definition` says; `wrap` builds the response message.
async fn unary_answer<T, R>(
    request: &Request<T>,
    definition: Option<&UnaryResponseDefinition>,
    message: prost_types::Any,
    wrap: impl FnOnce(ConformancePayload) -> R,
) -> Result<Response<R>, Status> {
    let info = request_info(request, message);
    let Some(definition) = definition else {
        return Ok(Response::new(wrap(ConformancePayload { data: Vec::new(), request_info: Some(info) })));
    };
    if definition.response_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(u64::from(definition.response_delay_ms))).await;
    }
    let headers = to_headers(&definition.response_headers);
    let trailers = to_headers(&definition.response_trailers);
    match &definition.response {
        Some(pb::unary_response_definition::Response::Error(error)) => {
            // tonic answers an error trailers-only: headers and trailers travel together.
            let mut metadata = headers;
            metadata.extend(trailers);
            Err(status(error, Some(&info), metadata))
        }
        response => {
            let data = match response {
                Some(pb::unary_response_definition::Response::ResponseData(data)) => data.clone(),
                _ => Vec::new(),
            };
            let mut answer = Response::new(wrap(ConformancePayload { data, request_info: Some(info) }));
            *answer.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
            answer.extensions_mut().insert(ResponseTrailers(trailers));
            Ok(answer)
        }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ConformanceService for Conformance {
    async fn unary(&self, request: Request<UnaryRequest>) -> Result<Response<UnaryResponse>, Status> {
        let message = any("connectrpc.conformance.v1.UnaryRequest", request.get_ref());
        let definition = request.get_ref().response_definition.clone();
        unary_answer(&request, definition.as_ref(), message, |payload| UnaryResponse { payload: Some(payload) }).await
    }

    async fn idempotent_unary(
        &self,
        request: Request<IdempotentUnaryRequest>,
    ) -> Result<Response<IdempotentUnaryResponse>, Status> {
        let message = any("connectrpc.conformance.v1.IdempotentUnaryRequest", request.get_ref());
        let definition = request.get_ref().response_definition.clone();
        unary_answer(&request, definition.as_ref(), message, |payload| IdempotentUnaryResponse {
            payload: Some(payload),
        })
        .await
    }

    type ServerStreamStream = ResponseStream<ServerStreamResponse>;

    async fn server_stream(
        &self,
        request: Request<ServerStreamRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let info = request_info(&request, any("connectrpc.conformance.v1.ServerStreamRequest", request.get_ref()));
        let definition = request.into_inner().response_definition.unwrap_or_default();
        let headers = to_headers(&definition.response_headers);
        let trailers = to_headers(&definition.response_trailers);
        let delay = Duration::from_millis(u64::from(definition.response_delay_ms));
        let sent_any = !definition.response_data.is_empty();
        let mut first = Some(info.clone());
        let messages = futures::stream::iter(definition.response_data).then(move |data| {
            let request_info = first.take();
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(ServerStreamResponse { payload: Some(ConformancePayload { data, request_info }) })
            }
        });
        let error = definition.error.map(|error| {
            // Trailers travel in the extension (see `WithTrailers`), not twice.
            Err(status(&error, (!sent_any).then_some(&info), HeaderMap::new()))
        });
        let stream: Self::ServerStreamStream = Box::pin(messages.chain(futures::stream::iter(error)));
        let mut answer = Response::new(stream);
        *answer.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        answer.extensions_mut().insert(ResponseTrailers(trailers));
        Ok(answer)
    }

    async fn client_stream(
        &self,
        _: Request<Streaming<ClientStreamRequest>>,
    ) -> Result<Response<ClientStreamResponse>, Status> {
        Err(Status::unimplemented("client streaming is out of scope (our API has none)"))
    }

    type BidiStreamStream = ResponseStream<BidiStreamResponse>;

    async fn bidi_stream(
        &self,
        _: Request<Streaming<BidiStreamRequest>>,
    ) -> Result<Response<Self::BidiStreamStream>, Status> {
        Err(Status::unimplemented("bidi streaming is out of scope (our API has none)"))
    }

    async fn unimplemented(&self, _: Request<UnimplementedRequest>) -> Result<Response<UnimplementedResponse>, Status> {
        Err(Status::unimplemented("connectrpc.conformance.v1.ConformanceService.Unimplemented is not implemented"))
    }
}

/// Wraps the tonic service so trailers a handler left in [`ResponseTrailers`] join the
/// gRPC trailers at the end of the answer.
#[derive(Clone)]
pub struct WithTrailers<S>(pub S);

impl<S: NamedService> NamedService for WithTrailers<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower::Service<http::Request<Body>> for WithTrailers<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let future = self.0.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            let Some(ResponseTrailers(extra)) = response.extensions_mut().remove::<ResponseTrailers>() else {
                return Ok(response);
            };
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| match frame.into_trailers() {
                    Ok(mut trailers) => {
                        for (name, value) in &extra {
                            trailers.append(name.clone(), value.clone());
                        }
                        http_body::Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                }))
            }))
        })
    }
}
