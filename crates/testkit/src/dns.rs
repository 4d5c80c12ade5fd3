//! An authoritative DNS server for tests: one name whose A records the test sets, as
//! Kubernetes' DNS answers for a headless Service while pods come and go.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_server::{
    Server,
    proto::rr::{
        LowerName, Name, RData, Record, RecordSet, RecordType, RrKey,
        rdata::{A, SOA},
    },
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType},
};

/// A zone served over UDP on a free port of 127.0.0.1 (hickory-server's in-memory
/// zone), answering for one name with the A records last given to [`DnsZone::set`],
/// each with the TTL given at start. With no addresses the name has no A records
/// (NOERROR, no answer). Stops when dropped.
pub struct DnsZone {
    address: SocketAddr,
    name: Name,
    ttl: u32,
    zone: Arc<InMemoryZoneHandler>,
    _server: Server<Catalog>,
}

impl DnsZone {
    /// Serves `name` (absolute, e.g. `users.test.`) in the zone of its parent
    /// (`test.`), with no addresses yet; `ttl` is rounded down to whole seconds.
    ///
    /// # Panics
    /// When `name` is not an absolute name below a parent or no UDP port can be bound:
    /// a test helper, it has no one to report to.
    pub async fn start(name: &str, ttl: Duration) -> Self {
        let name: Name = name.parse().expect("a DNS name");
        assert!(name.is_fqdn() && name.num_labels() >= 2, "{name}: an absolute name below a zone");
        let origin = name.base_name();
        let ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        let soa = SOA::new(
            Name::from_ascii("ns").and_then(|ns| ns.append_domain(&origin)).expect("the nameserver's name"),
            Name::from_ascii("admin").and_then(|admin| admin.append_domain(&origin)).expect("the admin's name"),
            1,
            3600,
            600,
            86400,
            // The negative-answer TTL: an empty set is not cached for long either.
            ttl,
        );
        let mut soa_set = RecordSet::with_ttl(origin.clone(), RecordType::SOA, ttl);
        soa_set.insert(Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)), 1);
        let records = BTreeMap::from([(RrKey::new(LowerName::new(&origin), RecordType::SOA), soa_set)]);
        let zone: InMemoryZoneHandler =
            InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
                .expect("a zone with its SOA");
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone() as Arc<dyn ZoneHandler>]);
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("a UDP port on 127.0.0.1");
        let address = socket.local_addr().expect("the bound address");
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        Self { address, name, ttl, zone, _server: server }
    }

    /// Where the server listens: what a resolver's nameserver setting takes.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Answers the name with exactly `addresses` from now on.
    pub async fn set(&self, addresses: &[Ipv4Addr]) {
        let key = RrKey::new(LowerName::new(&self.name), RecordType::A);
        let mut records = self.zone.records_mut().await;
        if addresses.is_empty() {
            records.remove(&key);
            return;
        }
        let mut set = RecordSet::with_ttl(self.name.clone(), RecordType::A, self.ttl);
        for address in addresses {
            set.insert(Record::from_rdata(self.name.clone(), self.ttl, RData::A(A(*address))), 1);
        }
        records.insert(key, Arc::new(set));
    }
}
