//! DHCPv4 load generation from one `AF_PACKET` socket in a namespace: full DORA exchanges
//! for many reserved MACs with a bounded window ([`Generator::run_dora`]), paced
//! DISCOVER→OFFER latency ([`Generator::discover_latency`]), and the servers it measures
//! behind one trait ([`DhcpTarget`]), starting with dnsmasq run as Neutron's DHCP agent
//! runs it ([`DnsmasqTarget`]). The generator talks only DHCP on the wire, so it measures
//! dnsmasq and the nanovnf appliance identically.
//!
//! ```no_run
//! use nanovnf_tests::World;
//! use nanovnf_tests::dhcpload::{DhcpNet, DhcpTarget, DnsmasqTarget, DoraOptions, Generator};
//! use std::time::Duration;
//! let mut world = World::new("dhcp-example").unwrap();
//! let br = world.add_bridge("br", 1500).unwrap();
//! let client = world.add_instance("gen", &br, None, None, 1500).unwrap();
//! let net = DhcpNet::new(50).unwrap();
//! let mut dnsmasq = DnsmasqTarget::new().unwrap();
//! let server = dnsmasq.start(&mut world, &br, &net).unwrap();
//! let mut generator = Generator::on(&client).unwrap();
//! generator.wait_ready(&net.reservations[0], Duration::from_secs(10)).unwrap();
//! let report = generator.run_dora(&net.reservations, &DoraOptions::default()).unwrap();
//! assert_eq!(report.total_errors(), 0);
//! server.stop(&mut world).unwrap();
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use dhcproto::v4::{self, DhcpOption, Flags, Message, OptionCode};
use dhcproto::{Decodable, Encodable};

use crate::{
    BROADCAST_MAC, ETHERTYPE_IPV4, Instance, RawSocket, World, ethernet, find_tool,
    internet_checksum, ipv4_header, mac_to_string,
};

/// DHCP's UDP ports.
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// dhclient's default parameter request list (Debian 12): what a typical instance asks.
const PRL: [u8; 13] = [1, 28, 2, 3, 15, 6, 119, 12, 44, 47, 26, 121, 42];
/// Client messages are padded to BOOTP's 300 bytes, as dhclient pads them.
const MIN_MESSAGE_LEN: usize = 300;
/// Enough for any frame on a 1500-byte link; longer ones are cut and fail to parse.
const RECV_BUF: usize = 2048;
/// Asked for on the generator's socket so a burst of replies is not dropped before we read.
const SOCKET_RCVBUF: usize = 4 << 20;
/// How many error descriptions a report keeps; later ones are only counted.
const KEPT_ERRORS: usize = 8;

// ---------------------------------------------------------------- the subnet under test

/// One static host: dnsmasq's `dhcp-host=MAC,name,IP`, the appliance's reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

impl Reservation {
    /// Neutron's generated host name for the address, e.g. `host-198-18-0-10`.
    pub fn hostname(&self) -> String {
        format!("host-{}", self.ip.to_string().replace('.', "-"))
    }
}

/// The tenant subnet every target serves, shaped like a Neutron subnet with isolated
/// metadata: a gateway, the metadata route via the DHCP port, MTU 1450 (VXLAN) and
/// [`DhcpNet::reservations`] static hosts. A target must announce exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpNet {
    /// Network address and prefix length.
    pub subnet: (Ipv4Addr, u8),
    /// The DHCP server's own address (Neutron's DHCP port): the server identifier.
    pub server_ip: Ipv4Addr,
    /// Option 3 and the default route in 121/249.
    pub gateway: Ipv4Addr,
    /// Route 169.254.169.254/32 via this address in 121/249 (Neutron's isolated metadata
    /// sends it via the DHCP port).
    pub metadata_ip: Ipv4Addr,
    /// Option 26, forced (`dhcp-option-force=option:mtu,1450`).
    pub mtu: u16,
    pub lease_secs: u32,
    /// Option 15.
    pub domain: String,
    /// A Neutron subnet id, used for dnsmasq's tags.
    pub subnet_id: String,
    pub reservations: Vec<Reservation>,
}

impl DhcpNet {
    /// `count` reservations in 198.18.0.0/21 (RFC 2544's benchmarking range), from
    /// 198.18.0.10 up, MACs `fa:16:3e:…` (OpenStack's prefix) numbered from 1.
    pub fn new(count: usize) -> anyhow::Result<DhcpNet> {
        let subnet = Ipv4Addr::new(198, 18, 0, 0);
        let prefix_len = 21;
        let first = u32::from(subnet) + 10;
        let last_host = u32::from(subnet) + (1 << (32 - prefix_len)) - 2;
        if count == 0 || first + count as u32 - 1 > last_host {
            bail!(
                "{count} reservations do not fit in {subnet}/{prefix_len} from .10 (at most {})",
                last_host - first + 1
            );
        }
        let reservations = (0..count as u32)
            .map(|i| {
                let [_, a, b, c] = (i + 1).to_be_bytes();
                Reservation {
                    mac: [0xfa, 0x16, 0x3e, a, b, c],
                    ip: Ipv4Addr::from(first + i),
                }
            })
            .collect();
        Ok(DhcpNet {
            subnet: (subnet, prefix_len),
            server_ip: Ipv4Addr::new(198, 18, 0, 2),
            gateway: Ipv4Addr::new(198, 18, 0, 1),
            metadata_ip: Ipv4Addr::new(198, 18, 0, 2),
            mtu: 1450,
            lease_secs: 86400,
            domain: "openstacklocal".to_owned(),
            subnet_id: "2a7c8f04-5f1e-4e3b-9c41-7d0b8e6f1a55".to_owned(),
            reservations,
        })
    }

