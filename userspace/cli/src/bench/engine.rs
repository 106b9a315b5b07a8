//! The module's `engine` parameter: which settings a run measures, switching
//! between them, and restoring the one found.

use std::cell::Cell;
use std::io::{self};

use super::labels::Engine;
use super::Engines;

/// The module's engine parameter (root-writable).
pub(super) const ENGINE_PARAM: &str = "/sys/module/cma/parameters/engine";

/// The engine parameter while the bench switches it: remembers the setting
/// found at start and puts it back when dropped (at the end, on an error,
/// on a panic; not in a forked child).
pub(super) struct EngineParam {
    /// The setting found at start.
    pub(super) original: Engine,
    /// The setting last written.
    pub(super) set: Cell<Engine>,
    /// The bench's pid: a child unwinding a copy of this must not write.
    pub(super) owner: u32,
}

impl EngineParam {
    /// Makes `engine` the module's setting, unless it already is.
    pub(super) fn set(&self, engine: Engine) -> io::Result<()> {
        if self.set.get() != engine {
            std::fs::write(ENGINE_PARAM, engine.name()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{ENGINE_PARAM} <- {}: {e}", engine.name()),
                )
            })?;
            self.set.set(engine);
        }
        Ok(())
    }
}

impl Drop for EngineParam {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        if let Err(e) = self.set(self.original) {
            eprintln!(
                "cma bench: could not restore the engine to {}: {e}",
                self.original.name()
            );
        }
    }
}

/// Which engine settings the `/dev/cma` mechanisms run under.
pub(super) struct EnginePlan {
    /// The setting found at start; `None` when the module has no engine
    /// parameter (or an unknown value): one unnamed setting.
    pub(super) current: Option<Engine>,
    /// The settings the peer-fd and direct mechanisms are measured under
    /// (by pid and the multi-process cells: `current` only).
    pub(super) measured: Vec<Option<Engine>>,
    /// Present when the bench has to switch the parameter.
    pub(super) param: Option<EngineParam>,
}

impl EnginePlan {
    /// Reads the parameter and plans what `want` asks for, as far as this
    /// module and user allow; notes for the reader on what it could not do.
    pub(super) fn new(want: Engines, notes: &mut Vec<String>) -> io::Result<EnginePlan> {
        let found = match std::fs::read_to_string(ENGINE_PARAM) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{ENGINE_PARAM} not found: the cma mechanisms ran under the module's only engine"
                ));
                return Ok(EnginePlan {
                    current: None,
                    measured: vec![None],
                    param: None,
                });
            }
            r => r?,
        };
        let Some(current) = Engine::parse(&found) else {
            notes.push(format!(
                "engine parameter is {:?}: the cma mechanisms ran under it, unnamed",
                found.trim()
            ));
            return Ok(EnginePlan {
                current: None,
                measured: vec![None],
                param: None,
            });
        };
        let measured = match want {
            Engines::Both => vec![Engine::Pinned, Engine::Usercopy],
            Engines::Current => vec![current],
            Engines::Pinned => vec![Engine::Pinned],
            Engines::Usercopy => vec![Engine::Usercopy],
        };
        let only_current = EnginePlan {
            current: Some(current),
            measured: vec![Some(current)],
            param: None,
        };
        if measured == [current] {
            return Ok(only_current);
        }
        // Writing the value it has changes nothing (and logs nothing).
        if let Err(e) = std::fs::write(ENGINE_PARAM, current.name()) {
            notes.push(format!(
                "{ENGINE_PARAM} is not writable ({e}; switching needs root): the cma mechanisms ran under the current engine, {}, only",
                current.name()
            ));
            return Ok(only_current);
        }
        Ok(EnginePlan {
            current: Some(current),
            measured: measured.into_iter().map(Some).collect(),
            param: Some(EngineParam {
                original: current,
                set: Cell::new(current),
                owner: std::process::id(),
            }),
        })
    }

    /// Makes `engine` the module's setting if the bench switches it.
    pub(super) fn set(&self, engine: Option<Engine>) -> io::Result<()> {
        match (&self.param, engine) {
            (Some(p), Some(e)) => p.set(e),
            _ => Ok(()),
        }
    }

    /// The setting last written (or found), for grouping the cases.
    pub(super) fn in_force(&self) -> Option<Engine> {
        self.param
            .as_ref()
            .map_or(self.current, |p| Some(p.set.get()))
    }

    /// Puts the setting found at start back (for the cells that use it).
    pub(super) fn restore(&self) -> io::Result<()> {
        self.set(self.current)
    }

    /// A line on what ran under what.
    pub(super) fn describe(&self) -> String {
        match (self.current, self.param.is_some()) {
            (None, _) => "engine: not named by the module".to_string(),
            (Some(c), false) => format!("engine: {} (as found)", c.name()),
            (Some(c), true) => format!(
                "engines: {} for cma and direct (\"-uc\": usercopy), by-pid and N-process cells under {} (found, restored)",
                self.measured
                    .iter()
                    .flatten()
                    .map(|e| e.name())
                    .collect::<Vec<_>>()
                    .join(" and "),
                c.name()
            ),
        }
    }
}
