//! The test world: network namespaces, bridges, taps and veth-connected "instance"
//! namespaces, all named `<prefix>-<short>` with a prefix unique to one world, and all
//! removed when the [`World`] drops, including during a panic.
//!
//! Nothing here ever touches the root namespace: every `ip` call carries `-n <ns>` for a
//! namespace this world created, and every name carries the world's prefix, so a bug
//! that lost the namespace would fail on "no such device" instead of altering the host.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};

use crate::env::{find_tool, ip_path};
use crate::netns::{NETNS_RUN_DIR, in_netns, netns_inode, netns_path, pid_netns_inode};

/// Every prefix starts with this, and [`cleanup_stale`] only ever looks at names that do.
pub const PREFIX_ROOT: &str = "nvt";

/// Linux interface names are at most `IFNAMSIZ - 1` bytes.
pub const MAX_IFNAME_LEN: usize = 15;

/// `ip netns add` mounts `/var/run/netns` on first use; two concurrent first uses can
/// race on that mount, so this process makes them one at a time.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// A private, self-cleaning set of network namespaces for one test.
///
/// The host namespace ([`World::host_ns`]) holds bridges and taps (run QEMU inside it);
/// each [`Instance`] is a further namespace hanging off a bridge through a veth pair.
pub struct World {
    test_name: String,
    prefix: String,
    host_ns: String,
    /// In creation order; the host namespace first.
    namespaces: Vec<String>,
    /// Link names in the host namespace (bridges, taps, host ends of veths).
    host_links: HashSet<String>,
    bridges: Vec<String>,
    children: Vec<Child>,
    tracked_pids: Vec<u32>,
    next_mac: u16,
    /// Held (flocked) for the world's lifetime; released last, after the namespaces.
    lock: Option<PrefixLock>,
}

/// A namespace attached to a bridge: a stand-in for a client, server or router that an
/// appliance talks to.
#[derive(Clone, Debug)]
pub struct Instance {
    /// The instance's own network namespace.
    pub ns: String,
    /// Its interface inside `ns` (one end of the veth pair).
    pub ifname: String,
    /// MAC address of `ifname`.
    pub mac: [u8; 6],
    /// Address and prefix length configured on `ifname`, if any.
    pub addr: Option<(Ipv4Addr, u8)>,
    /// The other end of the veth pair: a port of the bridge, in the host namespace.
    pub host_port: String,
}

impl World {
    /// Creates a world with a fresh prefix and its host namespace (loopback up, IPv6
    /// disabled so links stay quiet; see [`World::sysctl`] to turn it back on).
    pub fn new(test_name: &str) -> anyhow::Result<World> {
        let lock = PrefixLock::acquire(test_name)?;
        let prefix = lock.prefix.clone();
        let mut world = World {
            test_name: test_name.to_owned(),
            host_ns: String::new(),
            prefix,
            namespaces: Vec::new(),
            host_links: HashSet::new(),
            bridges: Vec::new(),
            children: Vec::new(),
            tracked_pids: Vec::new(),
            next_mac: 1,
            lock: Some(lock),
        };
        // From here on Drop cleans up whatever part of the world exists.
        world.host_ns = world.create_ns("host")?;
        // Where br_netfilter is loaded (Docker loads it), bridges would run IPv4 header
        // checks and iptables on bridged frames: the bad frames tests send would vanish
        // before reaching a tap. Our bridges are plain L2, as on a Neutron host's bridge.
        let host_ns = world.host_ns.clone();
        for family in ["iptables", "ip6tables", "arptables"] {
            let key = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
            let in_ns = world.exec(&host_ns, &["test", "-e", &key])?;
            if in_ns.status.success() {
                world.sysctl(
                    &host_ns,
                    &format!("net.bridge.bridge-nf-call-{family}"),
                    "0",
                )?;
            }
        }
        Ok(world)
    }

    /// A directory for this world's files (VM logs, configs), removed with the world.
    pub fn scratch_dir(&self) -> std::path::PathBuf {
        std::env::temp_dir()
            .join("nanovnf-tests")
            .join(&self.prefix)
    }

