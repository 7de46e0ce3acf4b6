//! What this manager has done to the host, in an SQLite database in the state directory:
//! the applied plan, every link it created (or enslaved), every appliance it started
//! with its pid, generation, control socket and the configuration the VM holds, and the
//! passwords instances set through a metadata appliance (given back when it reboots).
//! `status`, `down` and the next `up` read it, even after the manager was killed.

use crate::plan::{ApplianceKind, Plan};
use anyhow::Context;
use nanovnf_qemu::format_mac;
use nanovnf_schema::metadata::{InstancePassword, MetadataInstance};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
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
-- What instances POSTed to a metadata appliance's /openstack/<v>/password, fetched with
-- MetadataPasswords; one per port, for the instance (uuid) that set it.
CREATE TABLE IF NOT EXISTS passwords (
    appliance TEXT NOT NULL,
    mac TEXT NOT NULL,
    uuid TEXT NOT NULL,
    password BLOB NOT NULL,
    saved_at INTEGER NOT NULL,
    PRIMARY KEY (appliance, mac)
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
    /// Held for the manager's lifetime: one manager per state directory (none for
    /// `status`).
    _lock: Option<File>,
}

impl State {
    /// Opens (creating) the state directory and its database, taking the directory's lock.
    pub fn open(dir: &Path) -> anyhow::Result<State> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create state directory {}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        match lock.try_lock() {
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
        if !path.exists() {
            create_database(&path)?;
        }
        let db = Connection::open(&path).with_context(|| format!("open {}", path.display()))?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        // Tables added since the file was made.
        db.execute_batch(SCHEMA)
            .with_context(|| format!("create the tables of {}", path.display()))?;
        Ok(State {
            db,
            dir: dir.to_path_buf(),
            _lock: Some(lock),
        })
    }

