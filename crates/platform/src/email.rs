//! `Email`: the one email rule both services apply.

use std::fmt;

/// An email address, parsed: a valid RFC 5322 addr-spec (via the `email_address`
/// crate), at most 254 characters (RFC 5321 §4.5.3.1.3), trimmed and lowercased so
/// that equal addresses compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Parses `input`.
    ///
    /// # Errors
    /// A sentence saying what is wrong (empty, too long, or not an address).
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if trimmed.len() > 254 {
            return Err("must be at most 254 characters".to_owned());
        }
        let lowered = trimmed.to_lowercase();
        email_address::EmailAddress::parse_with_options(
            &lowered,
            email_address::Options::default().without_display_text(),
        )
        .map(|_| Self(lowered))
        .map_err(|e| format!("is not an email address: {e}"))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Email;

    #[test]
    fn an_email_is_trimmed_and_lowercased() {
        assert_eq!(Email::parse("  Ada@Example.COM ").map(|e| e.to_string()), Ok("ada@example.com".to_owned()));
    }

    #[test]
    fn malformed_or_empty_emails_are_rejected() {
        for bad in ["", "   ", "no-at-sign", "a@", "@b.com", "Ada <ada@example.com>"] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
