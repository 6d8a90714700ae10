//! Sessions after login: refresh-token rotation with reuse detection, logout, listing.
//!
//! Every login (OTP or device) opens a session holding the keyed digest of its refresh token
//! (`ort1.<session>.<secret>`, see [`crate::rules::refresh`]). A refresh rotates it:
//!
//! ```text
//!                 present current token: new token issued, old digest retired
//!              ┌───────────────────────────────────────────────┐
//!              ▼                                               │
//!   login ──► Active(generation g) ─────────────────────────────┘
//!              │  present a retired token (reuse: it was stolen, or a client raced itself)
//!              ├──────────────────────────────► Revoked(refresh_token_reuse)
//!              │  POST /v1/logout, /v1/logout/all, device removed
//!              ├──────────────────────────────► Revoked(logout | logout_all | device_revoked | passkey_deleted)
//!              │  session_ttl elapsed (absolute; refreshing does not extend it)
//!              └──────────────────────────────► Expired
//! ```
//!
//! * A token that is neither current nor among the last
//!   [`RETIRED_REFRESH_DIGESTS`](crate::ports::RETIRED_REFRESH_DIGESTS) retired ones is simply
//!   invalid (`invalid_refresh_token`) and changes nothing.
//! * Rotation is one atomic compare-and-swap in the store. Two concurrent refreshes with the
//!   same token: one wins and gets new tokens; the other finds the token already retired and
//!   is treated as **reuse**, which revokes the session (so the winner's new tokens stop
//!   working too). We do not try to tell a benign race from a theft: the server cannot hand
//!   the loser the winner's token (it only stores digests), and a grace window would let a
//!   thief who refreshes first keep the session. Clients must serialise their refreshes.
//! * A revoked or expired session's access tokens are refused by every authenticated endpoint
//!   (each call reads the session), within their remaining lifetime.

use crate::flows::engine::{Engine, Grant, RequestContext, Trail, unavailable};

use crate::flows::error::EngineError;
use crate::metrics::RefreshOutcome;
use crate::ports::{RevokeReason, Rotation, Session, User};
use crate::rules::audit::{Api, Step};
use crate::rules::ids::{SessionId, UserId};
use crate::rules::refresh::RefreshToken;

impl Engine {
    /// `POST /v1/token/refresh`: a new access and refresh token for the session; the
    /// presented refresh token stops working.
    pub async fn refresh(&self, ctx: &RequestContext, refresh_token: &str) -> Result<Grant, EngineError> {
        let mut trail = Trail::new(Api::TokenRefresh, None);
        let result = self.refresh_flow(&mut trail, refresh_token).await;
        self.count_refresh(&result);
        self.finish(ctx, trail, result).await
    }

    async fn refresh_flow(&self, trail: &mut Trail, refresh_token: &str) -> Result<Grant, EngineError> {
        let now = self.now();
        trail.step = Step::Parse;
        let presented = RefreshToken::parse(refresh_token).map_err(|_| EngineError::InvalidRefreshToken)?;
        trail.step = Step::Rotate;
        let keys = &self.inner.keys;
        let next = RefreshToken::generate(presented.session);
        let sessions = &self.inner.ports.sessions;
        let rotation = sessions
            .rotate_refresh(presented.session, &presented.digest(keys), &next.digest(keys), now)
            .await
            .map_err(unavailable)?;
        let session = match rotation {
            Rotation::Rotated(session) => *session,
            Rotation::Reused(session) => {
                trail.user = Some(session.user_id);
                // Look the account up only to file the event under its identifier.
                if let Ok(Some(user)) = self.inner.ports.users.user_by_id(session.user_id).await {
                    trail.ident = Some(user.ident_hash);
                }
                return Err(EngineError::RefreshTokenReused);
            }
            Rotation::Mismatch | Rotation::Inactive => return Err(EngineError::InvalidRefreshToken),
        };
        trail.user = Some(session.user_id);
        trail.step = Step::Account;
        let user = self.inner.ports.users.user_by_id(session.user_id).await.map_err(unavailable)?;
        let user = user.filter(|u| u.verified).ok_or(EngineError::InvalidRefreshToken)?;
        trail.ident = Some(user.ident_hash);
        trail.note = "refresh token rotated";
        trail.step = Step::Done;
        let login_at = session.created_at;
        Ok(Grant { user, session, refresh_token: next.encode(), login_at })
    }

