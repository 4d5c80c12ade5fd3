//! A small Consul HTTP API client: agent service registration and the healthy
//! instances of a service, with blocking queries. See docs/adr/0002-consul-client.md
//! for why this is ours and not consulrs or rs-consul.
//!
//! Endpoints used (Consul API docs, <https://developer.hashicorp.com/consul/api-docs>):
//! `PUT /v1/agent/service/register`, `PUT /v1/agent/service/deregister/:service_id`,
//! `GET /v1/agent/service/:service_id`, `GET /v1/agent/services?filter=…`,
//! `GET /v1/health/service/:service?passing`.

use std::{collections::BTreeMap, fmt, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri, header::CONTENT_TYPE};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// How to reach the local Consul agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// The agent's HTTP API, an absolute `http://host:port` URI (`consul.address`,
    /// default `http://127.0.0.1:8500`); anything else is refused at load.
    #[serde(with = "agent_address")]
    pub address: Uri,
    /// Datacenter to query; empty means the agent's own (`consul.datacenter`).
    pub datacenter: String,
    /// ACL token sent as `X-Consul-Token`; unset or empty sends none (`consul.token`).
    /// A secret: never logged.
    #[serde(with = "crate::config::optional_secret")]
    pub token: Option<SecretString>,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        Self { address: Uri::from_static("http://127.0.0.1:8500"), datacenter: String::new(), token: None }
    }
}

/// `consul.address` in config: text parsed into an absolute `http://` [`Uri`] at load.
mod agent_address {
    use http::Uri;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(address: &Uri, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(address)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uri, D::Error> {
        let text = String::deserialize(deserializer)?;
        let refuse = |why: &str| D::Error::custom(format!("{why}; expected an http://host:port address"));
        let uri: Uri = text.parse().map_err(|_| refuse("not a URI"))?;
        match (uri.scheme_str(), uri.authority()) {
            // The agent authenticates with `consul.token`; a `user:pass@` would only end up in logs.
            (Some("http"), Some(authority)) if authority.as_str().contains('@') => {
                Err(refuse("credentials in the address are not allowed (use consul.token)"))
            }
            (Some("http"), Some(_)) if uri.path() == "/" && uri.query().is_none() => Ok(uri),
            (Some("http"), Some(_)) => Err(refuse("a path or query is not allowed")),
            (Some("https"), _) => Err(refuse("https is not supported (the agent's API is plaintext)")),
            _ => Err(refuse("no http:// scheme or no host")),
        }
    }
}

/// A failed Consul API call.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The agent could not be reached, or did not answer in time.
    #[error("consul agent at {address} unreachable: {reason}")]
    Unreachable {
        /// The configured `consul.address`, its userinfo redacted.
        address: String,
        /// What the HTTP client said.
        reason: String,
    },
    /// The agent answered with an error status.
    #[error("consul answered {status} to {operation}: {body}")]
    Refused {
        /// e.g. `register service users-…`.
        operation: String,
        /// The HTTP status.
        status: StatusCode,
        /// The agent's message (Consul sends plain text).
        body: String,
    },
    /// The agent's answer did not parse.
    #[error("consul answer to {operation} did not parse: {reason}")]
    Malformed {
        /// e.g. `health of users`.
        operation: String,
        /// The parse error.
        reason: String,
    },
}

/// One service instance as the agent registers it (`PUT /v1/agent/service/register`
/// body; field names are Consul's).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentServiceRegistration {
    /// Unique per instance.
    #[serde(rename = "ID")]
    pub id: String,
    /// The service name clients look up, e.g. `users`.
    pub name: String,
    /// The address clients dial.
    pub address: String,
    /// The gRPC port.
    pub port: u16,
    /// Free-form tags, e.g. `["grpc"]`.
    pub tags: Vec<String>,
    /// Key/value metadata, e.g. `version`.
    pub meta: BTreeMap<String, String>,
    /// The agent-run health check.
    pub check: AgentCheck,
}

