//! Refresh tokens (`RefreshToken::parse`): never a panic, and a token that parses is exactly
//! the encoding of what it parsed to (one spelling per token).

#![no_main]

use libfuzzer_sys::fuzz_target;
use otpd_actors::rules::refresh::RefreshToken;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(token) = RefreshToken::parse(text) {
        assert_eq!(token.encode(), text);
    }
});