    /// The subnet mask, e.g. 255.255.248.0.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(
            u32::MAX
                .checked_shl(32 - u32::from(self.subnet.1))
                .unwrap_or(0),
        )
    }

    /// `server_ip/prefix_len`, for putting the server's address on an interface.
    pub fn server_cidr(&self) -> String {
        format!("{}/{}", self.server_ip, self.subnet.1)
    }

    /// Classless static routes (121/249) in Neutron's order: metadata, then default.
    pub fn routes(&self) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
        vec![
            (Ipv4Addr::new(169, 254, 169, 254), 32, self.metadata_ip),
            (Ipv4Addr::UNSPECIFIED, 0, self.gateway),
        ]
    }
}

// ---------------------------------------------------------------- targets

/// A DHCP server the benchmark can measure. `start` attaches it to `bridge` in `world`
/// serving `net` and returns as soon as it is launched; readiness is probed over DHCP by
/// the caller ([`Generator::wait_ready`]), the same way for every target. A target may be
/// started several times in one world (once per repetition), so it creates its
/// namespaces, taps or other world resources on first use and reuses them afterwards.
pub trait DhcpTarget {
    /// Short name for tables and JSON, e.g. `dnsmasq`.
    fn name(&self) -> String;
    /// One line about the version or configuration measured, for the report header.
    fn describe(&self) -> String;
    fn start(
        &mut self,
        world: &mut World,
        bridge: &str,
        net: &DhcpNet,
    ) -> anyhow::Result<Box<dyn RunningTarget>>;
}

/// A started target. Dropping it without [`RunningTarget::stop`] is safe: the world
/// kills what it spawned when it drops.
pub trait RunningTarget {
    /// The process whose CPU time is the target's (dnsmasq, QEMU), if there is one.
    fn pid(&self) -> Option<u32>;
    /// What helps explain a failure: stderr, the last log lines, the serial console.
    fn diagnostics(&self) -> String;
    /// The control channel of a target that has one (the appliance), for timing live
    /// changes; dnsmasq is changed by rewriting files and a SIGHUP instead.
    fn control(&mut self) -> Option<&mut nanovnf_qemu::ControlClient> {
        None
    }
    /// Stops the server and removes its files.
    fn stop(self: Box<Self>, world: &mut World) -> anyhow::Result<()>;
}

/// dnsmasq with the command line, files and options of Neutron's DHCP agent
/// (`neutron/agent/linux/dhcp.py`, `Dnsmasq._build_cmdline_callback`): static hosts file,
/// addn-hosts, opts file, an initial lease file with every port, `--bind-dynamic`, a
/// `static` range per subnet and `--dhcp-option-force=option:mtu,…`. It runs in its own
/// namespace joined to the bridge, in the foreground, as our child. Two differences from
/// the agent: `--keep-in-foreground` (so we own the process), and the log goes to a file
/// in the world's scratch directory instead of syslog, which this host may not run.
pub struct DnsmasqTarget {
    binary: PathBuf,
    version: String,
    instance: Option<Instance>,
    starts: u32,
}

impl DnsmasqTarget {
    /// Finds the `dnsmasq` binary (Debian's `dnsmasq-base`).
    pub fn new() -> anyhow::Result<DnsmasqTarget> {
        let binary = find_tool("dnsmasq")
            .ok_or_else(|| anyhow!("dnsmasq not found: apt-get install dnsmasq-base"))?;
        let version = Command::new(&binary)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "dnsmasq (unknown version)".to_owned());
        Ok(DnsmasqTarget {
            binary,
            version,
            instance: None,
            starts: 0,
        })
    }

    /// The namespace dnsmasq runs in, once started.
    pub fn instance(&self) -> Option<&Instance> {
        self.instance.as_ref()
    }
}

