//! Test-only fault injection, compiled with the `test-hooks` feature only
//! (enabled by the integration tests, never in a release build).
//!
//! A PUBLISH to `$roost-test/panic/connection` panics the publisher's
//! connection actor; a delivery of a message on `$roost-test/panic/session`
//! panics the receiving session actor. Tests use them to show that a crash
//! is contained to one client.

pub const PANIC_CONNECTION_TOPIC: &str = "$roost-test/panic/connection";
pub const PANIC_SESSION_TOPIC: &str = "$roost-test/panic/session";

pub fn maybe_panic_connection(topic: &str) {
    if topic == PANIC_CONNECTION_TOPIC {
        panic!("test hook: connection actor panic");
    }
}

pub fn maybe_panic_session(topic: &str) {
    if topic == PANIC_SESSION_TOPIC {
        panic!("test hook: session actor panic");
    }
}