    /// The prefix every name in this world starts with, e.g. `nvt3fa9c`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace holding bridges and taps.
    pub fn host_ns(&self) -> &str {
        &self.host_ns
    }

    /// Every namespace this world created, host namespace first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The name passed to [`World::new`].
    pub fn test_name(&self) -> &str {
        &self.test_name
    }

    /// `<prefix>-<short>`, checked against the interface name limit. `short` must be
    /// lowercase ASCII letters and digits, so names never need quoting.
    pub fn name(&self, short: &str) -> anyhow::Result<String> {
        if short.is_empty()
            || !short
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("name part {short:?} must be non-empty lowercase ASCII letters/digits");
        }
        let name = format!("{}-{short}", self.prefix);
        if name.len() > MAX_IFNAME_LEN {
            bail!(
                "name {name:?} is {} bytes, over Linux's {MAX_IFNAME_LEN}-byte interface name \
                 limit: keep the short part to {} characters",
                name.len(),
                MAX_IFNAME_LEN - self.prefix.len() - 1
            );
        }
        Ok(name)
    }

    /// Lets instances join `bridge`, a bridge someone else (the manager under test) made in
    /// the host namespace; it goes away with the namespace.
    pub fn adopt_bridge(&mut self, bridge: &str) {
        self.bridges.push(bridge.to_owned());
    }

    /// Adds a bridge (STP off, no forwarding delay) in the host namespace and sets it up.
    pub fn add_bridge(&mut self, short: &str, mtu: u16) -> anyhow::Result<String> {
        let name = self.claim_host_link(short)?;
        let mtu_s = mtu.to_string();
        self.ip(
            &self.host_ns,
            &[
                "link",
                "add",
                "name",
                &name,
                "mtu",
                &mtu_s,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        )?;
        self.ip(&self.host_ns, &["link", "set", "dev", &name, "up"])?;
        self.bridges.push(name.clone());
        Ok(name)
    }

    /// Adds a persistent tap in the host namespace, enslaved to `bridge` and up. QEMU
    /// attaches with `-netdev tap,ifname=<name>,script=no,downscript=no` when run in
    /// [`World::host_ns`]; the tap has no carrier until it does.
    pub fn add_tap(&mut self, short: &str, bridge: &str, mtu: u16) -> anyhow::Result<String> {
        self.check_bridge(bridge)?;
        let name = self.claim_host_link(short)?;
        self.ip(
            &self.host_ns,
            &["tuntap", "add", "dev", &name, "mode", "tap"],
        )?;
        let mtu_s = mtu.to_string();
        self.ip(
            &self.host_ns,
            &[
                "link", "set", "dev", &name, "mtu", &mtu_s, "master", bridge, "up",
            ],
        )?;
        Ok(name)
    }

    /// Adds an instance namespace `<prefix>-<short>` joined to `bridge` by a veth pair
    /// whose ends are both named `<prefix>-<short>` (one in the host namespace as a bridge
    /// port, one inside the instance). `addr` is like `"192.168.1.10/24"`; without `mac`
    /// a locally administered MAC derived from the prefix is used.
    pub fn add_instance(
        &mut self,
        short: &str,
        bridge: &str,
        addr: Option<&str>,
        mac: Option<[u8; 6]>,
        mtu: u16,
    ) -> anyhow::Result<Instance> {
        self.check_bridge(bridge)?;
        let addr = addr.map(parse_cidr).transpose()?;
        let mac = match mac {
            Some(m) => m,
            None => self.next_default_mac(),
        };
        let host_port = self.claim_host_link(short)?;
        let ns = self.create_ns(short)?;
        let ifname = host_port.clone();
        let mtu_s = mtu.to_string();
        self.ip(
            &self.host_ns,
            &[
                "link", "add", "name", &host_port, "mtu", &mtu_s, "type", "veth", "peer", "name",
                &ifname, "netns", &ns,
            ],
        )?;
        self.ip(
            &self.host_ns,
            &["link", "set", "dev", &host_port, "master", bridge, "up"],
        )?;
        let mac_s = mac_to_string(mac);
        self.ip(
            &ns,
            &[
                "link", "set", "dev", &ifname, "address", &mac_s, "mtu", &mtu_s, "up",
            ],
        )?;
        if let Some((ip, len)) = addr {
            self.ip(
                &ns,
                &["addr", "add", &format!("{ip}/{len}"), "dev", &ifname],
            )?;
        }
        Ok(Instance {
            ns,
            ifname,
            mac,
            addr,
            host_port,
        })
    }

    /// Joins instance namespace `ns` (one of this world's) to another `bridge` through a
    /// further veth pair named `<prefix>-<short>` at both ends, e.g. to make the
    /// instance a router between two bridges. `addr` as for [`World::add_instance`].
    pub fn add_interface(
        &mut self,
        ns: &str,
        short: &str,
        bridge: &str,
        addr: Option<&str>,
        mtu: u16,
    ) -> anyhow::Result<String> {
        self.check_ns(ns)?;
        if ns == self.host_ns {
            bail!("add_interface joins an instance namespace, not the host namespace");
        }
        self.check_bridge(bridge)?;
        let addr = addr.map(parse_cidr).transpose()?;
        let host_port = self.claim_host_link(short)?;
        let mtu_s = mtu.to_string();
        self.ip(
            &self.host_ns,
            &[
                "link", "add", "name", &host_port, "mtu", &mtu_s, "type", "veth", "peer", "name",
                &host_port, "netns", ns,
            ],
        )?;
        self.ip(
            &self.host_ns,
            &["link", "set", "dev", &host_port, "master", bridge, "up"],
        )?;
        let mac_s = mac_to_string(self.next_default_mac());
        self.ip(
            ns,
            &[
                "link", "set", "dev", &host_port, "address", &mac_s, "mtu", &mtu_s, "up",
            ],
        )?;
        if let Some((ip, len)) = addr {
            self.ip(
                ns,
                &["addr", "add", &format!("{ip}/{len}"), "dev", &host_port],
            )?;
        }
        Ok(host_port)
    }

    /// Makes `inst` receive as a host of its own would: the frames the bridge sends it are
    /// taken up by NAPI, with GRO, in a kernel thread of their own (threaded NAPI on the
    /// veth). Otherwise a veth delivers inside whichever thread sent the frame, so every
    /// frame an appliance writes into its tap carries the receiving instance's whole
    /// stack (bridge, IP, TCP, the iperf3 wakeup) inside QEMU's one I/O thread, work that
    /// a remote host does on its own CPU. Linux takes veth's NAPI path only for frames
    /// the sending end would not have to segment, so the bridge's end loses TSO: this is
    /// for cases without offloads.
    pub fn receive_in_own_thread(&self, inst: &Instance) -> anyhow::Result<()> {
        for (ns, dev, feature, value) in [
            (&self.host_ns, &inst.host_port, "tso", "off"),
            (&inst.ns, &inst.ifname, "gro", "on"),
        ] {
            let out = self.exec(ns, &["ethtool", "-K", dev, feature, value])?;
            if !out.status.success() {
                bail!(
                    "ethtool -K {dev} {feature} {value} in {ns}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let threaded = format!("/sys/class/net/{}/threaded", inst.ifname);
        let out = self.exec(
            &inst.ns,
            &[
                "sh",
                "-c",
                &format!("echo 1 > {threaded} && cat {threaded}"),
            ],
        )?;
        if String::from_utf8_lossy(&out.stdout).trim() != "1" {
            bail!(
                "threaded NAPI on {} in {}: {}",
                inst.ifname,
                inst.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Runs `argv` inside `ns` (one of this world's namespaces) via `ip netns exec`, with
    /// stdin closed, and returns its output whatever the exit status.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> anyhow::Result<Output> {
        self.check_ns(ns)?;
        if argv.is_empty() {
            bail!("exec in {ns}: empty argv");
        }
        Command::new(ip_path())
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {argv:?} in {ns}"))
    }

    /// Runs `ip -n <ns> <args>` and returns its stdout; a non-zero exit is an error
    /// carrying stderr.
    pub fn ip(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        self.check_ns(ns)?;
        let out = Command::new(ip_path())
            .args(["-n", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} -n {ns} {args:?}", ip_path().display()))?;
        if !out.status.success() {
            bail!(
                "`ip -n {ns} {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Sets a per-namespace sysctl (`key` like `net.ipv4.ip_forward`) inside `ns`. Only
    /// `net.` keys are accepted: most other sysctls are global and would change the host.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.check_ns(ns)?;
        write_net_sysctl(ns, key, value)
    }

    /// Spawns `cmd` inside `ns` in a new process group. The world owns the child: it is
    /// killed (whole group, SIGKILL) and reaped at [`World::kill`] or on drop. Returns the
    /// PID. Configure stdio on `cmd` before passing it in.
    pub fn spawn(&mut self, ns: &str, mut cmd: Command) -> anyhow::Result<u32> {
        self.check_ns(ns)?;
        // std opens with O_CLOEXEC: the fd is gone once the child execs.
        let ns_file = File::open(netns_path(ns)).with_context(|| format!("opening netns {ns}"))?;
        let fd = ns_file.as_raw_fd();
        cmd.process_group(0);
        // SAFETY: the hook runs in the forked child before exec and only makes the
        // async-signal-safe setns syscall and reads errno; `fd` stays valid because
        // `ns_file` outlives `spawn` below.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {:?} in {ns}", cmd.get_program()))?;
        drop(ns_file);
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// The child [`World::spawn`] started with this PID, e.g. to take its stdout or
    /// `try_wait` it.
    pub fn child_mut(&mut self, pid: u32) -> Option<&mut Child> {
        self.children.iter_mut().find(|c| c.id() == pid)
    }

    /// Kills (SIGKILL to its process group) and reaps a child started by [`World::spawn`].
    pub fn kill(&mut self, pid: u32) -> anyhow::Result<ExitStatus> {
        let idx = self
            .children
            .iter()
            .position(|c| c.id() == pid)
            .ok_or_else(|| anyhow!("pid {pid} was not spawned by this world"))?;
        let mut child = self.children.swap_remove(idx);
        kill_child_group(&mut child)
    }

    /// Remembers a process started elsewhere (e.g. QEMU via `ip netns exec`) so that drop
    /// kills it. Drop only signals it if it is then still inside one of this world's
    /// namespaces, so a reaped-and-reused PID is never hit.
    pub fn track_pid(&mut self, pid: u32) {
        self.tracked_pids.push(pid);
    }

    fn create_ns(&mut self, short: &str) -> anyhow::Result<String> {
        let name = self.name(short)?;
        if self.namespaces.contains(&name) {
            bail!("namespace {name} already exists in this world");
        }
        {
            let _guard = NETNS_ADD.lock().unwrap_or_else(|p| p.into_inner());
            run_ip(&["netns", "add", &name])?;
        }
        self.namespaces.push(name.clone());
        // Programs run through `ip netns exec` see /etc/netns/<ns>/* bind-mounted over
        // /etc: a DHCP client's script then rewrites this resolv.conf, not the host's.
        let etc = etc_netns_dir(&name);
        std::fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
        std::fs::write(etc.join("resolv.conf"), "")
            .with_context(|| format!("creating {}/resolv.conf", etc.display()))?;
        self.ip(&name, &["link", "set", "dev", "lo", "up"])?;
        // Quiet links: no router solicitations, MLD or DAD frames reaching appliances
        // or raw-socket captures. Kernels without IPv6 have no such key; that is fine.
        if std::path::Path::new("/proc/sys/net/ipv6").exists() {
            for key in [
                "net.ipv6.conf.default.disable_ipv6",
                "net.ipv6.conf.all.disable_ipv6",
            ] {
                write_net_sysctl(&name, key, "1")?;
            }
        }
        Ok(name)
    }

    fn claim_host_link(&mut self, short: &str) -> anyhow::Result<String> {
        let name = self.name(short)?;
        if !self.host_links.insert(name.clone()) {
            bail!("a link named {name} already exists in {}", self.host_ns);
        }
        Ok(name)
    }

    fn check_ns(&self, ns: &str) -> anyhow::Result<()> {
        if self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            bail!(
                "namespace {ns:?} does not belong to this world ({})",
                self.prefix
            )
        }
    }

    fn check_bridge(&self, bridge: &str) -> anyhow::Result<()> {
        if self.bridges.iter().any(|b| b == bridge) {
            Ok(())
        } else {
            bail!(
                "bridge {bridge:?} was not made by this world ({})",
                self.prefix
            )
        }
    }

    fn next_default_mac(&mut self) -> [u8; 6] {
        let h = mix64(self.prefix.bytes().fold(0u64, |a, b| a << 8 ^ u64::from(b)));
        let n = self.next_mac;
        self.next_mac = self.next_mac.wrapping_add(1);
        let [_, _, _, _, _, h0, h1, h2] = h.to_be_bytes();
        let [n0, n1] = n.to_be_bytes();
        // 0x02: locally administered, unicast.
        [0x02, h0, h1, h2, n0, n1]
    }

    fn teardown(&mut self) {
        let tag = format!("nanovnf-tests[{} {}]", self.prefix, self.test_name);
        let scratch = self.scratch_dir();
        if scratch.exists()
            && let Err(e) = std::fs::remove_dir_all(&scratch)
        {
            eprintln!("{tag}: removing {}: {e}", scratch.display());
        }
        for mut child in std::mem::take(&mut self.children) {
            if let Err(e) = kill_child_group(&mut child) {
                eprintln!("{tag}: killing child {}: {e:#}", child.id());
            }
        }
        let inodes: Vec<u64> = self
            .namespaces
            .iter()
            .filter_map(|ns| netns_inode(ns).ok())
            .collect();
        let mut signalled = Vec::new();
        for pid in std::mem::take(&mut self.tracked_pids) {
            if pid_netns_inode(pid).is_some_and(|ino| inodes.contains(&ino)) {
                // SAFETY: kill takes plain integers; the PID was just checked to be a
                // process inside one of our namespaces, i.e. one this test started.
                if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                    signalled.push(pid);
                }
            }
        }
        // A killed process leaves its namespaces as it exits; give it a moment so that
        // deleting the namespace really frees it.
        crate::wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
            signalled
                .iter()
                .all(|&pid| !pid_netns_inode(pid).is_some_and(|ino| inodes.contains(&ino)))
        });
        for (pid, comm) in processes_in(&inodes) {
            eprintln!(
                "{tag}: WARNING process {pid} ({comm}) not started through this world is still \
                 inside one of its namespaces; not killing it, the namespace will linger until \
                 it exits"
            );
        }
        for ns in std::mem::take(&mut self.namespaces).iter().rev() {
            if let Err(e) = run_ip(&["netns", "del", ns]) {
                eprintln!("{tag}: deleting namespace {ns}: {e:#}");
            }
            let etc = etc_netns_dir(ns);
            if etc.exists()
                && let Err(e) = std::fs::remove_dir_all(&etc)
            {
                eprintln!("{tag}: removing {}: {e}", etc.display());
            }
        }
        // Dropping the lock last: the prefix may be reused only once its names are gone.
        self.lock.take();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Instance {
    /// Sends `count` echo requests to `dst` with the real `ping` binary from inside this
    /// instance; `true` when all `count` replies came back within `timeout`.
    pub fn ping(
        &self,
        world: &World,
        dst: Ipv4Addr,
        count: u32,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let ping = find_tool("ping").ok_or_else(|| anyhow!("`ping` (iputils-ping) not found"))?;
        let ping = ping.to_string_lossy();
        // -w takes whole seconds: round up so a short timeout still allows one reply.
        let deadline = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let out = world.exec(
            &self.ns,
            &[
                &ping,
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-w",
                &deadline.max(1).to_string(),
                &dst.to_string(),
            ],
        )?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!(
                "ping {dst} from {} failed: {}",
                self.ns,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }

    /// Installs a permanent neighbour entry `ip -> mac` on this instance's interface,
    /// e.g. so the first packets to a booting VM do not wait on ARP (whose retries are a
    /// second apart, which would swamp a boot-time measurement).
    pub fn set_neighbor(&self, world: &World, ip: Ipv4Addr, mac: [u8; 6]) -> anyhow::Result<()> {
        world.ip(
            &self.ns,
            &[
                "neigh",
                "replace",
                &ip.to_string(),
                "lladdr",
                &mac_to_string(mac),
                "dev",
                &self.ifname,
                "nud",
                "permanent",
            ],
        )?;
        Ok(())
    }

    /// The configured IPv4 address, or an error naming the instance.
    pub fn ip(&self) -> anyhow::Result<Ipv4Addr> {
        self.addr
            .map(|(ip, _)| ip)
            .ok_or_else(|| anyhow!("instance {} has no address", self.ns))
    }
}

/// The per-namespace /etc overlay `ip netns exec` applies.
pub fn etc_netns_dir(ns: &str) -> std::path::PathBuf {
    std::path::Path::new("/etc/netns").join(ns)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_to_string(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

fn parse_cidr(s: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("address {s:?} must look like 192.168.1.10/24"))?;
    let ip: Ipv4Addr = ip.parse().with_context(|| format!("address {s:?}"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("prefix length in {s:?}"))?;
    if len > 32 {
        bail!("prefix length in {s:?} is over 32");
    }
    Ok((ip, len))
}

/// `ip <args>` without `-n`: only for `netns add/del` of names this crate generated.
fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(ip_path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} {args:?}", ip_path().display()))?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn write_net_sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    if !key.starts_with("net.") || key.contains("..") || key.contains('/') {
        bail!("sysctl {key:?}: only per-namespace net.* keys may be set");
    }
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    let owned = value.to_owned();
    // /proc/sys/net resolves against the opening thread's namespace, so the write
    // happens on a thread inside `ns`.
    in_netns(ns, move || -> std::io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)?
            .write_all(owned.as_bytes())
    })?
    .with_context(|| format!("setting {key}={value} in {ns}"))
}

fn kill_child_group(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if child.try_wait()?.is_none() {
        // The child is unreaped, so its PID (which is also its process group id, from
        // process_group(0)) cannot have been reused.
        let pgid = child.id() as libc::pid_t;
        // SAFETY: kill takes plain integers; -pgid names the group this world created.
        if unsafe { libc::kill(-pgid, libc::SIGKILL) } != 0 {
            // The group may already be gone; fall back to the child itself.
            child.kill()?;
        }
    }
    Ok(child.wait()?)
}

/// PIDs (with their command names) of processes whose network namespace is one of
/// `inodes`.
fn processes_in(inodes: &[u64]) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| pid_netns_inode(pid).is_some_and(|ino| inodes.contains(&ino)))
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, comm.trim().to_owned())
        })
        .collect()
}

fn mix64(mut z: u64) -> u64 {
    // splitmix64 finaliser.
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Directory of per-prefix lock files, shared by every process on the machine.
pub(crate) fn lock_dir() -> PathBuf {
    if std::path::Path::new("/run").is_dir() {
        PathBuf::from("/run/nanovnf-tests")
    } else {
        std::env::temp_dir().join("nanovnf-tests")
    }
}

/// Tries to take an exclusive flock without blocking; `Ok(false)` when someone holds it.
pub(crate) fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock only takes the fd, which `file` keeps open for the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Ownership of a prefix, visible to other processes: `<lock_dir>/<prefix>.lock` exists
/// and is flocked for as long as the owning world lives. A crashed owner's lock is
/// released by the kernel, which is how [`cleanup_stale`] tells leftovers from live worlds.
struct PrefixLock {
    prefix: String,
    path: PathBuf,
    /// Kept open only for its flock, which closing releases.
    _file: File,
}

impl PrefixLock {
    fn acquire(test_name: &str) -> anyhow::Result<PrefixLock> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let existing = list_netns();
        let pid = std::process::id();
        for _ in 0..64 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let h = mix64(u64::from(pid) << 32 ^ n.rotate_left(17) ^ t);
            let prefix = format!("{PREFIX_ROOT}{:05x}", h & 0xf_ffff);
            let dash = format!("{prefix}-");
            if existing.iter().any(|ns| ns.starts_with(&dash)) {
                continue;
            }
            // Lock a private file, then publish it under the final name with link(),
            // which fails if the name exists: a published lock file is always held.
            let tmp = dir.join(format!(".{prefix}.{pid}.{n}.tmp"));
            let mut file =
                File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            if !try_flock(&file)? {
                let _ = std::fs::remove_file(&tmp);
                continue;
            }
            let _ = writeln!(file, "pid {pid} test {test_name}");
            let path = dir.join(format!("{prefix}.lock"));
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    return Ok(PrefixLock {
                        prefix,
                        path,
                        _file: file,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("publishing {}", path.display())),
            }
        }
        bail!(
            "could not find a free world prefix after 64 tries (stale locks in {}?)",
            dir.display()
        )
    }
}

impl Drop for PrefixLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock, so nobody can see it unlocked.
        if let Err(e) = std::fs::remove_file(&self.path) {
            eprintln!("nanovnf-tests: removing {}: {e}", self.path.display());
        }
    }
}

