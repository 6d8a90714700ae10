//! The audit trail's vocabulary: which API a call was, and how it ended.
//!
//! These live with the rules, below the ports and the metrics, so that the audit record
//! (`ports::AuditEvent`) and the metric labels can name them without importing the flows
//! that produce them.

use serde::{Deserialize, Serialize};

/// The API names written to the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Register,
    RegisterVerify,
    Login,
    LoginVerify,
    OtpResend,
    Me,
    TokenRefresh,
    Logout,
    LogoutAll,
    Sessions,
    DeviceEnrol,
    DeviceList,
    DeviceRevoke,
    DeviceChallenge,
    DeviceVerify,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Register => "register",
            Api::RegisterVerify => "register_verify",
            Api::Login => "login",
            Api::LoginVerify => "login_verify",
            Api::OtpResend => "otp_resend",
            Api::Me => "me",
            Api::TokenRefresh => "token_refresh",
            Api::Logout => "logout",
            Api::LogoutAll => "logout_all",
            Api::Sessions => "sessions",
            Api::DeviceEnrol => "device_enrol",
            Api::DeviceList => "device_list",
            Api::DeviceRevoke => "device_revoke",
            Api::DeviceChallenge => "device_challenge",
            Api::DeviceVerify => "device_verify",
        }
    }
}

/// How an audited call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// Did what was asked.
    Ok,
    /// Refused because of the request (bad input, wrong code, no account).
    Rejected,
    /// Refused by a cooldown or rate limit.
    Limited,
    /// Could not be served because of the service (a dependency down, a queue full).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Ok => "ok",
            AuditOutcome::Rejected => "rejected",
            AuditOutcome::Limited => "limited",
            AuditOutcome::Failed => "failed",
        }
    }
}
