//! Page tokens for ListOrders: an opaque, signed cursor that a client can hand back but not forge.
//!
//! A token is `base64url(version || last order id || tag)`, where the tag is the first
//! 16 bytes of HMAC-SHA256 (RFC 2104) over the version, the id and the filter. Changing
//! any byte, or presenting the token with another filter, fails verification.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use platform::email::Email;
use sha2::Sha256;

use crate::order::{Error, OrderId};

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
const TOKEN_LEN: usize = 1 + 16 + TAG_LEN;

/// Issues and verifies page tokens with one secret key.
#[derive(Clone)]
pub struct PageTokens {
    key: Vec<u8>,
}

impl PageTokens {
    /// Tokens signed with `secret`; an empty secret draws a random 32-byte key, which
    /// only this process will accept.
    pub fn new(secret: &str) -> Self {
        let key = if secret.is_empty() { rand::random::<[u8; 32]>().to_vec() } else { secret.as_bytes().to_vec() };
        Self { key }
    }

    /// A token for the page after the order `after`, under filter `customer`.
    pub fn issue(&self, after: OrderId, customer: Option<&Email>) -> String {
        let mut token = Vec::with_capacity(TOKEN_LEN);
        token.push(VERSION);
        token.extend_from_slice(after.as_bytes());
        let tag = self.tag(&token, customer);
        token.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(token)
    }

    /// The order id `token` continues after, if this key issued it under filter `customer`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `page_token`.
    pub fn verify(&self, token: &str, customer: Option<&Email>) -> Result<OrderId, Error> {
        let invalid = || Error::invalid("page_token", "is not a token this server issued for this filter");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        if bytes.len() != TOKEN_LEN || bytes[0] != VERSION {
            return Err(invalid());
        }
        let (body, tag) = bytes.split_at(1 + 16);
        self.mac(body, customer).verify_truncated_left(tag).map_err(|_| invalid())?;
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[1..]);
        Ok(OrderId::from_bytes(id))
    }

    fn tag(&self, body: &[u8], customer: Option<&Email>) -> [u8; TAG_LEN] {
        let full = self.mac(body, customer).finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    fn mac(&self, body: &[u8], customer: Option<&Email>) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC accepts keys of any length");
        mac.update(body);
        // The filter, unambiguously: a marker byte, then the email if any.
        match customer {
            Some(email) => {
                mac.update(&[1]);
                mac.update(email.as_str().as_bytes());
            }
            None => mac.update(&[0]),
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(s: &str) -> Email {
        Email::parse(s).expect("valid")
    }

    #[test]
    fn a_token_verifies_under_the_filter_it_was_issued_for() {
        let tokens = PageTokens::new("secret");
        let id = OrderId::generate();
        let alice = email("alice@example.com");
        assert_eq!(tokens.verify(&tokens.issue(id, None), None).ok(), Some(id));
        assert_eq!(tokens.verify(&tokens.issue(id, Some(&alice)), Some(&alice)).ok(), Some(id));
    }

    #[test]
    fn a_token_for_another_filter_is_refused() {
        let tokens = PageTokens::new("secret");
        let token = tokens.issue(OrderId::generate(), Some(&email("alice@example.com")));
        assert!(tokens.verify(&token, Some(&email("bob@example.com"))).is_err());
        assert!(tokens.verify(&token, None).is_err());
    }

    #[test]
    fn every_altered_byte_is_detected() {
        let tokens = PageTokens::new("secret");
        let token = tokens.issue(OrderId::generate(), None);
        let bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
        for i in 0..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 0x01;
            let result = tokens.verify(&URL_SAFE_NO_PAD.encode(altered), None);
            assert!(matches!(result, Err(Error::InvalidArgument(ref f)) if f.fields() == ["page_token"]), "byte {i}");
        }
        for junk in ["", "!!!", "AAAA"] {
            assert!(tokens.verify(junk, None).is_err());
        }
    }

    #[test]
    fn another_key_refuses_the_token() {
        let token = PageTokens::new("one").issue(OrderId::generate(), None);
        assert!(PageTokens::new("two").verify(&token, None).is_err());
    }
}