/// Names of all named network namespaces.
fn list_netns() -> Vec<String> {
    std::fs::read_dir(NETNS_RUN_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Deletes namespaces left behind by crashed earlier runs: those named
/// `<prefix>-<anything>` where `<prefix>` starts with `prefix_root` (which must itself
/// start with [`PREFIX_ROOT`]) and no live world holds `<prefix>`'s lock. Worlds of
/// other processes running right now are left alone. Processes still inside a stale
/// namespace are reported, not killed. Returns the namespaces deleted.
pub fn cleanup_stale(prefix_root: &str) -> Vec<String> {
    if !prefix_root.starts_with(PREFIX_ROOT) {
        eprintln!(
            "nanovnf-tests: cleanup_stale({prefix_root:?}) refused: must start with {PREFIX_ROOT:?}"
        );
        return Vec::new();
    }
    let dir = lock_dir();
    let mut by_prefix: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for ns in list_netns() {
        if let Some((prefix, _)) = ns.split_once('-')
            && prefix.starts_with(prefix_root)
        {
            by_prefix.entry(prefix.to_owned()).or_default().push(ns);
        }
    }
    // Unlocked lock files with no namespaces left are stale too.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            if let Some(prefix) = name.strip_suffix(".lock")
                && prefix.starts_with(prefix_root)
            {
                by_prefix.entry(prefix.to_owned()).or_default();
            }
        }
    }
    let mut deleted = Vec::new();
    for (prefix, namespaces) in by_prefix {
        let lock_path = dir.join(format!("{prefix}.lock"));
        // Take the prefix's lock (creating the file if the owner died before or after
        // having it): a live world holds it, and so does a concurrent cleaner, and while
        // we hold it no new world can publish a lock for this prefix.
        let _lock = match lock_stale(&lock_path) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("nanovnf-tests: locking {}: {e}", lock_path.display());
                continue;
            }
        };
        let inodes: Vec<u64> = namespaces
            .iter()
            .filter_map(|n| netns_inode(n).ok())
            .collect();
        for (pid, comm) in processes_in(&inodes) {
            eprintln!(
                "nanovnf-tests: WARNING stale process {pid} ({comm}) inside a {prefix} namespace; \
                 not killing it"
            );
        }
        for ns in namespaces {
            if !netns_path(&ns).exists() {
                continue; // its owner finished meanwhile
            }
            match run_ip(&["netns", "del", &ns]) {
                Ok(()) => deleted.push(ns),
                Err(e) => eprintln!("nanovnf-tests: deleting stale namespace {ns}: {e:#}"),
            }
        }
        // The /etc overlays of this prefix's namespaces, deleted or not found above.
        if let Ok(entries) = std::fs::read_dir("/etc/netns") {
            for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
                if name.split_once('-').is_some_and(|(p, _)| p == prefix)
                    && !netns_path(&name).exists()
                {
                    let _ = std::fs::remove_dir_all(etc_netns_dir(&name));
                }
            }
        }
        // Unlink while holding the lock, as PrefixLock's drop does.
        let _ = std::fs::remove_file(&lock_path);
    }
    deleted
}

/// Opens (creating if needed) and flocks `path`, making sure the locked file is still
/// the one at `path` (not unlinked by a concurrent cleaner). `None` when someone holds it.
fn lock_stale(path: &std::path::Path) -> std::io::Result<Option<File>> {
    use std::os::unix::fs::MetadataExt;
    for _ in 0..8 {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !try_flock(&file)? {
            return Ok(None);
        }
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == file.metadata()?.ino() => return Ok(Some(file)),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}