/// The command line of Neutron's agent for one IPv4 subnet, files under `dir`.
pub fn dnsmasq_args(dir: &Path, ifname: &str, net: &DhcpNet) -> Vec<String> {
    let f = |name: &str| dir.join(name).display().to_string();
    let (network, prefix_len) = net.subnet;
    let possible_leases = 1u64 << (32 - u32::from(prefix_len));
    vec![
        "--no-hosts".to_owned(),
        "--no-resolv".to_owned(),
        format!("--pid-file={}", f("pid")),
        format!("--dhcp-hostsfile={}", f("host")),
        format!("--addn-hosts={}", f("addn_hosts")),
        format!("--dhcp-optsfile={}", f("opts")),
        format!("--dhcp-leasefile={}", f("leases")),
        "--dhcp-match=set:ipxe,175".to_owned(),
        "--dhcp-userclass=set:ipxe6,iPXE".to_owned(),
        "--local-service".to_owned(),
        "--bind-dynamic".to_owned(),
        format!(
            "--dhcp-range=set:subnet-{},{network},static,{},{}s",
            net.subnet_id,
            net.netmask(),
            net.lease_secs
        ),
        format!("--dhcp-option-force=option:mtu,{}", net.mtu),
        format!("--dhcp-lease-max={possible_leases}"),
        "--conf-file=/dev/null".to_owned(),
        format!("--domain={}", net.domain),
        format!("--interface={ifname}"),
        // Ours: stay our child, log where we can read it.
        "--keep-in-foreground".to_owned(),
        format!("--log-facility={}", f("dnsmasq.log")),
    ]
}

/// How long before the benchmark the initial lease file is dated (see
/// [`write_dnsmasq_files`]).
const AGENT_STARTED_SECS_AGO: u64 = 3600;

/// Writes Neutron's `host`, `addn_hosts`, `opts` and initial `leases` files into `dir`.
pub fn write_dnsmasq_files(dir: &Path, net: &DhcpNet) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Neutron writes the initial lease file when its agent starts, as now + lease time.
    // We date it as if the agent had started an hour ago: otherwise ACKs within the
    // same wall-clock second as the file would leave each lease's expiry unchanged and
    // dnsmasq would skip the lease file rewrite that it does on a real host after
    // every ACK (which is most of its cost at 1,000 ports).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(AGENT_STARTED_SECS_AGO);
    let (mut host, mut addn, mut leases) = (String::new(), String::new(), String::new());
    for r in &net.reservations {
        let (mac, name) = (mac_to_string(r.mac), r.hostname());
        let fqdn = format!("{name}.{}", net.domain);
        let _ = writeln!(host, "{mac},{fqdn},{}", r.ip);
        let _ = writeln!(addn, "{}\t{fqdn} {name}", r.ip);
        // _output_init_lease_file: "epoch mac ip * *", so a restarted dnsmasq does not NAK.
        let _ = writeln!(
            leases,
            "{} {mac} {} * *",
            now + u64::from(net.lease_secs),
            r.ip
        );
    }
    let tag = format!("tag:subnet-{}", net.subnet_id);
    let routes: Vec<String> = net
        .routes()
        .iter()
        .map(|(dst, len, via)| format!("{dst}/{len},{via}"))
        .collect();
    let routes = routes.join(",");
    let opts = format!(
        "{tag},option:classless-static-route,{routes}\n{tag},249,{routes}\n\
         {tag},option:router,{}\n",
        net.gateway
    );
    for (name, text) in [
        ("host", host),
        ("addn_hosts", addn),
        ("opts", opts),
        ("leases", leases),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

impl DhcpTarget for DnsmasqTarget {
    fn name(&self) -> String {
        "dnsmasq".to_owned()
    }

    fn describe(&self) -> String {
        format!("{} (Neutron DHCP agent command line)", self.version)
    }

    fn start(
        &mut self,
        world: &mut World,
        bridge: &str,
        net: &DhcpNet,
    ) -> anyhow::Result<Box<dyn RunningTarget>> {
        if self.instance.is_none() {
            let inst = world.add_instance("dns", bridge, Some(&net.server_cidr()), None, 1500)?;
            self.instance = Some(inst);
        }
        let inst = self.instance.as_ref().expect("set above");
        // Down between runs (see `RunningDnsmasq::stop`).
        world.ip(&inst.ns, &["link", "set", "dev", &inst.ifname, "up"])?;
        self.starts += 1;
        let dir = world.scratch_dir().join(format!("dnsmasq{}", self.starts));
        write_dnsmasq_files(&dir, net)?;
        let stderr_path = dir.join("stderr");
        let stderr = std::fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(dnsmasq_args(&dir, &inst.ifname, net))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let pid = world.spawn(&inst.ns, cmd)?;
        Ok(Box::new(RunningDnsmasq {
            pid,
            dir,
            ns: inst.ns.clone(),
            ifname: inst.ifname.clone(),
        }))
    }
}

struct RunningDnsmasq {
    pid: u32,
    dir: PathBuf,
    ns: String,
    ifname: String,
}

impl RunningTarget for RunningDnsmasq {
    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn diagnostics(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let log = read("dnsmasq.log");
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "dnsmasq pid {} stderr: {:?}; last log lines:\n{}",
            self.pid,
            read("stderr").trim(),
            tail.join("\n")
        )
    }

    fn stop(self: Box<Self>, world: &mut World) -> anyhow::Result<()> {
        world.kill(self.pid)?;
        // The namespace keeps the server's address, which the next target uses too: with
        // its link down it answers no ARP and takes no broadcasts meanwhile.
        world.ip(&self.ns, &["link", "set", "dev", &self.ifname, "down"])?;
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing {}", self.dir.display()))
    }
}

// ---------------------------------------------------------------- the generator

