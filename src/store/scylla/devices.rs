//! Devices: each user's devices are one document, `device_sets`, versioned; `device_ids` maps
//! a device id to its user.
//!
//! The per-user cap and the duplicate-key rule need "check, then write" to be atomic. A change
//! (enrolment, removal) reads the newest version *v*, decides on it, and claims version
//! *v + 1* with `INSERT … IF NOT EXISTS`. Of changes racing from *v*, one claims *v + 1*; the
//! others re-read at serial consistency and decide again on the winner's set, so the cap holds
//! however many nodes enrol at once. Removed devices stay in the document with their removal
//! time (the API lists them, and a removed device is told apart from an unknown one). Claiming
//! version *w* deletes version *w − 2*: a user's partition keeps two versions.
//!
//! The document is postcard-encoded [`Device`]s behind a format byte: it is only ever read and
//! replaced whole, never queried by field.

use async_trait::async_trait;
use otpd_actors::ports::{Device, DeviceStore, InsertDevice, StoreError};
use otpd_actors::rules::clock::Timestamp;
use otpd_actors::rules::ids::{DeviceId, UserId};
use uuid::Uuid;

use super::{ScyllaStore, StoreFailure, cql_ts};

const SET_V1: u8 = 1;
/// Changes to one user's devices that may race before one of them gives up.
const CLAIM_ROUNDS: usize = 8;

pub fn encode_set(devices: &[Device]) -> Result<Vec<u8>, String> {
    let mut out = vec![SET_V1];
    out.extend(postcard::to_stdvec(devices).map_err(|e| e.to_string())?);
    Ok(out)
}

pub fn decode_set(bytes: &[u8]) -> Result<Vec<Device>, String> {
    match bytes.split_first() {
        Some((&SET_V1, rest)) => postcard::from_bytes(rest).map_err(|e| e.to_string()),
        Some((v, _)) => Err(format!("device set format {v} is unknown")),
        None => Err("empty device set".into()),
    }
}

/// What a change decided on a set.
enum Change {
    /// Write this set as the next version.
    Write(Vec<Device>),
    /// Nothing to write.
    Done,
}

impl ScyllaStore {
    /// The newest version of the user's set (0 and empty when none).
    pub(super) async fn device_set(&self, user: UserId, serial: bool) -> Result<(i32, Vec<Device>), StoreFailure> {
        const WHAT: &str = "read devices";
        let statement = if serial { &self.cql.device_set_serial } else { &self.cql.device_set };
        let rows: Vec<(i32, Vec<u8>)> = self.rows(statement, (user.0,), WHAT, 1).await?;
        match rows.into_iter().max_by_key(|(v, _)| *v) {
            None => Ok((0, Vec::new())),
            Some((v, bytes)) => Ok((v, decode_set(&bytes).map_err(|e| StoreFailure::decode(WHAT, &e))?)),
        }
    }

    /// Claims `version` of the user's set; after a win, deletes the version before the
    /// previous one (readers only ever want the newest).
    async fn claim_set(&self, user: UserId, version: i32, set: &[Device], at: Timestamp) -> Result<bool, StoreFailure> {
        const WHAT: &str = "claim device set";
        let bytes = encode_set(set).map_err(|e| StoreFailure::decode(WHAT, &e))?;
        if !self.claim(&self.cql.claim_device_set, (user.0, version, bytes, cql_ts(at)), WHAT).await?.applied {
            return Ok(false);
        }
        if version >= 3
            && let Err(e) = self.run(&self.cql.delete_device_set, (user.0, version - 2), "prune devices").await
        {
            tracing::warn!(error = %e, "could not delete an old device set version (harmless)");
        }
        Ok(true)
    }

    /// Reads, decides with `decide`, and claims the next version, until a claim wins.
    async fn change_devices<T>(
        &self,
        user: UserId,
        now: Timestamp,
        mut decide: impl FnMut(&[Device]) -> (Change, T),
    ) -> Result<T, StoreError> {
        for round in 0..CLAIM_ROUNDS {
            let (version, devices) = self.device_set(user, round > 0).await?;
            let (change, answer) = decide(&devices);
            let Change::Write(next) = change else { return Ok(answer) };
            match self.claim_set(user, version + 1, &next, now).await {
                Ok(true) => return Ok(answer),
                Ok(false) => {}
                // Applied or not, the serial re-read of the next round tells.
                Err(f) if f.uncertain => {}
                Err(f) => return Err(f.into()),
            }
        }
        Err(contended(user))
    }
}

