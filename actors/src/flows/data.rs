//! An account's data: what it holds (export) and its erasure.
//!
//! ```text
//! export (Bearer):            authenticate → account, sessions, devices, audit events → audit
//! erase  (Bearer, fresh code login): authenticate → freshness → store erase → audit (no address)
//! admin export / erase (ops listener, by account id): the same, audited as the admin's call
//! ```
//!
//! Erasure deletes the account with its sessions, devices and passkeys and destroys the keys of the
//! audit trail's personal fields about it (`ports::UserStore::erase_user`): the trail keeps
//! its events, without a readable client address or user agent. The erasure's own event is
//! written without the caller's address and user agent, so nothing personal is sealed again
//! under the erased account. Its tokens stop working at once: every Bearer call reads the
//! session, and the sessions are gone.

use crate::flows::devices::Bearer;
use crate::flows::engine::{Engine, RequestContext, Trail, unavailable};
use crate::flows::error::EngineError;
use crate::ports::{AuditEvent, Device, Erased, Passkey, Session, User};
use crate::rules::audit::{Api, Step};
use crate::rules::ids::UserId;

/// Audit events an export returns at most (newest first).
pub const EXPORT_EVENTS: usize = 10_000;

/// Everything the store holds for one account.
#[derive(Clone, Debug)]
pub struct AccountExport {
    pub user: User,
    /// Every session, active or ended (until retention removes ended ones).
    pub sessions: Vec<Session>,
    /// Every device, active or revoked (until retention removes revoked ones).
    pub devices: Vec<Device>,
    /// Every passkey (a deleted one is gone at once).
    pub passkeys: Vec<Passkey>,
    /// The audit events under the account's identifier, newest first, at most
    /// [`EXPORT_EVENTS`].
    pub events: Vec<AuditEvent>,
    /// False if there were more events than [`EXPORT_EVENTS`].
    pub events_complete: bool,
}

impl Engine {
    /// `GET /v1/me/export`: what the store holds for the caller's account.
    pub async fn export_account(&self, ctx: &RequestContext, bearer: Bearer) -> Result<AccountExport, EngineError> {
        let mut trail = Trail::new(Api::AccountExport, None);
        let result = async {
            let (user, _) = self.authenticate(&mut trail, bearer.user, bearer.session).await?;
            self.collect_export(&mut trail, user).await
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `DELETE /v1/me`: erases the caller's account; needs a login by code within
    /// `devices.enrol_max_auth_age`, like enrolling a device.
    pub async fn erase_account(&self, ctx: &RequestContext, bearer: Bearer) -> Result<Erased, EngineError> {
        let mut trail = Trail::new(Api::AccountErase, None);
        let result = async {
            let now = self.now();
            let (user, session) = self.authenticate(&mut trail, bearer.user, bearer.session).await?;
            trail.step = Step::Freshness;
            let max_age = self.inner.config.devices.enrol_max_auth_age;
            if !bearer.fresh_code_login(&session, now, max_age) {
                return Err(EngineError::FreshLoginRequired { max_age });
            }
            self.erase(&mut trail, user.id).await
        }
        .await;
        self.finish(&without_client(ctx), trail, result).await
    }

    /// The ops listener's export of any account (a request that reached the operator by
    /// another channel).
    pub async fn admin_export_account(&self, ctx: &RequestContext, id: UserId) -> Result<AccountExport, EngineError> {
        let mut trail = Trail::new(Api::AdminAccountExport, None);
        let result = async {
            let user = self.admin_account(&mut trail, id).await?;
            self.collect_export(&mut trail, user).await
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// The ops listener's erasure of any account. No freshness: the operator's token is the
    /// authority, and the call is audited.
    pub async fn admin_erase_account(&self, ctx: &RequestContext, id: UserId) -> Result<Erased, EngineError> {
        let mut trail = Trail::new(Api::AdminAccountErase, None);
        let result = async {
            let user = self.admin_account(&mut trail, id).await?;
            self.erase(&mut trail, user.id).await
        }
        .await;
        self.finish(&without_client(ctx), trail, result).await
    }

    /// The account an operator named, by id.
    async fn admin_account(&self, trail: &mut Trail, id: UserId) -> Result<User, EngineError> {
        trail.user = Some(id);
        trail.step = Step::Account;
        let user = self.inner.ports.users.user_by_id(id).await.map_err(unavailable)?;
        let user = user.ok_or(EngineError::AccountNotFound)?;
        trail.ident = Some(user.ident_hash);
        Ok(user)
    }

    async fn collect_export(&self, trail: &mut Trail, user: User) -> Result<AccountExport, EngineError> {
        let ports = &self.inner.ports;
        trail.step = Step::List;
        let sessions = ports.sessions.sessions_of_user(user.id).await.map_err(unavailable)?;
        let devices = ports.devices.devices_of_user(user.id).await.map_err(unavailable)?;
        let passkeys = ports.passkeys.passkeys_of_user(user.id).await.map_err(unavailable)?;
        let events = ports.audit.by_identifier(&user.ident_hash, EXPORT_EVENTS).await.map_err(unavailable)?;
        trail.note = "account exported";
        trail.step = Step::Done;
        Ok(AccountExport { events_complete: events.len() < EXPORT_EVENTS, user, sessions, devices, passkeys, events })
    }

    async fn erase(&self, trail: &mut Trail, id: UserId) -> Result<Erased, EngineError> {
        trail.step = Step::Store;
        // Passkeys first: an erasure that fails part-way is asked again, and the account goes last.
        let passkeys = self.inner.ports.passkeys.delete_user_passkeys(id).await.map_err(unavailable)?;
        let erased = self.inner.ports.users.erase_user(id).await.map_err(unavailable)?;
        let erased = Erased { passkeys, ..erased.ok_or(EngineError::SessionInvalid)? };
        trail.note = "account erased";
        trail.step = Step::Done;
        Ok(erased)
    }
}

/// The context an erasure's own event is written with: without the caller's address and user
/// agent, which would be sealed again under a new key of the erased account.
fn without_client(ctx: &RequestContext) -> RequestContext {
    RequestContext { trace_id: ctx.trace_id.clone(), client_ip: None, user_agent: None }
}
