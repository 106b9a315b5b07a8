//! What is measured and how a measurement is labelled: the engine settings,
//! the page kinds, the mechanisms, the patterns, and one measurement's record.

use cma::Op;

use super::counters::Counts;

/// A setting of the module's `engine` parameter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Engine {
    /// The caller's pages are pinned too; kernel-to-kernel copy.
    Pinned,
    /// The kernel's user-copy routines from the pinned target pages, as
    /// `process_vm_readv` copies.
    Usercopy,
}

impl Engine {
    /// The parameter's spelling.
    pub(super) fn name(self) -> &'static str {
        match self {
            Engine::Pinned => "pinned",
            Engine::Usercopy => "usercopy",
        }
    }

    /// Parses the parameter's value (`None`: unknown, e.g. `auto`).
    pub(super) fn parse(s: &str) -> Option<Engine> {
        match s.trim() {
            "pinned" => Some(Engine::Pinned),
            "usercopy" => Some(Engine::Usercopy),
            _ => None,
        }
    }
}

/// What kind of pages back the buffers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Pages {
    Small,
    Thp,
}

impl Pages {
    /// The name in the tables and the JSON.
    pub(super) fn name(self) -> &'static str {
        match self {
            Pages::Small => "4k",
            Pages::Thp => "thp",
        }
    }
}

/// A way of moving a message from one buffer to another. The `/dev/cma`
/// ones come in two labels, one per engine setting they ran under (the
/// `-uc` ones under `usercopy`); [`Mech::base`] is the path they take.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mech {
    /// `/dev/cma` against another process, through a peer fd (attached
    /// once per target, as an MPI library would).
    Cma,
    /// `Cma` under the `usercopy` engine.
    CmaUc,
    /// `/dev/cma` against another process named by pid on every copy.
    CmaPid,
    /// `CmaPid` under the `usercopy` engine.
    CmaPidUc,
    /// `/dev/cma` against the caller's own address space.
    CmaDirect,
    /// `CmaDirect` under the `usercopy` engine.
    CmaDirectUc,
    /// `process_vm_readv` / `process_vm_writev`.
    Pvm,
    /// Sender copies into shared memory, receiver copies out.
    Double,
    /// `memcpy` within one process.
    Memcpy,
    /// A plain vector loop within one process (no `rep movsb`).
    Vecloop,
    /// `memcpy` to or from a map of the target's buffer (`CMA_IOC_MAP`),
    /// mapped once: the steady state, no system call per message.
    Map,
    /// `Map` with the vector loop: the tables' `map` is the better of the
    /// two, as `limit` is of `memcpy` and `vecloop`.
    MapVec,
}

impl Mech {
    /// The name in the JSON.
    pub(super) fn name(self) -> &'static str {
        match self {
            Mech::Cma => "cma",
            Mech::CmaUc => "cma-uc",
            Mech::CmaPid => "cma-pid",
            Mech::CmaPidUc => "cma-pid-uc",
            Mech::CmaDirect => "cma-direct",
            Mech::CmaDirectUc => "cma-direct-uc",
            Mech::Pvm => "pvm",
            Mech::Double => "double-copy",
            Mech::Memcpy => "memcpy",
            Mech::Vecloop => "vecloop",
            Mech::Map => "map",
            Mech::MapVec => "map-vecloop",
        }
    }

    /// The heading in the tables.
    pub(super) fn head(self) -> &'static str {
        match self {
            Mech::Cma => "cma",
            Mech::CmaUc => "cma-uc",
            Mech::CmaPid => "by-pid",
            Mech::CmaPidUc => "by-pid-uc",
            Mech::CmaDirect => "direct",
            Mech::CmaDirectUc => "direct-uc",
            Mech::Pvm => "pvm",
            Mech::Double => "double",
            Mech::Memcpy => "memcpy",
            Mech::Vecloop => "vecloop",
            Mech::Map => "map",
            Mech::MapVec => "map-vec",
        }
    }

    /// The path a copy takes, whatever engine label it carries.
    pub(super) fn base(self) -> Mech {
        match self {
            Mech::CmaUc => Mech::Cma,
            Mech::CmaPidUc => Mech::CmaPid,
            Mech::CmaDirectUc => Mech::CmaDirect,
            m => m,
        }
    }

    /// The label of this `/dev/cma` mechanism under `engine` (`None`: the
    /// module has no engine parameter; the plain label). Others unchanged.
    pub(super) fn under(self, engine: Option<Engine>) -> Mech {
        match (self.base(), engine) {
            (Mech::Cma, Some(Engine::Usercopy)) => Mech::CmaUc,
            (Mech::CmaPid, Some(Engine::Usercopy)) => Mech::CmaPidUc,
            (Mech::CmaDirect, Some(Engine::Usercopy)) => Mech::CmaDirectUc,
            (m, _) => m,
        }
    }

    /// Whether it goes through `/dev/cma`.
    pub(super) fn is_cma(self) -> bool {
        matches!(self.base(), Mech::Cma | Mech::CmaPid | Mech::CmaDirect)
    }

    /// Whether every copy is one system call.
    pub(super) fn is_syscall(self) -> bool {
        self.is_cma() || self == Mech::Pvm
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub(super) mech: Mech,
    pub(super) op: Op,
    pub(super) size: usize,
    pub(super) pages: Pages,
    pub(super) procs: usize,
    pub(super) pattern: Pattern,
    /// MB/s (10^6 bytes per second): median, min, max over the repeats.
    pub(super) median: f64,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) reps: usize,
    /// The engine setting a `/dev/cma` measurement ran under, if known.
    pub(super) engine: Option<Engine>,
    /// One-to-one: the single-copy limit of its cell, the better median of
    /// `memcpy` and `vecloop` (MB/s).
    pub(super) limit: Option<f64>,
    /// One-to-one: counts per MiB moved over its timed loops.
    pub(super) counts: Option<Counts>,
}

/// How the processes of a measurement copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Pattern {
    /// One process copies to or from one other.
    OneToOne,
    /// N processes all read one target's buffer.
    Readers,
    /// N processes each read the previous one's buffer.
    Ring,
}

impl Pattern {
    /// The name in the tables and the JSON.
    pub(super) fn name(self) -> &'static str {
        match self {
            Pattern::OneToOne => "one-to-one",
            Pattern::Readers => "readers",
            Pattern::Ring => "ring",
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of a direction in the tables and the JSON.
pub(super) fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "read",
        Op::Write => "write",
    }
}
