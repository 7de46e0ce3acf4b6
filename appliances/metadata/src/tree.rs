//! The two metadata trees as Nova's `nova/api/metadata/base.py` serves them: the
//! OpenStack tree under `/openstack` (versions, listings, `meta_data.json`,
//! `network_data.json`, `user_data`, vendor data, `password`) and the EC2 tree everywhere
//! else (`/<version>/meta-data/…`, `/<version>/user-data`), listed the way Nova's
//! `ec2_md_print` lists them. Pure: one instance's data in, one resource out.

use crate::json::Json;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;
use nanovnf_schema::metadata::{MetadataInstance, MetadataSubnet};

/// EC2 API versions Nova serves, oldest first (`latest` is the last).
pub const EC2_VERSIONS: [&str; 9] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// OpenStack metadata versions, oldest first (`latest` is the last), as far as Rocky.
pub const OPENSTACK_VERSIONS: [&str; 8] = [
    "2012-08-10", // Folsom
    "2013-04-04", // Grizzly: random_seed, password
    "2013-10-17", // Havana: vendor_data.json
    "2015-10-15", // Liberty: project_id, network_data.json
    "2016-06-30", // Newton: devices
    "2016-10-06", // Newton: vendor_data2.json
    "2017-02-22", // Ocata
    "2018-08-27", // Rocky
];

const GRIZZLY: usize = 1;
const HAVANA: usize = 2;
const LIBERTY: usize = 3;
const NEWTON_ONE: usize = 4;
const NEWTON_TWO: usize = 5;

/// Nova's content types (webob adds the charset to text types).
pub const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";
pub const APPLICATION_JSON: &str = "application/json";

/// One instance as the service keeps it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The instance as the manager described it, `user_data` moved out.
    pub inst: MetadataInstance,
    /// Shared, so that a response queues a reference rather than a 64 KiB copy.
    pub user_data: Option<Rc<[u8]>>,
    /// Set once by the instance itself (POST `/openstack/<v>/password`), or restored from
    /// the boot configuration.
    pub password: Option<Vec<u8>>,
    /// When the password was set, in the engine's count of passwords (0: none).
    pub password_serial: u64,
    /// EC2's `instance-id`: `i-` and 8 hex digits, stable for the instance UUID.
    pub ec2_instance_id: String,
    /// EC2's `reservation-id`: `r-` and 8 hex digits.
    pub ec2_reservation_id: String,
}

impl Entry {
    pub fn new(mut inst: MetadataInstance) -> Self {
        let user_data = inst.user_data.take().map(Rc::from);
        let ec2_instance_id = format!("i-{:08x}", nanovnf_schema::crc32(inst.uuid.as_bytes()));
        let mut r = String::from("r-");
        r.push_str(&inst.uuid);
        let ec2_reservation_id = format!("r-{:08x}", nanovnf_schema::crc32(r.as_bytes()));
        Entry {
            inst,
            user_data,
            password: None,
            password_serial: 0,
            ec2_instance_id,
            ec2_reservation_id,
        }
    }

    /// `hostname.domain`, or the hostname alone without a domain.
    pub fn fqdn(&self) -> String {
        if self.inst.domain.is_empty() {
            self.inst.hostname.clone()
        } else {
            format!("{}.{}", self.inst.hostname, self.inst.domain)
        }
    }
}

/// The network around the instances, for `network_data.json`.
#[derive(Debug, Clone, Copy)]
pub struct Network<'a> {
    pub id: &'a str,
    pub subnets: &'a [MetadataSubnet],
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// `text/plain` text (listings, EC2 leaves, `network_data.json` as Nova labels it).
    Text(String),
    /// `application/json`.
    Json(String),
    /// Raw user data, served as `text/plain`.
    Bytes(Rc<[u8]>),
    /// The password resource: GET reads it, POST sets it once.
    Password,
}

impl Resource {
    pub fn content_type(&self) -> &'static str {
        match self {
            Resource::Json(_) => APPLICATION_JSON,
            _ => TEXT_PLAIN,
        }
    }
}