    /// Opens the state for reading only (`status`): no lock, and nothing is created or
    /// changed, so it works beside a running `up --watch`. A directory no manager has used
    /// reads as empty.
    pub fn open_shared(dir: &Path) -> anyhow::Result<State> {
        let path = dir.join("state.db");
        let db = if path.exists() {
            Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .with_context(|| format!("open {}", path.display()))?
        } else {
            let db = Connection::open_in_memory()?;
            db.execute_batch(SCHEMA)?;
            db
        };
        Ok(State {
            db,
            dir: dir.to_path_buf(),
            _lock: None,
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

    /// Forgets the appliance and the passwords its instances set.
    pub fn forget_appliance(&self, id: &str) -> anyhow::Result<()> {
        self.db
            .execute("DELETE FROM appliances WHERE id = ?1", [id])?;
        self.db
            .execute("DELETE FROM passwords WHERE appliance = ?1", [id])?;
        Ok(())
    }

    /// Keeps `passwords` reported by `appliance`; returns how many were new or changed.
    pub fn save_passwords(
        &mut self,
        appliance: &str,
        passwords: &[InstancePassword],
    ) -> anyhow::Result<usize> {
        if passwords.is_empty() {
            return Ok(0);
        }
        let tx = self.db.transaction()?;
        let mut changed = 0;
        for p in passwords {
            changed += tx.execute(
                "INSERT INTO passwords (appliance, mac, uuid, password, saved_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (appliance, mac) DO UPDATE SET uuid = ?3, password = ?4,
                     saved_at = ?5
                 WHERE uuid != ?3 OR password != ?4",
                params![appliance, format_mac(p.mac), p.uuid, p.password, unix_now()],
            )?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// The passwords kept for `appliance`, by MAC.
    pub fn passwords(&self, appliance: &str) -> anyhow::Result<Vec<InstancePassword>> {
        let mut statement = self.db.prepare(
            "SELECT mac, uuid, password FROM passwords WHERE appliance = ?1 ORDER BY mac",
        )?;
        let rows = statement.query_map([appliance], |r| {
            Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mac, uuid, password) = row?;
            let mac = parse_mac(&mac)
                .with_context(|| format!("recorded password of {appliance}: MAC {mac:?}"))?;
            out.push(InstancePassword {
                mac,
                uuid,
                password,
            });
        }
        Ok(out)
    }

    /// Forgets the passwords of `appliance` that belong to no instance of `instances`
    /// (a port removed, or another instance on it now), as Nova's go with the instance.
    pub fn retain_passwords(
        &self,
        appliance: &str,
        instances: &[MetadataInstance],
    ) -> anyhow::Result<()> {
        for p in self.passwords(appliance)? {
            if !instances.iter().any(|i| i.mac == p.mac && i.uuid == p.uuid) {
                self.db.execute(
                    "DELETE FROM passwords WHERE appliance = ?1 AND mac = ?2",
                    params![appliance, format_mac(p.mac)],
                )?;
            }
        }
        Ok(())
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Makes the database under another name and renames it into place, so that a `status`
/// running meanwhile finds either no file or one in WAL mode with every table. (Two
/// connections that both turn a new file into WAL and create its tables can fail with
/// "database is locked": SQLite refuses the lock upgrade rather than deadlock.)
fn create_database(path: &Path) -> anyhow::Result<()> {
    let new = path.with_extension("db.new");
    for stale in ["db.new", "db.new-wal", "db.new-shm"] {
        let _ = std::fs::remove_file(path.with_extension(stale));
    }
    let db = Connection::open(&new).with_context(|| format!("create {}", new.display()))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.execute_batch(SCHEMA)
        .with_context(|| format!("create the tables of {}", new.display()))?;
    // Closing the only connection checkpoints and removes the write-ahead log; WAL mode
    // stays recorded in the file.
    db.close().map_err(|(_, e)| e)?;
    std::fs::rename(&new, path)
        .with_context(|| format!("rename {} to {}", new.display(), path.display()))
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
    fn status_beside_a_starting_manager_reads_instead_of_failing() {
        // `status` polled while the first `up` creates the database (the manager tests do
        // this): it reads an empty state or the manager's, never "database is locked".
        for round in 0..40 {
            let dir = std::env::temp_dir()
                .join(format!("nanovnf-state-race-{}-{round}", std::process::id()));
            let manager = {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let state = State::open(&dir).unwrap();
                    state.set_plan("f.toml", &Plan::default()).unwrap();
                    state
                        .record_link("nvb-1", "created", "bridge", "net")
                        .unwrap();
                })
            };
            while !manager.is_finished() {
                let status = State::open_shared(&dir).expect("status opens beside up");
                status.plan().expect("status reads beside up");
                status.links().expect("status reads beside up");
            }
            manager.join().unwrap();
            let status = State::open_shared(&dir).unwrap();
            assert_eq!(status.plan().unwrap().unwrap().0, "f.toml");
            assert_eq!(status.links().unwrap().len(), 1);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn status_of_an_unused_directory_is_empty_and_creates_nothing() {
        let dir = std::env::temp_dir().join(format!("nanovnf-state-none-{}", std::process::id()));
        let status = State::open_shared(&dir).unwrap();
        assert!(status.plan().unwrap().is_none());
        assert!(status.appliances().unwrap().is_empty());
        assert!(!dir.exists());
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

    #[test]
    fn passwords_are_kept_per_appliance_and_port_and_go_with_their_instance() {
        let dir = std::env::temp_dir().join(format!("nanovnf-state-pw-{}", std::process::id()));
        let mut state = State::open(&dir).unwrap();
        let pw = |last: u8, uuid: &str, password: &[u8]| InstancePassword {
            mac: [0xfa, 0x16, 0x3e, 0, 0, last],
            uuid: uuid.into(),
            password: password.to_vec(),
        };
        let first = [pw(0x11, "u1", b"c2VjcmV0"), pw(0x12, "u2", &[0, 0xff])];
        assert_eq!(state.save_passwords("metadata/net", &first).unwrap(), 2);
        // The same report again changes nothing; another appliance's are its own.
        assert_eq!(state.save_passwords("metadata/net", &first).unwrap(), 0);
        state
            .save_passwords("metadata/other", &[pw(0x11, "u9", b"x")])
            .unwrap();
        assert_eq!(state.passwords("metadata/net").unwrap(), first);
        // A new instance on port 0x12 that set its own replaces the old one's.
        let newer = pw(0x12, "u3", b"bmV3");
        assert_eq!(
            state
                .save_passwords("metadata/net", std::slice::from_ref(&newer))
                .unwrap(),
            1
        );
        // Ports whose instance is gone or another one lose theirs.
        let instance = |last: u8, uuid: &str| MetadataInstance {
            mac: [0xfa, 0x16, 0x3e, 0, 0, last],
            ip: std::net::Ipv4Addr::new(192, 168, 1, last),
            port_id: String::new(),
            uuid: uuid.into(),
            name: String::new(),
            hostname: String::new(),
            domain: String::new(),
            availability_zone: String::new(),
            project_id: String::new(),
            launch_index: 0,
            public_keys: Vec::new(),
            meta: Vec::new(),
            user_data: None,
            floating_ip: None,
            mtu: 1500,
        };
        state
            .retain_passwords(
                "metadata/net",
                &[instance(0x11, "another"), instance(0x12, "u3")],
            )
            .unwrap();
        assert_eq!(state.passwords("metadata/net").unwrap(), [newer]);
        state.forget_appliance("metadata/net").unwrap();
        assert!(state.passwords("metadata/net").unwrap().is_empty());
        assert_eq!(state.passwords("metadata/other").unwrap().len(), 1);
        drop(state);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