    /// `POST /v1/logout`: revokes the session of the presented access token.
    pub async fn logout(&self, ctx: &RequestContext, user: UserId, session: SessionId) -> Result<(), EngineError> {
        let mut trail = Trail::new(Api::Logout, None);
        let result = async {
            let now = self.now();
            self.authenticate(&mut trail, user, session).await?;
            trail.step = Step::Revoke;
            let sessions = &self.inner.ports.sessions;
            let revoked = sessions.revoke_session(session, RevokeReason::Logout, now).await.map_err(unavailable)?;
            self.inner.metrics.sessions_revoked(RevokeReason::Logout, usize::from(revoked));
            trail.note = "session revoked";
            trail.step = Step::Done;
            Ok(())
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `POST /v1/logout/all`: revokes every session of the account; returns how many.
    pub async fn logout_all(
        &self,
        ctx: &RequestContext,
        user: UserId,
        session: SessionId,
    ) -> Result<usize, EngineError> {
        let mut trail = Trail::new(Api::LogoutAll, None);
        let result = async {
            let now = self.now();
            self.authenticate(&mut trail, user, session).await?;
            trail.step = Step::Revoke;
            let sessions = &self.inner.ports.sessions;
            let n =
                sessions.revoke_user_sessions(user, None, RevokeReason::LogoutAll, now).await.map_err(unavailable)?;
            self.inner.metrics.sessions_revoked(RevokeReason::LogoutAll, n);
            trail.note = "every session revoked";
            trail.step = Step::Done;
            Ok(n)
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// `GET /v1/sessions`: the account's active sessions, newest first.
    pub async fn active_sessions(
        &self,
        ctx: &RequestContext,
        user: UserId,
        session: SessionId,
    ) -> Result<Vec<Session>, EngineError> {
        let mut trail = Trail::new(Api::Sessions, None);
        let result = async {
            let now = self.now();
            self.authenticate(&mut trail, user, session).await?;
            trail.step = Step::List;
            let all = self.inner.ports.sessions.sessions_of_user(user).await.map_err(unavailable)?;
            let mut active: Vec<Session> = all.into_iter().filter(|s| s.is_active(now)).collect();
            active.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
            trail.step = Step::Done;
            Ok(active)
        }
        .await;
        self.finish(ctx, trail, result).await
    }

    /// Counts a refresh-token presentation (and the session a reused token revoked).
    fn count_refresh(&self, result: &Result<Grant, EngineError>) {
        let outcome = match result {
            Ok(_) => RefreshOutcome::Ok,
            Err(EngineError::RefreshTokenReused) => {
                self.inner.metrics.sessions_revoked(RevokeReason::RefreshTokenReuse, 1);
                RefreshOutcome::Reused
            }
            Err(EngineError::InvalidRefreshToken) => RefreshOutcome::Invalid,
            Err(_) => return,
        };
        self.inner.metrics.refreshed(outcome);
    }

    /// The account and session behind a signature-checked access token, if the session is
    /// still active. Every authenticated endpoint starts here.
    pub(crate) async fn authenticate(
        &self,
        trail: &mut Trail,
        user_id: UserId,
        session_id: SessionId,
    ) -> Result<(User, Session), EngineError> {
        let now = self.now();
        trail.user = Some(user_id);
        trail.step = Step::Session;
        let session = self.inner.ports.sessions.session(session_id).await.map_err(unavailable)?;
        let session =
            session.filter(|s| s.user_id == user_id && s.is_active(now)).ok_or(EngineError::SessionInvalid)?;
        trail.step = Step::Account;
        let user = self.inner.ports.users.user_by_id(user_id).await.map_err(unavailable)?;
        let user = user.ok_or(EngineError::SessionInvalid)?;
        trail.ident = Some(user.ident_hash);
        Ok((user, session))
    }
}
