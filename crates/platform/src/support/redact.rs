//! Addresses fit for logs, spans and error messages: the userinfo (`user:password@`) of a URL never leaves this module.

use std::fmt;

use http::Uri;

/// `uri` as it may be logged: with any `user:password@` replaced by `***@`, and the
/// rest (scheme, host, port, path) as written. Use it at every log site, span field
/// and error message that shows a configured address.
pub fn uri(uri: &Uri) -> impl fmt::Display + '_ {
    Redacted(uri.to_string())
}

/// As [`uri`], for an address held as text that may not parse as a URI: everything
/// between `://` and the last `@` of the authority is replaced by `***`.
pub fn address(address: &str) -> impl fmt::Display + '_ {
    Redacted(address.to_owned())
}

struct Redacted(String);

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.as_str();
        let (scheme, rest) = match text.find("://") {
            Some(at) => text.split_at(at + 3),
            None => ("", text),
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => write!(f, "{scheme}***{}", &rest[at..]),
            None => f.write_str(text),
        }
    }
}

/// Log lines written while a test runs, to check what reaches the logs.
#[cfg(test)]
pub(crate) mod captured {
    use std::sync::{Arc, Mutex};

    use tracing::subscriber::DefaultGuard;

    /// Everything this crate logged on this thread (at any level) since [`logs`], as text.
    #[derive(Clone, Default)]
    pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Logs {
        /// The text so far.
        pub(crate) fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("not poisoned")).into_owned()
        }
    }

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Captures this crate's logs on this thread until the guard drops (a
    /// current-thread runtime's tasks run on it too). Only `platform`'s own events:
    /// hyper-util's TRACE lines show a request URI's authority as given.
    pub(crate) fn logs() -> (Logs, DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("platform=trace"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        // Tests on other threads install and drop their own subscribers concurrently, and a
        // callsite whose interest was cached while none of them wanted it would skip ours:
        // recompute every callsite's interest now that this subscriber is in place.
        tracing::callsite::rebuild_interest_cache();
        (logs, guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_userinfo_of_a_uri_is_replaced_and_the_rest_kept() {
        let with_password: Uri = "http://admin:s3cret@consul.internal:8500/v1".parse().expect("uri");
        assert_eq!(uri(&with_password).to_string(), "http://***@consul.internal:8500/v1");
        let with_user: Uri = "http://token@10.0.0.1:50051".parse().expect("uri");
        assert_eq!(uri(&with_user).to_string(), "http://***@10.0.0.1:50051/");
    }

    #[test]
    fn an_address_without_userinfo_is_unchanged() {
        let plain: Uri = "http://127.0.0.1:50051".parse().expect("uri");
        assert_eq!(uri(&plain).to_string(), "http://127.0.0.1:50051/");
        assert_eq!(address("http://h:1/a@b").to_string(), "http://h:1/a@b", "an @ in the path is not userinfo");
    }

    #[test]
    fn text_that_is_not_a_uri_is_redacted_too() {
        assert_eq!(address("user:pa ss@host:1").to_string(), "***@host:1");
        assert_eq!(address("http://u:p@@host").to_string(), "http://***@host");
    }
}
