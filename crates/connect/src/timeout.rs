//! The `grpc-timeout` header codec: 1 to 8 ASCII digits followed by a unit, `H` hours,
//! `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds or `n` nanoseconds (gRPC
//! over HTTP/2, PROTOCOL-HTTP2.md, "Timeout"). Connect's `connect-timeout-ms` becomes
//! one; platform's deadline propagation reads and writes them (`platform::deadline`
//! re-exports these).

use std::time::Duration;

use http::HeaderValue;

/// Request header carrying the deadline.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// Parses a `grpc-timeout` value.
///
/// # Errors
/// `None` for anything but 1–8 digits and one of the units `HMSmun`.
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?;
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Encodes `timeout` as a `grpc-timeout` value, in the finest unit whose count fits
/// in 8 digits (rounding down, so the server never waits longer than the client).
pub fn encode_timeout(timeout: Duration) -> HeaderValue {
    const LIMIT: u128 = 100_000_000;
    let value = if timeout.as_micros() < LIMIT {
        format!("{}u", timeout.as_micros())
    } else if timeout.as_millis() < LIMIT {
        format!("{}m", timeout.as_millis())
    } else if u128::from(timeout.as_secs()) < LIMIT {
        format!("{}S", timeout.as_secs())
    } else {
        format!("{}H", (timeout.as_secs() / 3600).min(99_999_999))
    };
    HeaderValue::from_str(&value).expect("digits and a unit letter are a valid header value")
}
