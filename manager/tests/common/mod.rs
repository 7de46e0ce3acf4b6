//! The test host shared by the manager's end-to-end tests: a world whose host namespace
//! `nanovnf` runs in, with its own state directory.
#![allow(dead_code)] // each test file uses its own part

use nanovnf_tests::dhcp_clients::{Client, addresses};
use nanovnf_tests::{Instance, World, environment_ready, mac_to_string};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
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
        self.lease_instance(short, network, mac, MTU, 5).1
    }

    /// Like [`Host::lease`] with the instance's link at `mtu` until its DHCP client
    /// applies what it was handed (option 26), waiting up to `timeout_secs` for a lease;
    /// returns the instance and its addresses.
    pub fn lease_instance(
        &mut self,
        short: &str,
        network: &str,
        mac: [u8; 6],
        mtu: u16,
        timeout_secs: u32,
    ) -> (Instance, Vec<String>) {
        let bridge = self.bridge(network);
        self.world.adopt_bridge(&bridge);
        let inst = self
            .world
            .add_instance(short, &bridge, None, Some(mac), mtu)
            .expect("instance");
        let (ok, events) = Client::Udhcpc
            .try_once(&self.world, &inst, short, timeout_secs)
            .expect("udhcpc");
        assert!(
            ok,
            "udhcpc for {} got no lease: {events:?}",
            mac_to_string(mac)
        );
        let addrs = addresses(&self.world, &inst).unwrap();
        (inst, addrs)
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

/// A running tcpdump (`-n -e`, line-buffered) on `ifname` in `ns`; the world kills it on
/// drop if the test does not stop it.
pub struct Capture {
    child: Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
    reader: std::thread::JoinHandle<()>,
    lines: Arc<Mutex<Vec<String>>>,
    what: String,
}

/// What a stopped [`Capture`] saw.
pub struct Captured {
    /// One string per packet: the outer frame's line, then what tcpdump decoded inside it
    /// (a VXLAN packet's inner frame) after ` | `.
    pub packets: Vec<String>,
    /// Packets the kernel dropped because tcpdump did not keep up, by tcpdump's count.
    pub dropped: u64,
}

impl Capture {
    /// Captures VXLAN packets (UDP port 4789 and `filter`); returns once tcpdump listens
    /// (its "listening on" line).
    pub fn start(host: &mut Host, ns: &str, ifname: &str, filter: &str) -> Capture {
        Capture::spawn(host, ns, ifname, &format!("udp port 4789 and {filter}"))
    }

    /// Captures every frame; returns once tcpdump listens.
    pub fn all(host: &mut Host, ns: &str, ifname: &str) -> Capture {
        Capture::spawn(host, ns, ifname, "")
    }

    fn spawn(host: &mut Host, ns: &str, ifname: &str, expr: &str) -> Capture {
        let mut cmd = Command::new("ip");
        // A 16 MiB buffer and 160-byte snapshots (outer and inner headers) keep up with
        // a bulk transfer through the appliances.
        cmd.args(["netns", "exec", ns, "tcpdump", "-n", "-l", "-e"])
            .args(["--immediate-mode", "-B", "16384", "-s", "160", "-i", ifname]);
        if !expr.is_empty() {
            cmd.arg(expr);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        host.world.track_pid(child.id());
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            let n = stderr.read_line(&mut line).expect("tcpdump stderr");
            assert!(n > 0, "tcpdump in {ns} exited before listening");
        }
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap().push(l);
            }
        });
        Capture {
            child,
            stderr,
            reader,
            lines,
            what: format!("{ns}/{ifname} ({expr})"),
        }
    }

    /// How many packets tcpdump printed so far.
    pub fn count(&self) -> usize {
        packets(&self.lines.lock().unwrap()).len()
    }

    /// Stops tcpdump and returns how many packets it printed.
    pub fn stop(self) -> usize {
        self.stop_all().packets.len()
    }

    /// Stops tcpdump (SIGTERM, so that it prints every packet it holds and its counts)
    /// and returns what it saw.
    pub fn stop_all(mut self) -> Captured {
        // `ip netns exec` execs tcpdump, so the child's pid is tcpdump's.
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = self.reader.join();
        let mut summary = String::new();
        let _ = std::io::Read::read_to_string(&mut self.stderr, &mut summary);
        let dropped = summary
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel")?.parse().ok())
            .unwrap_or(0);
        let lines = self.lines.lock().unwrap();
        // A bulk transfer's thousands of packets would bury the test's own output.
        const SHOWN: usize = 200;
        let more = match lines.len().saturating_sub(SHOWN) {
            0 => String::new(),
            n => format!("\n… {n} more lines"),
        };
        eprintln!(
            "tcpdump on {}:\n{}{more}\n{}",
            self.what,
            lines[..lines.len().min(SHOWN)].join("\n"),
            summary.trim()
        );
        Captured {
            packets: packets(&lines),
            dropped,
        }
    }
}

/// Groups tcpdump's lines into packets: a packet starts with its timestamp
/// (`HH:MM:SS.uuuuuu`); a line that does not (the inner frame tcpdump prints under a VXLAN
/// header, which starts with a MAC address) belongs to the packet above it. Blank lines
/// (tcpdump prints one as SIGTERM stops it) are no packets.
fn packets(lines: &[String]) -> Vec<String> {
    let mut packets: Vec<String> = Vec::new();
    for l in lines.iter().filter(|l| !l.trim().is_empty()) {
        let timestamp = l.as_bytes().get(8) == Some(&b'.') && l.as_bytes().get(2) == Some(&b':');
        match packets.last_mut() {
            Some(p) if !timestamp => {
                p.push_str(" | ");
                p.push_str(l);
            }
            _ => packets.push(l.clone()),
        }
    }
    packets
}