/// An agent-run gRPC health check (`grpc.health.v1.Health/Check`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentCheck {
    /// `host:port` or `host:port/service` to probe.
    #[serde(rename = "GRPC")]
    pub grpc: String,
    /// The probe speaks plaintext HTTP/2.
    #[serde(rename = "GRPCUseTLS")]
    pub grpc_use_tls: bool,
    /// Probe period, Go duration syntax, e.g. `"10s"`.
    pub interval: String,
    /// Probe timeout, e.g. `"2s"`.
    pub timeout: String,
    /// Remove the instance after critical this long, e.g. `"1m"` (Consul reaps at minute granularity).
    pub deregister_critical_service_after: String,
    /// The check's status until its first run (Consul API, "Register Service": `Check.Status`).
    /// Consul's own default is critical, which keeps a new instance out of `?passing`
    /// answers for up to one `interval`; we register only once serving, so passing.
    pub status: CheckStatus,
}

/// A Consul health check status (Consul API, "Health": `passing`, `warning`, `critical`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Healthy: the instance is in `?passing` answers.
    Passing,
    /// Degraded but still listed as passing only by `?passing=false` queries.
    Warning,
    /// Unhealthy: left out of `?passing` answers.
    Critical,
}

/// One service instance the local agent holds (`GET /v1/agent/services`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Its service ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its service name.
    pub service: String,
    /// The address it registered (may be empty: then the node's).
    pub address: String,
    /// Its port.
    pub port: u16,
}

/// One healthy instance from `GET /v1/health/service/:service?passing`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// The service ID it registered with.
    pub id: String,
    /// The address to dial: the service address, or the node's when that is empty.
    pub address: String,
    /// The port.
    pub port: u16,
}

/// The answer to a blocking query: the value and the `X-Consul-Index` to pass next time.
#[derive(Debug, Clone)]
pub struct Indexed<T> {
    /// The result.
    pub value: T,
    /// The index of this result (Consul API docs, "Blocking Queries").
    pub index: u64,
}

/// A client of one Consul agent's HTTP API. Cheap to clone.
#[derive(Clone)]
pub struct Consul {
    address: String,
    datacenter: String,
    token: Option<SecretString>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for Consul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consul")
            .field("address", &crate::support::redact::address(&self.address).to_string())
            .finish_non_exhaustive()
    }
}

/// Extra time past `wait` before a blocking query is declared hung: Consul adds up to
/// `wait / 16` of jitter to the wait (API docs, "Blocking Queries").
fn blocking_margin(wait: Duration) -> Duration {
    wait / 16 + Duration::from_secs(2)
}

