//! Delivery adapters for the engine's notifier port.

pub mod outbox;

use otpd_actors::challenge::Purpose;
use otpd_actors::clock::Timestamp;
use otpd_actors::ports::OutboundMessage;

/// The text a person receives.
pub fn render(message: &OutboundMessage, app_name: &str, now: Timestamp) -> String {
    let minutes = now.until(message.expires_at).as_secs().div_ceil(60).max(1);
    let what = match message.purpose {
        Purpose::Register => "verification",
        Purpose::Login => "login",
        // Device-login nonces are returned to the app, never sent; kept total for safety.
        Purpose::DeviceLogin => "login",
    };
    format!(
        "Your {app_name} {what} code is {}. It expires in {minutes} minute{}. Never share it.",
        message.code.expose(),
        if minutes == 1 { "" } else { "s" }
    )
}
