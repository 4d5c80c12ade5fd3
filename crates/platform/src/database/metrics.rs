//! The pool's metrics, read at scrape time: connections in use and idle, the pool size, the wait for a connection.

use prometheus::{
    IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::Database;

impl Database {
    /// The pool's metric families, read at scrape time, to register in the service's
    /// registry (`metrics.register(database.collector())`): OpenTelemetry's database connection-pool metrics as semantic
    /// conventions 1.24 name them (`db.client.connections.usage`, `.max`, `.wait_time`,
    /// attributes `state` and `pool.name`), in Prometheus form:
    /// `db_client_connections_usage{state="idle"|"used"}` and
    /// `db_client_connections_max` (gauges, connections) and
    /// `db_client_connections_wait_time_seconds` (histogram, seconds), each labelled
    /// `pool_name`. (Later conventions renamed the first `db.client.connection.count`,
    /// whose `_count` suffix Prometheus reserves for histograms: `promtool check
    /// metrics` rejects it.)
    pub fn collector(&self) -> PoolCollector {
        let families = PoolCollector::gauges(&self.name, [0, 0, 0]);
        let collectors = families.iter().map(|g| g as &dyn Collector).chain([&self.wait_time as &dyn Collector]);
        let descs = collectors.flat_map(Collector::desc).cloned().collect();
        PoolCollector { database: self.clone(), descs }
    }
}

/// The [`Collector`] of a [`Database`]'s pool metrics; see [`Database::collector`].
#[derive(Clone)]
pub struct PoolCollector {
    database: Database,
    descs: Vec<Desc>,
}

impl PoolCollector {
    /// Fresh gauges holding `[idle, used, max]` connections.
    fn gauges(name: &str, [idle, used, max]: [u32; 3]) -> [IntGaugeVec; 2] {
        let pool = "pool_name";
        // Fixed, valid names and labels: creating these cannot fail.
        let count = IntGaugeVec::new(
            Opts::new("db_client_connections_usage", "The number of connections in each state."),
            &[pool, "state"],
        )
        .expect("valid gauge");
        count.with_label_values(&[name, "idle"]).set(i64::from(idle));
        count.with_label_values(&[name, "used"]).set(i64::from(used));
        let most = IntGaugeVec::new(
            Opts::new("db_client_connections_max", "The maximum number of open connections allowed."),
            &[pool],
        )
        .expect("valid gauge");
        most.with_label_values(&[name]).set(i64::from(max));
        [count, most]
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = self.database.pool.status();
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let (size, idle) = (count(status.size), count(status.available));
        let gauges =
            Self::gauges(&self.database.name, [idle.min(size), size.saturating_sub(idle), count(status.max_size)]);
        gauges.iter().flat_map(Collector::collect).chain(self.database.wait_time.collect()).collect()
    }
}