/// A source of random bytes for `random_seed` (xoshiro256**, seeded by the image from
/// its clock; the guest only mixes it into its pool, uncredited).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 spreads any seed (even 0) over the whole state.
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Stirs an outside value (the request time) into the state.
    pub fn mix(&mut self, v: u64) {
        self.s[0] ^= v;
        self.next_u64();
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The base64 digits of eight 6-bit values, one per byte of `v` (each below 64), eight at
/// a time: `A`–`Z`, `a`–`z`, `0`–`9`, `+`, `/` by adding a per-byte offset chosen by
/// comparisons that cannot borrow across bytes.
pub fn base64_digits(v: u64) -> u64 {
    let at_least = |n: u64| (((v | HI) - n * LO) & HI) >> 7;
    let (ge26, ge52, ge62, ge63) = (at_least(26), at_least(52), at_least(62), at_least(63));
    // Each byte stays within 0..=137 up, and never goes below zero down.
    let up = v + 65 * LO + 6 * ge26 + 3 * ge63;
    up - (75 * ge52 + 15 * ge62)
}

/// Appends the base64 text of `bytes` random bytes (`bytes` ≡ 2 mod 3, as Nova's 512),
/// drawn from `rng` directly as digits: every digit is six fresh random bits, which is
/// what base64 of uniformly random bytes is. This runs for every `meta_data.json`.
pub fn random_base64_into(out: &mut String, rng: &mut Rng, bytes: usize) {
    debug_assert_eq!(bytes % 3, 2);
    let mut digits = bytes / 3 * 4;
    let mut buf = [0u8; 256];
    while digits > 0 {
        let n = digits.min(buf.len());
        for word in buf[..n].chunks_exact_mut(8) {
            let v = rng.next_u64() & (0x3f * LO);
            word.copy_from_slice(&base64_digits(v).to_le_bytes());
        }
        // Digits are ASCII: the check cannot fail.
        out.push_str(core::str::from_utf8(&buf[..n]).unwrap_or_default());
        digits -= n;
    }
    // The last two bytes: sixteen bits in three digits (the last one's two low bits zero)
    // and the padding.
    let r = rng.next_u64();
    let v = (r & 0x3f) | (r & 0x3f00) | ((((r >> 16) & 0xf) << 2) << 16);
    let tail = base64_digits(v).to_le_bytes();
    out.push_str(core::str::from_utf8(&tail[..3]).unwrap_or_default());
    out.push('=');
}

fn mac_string(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// Whether `ip` lies in `subnet`.
pub fn contains(subnet: &MetadataSubnet, ip: Ipv4Addr) -> bool {
    let mask = u32::from(netmask(subnet.cidr.prefix_len));
    u32::from(ip) & mask == u32::from(subnet.cidr.addr) & mask
}

/// Looks up a request path (already split into tokens) for one instance. `None`: 404.
pub fn lookup(
    tokens: &[&[u8]],
    entry: &Entry,
    net: Network<'_>,
    rng: &mut Rng,
) -> Option<Resource> {
    let mut strs = Vec::with_capacity(tokens.len());
    for t in tokens {
        strs.push(core::str::from_utf8(t).ok()?);
    }
    match strs.as_slice() {
        ["openstack", rest @ ..] => openstack(rest, entry, net, rng),
        ["ec2", rest @ ..] | rest => ec2(rest, entry),
    }
}

fn listing<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(item);
    }
    out
}

// ---------------------------------------------------------------------------------------
// OpenStack

fn openstack_version(v: &str) -> Option<usize> {
    if v == "latest" {
        return Some(OPENSTACK_VERSIONS.len() - 1);
    }
    OPENSTACK_VERSIONS.iter().position(|&x| x == v)
}

fn openstack(tokens: &[&str], entry: &Entry, net: Network<'_>, rng: &mut Rng) -> Option<Resource> {
    let Some((&version, rest)) = tokens.split_first() else {
        let versions = OPENSTACK_VERSIONS.iter().copied().chain(["latest"]);
        return Some(Resource::Text(listing(versions)));
    };
    let v = openstack_version(version)?;
    let [name] = rest else {
        if rest.is_empty() {
            return Some(Resource::Text(listing(openstack_files(v, entry))));
        }
        return None;
    };
    match *name {
        "meta_data.json" => Some(Resource::Json(meta_data_json(v, entry, rng))),
        "network_data.json" => Some(Resource::Text(network_data_json(entry, net))),
        "user_data" => entry.user_data.clone().map(Resource::Bytes),
        "password" if v >= GRIZZLY => Some(Resource::Password),
        "vendor_data.json" if v >= HAVANA => Some(Resource::Json("{}".to_string())),
        "vendor_data2.json" if v >= NEWTON_TWO => Some(Resource::Json("{}".to_string())),
        _ => None,
    }
}

/// The files of `/openstack/<v>/`, in Nova's order.
fn openstack_files(v: usize, entry: &Entry) -> Vec<&'static str> {
    let mut files = vec!["meta_data.json"];
    if entry.user_data.is_some() {
        files.push("user_data");
    }
    if v >= GRIZZLY {
        files.push("password");
    }
    if v >= HAVANA {
        files.push("vendor_data.json");
    }
    if v >= LIBERTY {
        files.push("network_data.json");
    }
    if v >= NEWTON_TWO {
        files.push("vendor_data2.json");
    }
    files
}

