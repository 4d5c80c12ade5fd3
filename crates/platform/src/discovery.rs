//! Resolvers: where an upstream's endpoints come from (a static list, Consul's healthy
//! instances, or DNS), all published the same way, as a [`watch`] channel of URIs.
//!
//! A resolver task ends by itself once every receiver is dropped.

use std::{collections::BTreeSet, time::Duration};

use http::Uri;
use tokio::sync::watch;

use crate::{backoff::Backoff, consul::Consul, redact};

/// The endpoint set of one upstream; the balancer follows its latest value.
pub type Resolver = watch::Receiver<Vec<Uri>>;

/// A resolver that always answers `endpoints`: the static list from config.
pub fn fixed(endpoints: Vec<Uri>) -> Resolver {
    watch::channel(endpoints).1
}

/// Follows the passing instances of `service` in Consul with blocking queries of up
/// to `wait` each (Consul API docs, "Blocking Queries": pass the last `X-Consul-Index`,
/// reset it when it goes backwards, never send 0 again).
///
/// On errors it backs off (100 ms doubling to 10 s, jittered) and keeps publishing the
/// last known endpoints, so a Consul outage does not take the upstream away. It also
/// never replaces a non-empty set with an empty one: right after an agent restart,
/// before instances have re-registered and passed a check, Consul briefly answers
/// "none", and dialling endpoints that may be gone costs less than failing every call.
pub fn consul(consul: Consul, service: String, wait: Duration) -> Resolver {
    let (publish, resolver) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut index = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let answer = tokio::select! {
                answer = consul.healthy_instances(&service, index, wait) => answer,
                () = publish.closed() => return,
            };
            match answer {
                Ok(answer) => {
                    backoff.reset();
                    index = match answer.index {
                        // Gone backwards (agent restarted, state rebuilt): start again.
                        new if new < index => 0,
                        0 => 1,
                        new => new,
                    };
                    let uris: Vec<Uri> = answer
                        .value
                        .iter()
                        .filter_map(|instance| format!("http://{}:{}", instance.address, instance.port).parse().ok())
                        .collect();
                    publish_set(&publish, &service, uris);
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(service, %error, retry_in_ms = delay.as_millis() as u64, "consul query failed; keeping the last endpoints");
                    index = 0;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = publish.closed() => return,
                    }
                }
            }
        }
    });
    resolver
}

/// Resolves `name` (`host:port`) every `refresh`, publishing one `http://ip:port` URI
/// per address. A failed lookup keeps the last set.
pub fn dns(name: String, refresh: Duration) -> Resolver {
    let (publish, resolver) = watch::channel(Vec::new());
    tokio::spawn(async move {
        loop {
            match tokio::net::lookup_host(name.as_str()).await {
                Ok(addresses) => {
                    let unique: BTreeSet<_> = addresses.collect();
                    let uris = unique.iter().filter_map(|address| format!("http://{address}").parse().ok()).collect();
                    publish_set(&publish, &name, uris);
                }
                Err(error) => tracing::warn!(name, %error, "DNS lookup failed; keeping the last endpoints"),
            }
            tokio::select! {
                () = tokio::time::sleep(refresh) => {}
                () = publish.closed() => return,
            }
        }
    });
    resolver
}

/// Publishes `uris` if they differ from the current set and are not an empty set
/// replacing a non-empty one (see [`consul`]).
fn publish_set(publish: &watch::Sender<Vec<Uri>>, name: &str, mut uris: Vec<Uri>) {
    uris.sort_by_key(Uri::to_string);
    publish.send_if_modified(|current| {
        if *current == uris || (uris.is_empty() && !current.is_empty()) {
            return false;
        }
        let shown: Vec<String> = uris.iter().map(|uri| redact::uri(uri).to_string()).collect();
        tracing::info!(upstream = name, endpoints = ?shown, "endpoints changed");
        *current = uris;
        true
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dns_publishes_each_address_of_the_name_with_its_port() {
        let mut resolver = dns("localhost:4321".to_owned(), Duration::from_secs(60));
        let endpoints = resolver.wait_for(|set| !set.is_empty()).await.expect("the resolver runs").clone();
        assert!(
            endpoints.iter().any(|uri| *uri == "http://127.0.0.1:4321/"),
            "localhost resolves to 127.0.0.1: {endpoints:?}"
        );
    }

    #[test]
    fn an_empty_answer_does_not_replace_known_endpoints() {
        let (publish, resolver) = watch::channel(vec!["http://10.0.0.1:1".parse::<Uri>().expect("uri")]);
        publish_set(&publish, "users", Vec::new());
        assert_eq!(resolver.borrow().len(), 1);
        publish_set(&publish, "users", vec!["http://10.0.0.2:1".parse().expect("uri")]);
        assert_eq!(resolver.borrow()[0].to_string(), "http://10.0.0.2:1/");
    }
}