/// How [`Generator::run_dora`] drives its exchanges.
#[derive(Debug, Clone)]
pub struct DoraOptions {
    /// Exchanges outstanding at once.
    pub window: usize,
    /// Every reservation does one DORA per round.
    pub rounds: usize,
    /// A message unanswered this long is sent again (same xid).
    pub retransmit_after: Duration,
    /// Sends of one message before the exchange counts as timed out.
    pub max_tries: u32,
}

impl Default for DoraOptions {
    fn default() -> Self {
        DoraOptions {
            window: 64,
            rounds: 1,
            retransmit_after: Duration::from_millis(500),
            max_tries: 4,
        }
    }
}

/// How [`Generator::discover_latency`] samples.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    pub samples: usize,
    /// Pause after each answered DISCOVER, so each finds the server idle.
    pub gap: Duration,
    /// A DISCOVER unanswered this long counts as a timeout (no retransmission).
    pub timeout: Duration,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            samples: 1000,
            gap: Duration::from_millis(2),
            timeout: Duration::from_secs(1),
        }
    }
}

/// Exchanges that went wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DoraErrors {
    /// Given up after [`DoraOptions::max_tries`] sends of the DISCOVER or REQUEST.
    pub timeouts: u64,
    pub naks: u64,
    /// An OFFER or ACK with an address other than the reservation's.
    pub wrong_ip: u64,
    /// An OFFER without a server identifier, so no REQUEST can be made.
    pub bad_offer: u64,
}

impl DoraErrors {
    pub fn total(&self) -> u64 {
        self.timeouts + self.naks + self.wrong_ip + self.bad_offer
    }
}

/// What [`Generator::run_dora`] saw.
#[derive(Debug, Clone, Default)]
pub struct DoraReport {
    /// Exchanges started: reservations × rounds.
    pub attempted: u64,
    /// Exchanges that ended in an ACK for the reserved address.
    pub completed: u64,
    /// From the first DISCOVER to the end of the last exchange.
    pub elapsed: Duration,
    pub errors: DoraErrors,
    /// Messages sent again after [`DoraOptions::retransmit_after`].
    pub retransmits: u64,
    /// Frames the kernel refused to send (retried by the retransmission timer).
    pub send_errors: u64,
    /// Replies for no exchange in flight: late duplicates after a retransmission, or
    /// strangers on the link.
    pub stray_replies: u64,
    /// Per reservation (in the order given), the address of its last ACK, right or wrong.
    pub acked: Vec<Option<Ipv4Addr>>,
    /// Time from the start at which each further round's worth of exchanges (one per
    /// reservation) had completed: shows whether the server slows down as it runs.
    pub round_marks: Vec<Duration>,
    /// The first few errors, described.
    pub first_errors: Vec<String>,
}

impl DoraReport {
    /// Completed exchanges per second.
    pub fn per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed as f64 / secs
        } else {
            0.0
        }
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.total()
    }

    fn error(&mut self, what: String) {
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(what);
        }
    }
}

/// What [`Generator::discover_latency`] saw.
#[derive(Debug, Clone, Default)]
pub struct LatencyReport {
    /// DISCOVER sent → matching OFFER received, in sending order.
    pub samples: Vec<Duration>,
    pub timeouts: u64,
    /// OFFERs with an address other than the reservation's (still timed).
    pub wrong_ip: u64,
    pub first_errors: Vec<String>,
}

impl LatencyReport {
    /// The `p`-th percentile (nearest rank) of the samples, `p` in 0..=100.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        percentile(&self.samples, p)
    }

    pub fn total_errors(&self) -> u64 {
        self.timeouts + self.wrong_ip
    }
}

/// Nearest-rank percentile: the smallest sample with at least `p`% of samples ≤ it.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p.clamp(0.0, 100.0) / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// A DHCP client population on one interface: every reservation's MAC is sent as both
/// `chaddr` and Ethernet source, with the BROADCAST flag so every reply comes back to
/// the one socket. Single-threaded: one event loop of `poll` and non-blocking I/O.
pub struct Generator {
    sock: RawSocket,
    next_xid: u32,
    buf: Vec<u8>,
}

/// One exchange in flight.
struct Exchange {
    client: usize,
    xid: u32,
    awaiting: v4::MessageType,
    /// The last frame sent, for retransmission.
    frame: Vec<u8>,
    sent_at: Instant,
    tries: u32,
}

/// The fields of a server reply that the generator checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyView {
    pub xid: u32,
    pub chaddr: [u8; 6],
    pub kind: Option<v4::MessageType>,
    pub yiaddr: Ipv4Addr,
    pub server_id: Option<Ipv4Addr>,
    /// Option 26, if sent.
    pub mtu: Option<u16>,
}

impl Generator {
    /// A generator on interface `ifname` of namespace `ns`.
    pub fn open(ns: &str, ifname: &str) -> anyhow::Result<Generator> {
        let salt = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ std::process::id().rotate_left(16);
        Ok(Generator {
            sock: {
                let sock = RawSocket::open(ns, ifname)?;
                sock.set_recv_buffer(SOCKET_RCVBUF);
                sock
            },
            next_xid: salt,
            buf: vec![0; RECV_BUF],
        })
    }