/// `meta_data.json` with Nova's members, in Nova's order, for version index `v`.
pub fn meta_data_json(v: usize, entry: &Entry, rng: &mut Rng) -> String {
    let inst = &entry.inst;
    let mut j = Json::new();
    j.begin_object();
    j.field("uuid", &inst.uuid);
    if !inst.meta.is_empty() {
        j.key("meta").begin_object();
        for (k, val) in &inst.meta {
            j.field(k, val);
        }
        j.end_object();
    }
    if !inst.public_keys.is_empty() {
        j.key("public_keys").begin_object();
        for (name, key) in &inst.public_keys {
            j.field(name, key);
        }
        j.end_object();
        j.key("keys").begin_array();
        for (name, key) in &inst.public_keys {
            j.begin_object()
                .field("name", name)
                .field("type", "ssh")
                .field("data", key)
                .end_object();
        }
        j.end_array();
    }
    j.field("hostname", &inst.hostname);
    j.field("name", &inst.name);
    j.key("launch_index").uint(u64::from(inst.launch_index));
    j.field("availability_zone", &inst.availability_zone);
    if v >= GRIZZLY {
        j.key("random_seed").random_base64(rng, 512);
    }
    if v >= LIBERTY {
        j.field("project_id", &inst.project_id);
    }
    if v >= NEWTON_ONE {
        j.key("devices").begin_array().end_array();
    }
    j.end_object();
    j.finish()
}

fn dns_services(subnet: &MetadataSubnet, j: &mut Json) {
    for dns in subnet.dns_servers.iter().filter(|a| !a.is_unspecified()) {
        j.begin_object()
            .field("type", "dns")
            .field("address", &dns.to_string())
            .end_object();
    }
}

/// `network_data.json` as Nova builds it for a port with a fixed IPv4 address: one link,
/// one `ipv4` network (address, netmask, default and host routes, DNS) and the services.
pub fn network_data_json(entry: &Entry, net: Network<'_>) -> String {
    let inst = &entry.inst;
    let subnet = net.subnets.iter().find(|s| contains(s, inst.ip));
    let link_id: String = format!("tap{}", inst.port_id.chars().take(11).collect::<String>());
    let mut j = Json::new();
    j.begin_object();
    j.key("links").begin_array();
    if subnet.is_some() {
        j.begin_object()
            .field("id", &link_id)
            .field("vif_id", &inst.port_id)
            .field("type", "bridge");
        j.key("mtu");
        if inst.mtu == 0 {
            j.null();
        } else {
            j.uint(u64::from(inst.mtu));
        }
        j.field("ethernet_mac_address", &mac_string(inst.mac));
        j.end_object();
    }
    j.end_array();
    j.key("networks").begin_array();
    if let Some(s) = subnet {
        j.begin_object()
            .field("id", "network0")
            .field("type", "ipv4")
            .field("link", &link_id)
            .field("ip_address", &inst.ip.to_string())
            .field("netmask", &netmask(s.cidr.prefix_len).to_string());
        j.key("routes").begin_array();
        if let Some(gw) = s.gateway {
            j.begin_object()
                .field("network", "0.0.0.0")
                .field("netmask", "0.0.0.0")
                .field("gateway", &gw.to_string())
                .end_object();
        }
        for r in &s.host_routes {
            let mask = u32::from(netmask(r.destination.prefix_len));
            let network = Ipv4Addr::from(u32::from(r.destination.addr) & mask);
            j.begin_object()
                .field("network", &network.to_string())
                .field("netmask", &Ipv4Addr::from(mask).to_string())
                .field("gateway", &r.nexthop.to_string())
                .end_object();
        }
        j.end_array();
        j.field("network_id", net.id);
        j.key("services").begin_array();
        dns_services(s, &mut j);
        j.end_array();
        j.end_object();
    }
    j.end_array();
    j.key("services").begin_array();
    if let Some(s) = subnet {
        dns_services(s, &mut j);
    }
    j.end_array();
    j.end_object();
    j.finish()
}

// ---------------------------------------------------------------------------------------
// EC2

/// A node of Nova's EC2 dictionary.
enum Node {
    Leaf(String),
    Bytes(Rc<[u8]>),
    List(Vec<String>),
    /// A dictionary; `name` is Nova's `_name`, listed in the parent instead of `key/`.
    Dir {
        name: Option<String>,
        entries: Vec<(String, Node)>,
    },
}

