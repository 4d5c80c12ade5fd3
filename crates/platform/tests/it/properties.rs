//! Property tests (fuzzing that stays): request decoding and every parse function of `platform` take any input without panicking, and what they accept round-trips.

use std::time::Duration;

use api::{orders::v1 as orders, users::v1 as users};
use platform::{
    config::DatabaseUrl,
    deadline::{encode_timeout, parse_timeout},
    email::Email,
    id::Id,
};
use proptest::prelude::*;
use prost::Message;
use testkit::ServerSection;

/// Decodes `bytes` as `M`; a panic fails the property, an error is a fine answer.
fn decodes<M: Message + Default>(bytes: &[u8]) {
    let _ = M::decode(bytes);
}

proptest! {
    #[test]
    fn every_request_message_decodes_any_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decodes::<users::CreateUserRequest>(&bytes);
        decodes::<users::GetUserRequest>(&bytes);
        decodes::<users::GetUserByEmailRequest>(&bytes);
        decodes::<orders::CreateOrderRequest>(&bytes);
        decodes::<orders::GetOrderRequest>(&bytes);
        decodes::<orders::ListOrdersRequest>(&bytes);
        decodes::<orders::WatchOrderRequest>(&bytes);
        decodes::<orders::ShipOrderRequest>(&bytes);
        decodes::<orders::DeliverOrderRequest>(&bytes);
    }

    #[test]
    fn email_parse_takes_any_text_and_what_it_accepts_round_trips(input in any::<String>()) {
        if let Ok(email) = Email::parse(&input) {
            let again = Email::parse(email.as_str()).expect("an accepted address parses again");
            prop_assert_eq!(again, email);
        }
    }

    #[test]
    fn email_parse_errors_quote_at_most_a_short_prefix(input in "[a-z@.]{0,2048}") {
        if let Err(message) = Email::parse(&input) {
            prop_assert!(message.len() < 512, "{} bytes", message.len());
        }
    }

    #[test]
    fn id_parse_takes_any_text_and_what_it_accepts_round_trips(input in any::<String>()) {
        if let Ok(id) = Id::<()>::parse(&input) {
            prop_assert_eq!(Id::<()>::parse(&id.to_string()).expect("parses again"), id);
        }
    }

    #[test]
    fn id_parse_accepts_every_uuid_text(bytes in any::<[u8; 16]>()) {
        let text = uuid::Uuid::from_bytes(bytes).to_string();
        let id = Id::<()>::parse(&text).expect("a UUID is an id");
        prop_assert_eq!(id.as_bytes(), &bytes);
    }

    #[test]
    fn grpc_timeout_parse_takes_any_header_value(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
        if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
            let _ = parse_timeout(&value);
        }
    }

    #[test]
    fn an_encoded_grpc_timeout_parses_back_to_at_most_itself(nanos in 0_u64..(100 * 3600 * 1_000_000_000)) {
        let timeout = Duration::from_nanos(nanos);
        let parsed = parse_timeout(&encode_timeout(timeout)).expect("what we encode parses");
        prop_assert!(parsed <= timeout);
    }

    #[test]
    fn database_url_parse_takes_any_text(input in any::<String>()) {
        let _ = input.parse::<DatabaseUrl>();
    }
}

proptest! {
    // Each case loads a config in a figment jail: fewer cases keep it quick.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    // figment::Jail's closures return figment::Error, which is large; that is its API.
    #[allow(clippy::result_large_err)]
    fn a_config_duration_takes_any_text_and_a_bad_one_names_its_key(text in "[ -~]{0,24}") {
        let mut outcome = Ok(());
        figment::Jail::expect_with(|jail| {
            jail.set_env("SAMPLE_SERVER__IDLE_TIMEOUT", format!("\"{}\"", text.replace(['"', '\\'], "")));
            if let Err(error) = platform::config::load::<ServerSection>("SAMPLE_", None) {
                let message = error.to_string();
                if !message.contains("server.idle_timeout") {
                    outcome = Err(message);
                }
            }
            Ok(())
        });
        prop_assert!(outcome.is_ok(), "{:?}", outcome);
    }
}
