//! What the proto contracts say about each method that matters to retries: whether
//! its request is a single message, and its declared idempotency.

use std::collections::HashMap;

use prost::Message;
use prost_types::{FileDescriptorSet, method_options::IdempotencyLevel};

/// Retry-relevant facts of one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The request is one message (unary or server-streaming), so it can be buffered and resent.
    pub single_request: bool,
    /// Declared `idempotency_level = NO_SIDE_EFFECTS` or `IDEMPOTENT` in the proto.
    pub idempotent: bool,
}

/// Methods by gRPC path, `/package.Service/Method`.
#[derive(Debug, Clone, Default)]
pub struct MethodTable(HashMap<String, MethodInfo>);

impl MethodTable {
    /// Reads every service of an encoded `FileDescriptorSet`.
    ///
    /// # Errors
    /// When the bytes are not a `FileDescriptorSet`.
    pub fn from_descriptor_set(encoded: &[u8]) -> Result<Self, prost::DecodeError> {
        let set = FileDescriptorSet::decode(encoded)?;
        let mut methods = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    let idempotency = method.options.as_ref().map(|options| options.idempotency_level());
                    let info = MethodInfo {
                        single_request: !method.client_streaming(),
                        idempotent: matches!(
                            idempotency,
                            Some(IdempotencyLevel::NoSideEffects | IdempotencyLevel::Idempotent)
                        ),
                    };
                    methods.insert(path, info);
                }
            }
        }
        Ok(Self(methods))
    }

    /// The facts of `path`; `None` for a method not in the contracts.
    pub fn get(&self, path: &str) -> Option<MethodInfo> {
        self.0.get(path).copied()
    }
}