fn contended(user: UserId) -> StoreError {
    StoreError::Unavailable(format!("scylla: devices of user {} changed by {CLAIM_ROUNDS} others at once", user.0))
}

#[async_trait]
impl DeviceStore for ScyllaStore {
    async fn insert_device(&self, device: &Device, max_active: usize) -> Result<InsertDevice, StoreError> {
        let mut mapped = false;
        for round in 0..CLAIM_ROUNDS {
            let (version, devices) = self.device_set(device.user_id, round > 0).await?;
            if devices.iter().any(|d| d.id == device.id) {
                return Ok(InsertDevice::Inserted);
            }
            let active: Vec<&Device> = devices.iter().filter(|d| d.is_active()).collect();
            if let Some(same) = active.iter().find(|d| d.key == device.key) {
                return Ok(InsertDevice::DuplicateKey(same.id));
            }
            if active.len() >= max_active {
                return Ok(InsertDevice::LimitReached { max: max_active });
            }
            if !mapped {
                // Before the claim, so that a device in a set can always be found by its id.
                self.run(&self.cql.insert_device_id, (device.id.0, device.user_id.0), "write device id").await?;
                mapped = true;
            }
            let mut next = devices.clone();
            next.push(device.clone());
            match self.claim_set(device.user_id, version + 1, &next, device.created_at).await {
                Ok(true) => return Ok(InsertDevice::Inserted),
                Ok(false) => {}
                // The next round's serial re-read finds the device if the claim applied.
                Err(f) if f.uncertain => {}
                Err(f) => return Err(f.into()),
            }
        }
        Err(contended(device.user_id))
    }

    async fn device(&self, id: DeviceId) -> Result<Option<Device>, StoreError> {
        let rows: Vec<(Uuid,)> = self.rows(&self.cql.device_user, (id.0,), "read device id", 1).await?;
        let Some((user,)) = rows.into_iter().next() else { return Ok(None) };
        let (_, devices) = self.device_set(UserId(user), false).await?;
        Ok(devices.into_iter().find(|d| d.id == id))
    }

    async fn devices_of_user(&self, user: UserId) -> Result<Vec<Device>, StoreError> {
        let (_, mut devices) = self.device_set(user, false).await?;
        devices.sort_by_key(|d| d.id);
        Ok(devices)
    }

    async fn revoke_device(&self, user: UserId, id: DeviceId, now: Timestamp) -> Result<Option<Device>, StoreError> {
        self.change_devices(user, now, |devices| match devices.iter().position(|d| d.id == id) {
            None => (Change::Done, None),
            Some(i) if devices[i].revoked_at.is_some() => (Change::Done, Some(devices[i].clone())),
            Some(i) => {
                let mut next = devices.to_vec();
                next[i].revoked_at = Some(now);
                let revoked = next[i].clone();
                (Change::Write(next), Some(revoked))
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use otpd_actors::ports::Platform;
    use otpd_actors::rules::device_key::{DeviceKey, KeyAlgorithm};

    use super::*;

    #[test]
    fn device_sets_round_trip_and_unknown_formats_are_refused() {
        let d = Device {
            id: DeviceId(Uuid::now_v7()),
            user_id: UserId(Uuid::now_v7()),
            name: "Ada's iPhone".into(),
            platform: Platform::Ios,
            key: DeviceKey { algorithm: KeyAlgorithm::Es256, spki_der: vec![4; 91] },
            created_at: Timestamp::from_millis(1_700_000_000_000),
            revoked_at: Some(Timestamp::from_millis(1_700_000_005_000)),
        };
        let bytes = encode_set(std::slice::from_ref(&d)).unwrap();
        assert_eq!(bytes[0], SET_V1);
        assert_eq!(decode_set(&bytes).unwrap(), vec![d]);
        assert_eq!(decode_set(&encode_set(&[]).unwrap()).unwrap(), vec![]);
        assert!(decode_set(&[9, 0]).unwrap_err().contains("format 9"));
        assert!(decode_set(&[]).is_err());
    }
}