/// Timeout of a non-blocking call to the local agent.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Consul {
    /// A client of the agent at `config.address` (checked at load: absolute `http://`).
    pub fn new(config: &ConsulConfig) -> Self {
        Self {
            address: config.address.to_string().trim_end_matches('/').to_owned(),
            datacenter: config.datacenter.clone(),
            token: config.token.clone(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Registers (or replaces) a service instance with the local agent.
    ///
    /// # Errors
    /// [`ConsulError`] when the agent is unreachable or refuses the registration.
    pub async fn register(&self, registration: &AgentServiceRegistration) -> Result<(), ConsulError> {
        let body = serde_json::to_vec(registration).map_err(|e| ConsulError::Malformed {
            operation: format!("register service {}", registration.id),
            reason: e.to_string(),
        })?;
        let operation = format!("register service {}", registration.id);
        self.call(
            Method::PUT,
            "/v1/agent/service/register?replace-existing-checks=true",
            body,
            CALL_TIMEOUT,
            &operation,
        )
        .await
        .map(drop)
    }

    /// Removes a service instance (and its checks) from the local agent.
    ///
    /// # Errors
    /// [`ConsulError`] when the agent is unreachable or refuses.
    pub async fn deregister(&self, service_id: &str) -> Result<(), ConsulError> {
        let path = format!("/v1/agent/service/deregister/{}", encode(service_id));
        self.call(Method::PUT, &path, Vec::new(), CALL_TIMEOUT, &format!("deregister service {service_id}"))
            .await
            .map(drop)
    }

    /// Whether the local agent currently has `service_id` registered.
    ///
    /// # Errors
    /// [`ConsulError`] when the agent is unreachable or answers other than 200/404.
    pub async fn is_registered(&self, service_id: &str) -> Result<bool, ConsulError> {
        let path = format!("/v1/agent/service/{}", encode(service_id));
        match self.call(Method::GET, &path, Vec::new(), CALL_TIMEOUT, &format!("read service {service_id}")).await {
            Ok(_) => Ok(true),
            Err(ConsulError::Refused { status: StatusCode::NOT_FOUND, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Every instance of `service` the local agent holds, passing or not
    /// (`GET /v1/agent/services?filter=Service == "…"`).
    ///
    /// # Errors
    /// [`ConsulError`] when the agent is unreachable, refuses, or answers unparsable JSON.
    pub async fn agent_services(&self, service: &str) -> Result<Vec<AgentService>, ConsulError> {
        // Consul's filter language quotes strings with double quotes; a service name is
        // a DNS label, but escape anyway rather than trust it.
        let filter = format!("Service == \"{}\"", service.replace('\\', "\\\\").replace('"', "\\\""));
        let path = format!("/v1/agent/services?filter={}", encode(&filter));
        let operation = format!("list agent services of {service}");
        let (_, body) = self.call(Method::GET, &path, Vec::new(), CALL_TIMEOUT, &operation).await?;
        let services: BTreeMap<String, AgentService> =
            serde_json::from_slice(&body).map_err(|e| ConsulError::Malformed { operation, reason: e.to_string() })?;
        Ok(services.into_values().collect())
    }

    /// The instances of `service` whose checks all pass. With `index` > 0 this is a
    /// blocking query: the agent answers when the result changes past `index`, or
    /// after about `wait` with the same result.
    ///
    /// # Errors
    /// [`ConsulError`] when the agent is unreachable, refuses, or answers unparsable JSON.
    pub async fn healthy_instances(
        &self,
        service: &str,
        index: u64,
        wait: Duration,
    ) -> Result<Indexed<Vec<Instance>>, ConsulError> {
        let mut path = format!("/v1/health/service/{}?passing=true", encode(service));
        if index > 0 {
            path.push_str(&format!("&index={index}&wait={}ms", wait.as_millis()));
        }
        if !self.datacenter.is_empty() {
            path.push_str(&format!("&dc={}", encode(&self.datacenter)));
        }
        let operation = format!("health of {service}");
        let (headers, body) =
            self.call(Method::GET, &path, Vec::new(), wait + blocking_margin(wait), &operation).await?;
        let entries: Vec<ServiceEntry> = serde_json::from_slice(&body)
            .map_err(|e| ConsulError::Malformed { operation: operation.clone(), reason: e.to_string() })?;
        let index = headers
            .get("x-consul-index")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok())
            .ok_or_else(|| ConsulError::Malformed { operation, reason: "no X-Consul-Index header".to_owned() })?;
        let mut instances: Vec<Instance> = entries
            .into_iter()
            .map(|entry| Instance {
                id: entry.service.id,
                address: if entry.service.address.is_empty() { entry.node.address } else { entry.service.address },
                port: entry.service.port,
            })
            .collect();
        instances.sort();
        Ok(Indexed { value: instances, index })
    }

    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        timeout: Duration,
        operation: &str,
    ) -> Result<(http::HeaderMap, Bytes), ConsulError> {
        let address = crate::support::redact::address(&self.address).to_string();
        let unreachable = |reason: String| ConsulError::Unreachable { address: address.clone(), reason };
        let mut request = Request::builder().method(method).uri(format!("{}{path_and_query}", self.address));
        if let Some(token) = &self.token {
            request = request.header("x-consul-token", token.expose_secret());
        }
        let request = request
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| unreachable(e.to_string()))?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            Ok::<_, ConsulError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| unreachable(format!("no answer within {} ms", timeout.as_millis())))??;
        if !parts.status.is_success() {
            return Err(ConsulError::Refused {
                operation: operation.to_owned(),
                status: parts.status,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        Ok((parts.headers, body))
    }
}

/// Percent-encodes one path segment or query value.
fn encode(value: &str) -> String {
    utf8_percent_encode(value, NON_ALPHANUMERIC).to_string()
}

/// The parts of a `/v1/health/service` entry we read.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceEntry {
    node: EntryNode,
    service: EntryService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryNode {
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EntryService {
    #[serde(rename = "ID")]
    id: String,
    address: String,
    port: u16,
}

#[cfg(test)]
// figment::Jail's closures return figment::Error, which is large; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_serialises_with_consuls_field_names() {
        let registration = AgentServiceRegistration {
            id: "users-1".into(),
            name: "users".into(),
            address: "127.0.0.1".into(),
            port: 50051,
            tags: vec!["grpc".into()],
            meta: BTreeMap::from([("version".into(), "0.1.0".into())]),
            check: AgentCheck {
                grpc: "127.0.0.1:50051".into(),
                grpc_use_tls: false,
                interval: "1s".into(),
                timeout: "1s".into(),
                deregister_critical_service_after: "1m".into(),
                status: CheckStatus::Passing,
            },
        };
        let json = serde_json::to_value(&registration).expect("serialises");
        assert_eq!(json["ID"], "users-1");
        assert_eq!(json["Meta"]["version"], "0.1.0");
        assert_eq!(json["Check"]["GRPC"], "127.0.0.1:50051");
        assert_eq!(json["Check"]["GRPCUseTLS"], false);
        assert_eq!(json["Check"]["DeregisterCriticalServiceAfter"], "1m");
        assert_eq!(json["Check"]["Status"], "passing");
    }

    #[test]
    fn path_segments_and_query_values_are_percent_encoded() {
        assert_eq!(encode("a b/c&d"), "a%20b%2Fc%26d");
    }

    use crate::config::sample_refusal;

    /// `ConsulConfig` as the `consul` section of a service's config.
    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Sample {
        consul: ConsulConfig,
    }

    #[test]
    fn an_address_without_a_scheme_is_refused_naming_the_key() {
        let error = sample_refusal::<Sample>("SAMPLE_CONSUL__ADDRESS", "127.0.0.1:8500");
        assert!(error.contains("consul.address"), "{error}");
    }

    #[test]
    fn an_address_with_credentials_is_refused_without_quoting_them() {
        let error = sample_refusal::<Sample>("SAMPLE_CONSUL__ADDRESS", "https://admin:hunter2@consul:8501");
        assert!(error.contains("consul.address") && !error.contains("hunter2"), "{error}");
    }

    #[test]
    fn a_password_in_an_http_address_is_refused_at_load_so_no_log_line_can_show_it() {
        let error = sample_refusal::<Sample>("SAMPLE_CONSUL__ADDRESS", "http://admin:s3cret@127.0.0.1:8500");
        assert!(error.contains("consul.address") && error.contains("consul.token"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let config = ConsulConfig { token: Some("s3cret".into()), ..ConsulConfig::default() };
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn an_empty_token_sends_none_and_the_default_address_survives_the_defaults_layer() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_CONSUL__TOKEN", "");
            let sample = crate::config::load::<Sample>("SAMPLE_", None).map_err(|e| e.to_string())?;
            assert!(sample.consul.token.is_none());
            assert_eq!(sample.consul.address, Uri::from_static("http://127.0.0.1:8500"));
            Ok(())
        });
    }
}