    /// A generator on `instance`'s interface (which needs no address).
    pub fn on(instance: &Instance) -> anyhow::Result<Generator> {
        Generator::open(&instance.ns, &instance.ifname)
    }

    fn xid(&mut self) -> u32 {
        let x = self.next_xid;
        self.next_xid = x.wrapping_add(1);
        x
    }

    /// One non-blocking receive of a server reply; `Ok(None)` when none is queued.
    /// Frames that are not DHCP replies are skipped.
    fn recv_reply(&mut self) -> io::Result<Option<ReplyView>> {
        while let Some(n) = self.sock.recv_now(&mut self.buf)? {
            if let Some(r) = parse_reply(&self.buf[..n]) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Sends a DISCOVER for `who` every 100 ms until an OFFER comes back; returns how
    /// long that took. For waiting until a freshly started server answers.
    pub fn wait_ready(&mut self, who: &Reservation, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let deadline = start + timeout;
        let xid = self.xid();
        let frame = client_frame(who.mac, &discover(who.mac, xid)?);
        loop {
            self.sock.send(&frame).context("sending DISCOVER")?;
            let resend = (Instant::now() + Duration::from_millis(100)).min(deadline);
            loop {
                while let Some(r) = self.recv_reply()? {
                    if r.xid == xid && r.kind == Some(v4::MessageType::Offer) {
                        return Ok(start.elapsed());
                    }
                }
                let now = Instant::now();
                if now >= resend {
                    break;
                }
                self.sock.wait(resend - now)?;
            }
            if Instant::now() >= deadline {
                bail!("no OFFER for {} within {timeout:?}", mac_to_string(who.mac));
            }
        }
    }

    /// Full DORA for every reservation, `opts.rounds` times, at most `opts.window`
    /// exchanges outstanding. Each exchange is DISCOVER → OFFER → REQUEST (SELECTING:
    /// server identifier and requested address from the OFFER, same xid) → ACK, and
    /// counts as completed only if the ACK carries the reserved address. Unanswered
    /// messages are retransmitted; NAKs, wrong addresses and give-ups are errors.
    pub fn run_dora(
        &mut self,
        clients: &[Reservation],
        opts: &DoraOptions,
    ) -> anyhow::Result<DoraReport> {
        if opts.window == 0 || opts.max_tries == 0 {
            bail!("window and max_tries must be positive");
        }
        let mut report = DoraReport {
            attempted: (clients.len() * opts.rounds) as u64,
            acked: vec![None; clients.len()],
            ..DoraReport::default()
        };
        let mut todo = (0..opts.rounds).flat_map(|_| 0..clients.len());
        let mut slots: Vec<Option<Exchange>> = (0..opts.window).map(|_| None).collect();
        let mut free: Vec<usize> = (0..opts.window).rev().collect();
        let mut by_xid: HashMap<u32, usize> = HashMap::with_capacity(opts.window * 2);
        let mut in_flight = 0usize;
        let mut exhausted = false;
        let start = Instant::now();

        loop {
            // Fill the window.
            while !exhausted && let Some(&slot) = free.last() {
                let Some(client) = todo.next() else {
                    exhausted = true;
                    break;
                };
                free.pop();
                let xid = self.xid();
                let mac = clients[client].mac;
                let frame = client_frame(mac, &discover(mac, xid)?);
                self.send_frame(&frame, &mut report)?;
                slots[slot] = Some(Exchange {
                    client,
                    xid,
                    awaiting: v4::MessageType::Offer,
                    frame,
                    sent_at: Instant::now(),
                    tries: 1,
                });
                by_xid.insert(xid, slot);
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }

            // Everything that has arrived.
            while let Some(r) = self.recv_reply()? {
                let Some(&slot) = by_xid.get(&r.xid) else {
                    report.stray_replies += 1;
                    continue;
                };
                let ex = slots[slot].as_mut().expect("xid maps to a live slot");
                let want = clients[ex.client];
                if r.chaddr != want.mac || (r.kind != Some(ex.awaiting) && !is_nak(&r)) {
                    // A duplicate OFFER after we moved on, or someone else's reply.
                    report.stray_replies += 1;
                    continue;
                }
                let mac = mac_to_string(want.mac);
                let done = match (ex.awaiting, r.kind) {
                    (_, Some(v4::MessageType::Nak)) => {
                        report.errors.naks += 1;
                        report.error(format!("{mac}: NAK"));
                        true
                    }
                    (v4::MessageType::Offer, _) if r.yiaddr != want.ip => {
                        report.errors.wrong_ip += 1;
                        report.error(format!(
                            "{mac}: OFFER of {}, reserved {}",
                            r.yiaddr, want.ip
                        ));
                        true
                    }
                    (v4::MessageType::Offer, _) => match r.server_id {
                        Some(sid) => {
                            let frame =
                                client_frame(want.mac, &request(want.mac, ex.xid, sid, want.ip)?);
                            ex.awaiting = v4::MessageType::Ack;
                            ex.tries = 1;
                            ex.sent_at = Instant::now();
                            self.send_frame(&frame, &mut report)?;
                            ex.frame = frame;
                            false
                        }
                        None => {
                            report.errors.bad_offer += 1;
                            report.error(format!("{mac}: OFFER without server identifier"));
                            true
                        }
                    },
                    _ => {
                        report.acked[ex.client] = Some(r.yiaddr);
                        if r.yiaddr == want.ip {
                            report.completed += 1;
                            if report.completed.is_multiple_of(clients.len() as u64) {
                                report.round_marks.push(start.elapsed());
                            }
                        } else {
                            report.errors.wrong_ip += 1;
                            report
                                .error(format!("{mac}: ACK of {}, reserved {}", r.yiaddr, want.ip));
                        }
                        true
                    }
                };
                if done {
                    by_xid.remove(&r.xid);
                    slots[slot] = None;
                    free.push(slot);
                    in_flight -= 1;
                }
            }

            // Retransmit or give up what is overdue; find the next deadline.
            let now = Instant::now();
            let mut next_deadline = now + opts.retransmit_after;
            for (slot, entry) in slots.iter_mut().enumerate() {
                let Some(ex) = entry.as_mut() else {
                    continue;
                };
                let due = ex.sent_at + opts.retransmit_after;
                if due > now {
                    next_deadline = next_deadline.min(due);
                    continue;
                }
                if ex.tries >= opts.max_tries {
                    report.errors.timeouts += 1;
                    let what = format!(
                        "{}: no {:?} after {} sends",
                        mac_to_string(clients[ex.client].mac),
                        ex.awaiting,
                        ex.tries
                    );
                    report.error(what);
                    by_xid.remove(&ex.xid);
                    *entry = None;
                    free.push(slot);
                    in_flight -= 1;
                    continue;
                }
                ex.tries += 1;
                ex.sent_at = now;
                report.retransmits += 1;
                self.send_frame(&ex.frame, &mut report)?;
                next_deadline = next_deadline.min(now + opts.retransmit_after);
            }
            if in_flight > 0 && (exhausted || free.is_empty()) {
                let now = Instant::now();
                self.sock
                    .wait(next_deadline.saturating_duration_since(now))?;
            }
        }
        report.elapsed = start.elapsed();
        Ok(report)
    }

    /// Sends `frame`; a full device queue is counted and left to the retransmission
    /// timer, any other failure ends the run.
    fn send_frame(&self, frame: &[u8], report: &mut DoraReport) -> anyhow::Result<()> {
        match self.sock.send(frame) {
            Ok(()) => Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::ENOBUFS)
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                report.send_errors += 1;
                Ok(())
            }
            Err(e) => Err(e).context("sending a DHCP frame"),
        }
    }

