//! The one reader of the proto contracts: each method's kind and declared idempotency, for metric labels and span names (observe) and retries (client).
//!
//! Methods are keyed by their gRPC path, `/package.Service/Method` (gRPC over HTTP/2,
//! PROTOCOL-HTTP2.md, "Path"). A path no descriptor knows is never turned into labels
//! of its own: every such call counts under [`UNKNOWN`] (see [`Methods::labels`]), so a
//! caller sending made-up paths cannot grow the metric or span name sets.

use std::{collections::HashMap, sync::Arc};

use prost::Message;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};

use crate::observability::metrics::MethodLabels;

/// The `grpc_type`, `grpc_service` and `grpc_method` label value (and span
/// `rpc.service`/`rpc.method`) of every call to a method the descriptors do not know.
/// The same fixed-label rule as grpc-go's OpenTelemetry plugin ("other") and
/// go-grpc-middleware, which never labels unregistered methods by their raw name.
pub const UNKNOWN: &str = "unknown";

/// How a method's messages flow (gRPC's four call types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// A stream of requests, one response.
    ClientStream,
    /// One request, a stream of responses.
    ServerStream,
    /// Streams both ways.
    BidiStream,
}

impl MethodKind {
    /// go-grpc-middleware's `grpc_type` label value: `unary`, `client_stream`, `server_stream`, `bidi_stream`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }

    /// Whether the request is one message (unary or server-streaming), so it can be
    /// buffered and sent again.
    pub fn single_request(self) -> bool {
        matches!(self, Self::Unary | Self::ServerStream)
    }
}

/// What the contracts say about one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodInfo {
    /// Fully qualified service, e.g. `orders.v1.OrderService`.
    pub service: String,
    /// Method, e.g. `CreateOrder`.
    pub method: String,
    /// Unary or streaming.
    pub kind: MethodKind,
    /// Declared `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT` in the proto.
    pub idempotent: bool,
}

/// The methods of a set of services, by gRPC path. Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct Methods(Arc<HashMap<String, MethodInfo>>);

impl Methods {
    /// Reads every service of `descriptor_sets` (each an encoded
    /// `google.protobuf.FileDescriptorSet`).
    ///
    /// # Errors
    /// When a set does not decode.
    pub fn from_descriptor_sets(descriptor_sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut methods = HashMap::new();
        for encoded in descriptor_sets {
            let set = FileDescriptorSet::decode(*encoded)?;
            for file in &set.file {
                for service in &file.service {
                    let service_name = match (file.package(), service.name()) {
                        ("", name) => name.to_owned(),
                        (package, name) => format!("{package}.{name}"),
                    };
                    for method in &service.method {
                        let kind = match (method.client_streaming(), method.server_streaming()) {
                            (false, false) => MethodKind::Unary,
                            (true, false) => MethodKind::ClientStream,
                            (false, true) => MethodKind::ServerStream,
                            (true, true) => MethodKind::BidiStream,
                        };
                        let idempotency = method.options.as_ref().map(|options| options.idempotency_level());
                        let info = MethodInfo {
                            service: service_name.clone(),
                            method: method.name().to_owned(),
                            kind,
                            idempotent: matches!(
                                idempotency,
                                Some(IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent)
                            ),
                        };
                        methods.insert(format!("/{service_name}/{}", method.name()), info);
                    }
                }
            }
        }
        Ok(Self(Arc::new(methods)))
    }

    /// The method at `path`; `None` for one no descriptor declares.
    pub fn get(&self, path: &str) -> Option<&MethodInfo> {
        self.0.get(path)
    }

    /// The metric labels of a call to `path`: the method's own for a known method,
    /// [`UNKNOWN`] for all three otherwise (one series however many paths are tried).
    pub fn labels(&self, path: &str) -> MethodLabels {
        match self.get(path) {
            Some(info) => {
                MethodLabels { kind: info.kind.label(), service: info.service.clone(), method: info.method.clone() }
            }
            None => MethodLabels { kind: UNKNOWN, service: UNKNOWN.to_owned(), method: UNKNOWN.to_owned() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn methods() -> Methods {
        Methods::from_descriptor_sets(&[api::FILE_DESCRIPTOR_SET]).expect("the API descriptors decode")
    }

    #[test]
    fn kinds_and_idempotency_come_from_the_descriptors() {
        let methods = methods();
        let create = methods.get("/orders.v1.OrderService/CreateOrder").expect("declared");
        assert_eq!((create.kind, create.idempotent), (MethodKind::Unary, false));
        let list = methods.get("/orders.v1.OrderService/ListOrders").expect("declared");
        assert_eq!(list.kind, MethodKind::ServerStream);
        assert!(methods.get("/users.v1.UserService/GetUserByEmail").expect("declared").idempotent);
    }

    #[test]
    fn a_known_method_is_labelled_with_its_own_names() {
        let labels = methods().labels("/orders.v1.OrderService/ListOrders");
        assert_eq!(
            (labels.kind, labels.service.as_str(), labels.method.as_str()),
            ("server_stream", "orders.v1.OrderService", "ListOrders")
        );
    }

    #[test]
    fn any_path_no_descriptor_declares_gets_the_one_fixed_label() {
        let methods = methods();
        for path in ["/x.v1.Nope/Call", "/orders.v1.OrderService/Nope", "", "no-slash", &"/a".repeat(4000)] {
            let labels = methods.labels(path);
            assert_eq!((labels.kind, labels.service.as_str(), labels.method.as_str()), (UNKNOWN, UNKNOWN, UNKNOWN));
        }
    }

    #[test]
    fn bytes_that_are_not_a_descriptor_set_are_refused() {
        assert!(Methods::from_descriptor_sets(&[b"\xff\xff not protobuf"]).is_err());
    }
}
