//! Who owns what: identifiers fall into [`PARTITIONS`] partitions, and each partition is
//! owned by the live member with the highest rendezvous weight for it.
//!
//! Rendezvous (highest-random-weight) hashing needs no coordination: every node that sees
//! the same member names computes the same owners. When a member joins, the only partitions
//! that move are those whose new highest weight is the joiner's; when one leaves, only its
//! own partitions move, each to the member with the next weight. Nothing else changes hands.
//!
//! Partitions (rather than hashing each identifier over the members) make a membership
//! change cost `PARTITIONS × members` hashes once, and a request one array read.

use crate::rules::keys::IdentHash;

/// Number of partitions. Fixed: every node of a cluster must use the same number.
pub const PARTITIONS: usize = 1024;

/// The partition of an identifier (or device subject): from bytes the shard index does not
/// use, so the partitions a node owns spread over all of its local shards.
pub fn partition_of(subject: &IdentHash) -> usize {
    usize::from(u16::from_le_bytes([subject.0[0], subject.0[1]])) % PARTITIONS
}

/// The weight of `member` for `partition`.
fn weight(member: &str, partition: usize) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"otpd.ring.v1\0");
    h.update(member.as_bytes());
    h.update(&(partition as u32).to_le_bytes());
    let out = h.finalize();
    u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// Owners of every partition for one set of members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// Member names, sorted and without duplicates.
    members: Vec<String>,
    /// Index into `members` of each partition's owner.
    owner: Vec<u16>,
}

impl Ring {
    /// The ring of `members` (at least one; duplicates are ignored).
    pub fn new<I, S>(members: I) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut members: Vec<String> = members.into_iter().map(Into::into).collect();
        members.sort();
        members.dedup();
        assert!(!members.is_empty(), "a ring needs a member");
        assert!(members.len() <= usize::from(u16::MAX), "too many members");
        let owner = (0..PARTITIONS)
            .map(|p| {
                let mut best = (0u64, 0u16);
                for (i, m) in members.iter().enumerate() {
                    // Ties (astronomically rare) go to the smaller name, on every node alike.
                    let w = weight(m, p);
                    if i == 0 || w > best.0 {
                        best = (w, i as u16);
                    }
                }
                best.1
            })
            .collect();
        Ring { members, owner }
    }

    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// Name of the owner of `partition`.
    pub fn owner(&self, partition: usize) -> &str {
        &self.members[usize::from(self.owner[partition])]
    }

    /// Index (in [`Ring::members`]) of the owner of `partition`.
    pub fn owner_index(&self, partition: usize) -> usize {
        usize::from(self.owner[partition])
    }

    /// How many partitions `member` owns.
    pub fn owned_by(&self, member: &str) -> usize {
        match self.members.iter().position(|m| m == member) {
            Some(i) => self.owner.iter().filter(|o| usize::from(**o) == i).count(),
            None => 0,
        }
    }

    /// Partitions whose owner differs between `self` and `next`.
    pub fn moved_to(&self, next: &Ring) -> usize {
        (0..PARTITIONS).filter(|p| self.owner(*p) != next.owner(*p)).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("otpd-{i}")).collect()
    }

    #[test]
    fn every_node_computes_the_same_owners_whatever_order_it_sees_members_in() {
        let a = Ring::new(["otpd-3", "otpd-1", "otpd-2"]);
        let b = Ring::new(["otpd-2", "otpd-3", "otpd-1", "otpd-2"]);
        assert_eq!(a, b);
        assert_eq!(a.members(), ["otpd-1", "otpd-2", "otpd-3"]);
    }

    #[test]
    fn a_single_member_owns_everything() {
        let r = Ring::new(["solo"]);
        assert_eq!(r.owned_by("solo"), PARTITIONS);
        assert_eq!(r.owned_by("other"), 0);
    }

    #[test]
    fn shares_are_even_within_a_few_percent() {
        for n in [2, 3, 5, 8] {
            let r = Ring::new(names(n));
            let fair = PARTITIONS / n;
            for m in r.members() {
                let owned = r.owned_by(m);
                // 1024 partitions: the binomial spread is ~sqrt(1024/n); 25 % is > 4 sigma.
                assert!(owned.abs_diff(fair) * 4 < fair, "{m} owns {owned} of {PARTITIONS} among {n}");
            }
        }
    }

    #[test]
    fn a_joining_member_takes_only_partitions_it_now_owns() {
        let before = Ring::new(names(3));
        let after = Ring::new(names(4));
        for p in 0..PARTITIONS {
            if before.owner(p) != after.owner(p) {
                assert_eq!(after.owner(p), "otpd-4", "partition {p} moved between old members");
            }
        }
        assert_eq!(before.moved_to(&after), after.owned_by("otpd-4"));
    }

    #[test]
    fn a_leaving_member_gives_up_only_its_own_partitions() {
        let before = Ring::new(names(3));
        let after = Ring::new(["otpd-1", "otpd-3"]);
        for p in 0..PARTITIONS {
            if before.owner(p) != "otpd-2" {
                assert_eq!(before.owner(p), after.owner(p), "partition {p} moved though its owner stayed");
            }
        }
        assert_eq!(before.moved_to(&after), before.owned_by("otpd-2"));
    }

    #[test]
    fn partitions_use_all_values() {
        let mut seen = vec![false; PARTITIONS];
        for i in 0..(PARTITIONS * 16) as u32 {
            let h = blake3::hash(&i.to_le_bytes());
            let mut b = [0u8; 16];
            b.copy_from_slice(&h.as_bytes()[..16]);
            seen[partition_of(&IdentHash(b))] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