    /// DISCOVER → OFFER latency, one DISCOVER at a time with `opts.gap` between them, so
    /// it measures the server's answer, not a queue. Reservations are used in turn.
    /// The clock runs from just before the send to the receipt of the matching OFFER
    /// (the generator's own wake-up included, the same for every target).
    pub fn discover_latency(
        &mut self,
        clients: &[Reservation],
        opts: &LatencyOptions,
    ) -> anyhow::Result<LatencyReport> {
        if clients.is_empty() {
            bail!("no reservations to sample");
        }
        let mut report = LatencyReport::default();
        for i in 0..opts.samples {
            let who = clients[i % clients.len()];
            let xid = self.xid();
            let frame = client_frame(who.mac, &discover(who.mac, xid)?);
            while self.sock.recv_now(&mut self.buf)?.is_some() {}
            let start = Instant::now();
            self.sock.send(&frame).context("sending DISCOVER")?;
            let deadline = start + opts.timeout;
            let got = 'wait: loop {
                while let Some(r) = self.recv_reply()? {
                    if r.xid == xid && r.kind == Some(v4::MessageType::Offer) {
                        break 'wait Some((start.elapsed(), r));
                    }
                }
                let now = Instant::now();
                if now >= deadline {
                    break None;
                }
                self.sock.wait(deadline - now)?;
            };
            match got {
                Some((took, r)) => {
                    report.samples.push(took);
                    if r.yiaddr != who.ip {
                        report.wrong_ip += 1;
                        if report.first_errors.len() < KEPT_ERRORS {
                            report.first_errors.push(format!(
                                "{}: OFFER of {}, reserved {}",
                                mac_to_string(who.mac),
                                r.yiaddr,
                                who.ip
                            ));
                        }
                    }
                }
                None => {
                    report.timeouts += 1;
                    if report.first_errors.len() < KEPT_ERRORS {
                        report.first_errors.push(format!(
                            "{}: no OFFER within {:?}",
                            mac_to_string(who.mac),
                            opts.timeout
                        ));
                    }
                }
            }
            if !opts.gap.is_zero() {
                std::thread::sleep(opts.gap);
            }
        }
        Ok(report)
    }
}

fn is_nak(r: &ReplyView) -> bool {
    r.kind == Some(v4::MessageType::Nak)
}

// ---------------------------------------------------------------- messages and frames

