//! What this manager has done to the host, in an SQLite database in the state directory:
//! the applied plan, every link it created (or enslaved), and every appliance it started
//! with its pid, generation, control socket and the configuration the VM holds. `status`,
//! `down` and the next `up` read it, even after the manager was killed.

use crate::plan::{ApplianceKind, Plan};
use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, params};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The default `--state-dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nanovnf";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    file TEXT NOT NULL,
    plan TEXT NOT NULL,
    applied_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    name TEXT PRIMARY KEY,
    -- created: made by the manager, deleted by it; enslaved: an existing interface the
    -- manager put into a bridge, only ever released.
    how TEXT NOT NULL CHECK (how IN ('created', 'enslaved')),
    kind TEXT NOT NULL,
    network TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS appliances (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    vm_name TEXT NOT NULL,
    pid INTEGER,
    start_time INTEGER,
    generation INTEGER NOT NULL,
    control_socket TEXT NOT NULL,
    state TEXT NOT NULL,
    shape TEXT NOT NULL,
    config BLOB NOT NULL,
    restarts INTEGER NOT NULL DEFAULT 0,
    accel TEXT NOT NULL DEFAULT ''
);
";

/// One appliance as recorded.
#[derive(Clone, Debug)]
pub struct ApplianceRecord {
    pub id: String,
    pub kind: ApplianceKind,
    pub owner: String,
    pub vm_name: String,
    pub pid: Option<u32>,
    /// The process's start time (clock ticks since boot, `/proc/PID/stat` field 22): with
    /// the pid it names one process, so a recycled pid is never mistaken for the VM.
    pub start_time: Option<u64>,
    pub generation: u64,
    pub control_socket: PathBuf,
    /// `booting`, `ready`, `failed` or `restarting`.
    pub state: String,
    /// Fingerprint of everything in the config that cannot change live.
    pub shape: String,
    /// The encoded BootConfig the VM holds now (boot config plus the live changes applied).
    pub config: Vec<u8>,
    pub restarts: u32,
    pub accel: String,
}

pub struct State {
    db: Connection,
    dir: PathBuf,
    /// Held for the manager's lifetime: one manager per state directory.
    _lock: File,
}

impl State {
    /// Opens (creating) the state directory and its database, taking the directory's lock.
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        Self::open_with(dir, true)
    }

    /// Opens the state for reading only (`status`): no lock, so it works beside a running
    /// `up --watch`.
    pub fn open_shared(dir: &Path) -> anyhow::Result<State> {
        Self::open_with(dir, false)
    }

    fn open_with(dir: &Path, exclusive: bool) -> anyhow::Result<State> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create state directory {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        match if exclusive { lock.try_lock() } else { Ok(()) } {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another nanovnf manages {} (its lock {} is held); \
                 a running `nanovnf up --watch` re-applies its file on SIGHUP",
                dir.display(),
                lock_path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("lock {}", lock_path.display()));
            }
        }
        let path = dir.join("state.db");
        let db = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)
            .with_context(|| format!("create the tables of {}", path.display()))?;
        Ok(State {
            db,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Where appliances' sockets, configs and logs live.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    pub fn plan(&self) -> anyhow::Result<Option<(String, Plan)>> {
        let row: Option<(String, String)> = self
            .db
            .query_row("SELECT file, plan FROM applied WHERE id = 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        match row {
            None => Ok(None),
            Some((file, plan)) => Ok(Some((
                file,
                serde_json::from_str(&plan).context("decode the recorded plan")?,
            ))),
        }
    }

    pub fn set_plan(&self, file: &str, plan: &Plan) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO applied (id, file, plan, applied_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET file = ?1, plan = ?2, applied_at = ?3",
            params![file, serde_json::to_string(plan)?, unix_now()],
        )?;
        Ok(())
    }

    pub fn clear_plan(&self) -> anyhow::Result<()> {
        self.db.execute("DELETE FROM applied", [])?;
        Ok(())
    }

    /// Records a link before it is created, so that a manager killed half-way still knows
    /// it is responsible for it.
    pub fn record_link(
        &self,
        name: &str,
        how: &str,
        kind: &str,
        network: &str,
    ) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO links (name, how, kind, network) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (name) DO UPDATE SET how = ?2, kind = ?3, network = ?4",
            params![name, how, kind, network],
        )?;
        Ok(())
    }

    pub fn forget_link(&self, name: &str) -> anyhow::Result<()> {
        self.db
            .execute("DELETE FROM links WHERE name = ?1", [name])?;
        Ok(())
    }

    /// Every recorded link: (name, how, kind, network).
    pub fn links(&self) -> anyhow::Result<Vec<(String, String, String, String)>> {
        let mut statement = self
            .db
            .prepare("SELECT name, how, kind, network FROM links ORDER BY rowid")?;
        let rows = statement.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn appliances(&self) -> anyhow::Result<Vec<ApplianceRecord>> {
        let mut statement = self.db.prepare(
            "SELECT id, kind, owner, vm_name, pid, start_time, generation, control_socket,
                    state, shape, config, restarts, accel
             FROM appliances ORDER BY rowid",
        )?;
        let rows = statement.query_map([], |r| {
            let kind: String = r.get(1)?;
            Ok(ApplianceRecord {
                id: r.get(0)?,
                kind: ApplianceKind::parse(&kind).unwrap_or(ApplianceKind::Dhcp),
                owner: r.get(2)?,
                vm_name: r.get(3)?,
                pid: r.get(4)?,
                start_time: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
                generation: r.get::<_, i64>(6)? as u64,
                control_socket: PathBuf::from(r.get::<_, String>(7)?),
                state: r.get(8)?,
                shape: r.get(9)?,
                config: r.get(10)?,
                restarts: r.get(11)?,
                accel: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn appliance(&self, id: &str) -> anyhow::Result<Option<ApplianceRecord>> {
        Ok(self.appliances()?.into_iter().find(|a| a.id == id))
    }

    pub fn save_appliance(&self, a: &ApplianceRecord) -> anyhow::Result<()> {
        self.db.execute(
            "INSERT INTO appliances (id, kind, owner, vm_name, pid, start_time, generation,
                                     control_socket, state, shape, config, restarts, accel)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (id) DO UPDATE SET kind = ?2, owner = ?3, vm_name = ?4, pid = ?5,
                 start_time = ?6, generation = ?7, control_socket = ?8, state = ?9,
                 shape = ?10, config = ?11, restarts = ?12, accel = ?13",
            params![
                a.id,
                a.kind.as_str(),
                a.owner,
                a.vm_name,
                a.pid,
                a.start_time.map(|t| t as i64),
                a.generation as i64,
                a.control_socket.display().to_string(),
                a.state,
                a.shape,
                a.config,
                a.restarts,
                a.accel,
            ],
        )?;
        Ok(())
    }

    pub fn set_appliance_state(&self, id: &str, state: &str) -> anyhow::Result<()> {
        self.db.execute(
            "UPDATE appliances SET state = ?2 WHERE id = ?1",
            params![id, state],
        )?;
        Ok(())
    }

    pub fn forget_appliance(&self, id: &str) -> anyhow::Result<()> {
        self.db
            .execute("DELETE FROM appliances WHERE id = ?1", [id])?;
        Ok(())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_manager_on_the_same_state_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("nanovnf-state-lock-{}", std::process::id()));
        let first = State::open(&dir).unwrap();
        let second = State::open(&dir);
        let message = format!("{:#}", second.err().expect("second open must fail"));
        assert!(message.contains("another nanovnf manages"), "{message}");
        drop(first);
        State::open(&dir).expect("lock is released with the first manager");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_and_appliances_round_trip() {
        let dir = std::env::temp_dir().join(format!("nanovnf-state-rt-{}", std::process::id()));
        let state = State::open(&dir).unwrap();
        state
            .record_link("nvb-1", "created", "bridge", "net")
            .unwrap();
        state
            .record_link("eth9", "enslaved", "physical", "ext")
            .unwrap();
        assert_eq!(state.links().unwrap().len(), 2);
        state.forget_link("nvb-1").unwrap();
        assert_eq!(state.links().unwrap()[0].0, "eth9");
        let record = ApplianceRecord {
            id: "dhcp/net".into(),
            kind: ApplianceKind::Dhcp,
            owner: "net".into(),
            vm_name: "nvt-1".into(),
            pid: Some(42),
            start_time: Some(7),
            generation: 3,
            control_socket: "/run/x.ctl".into(),
            state: "ready".into(),
            shape: "abc".into(),
            config: vec![1, 2, 3],
            restarts: 1,
            accel: "tcg".into(),
        };
        state.save_appliance(&record).unwrap();
        let back = state.appliance("dhcp/net").unwrap().unwrap();
        assert_eq!(
            (back.pid, back.start_time, back.generation),
            (Some(42), Some(7), 3)
        );
        assert_eq!(back.config, vec![1, 2, 3]);
        state.forget_appliance("dhcp/net").unwrap();
        assert!(state.appliances().unwrap().is_empty());
        drop(state);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
