//! Resolvers: where an upstream's endpoints come from (a static list, Consul's healthy
//! instances, or DNS), all published the same way, as a [`watch`] channel of URIs.
//!
//! A resolver task ends by itself once every receiver is dropped.

pub mod consul;
pub mod registration;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig},
    net::{NetError, runtime::TokioRuntimeProvider},
    system_conf,
};
use http::Uri;
use tokio::sync::watch;

use crate::{discovery::consul::Consul, support::backoff::Backoff, support::redact};

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

/// Resolves `name` (`host:port`, e.g. `users-headless:50051`) every `refresh`, publishing
/// one `http://ip:port` URI per A/AAAA record of the host.
///
/// Lookups go through hickory-resolver configured as the C library's resolver would be:
/// `/etc/resolv.conf` (nameservers, search domains, `ndots`) and `/etc/hosts`, or, when
/// `nameserver` is set, that one nameserver (UDP, then TCP) with the same search rules.
/// Record TTLs are respected: an answer is served from the resolver's cache until its
/// TTL runs out, so a changed record set reaches the balancer within `refresh` + TTL
/// (plus any upstream cache's, e.g. CoreDNS'). A failed lookup, including a name with
/// no records, keeps the last set; so does a missing resolver config, retried each time.
pub fn dns(name: String, refresh: Duration, nameserver: Option<SocketAddr>) -> Resolver {
    let (publish, resolver) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let (host, port) = split_host_port(&name);
        let mut lookups = None;
        loop {
            if lookups.is_none() {
                match dns_resolver(nameserver) {
                    Ok(built) => lookups = Some(built),
                    Err(error) => tracing::warn!(name, %error, "no DNS resolver config; keeping the last endpoints"),
                }
            }
            if let Some(lookups) = &lookups {
                match lookups.lookup_ip(host).await {
                    Ok(answer) => {
                        let unique: BTreeSet<IpAddr> = answer.iter().collect();
                        let uris = unique
                            .iter()
                            .filter_map(|ip| format!("http://{}", SocketAddr::new(*ip, port)).parse().ok())
                            .collect();
                        publish_set(&publish, &name, uris);
                    }
                    Err(error) => tracing::warn!(name, %error, "DNS lookup failed; keeping the last endpoints"),
                }
            }
            tokio::select! {
                () = tokio::time::sleep(refresh) => {}
                () = publish.closed() => return,
            }
        }
    });
    resolver
}

/// `host:port` split at the last colon, brackets taken off an IPv6 literal; the config
/// checked the shape at load, so a port that does not parse cannot happen (it would be 0).
fn split_host_port(name: &str) -> (&str, u16) {
    let (host, port) = name.rsplit_once(':').unwrap_or((name, ""));
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (host, port.parse().unwrap_or_default())
}

/// The system's resolver config, with its nameservers replaced by `nameserver` when set.
fn dns_resolver(nameserver: Option<SocketAddr>) -> Result<TokioResolver, NetError> {
    let (mut config, options) = system_conf::read_system_conf()?;
    if let Some(nameserver) = nameserver {
        let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()].map(|mut connection| {
            connection.port = nameserver.port();
            connection
        });
        let server = NameServerConfig::new(nameserver.ip(), true, connections.into());
        config = ResolverConfig::from_parts(config.domain().cloned(), config.search().to_vec(), vec![server]);
    }
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(options).build()
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

    use testkit::DnsZone;

    /// The URIs `http://{ip}:50051/` of these IPv4 addresses, as the resolver publishes them.
    fn uris(addresses: &[[u8; 4]]) -> Vec<Uri> {
        addresses
            .iter()
            .map(|ip| format!("http://{}:50051/", std::net::Ipv4Addr::from(*ip)).parse().expect("a uri"))
            .collect()
    }

    async fn wait_for_set(resolver: &mut Resolver, expected: &[Uri]) {
        let seen = tokio::time::timeout(Duration::from_secs(10), resolver.wait_for(|set| set == expected)).await;
        assert!(seen.is_ok_and(|seen| seen.is_ok()), "never published {expected:?}; last {:?}", *resolver.borrow());
    }

    #[tokio::test]
    async fn dns_publishes_each_address_of_the_name_with_its_port() {
        let mut resolver = dns("localhost:4321".to_owned(), Duration::from_secs(60), None);
        let endpoints = resolver.wait_for(|set| !set.is_empty()).await.expect("the resolver runs").clone();
        assert!(
            endpoints.iter().any(|uri| *uri == "http://127.0.0.1:4321/"),
            "localhost resolves to 127.0.0.1: {endpoints:?}"
        );
    }

    #[tokio::test]
    async fn dns_follows_the_record_set_of_the_configured_nameserver_and_keeps_it_when_the_name_has_none() {
        let zone = DnsZone::start("users.test.", Duration::ZERO).await;
        zone.set(&[[10, 0, 0, 1].into(), [10, 0, 0, 2].into()]).await;
        let refresh = Duration::from_millis(20);
        let mut resolver = dns("users.test.:50051".to_owned(), refresh, Some(zone.address()));
        wait_for_set(&mut resolver, &uris(&[[10, 0, 0, 1], [10, 0, 0, 2]])).await;

        zone.set(&[[10, 0, 0, 2].into(), [10, 0, 0, 3].into()]).await;
        wait_for_set(&mut resolver, &uris(&[[10, 0, 0, 2], [10, 0, 0, 3]])).await;

        // No records: every lookup fails for 25 refreshes, and the last set stays.
        zone.set(&[]).await;
        let changed = tokio::time::timeout(25 * refresh, resolver.changed()).await;
        assert!(changed.is_err(), "the set changed to {:?}", *resolver.borrow());
        zone.set(&[[10, 0, 0, 4].into()]).await;
        wait_for_set(&mut resolver, &uris(&[[10, 0, 0, 4]])).await;
    }

    #[tokio::test]
    async fn dns_answers_are_cached_for_their_ttl() {
        let zone = DnsZone::start("users.test.", Duration::from_secs(3600)).await;
        zone.set(&[[10, 0, 0, 1].into()]).await;
        let refresh = Duration::from_millis(20);
        let mut resolver = dns("users.test.:50051".to_owned(), refresh, Some(zone.address()));
        wait_for_set(&mut resolver, &uris(&[[10, 0, 0, 1]])).await;
        zone.set(&[[10, 0, 0, 2].into()]).await;
        // 25 refreshes, all answered from the cache: the hour-long TTL has not run out.
        let changed = tokio::time::timeout(25 * refresh, resolver.changed()).await;
        assert!(changed.is_err(), "the set changed to {:?} within its TTL", *resolver.borrow());
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
