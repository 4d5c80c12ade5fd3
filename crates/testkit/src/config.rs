//! A config of one `server` section, for tests of how the shared server config parses.

use platform::config::ServerConfig;

/// A config of one `server` section, as both services' configs have, loaded with
/// `platform::config::load` in tests of how [`ServerConfig`] parses (port 0 by default).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ServerSection {
    /// The section under test.
    pub server: ServerConfig,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self { server: ServerConfig::on_port(0) }
    }
}