fn dir(entries: Vec<(String, Node)>) -> Node {
    Node::Dir {
        name: None,
        entries,
    }
}

fn leaf(s: impl Into<String>) -> Node {
    Node::Leaf(s.into())
}

fn ec2_version(v: &str) -> Option<usize> {
    if v == "latest" {
        return Some(EC2_VERSIONS.len() - 1);
    }
    EC2_VERSIONS.iter().position(|&x| x == v)
}

fn ec2_at_least(v: usize, required: &str) -> bool {
    EC2_VERSIONS
        .iter()
        .position(|&x| x == required)
        .is_some_and(|r| v >= r)
}

/// Nova's `get_ec2_metadata` for version index `v`.
fn ec2_tree(v: usize, entry: &Entry) -> Node {
    let inst = &entry.inst;
    let mut md: Vec<(String, Node)> = vec![
        ("ami-id".into(), leaf("ami-00000000")),
        (
            "ami-launch-index".into(),
            leaf(inst.launch_index.to_string()),
        ),
        ("ami-manifest-path".into(), leaf("FIXME")),
        ("instance-id".into(), leaf(entry.ec2_instance_id.clone())),
        ("hostname".into(), leaf(inst.hostname.clone())),
        ("local-ipv4".into(), leaf(inst.ip.to_string())),
        (
            "reservation-id".into(),
            leaf(entry.ec2_reservation_id.clone()),
        ),
        ("security-groups".into(), Node::List(vec!["default".into()])),
    ];
    if !inst.public_keys.is_empty() {
        let keys = inst
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, (name, key))| {
                (
                    i.to_string(),
                    Node::Dir {
                        name: Some(format!("{i}={name}")),
                        entries: vec![("openssh-key".into(), leaf(key.clone()))],
                    },
                )
            })
            .collect();
        md.push(("public-keys".into(), dir(keys)));
    }
    if ec2_at_least(v, "2007-01-19") {
        md.push(("local-hostname".into(), leaf(entry.fqdn())));
        md.push(("public-hostname".into(), leaf(entry.fqdn())));
        let public = inst
            .floating_ip
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        md.push(("public-ipv4".into(), leaf(public)));
    }
    if ec2_at_least(v, "2007-08-29") {
        md.push(("instance-type".into(), leaf("unknown")));
    }
    if ec2_at_least(v, "2007-12-15") {
        md.push((
            "block-device-mapping".into(),
            dir(vec![
                ("ami".into(), leaf("vda")),
                ("root".into(), leaf("/dev/vda")),
            ]),
        ));
    }
    if ec2_at_least(v, "2008-02-01") {
        md.push((
            "placement".into(),
            dir(vec![(
                "availability-zone".into(),
                leaf(inst.availability_zone.clone()),
            )]),
        ));
    }
    if ec2_at_least(v, "2008-09-01") {
        md.push(("instance-action".into(), leaf("none")));
    }
    let mut top = vec![("meta-data".into(), dir(md))];
    if let Some(ud) = &entry.user_data {
        top.push(("user-data".into(), Node::Bytes(ud.clone())));
    }
    dir(top)
}

/// Nova's `ec2_md_print`: a dictionary lists its keys sorted, sub-dictionaries as `key/`
/// (or their `_name`); a list is one item per line.
fn print(node: Node) -> Resource {
    match node {
        Node::Leaf(s) => Resource::Text(s),
        Node::Bytes(b) => Resource::Bytes(b),
        Node::List(items) => Resource::Text(listing(items.iter().map(String::as_str))),
        Node::Dir { mut entries, .. } => {
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = String::new();
            for (i, (key, node)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                match node {
                    Node::Dir { name: Some(n), .. } => out.push_str(n),
                    Node::Dir { name: None, .. } => {
                        out.push_str(key);
                        out.push('/');
                    }
                    _ => out.push_str(key),
                }
            }
            Resource::Text(out)
        }
    }
}

fn ec2(tokens: &[&str], entry: &Entry) -> Option<Resource> {
    let Some((&version, rest)) = tokens.split_first() else {
        let versions = EC2_VERSIONS.iter().copied().chain(["latest"]);
        return Some(Resource::Text(listing(versions)));
    };
    let mut node = ec2_tree(ec2_version(version)?, entry);
    for &t in rest {
        let Node::Dir { entries, .. } = node else {
            return None;
        };
        node = entries.into_iter().find(|(k, _)| k == t)?.1;
    }
    Some(print(node))
}