/// A client message from `mac` with the BROADCAST flag, dhclient's request list and
/// whatever `more` adds, padded to 300 bytes.
fn client_message(
    mac: [u8; 6],
    xid: u32,
    kind: v4::MessageType,
    more: impl FnOnce(&mut Message),
) -> anyhow::Result<Vec<u8>> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(xid, z, z, z, z, &mac);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ParameterRequestList(
        PRL.iter().map(|&c| OptionCode::from(c)).collect(),
    ));
    more(&mut m);
    let mut bytes = m.to_vec().context("encoding a DHCP message")?;
    if bytes.len() < MIN_MESSAGE_LEN {
        bytes.resize(MIN_MESSAGE_LEN, 0);
    }
    Ok(bytes)
}

/// A DISCOVER from `mac`.
pub fn discover(mac: [u8; 6], xid: u32) -> anyhow::Result<Vec<u8>> {
    client_message(mac, xid, v4::MessageType::Discover, |_| {})
}

/// A REQUEST in SELECTING state: taking `ip` offered by `server_id`.
pub fn request(
    mac: [u8; 6],
    xid: u32,
    server_id: Ipv4Addr,
    ip: Ipv4Addr,
) -> anyhow::Result<Vec<u8>> {
    client_message(mac, xid, v4::MessageType::Request, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(server_id));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    })
}

/// `payload` as a broadcast from a client without an address: Ethernet from `src_mac`
/// to ff:ff:ff:ff:ff:ff, IPv4 0.0.0.0 → 255.255.255.255, UDP 68 → 67 with its checksum.
pub fn client_frame(src_mac: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
    let udp = udp_datagram(src, dst, CLIENT_PORT, SERVER_PORT, payload);
    let mut ip = ipv4_header(src, dst, libc::IPPROTO_UDP as u8, 0, udp.len()).to_vec();
    ip.extend_from_slice(&udp);
    ethernet(BROADCAST_MAC, src_mac, ETHERTYPE_IPV4, &ip)
}

/// A UDP header (with the pseudo-header checksum) followed by `payload`.
pub fn udp_datagram(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + udp.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_UDP as u8]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&udp);
    // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
    let sum = match internet_checksum(&pseudo) {
        0 => 0xffff,
        s => s,
    };
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    udp
}

/// The DHCP reply in an Ethernet frame (IPv4, UDP 67 → 68, BOOTREPLY), or `None` for
/// anything else.
pub fn parse_reply(frame: &[u8]) -> Option<ReplyView> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != ETHERTYPE_IPV4.to_be_bytes() {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if ip[0] >> 4 != 4
        || ihl < 20
        || ip.len() < ihl + 8
        || ip[9] != libc::IPPROTO_UDP as u8
        || fragmented
    {
        return None;
    }
    let udp = &ip[ihl..];
    let port = |i: usize| u16::from_be_bytes([udp[i], udp[i + 1]]);
    if port(0) != SERVER_PORT || port(2) != CLIENT_PORT {
        return None;
    }
    let end = usize::from(port(4)).clamp(8, udp.len());
    let m = Message::from_bytes(&udp[8..end]).ok()?;
    if m.opcode() != v4::Opcode::BootReply {
        return None;
    }
    let chaddr: [u8; 6] = m.chaddr().get(..6)?.try_into().ok()?;
    let server_id = match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(a)) => Some(*a),
        _ => None,
    };
    let mtu = match m.opts().get(OptionCode::InterfaceMtu) {
        Some(DhcpOption::InterfaceMtu(v)) => Some(*v),
        _ => None,
    };
    Some(ReplyView {
        xid: m.xid(),
        chaddr,
        kind: m.opts().msg_type(),
        yiaddr: m.yiaddr(),
        server_id,
        mtu,
    })
}

