//! The test host shared by the manager's end-to-end tests: a world whose host namespace
//! `nanovnf` runs in, with its own state directory.
#![allow(dead_code)] // each test file uses its own part

use nanovnf_tests::dhcp_clients::{Client, addresses};
use nanovnf_tests::{World, environment_ready, mac_to_string};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_nanovnf");
pub const MTU: u16 = 1450;

/// A test host: a world whose host namespace the manager runs in, with its own state
/// directory. Dropping it runs `nanovnf down` (and stops a watcher) before the world goes.
pub struct Host {
    pub world: World,
    pub state: PathBuf,
    pub watcher: Option<Child>,
}

impl Host {
    pub fn new(name: &str, tools: &[&str]) -> Option<Host> {
        let mut all = vec!["ip", "qemu-system-x86_64"];
        all.extend(tools);
        if !environment_ready(name, &all) {
            return None;
        }
        let world = World::new(name).expect("world");
        std::fs::create_dir_all(world.scratch_dir()).expect("scratch dir");
        let state = world.scratch_dir().join("state");
        Some(Host {
            world,
            state,
            watcher: None,
        })
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.world.host_ns(), BIN])
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .env("NANOVNF_ACCEL", "tcg")
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&mut self, args: &[&str]) -> Output {
        let out = self.command(args).output().expect("run nanovnf");
        eprintln!(
            "$ nanovnf {} -> {:?}\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for pid in self.pids().values() {
            self.world.track_pid(*pid);
        }
        out
    }

    pub fn up(&mut self, file: &Path) -> Output {
        let out = self.run(&["up", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "up failed");
        out
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.world.scratch_dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn status(&self) -> Value {
        let out = self.command(&["status", "--json"]).output().unwrap();
        assert!(out.status.success(), "status failed: {out:?}");
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// `kind/network` -> pid of every appliance that runs.
    pub fn pids(&self) -> BTreeMap<String, u32> {
        let status = self.status();
        let mut pids = BTreeMap::new();
        for n in status["networks"].as_array().into_iter().flatten() {
            for a in n["appliances"].as_array().into_iter().flatten() {
                if let Some(pid) = a["pid"].as_u64() {
                    pids.insert(
                        format!(
                            "{}/{}",
                            a["kind"].as_str().unwrap(),
                            n["name"].as_str().unwrap()
                        ),
                        pid as u32,
                    );
                }
            }
        }
        pids
    }

    pub fn all_ready(&self) -> bool {
        let status = self.status();
        let appliances: Vec<&Value> = status["networks"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|n| n["appliances"].as_array().into_iter().flatten())
            .collect();
        !appliances.is_empty() && appliances.iter().all(|a| a["state"] == "ready")
    }

    pub fn links(&self) -> Vec<String> {
        let out = self
            .world
            .ip(self.world.host_ns(), &["-o", "link", "show"])
            .unwrap();
        out.lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap().to_owned())
            .collect()
    }

    pub fn bridge(&self, network: &str) -> String {
        let status = self.status();
        status["networks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == network)
            .unwrap_or_else(|| panic!("network {network} not in status: {status}"))["bridge"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn watch(&mut self, file: &Path) {
        let child = self
            .command(&["up", file.to_str().unwrap(), "--watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nanovnf up --watch");
        self.watcher = Some(child);
        wait_until(
            Duration::from_secs(60),
            "the watcher's up to finish",
            || self.all_ready(),
        );
    }

    pub fn stop_watcher(&mut self, signal: i32) {
        if let Some(mut child) = self.watcher.take() {
            // `ip netns exec` execs nanovnf, so the child's pid is the manager's.
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
            let _ = child.wait();
        }
    }

    /// Takes a lease for `mac` with udhcpc in a new instance namespace on `network`'s
    /// bridge and returns the addresses it got.
    pub fn lease(&mut self, short: &str, network: &str, mac: [u8; 6]) -> Vec<String> {
        let bridge = self.bridge(network);
        self.world.adopt_bridge(&bridge);
        let inst = self
            .world
            .add_instance(short, &bridge, None, Some(mac), MTU)
            .expect("instance");
        let (ok, events) = Client::Udhcpc
            .try_once(&self.world, &inst, short, 5)
            .expect("udhcpc");
        assert!(
            ok,
            "udhcpc for {} got no lease: {events:?}",
            mac_to_string(mac)
        );
        addresses(&self.world, &inst).unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop_watcher(libc::SIGKILL);
        let _ = self.command(&["down"]).output();
    }
}

pub fn wait_until(timeout: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}
