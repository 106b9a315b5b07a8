// SPDX-License-Identifier: GPL-2.0

//! Peer fds (`CMA_IOC_ATTACH`): a target looked up and checked once, then
//! copied from and to many times.
//!
//! A copy by pid pays for the lookup and the access check on every call,
//! which is most of the cost of a short message. A peer fd does them once,
//! and before each copy confirms in a few loads that nothing the decision
//! rested on has changed: the caller's thread group and credentials, the
//! target's credentials and address space, dumpability, and no consent
//! withdrawn by the target (withdrawals are counted per granting process,
//! so no one else's grants and revokes send this fd to the slow path).
//! Held references keep every pointer compared from being reused,
//! so equal pointers mean the same objects. If anything differs, the full
//! check runs again, exactly as a copy by pid would; a peer fd never allows
//! a copy that a copy by pid would refuse. This is stricter than
//! `/proc/pid/mem`, which checks only at open.
//!
//! The fd holds the target's `mm_struct` with `mmgrab` only: the target's
//! memory is freed when it exits, and copies then fail with `ESRCH`.

use crate::access::{self, TargetId};
use crate::cache::Cache;
use crate::consent::{self, Registry, Seen};
use crate::file::DevFile;

use crate::compat::aref::ARef;
use crate::mm::{MmGrab, MmRef};
use crate::stats::{self, Stat};
use crate::task::{access_inputs, caller_cred, current_task, PidRef, TaskCred, TaskExt, TaskRef};
use kernel::prelude::*;
use kernel::sync::Arc;

/// What a peer fd's access decision rests on, as pointers (for comparison
/// only, never dereferenced): the caller's thread group and credentials, the
/// target's credentials and address space, and whether that address space
/// is dumpable by its owner's peers.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Inputs {
    caller_group: *mut kernel::bindings::pid,
    caller_cred: *const kernel::bindings::cred,
    target_cred: *const kernel::bindings::cred,
    target_mm: *mut kernel::bindings::mm_struct,
    dumpable: bool,
}

impl Inputs {
    /// The inputs as they stand now, for a copy to `task` whose address
    /// space was `mm` (still allocated: the peer holds it by `mmgrab`).
    fn now(task: &kernel::task::Task, mm: *mut kernel::bindings::mm_struct) -> Inputs {
        let (caller_group, caller_cred, target_cred, target_mm, dumpable) = access_inputs(task, mm);
        Inputs {
            caller_group,
            caller_cred,
            target_cred,
            target_mm,
            dumpable,
        }
    }
}

/// A target attached to, with the state of the access decision made then.
pub(crate) struct Peer {
    /// The target task (the thread named at attach time).
    task: TaskRef,
    /// Its address space when checked.
    mm: MmGrab,
    /// The target's credentials the decision rested on.
    target_cred: TaskCred,
    /// The attaching caller's thread group and credentials.
    caller_group: PidRef,
    caller_cred: TaskCred,
    /// The policy in force at attach time.
    policy: consent::Policy,
    /// The consent registry the decisions read (the attaching file's).
    registry: Arc<Registry>,
    /// The target's grants the decision rested on, if it needed them; the
    /// only input a later check that passed may move forward (the target
    /// revoking one grant and granting again must not leave the fd slow).
    consent: Option<Seen>,
    /// The target's pages kept pinned between copies.
    cache: Cache,
    /// The caller's own pages kept pinned between copies: the cache of the
    /// `/dev/cma` file attached through, which its other peer fds share.
    own: Arc<Cache>,
}

impl Peer {
    /// Looks up and checks the target, as a copy by pid does.
    pub(crate) fn attach(id: TargetId, dev: &DevFile) -> Result<Peer> {
        let task = access::find(id)?;
        let policy = consent::policy();
        let (mm, decision) = access::mm_access(&task, dev.registry())?;
        let me = current_task();
        Ok(Peer {
            cache: Cache::new(ARef::from(&**mm))?,
            own: dev.own_cache().clone(),
            mm: ARef::from(&**mm),
            task,
            target_cred: decision.cred,
            caller_group: me.group_pid()?,
            caller_cred: caller_cred()?,
            policy,
            registry: dev.registry().clone(),
            consent: decision.consent.map(Seen::new),
        })
    }

    /// The fd's cache of the target's pages.
    pub(crate) fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cache of the caller's own pages.
    pub(crate) fn own_cache(&self) -> &Cache {
        &self.own
    }

    /// Whether the calling process may rely on the decision this fd holds:
    /// nothing it rested on has changed (`same`), and the target withdrew no
    /// consent it rested on (`consent_holds`).
    fn holds(&self) -> (bool, bool) {
        let consent_holds = consent::policy() == self.policy
            && match &self.consent {
                Some(seen) => seen.holds(),
                None => true,
            };
        let now = Inputs::now(&self.task, self.mm.as_raw());
        let same = now
            == Inputs {
                caller_group: self.caller_group.as_ptr(),
                caller_cred: self.caller_cred.as_ptr(),
                target_cred: self.target_cred.as_ptr(),
                target_mm: self.mm.as_raw(),
                dumpable: true,
            };
        (same, consent_holds)
    }

    /// Whether the decision this fd holds still admits the calling process,
    /// without the full check (which may wait for the target): for a map's
    /// page faults and mmap, which run under the caller's `mmap_lock`. A
    /// `false` leaves the page unmapped; a copy or `CMA_IOC_MAP` through the
    /// fd makes the full check and renews the decision.
    pub(crate) fn unchanged(&self) -> bool {
        self.holds() == (true, true)
    }

    /// Whether the calling process is the one that attached. Only it may
    /// map through the fd (`mmap` admits no one else, [`Peer::unchanged`]),
    /// and so only it may make the fd's map state, which watches the
    /// address space of the process that made it.
    pub(crate) fn attached_by_current(&self) -> bool {
        current_task().in_group(&self.caller_group)
    }

    /// The target's address space for one copy by the caller: `ESRCH` once
    /// the target has exited or exec()ed, else the decision of the full
    /// check if anything it rested on has changed.
    pub(crate) fn target(&self) -> Result<MmRef> {
        stats::inc(Stat::PeerCopies);
        let (same, consent_holds) = self.holds();
        let mm = self.mm.mmget_not_zero().ok_or(ESRCH)?;
        if same && consent_holds {
            return Ok(mm);
        }
        drop(mm);
        stats::inc(Stat::PeerRechecks);
        let (mm, decision) = self.recheck()?;
        if let (true, Some(seen), Some(token)) = (same, &self.consent, &decision.consent) {
            // Only the target's withdrawals moved, and the check passed on
            // the count it read under the registry's lock: later copies by
            // this caller may rely on it. (Racing stores only store counts
            // that were checked, at worst an older one, which costs another
            // check.)
            seen.refresh(token);
        }
        Ok(mm)
    }

    /// The full check, for a copy after something changed.
    #[cold]
    fn recheck(&self) -> Result<(MmRef, access::Decision)> {
        let (mm, decision) = access::mm_access(&self.task, &self.registry)?;
        if mm.as_raw() != self.mm.as_raw() {
            // The target exec()ed: this fd was for the old image.
            return Err(ESRCH);
        }
        Ok((mm, decision))
    }
}