// ---------------------------------------------------------------- the socket

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 7];

    /// A server reply frame built by dhcproto, as a server would broadcast it.
    fn reply_frame(kind: v4::MessageType, xid: u32, yiaddr: Ipv4Addr) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, yiaddr, z, z, &MAC);
        m.set_opcode(v4::Opcode::BootReply);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 18, 0, 2)));
        m.opts_mut().insert(DhcpOption::InterfaceMtu(1450));
        let payload = m.to_vec().unwrap();
        let src = Ipv4Addr::new(198, 18, 0, 2);
        let udp = udp_datagram(src, Ipv4Addr::BROADCAST, 67, 68, &payload);
        let ip = crate::ipv4_packet(src, Ipv4Addr::BROADCAST, 17, 1, &udp);
        ethernet(BROADCAST_MAC, [2, 0, 0, 0, 0, 1], ETHERTYPE_IPV4, &ip)
    }

    #[test]
    fn client_frames_are_valid_broadcast_dhcp() {
        let payload = discover(MAC, 0xabcd_0001).unwrap();
        assert_eq!(payload.len(), MIN_MESSAGE_LEN);
        let f = client_frame(MAC, &payload);
        assert_eq!(&f[..6], &BROADCAST_MAC);
        assert_eq!(&f[6..12], &MAC);
        let ip = &f[14..34];
        assert_eq!(internet_checksum(ip), 0, "IPv4 header checksum");
        assert_eq!(&ip[12..20], &[0, 0, 0, 0, 255, 255, 255, 255]);
        // The UDP checksum verifies over the pseudo-header.
        let udp = &f[34..];
        let mut pseudo = ip[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(udp);
        assert_eq!(internet_checksum(&pseudo), 0, "UDP checksum");
        assert_eq!(&udp[..4], &[0, 68, 0, 67]);
        let m = Message::from_bytes(&udp[8..]).unwrap();
        assert_eq!(m.xid(), 0xabcd_0001);
        assert!(m.flags().broadcast());
        assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Discover));
        assert_eq!(&m.chaddr()[..6], &MAC);

        let req = request(
            MAC,
            7,
            Ipv4Addr::new(198, 18, 0, 2),
            Ipv4Addr::new(198, 18, 0, 10),
        )
        .unwrap();
        let m = Message::from_bytes(&req).unwrap();
        assert_eq!(m.opts().msg_type(), Some(v4::MessageType::Request));
        assert!(matches!(
            m.opts().get(OptionCode::RequestedIpAddress),
            Some(DhcpOption::RequestedIpAddress(a)) if *a == Ipv4Addr::new(198, 18, 0, 10)
        ));
        assert_eq!(m.ciaddr(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn replies_parse_and_everything_else_does_not() {
        let ip = Ipv4Addr::new(198, 18, 0, 10);
        let f = reply_frame(v4::MessageType::Offer, 42, ip);
        let r = parse_reply(&f).unwrap();
        assert_eq!(
            r,
            ReplyView {
                xid: 42,
                chaddr: MAC,
                kind: Some(v4::MessageType::Offer),
                yiaddr: ip,
                server_id: Some(Ipv4Addr::new(198, 18, 0, 2)),
                mtu: Some(1450),
            }
        );
        // Ethernet padding after the datagram is ignored.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 20]);
        assert_eq!(parse_reply(&padded), Some(r));
        // Our own client frames, other ports, truncations and ARP are not replies.
        assert!(parse_reply(&client_frame(MAC, &discover(MAC, 1).unwrap())).is_none());
        let mut other_port = f.clone();
        other_port[14 + 20 + 3] = 69;
        assert!(parse_reply(&other_port).is_none());
        for n in 0..f.len() - 200 {
            assert!(parse_reply(&f[..n]).is_none(), "{n}");
        }
        let arp = ethernet(BROADCAST_MAC, MAC, crate::ETHERTYPE_ARP, &[0; 28]);
        assert!(parse_reply(&arp).is_none());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |v: u64| Duration::from_millis(v);
        let s: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&s, 50.0), Some(ms(50)));
        assert_eq!(percentile(&s, 99.0), Some(ms(99)));
        assert_eq!(percentile(&s, 100.0), Some(ms(100)));
        assert_eq!(percentile(&s, 0.0), Some(ms(1)));
        assert_eq!(percentile(&[ms(3)], 99.0), Some(ms(3)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn net_is_neutron_shaped() {
        let net = DhcpNet::new(1000).unwrap();
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 248, 0));
        let first = net.reservations[0];
        assert_eq!(first.mac, [0xfa, 0x16, 0x3e, 0, 0, 1]);
        assert_eq!(first.ip, Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(first.hostname(), "host-198-18-0-10");
        assert_eq!(
            net.reservations[999].ip,
            Ipv4Addr::new(198, 18, 3, 241),
            "10 + 999 = 1009 = 3 * 256 + 241"
        );
        let mut macs: Vec<_> = net.reservations.iter().map(|r| r.mac).collect();
        macs.dedup();
        assert_eq!(macs.len(), 1000);
        assert!(DhcpNet::new(0).is_err());
        assert!(DhcpNet::new(2038).is_err());
        assert!(DhcpNet::new(2037).is_ok(), "up to 198.18.7.254");

        let dir = std::env::temp_dir().join(format!("nvt-dhcpload-{}", std::process::id()));
        let small = DhcpNet::new(2).unwrap();
        write_dnsmasq_files(&dir, &small).unwrap();
        let host = std::fs::read_to_string(dir.join("host")).unwrap();
        assert_eq!(
            host,
            "fa:16:3e:00:00:01,host-198-18-0-10.openstacklocal,198.18.0.10\n\
             fa:16:3e:00:00:02,host-198-18-0-11.openstacklocal,198.18.0.11\n"
        );
        let opts = std::fs::read_to_string(dir.join("opts")).unwrap();
        assert!(opts.contains(
            ",option:classless-static-route,169.254.169.254/32,198.18.0.2,0.0.0.0/0,198.18.0.1\n"
        ));
        let args = dnsmasq_args(&dir, "nvt0-dnsmasq", &small).join(" ");
        assert!(args.contains(
            "--dhcp-range=set:subnet-2a7c8f04-5f1e-4e3b-9c41-7d0b8e6f1a55,198.18.0.0,static,\
             255.255.248.0,86400s"
        ));
        assert!(args.contains("--dhcp-option-force=option:mtu,1450"));
        assert!(args.contains("--dhcp-lease-max=2048"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
