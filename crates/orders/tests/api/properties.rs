//! Property tests (fuzzing that stays): every orders parse function takes any input without panicking, its errors quote the input only briefly, and page tokens verify only as issued.

use orders::{
    order::{Cents, Currency, IdempotencyKey, OrderId},
    page_token::PageTokens,
};
use platform::email::Email;
use proptest::prelude::*;
use tonic::Status;

/// The most of a status message a bad input may take: far below the 8 KiB (and 16 KiB)
/// metadata limits clients apply to `grpc-message`.
const SHORT: usize = 512;

fn short(error: impl Into<Status>) -> Result<(), TestCaseError> {
    let status = error.into();
    prop_assert!(status.message().len() < SHORT, "{} bytes", status.message().len());
    Ok(())
}

proptest! {
    #[test]
    fn currency_parse_takes_any_text_briefly_quoted(input in any::<String>(), padding in 0_usize..4096) {
        let input = format!("{input}{}", "X".repeat(padding));
        match Currency::parse(&input) {
            Ok(currency) => prop_assert_eq!(Currency::parse(currency.code()).expect("a code parses"), currency),
            Err(error) => short(error)?,
        }
    }

    #[test]
    fn cents_parse_takes_any_amount(value in any::<i64>()) {
        match Cents::parse(value) {
            Ok(cents) => prop_assert_eq!(cents.get(), value),
            Err(error) => short(error)?,
        }
    }

    #[test]
    fn idempotency_key_parse_takes_any_text_briefly_quoted(input in any::<String>()) {
        if let Err(error) = IdempotencyKey::parse(&input) {
            short(error)?;
        }
    }

    #[test]
    fn order_id_parse_takes_any_text_briefly_quoted(input in any::<String>(), padding in 0_usize..4096) {
        let input = format!("{input}{}", "x".repeat(padding));
        if let Err(error) = OrderId::parse_field(&input, "id") {
            short(error)?;
        }
    }

    #[test]
    fn page_token_verify_takes_any_text_and_refuses_what_was_not_issued(token in any::<String>()) {
        let tokens = PageTokens::new("secret");
        if let Err(error) = tokens.verify(&token, None) {
            short(error)?;
        }
    }

    #[test]
    fn a_page_token_verifies_only_for_its_own_filter_and_key(id in any::<[u8; 16]>(), user in "[a-z]{1,8}") {
        let tokens = PageTokens::new("secret");
        let after = OrderId::from_bytes(id);
        let customer = Email::parse(&format!("{user}@example.com")).expect("a valid address");
        let token = tokens.issue(after, Some(&customer));
        prop_assert_eq!(tokens.verify(&token, Some(&customer)).expect("issued here"), after);
        prop_assert!(tokens.verify(&token, None).is_err());
        prop_assert!(PageTokens::new("other").verify(&token, Some(&customer)).is_err());
    }
}
