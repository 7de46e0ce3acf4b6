//! The topology file as written: serde structs with spans, one per TOML table. Each
//! resource table is deserialized on its own so that a bad key in one resource does not hide
//! the problems of the others; syntax and serde errors become `Problem`s with lines.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, IntoDeserializer as _};
use serde_spanned::Spanned;
use toml_edit::{ImDocument, Item, Value};

use crate::problem::{Report, Res, ResourceKind};
use crate::types::{InterfaceAddr, Ipv4Cidr, MacAddr, parse_ipv4};

pub(crate) type S<T> = Spanned<T>;

/// A value parsed from a TOML string (an address, a MAC, a CIDR) whose parse error becomes
/// the serde error, so it carries the field's span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Text<T>(pub T);

pub(crate) trait ParseText: Sized {
    fn parse_text(s: &str) -> Result<Self, String>;
}

impl ParseText for Ipv4Addr {
    fn parse_text(s: &str) -> Result<Self, String> {
        parse_ipv4(s)
    }
}

impl ParseText for MacAddr {
    fn parse_text(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl ParseText for Ipv4Cidr {
    fn parse_text(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl ParseText for InterfaceAddr {
    fn parse_text(s: &str) -> Result<Self, String> {
        s.parse()
    }
}

impl<'de, T: ParseText> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        T::parse_text(&s)
            .map(Text)
            .map_err(serde::de::Error::custom)
    }
}

/// The value of a `S<Text<T>>` field.
pub(crate) fn val<T: Copy>(s: &S<Text<T>>) -> T {
    s.get_ref().0
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUnderlay {
    pub interface: S<String>,
    pub udp_port: Option<S<i64>>,
}

/// `[dns]`: the host's DNS settings for every DHCP appliance (Neutron's dhcp_agent.ini).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    pub upstream_resolvers: Option<S<Vec<S<Text<Ipv4Addr>>>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SegmentType {
    Local,
    Flat,
    Vlan,
    Vxlan,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSegment {
    #[serde(rename = "type")]
    pub kind: S<SegmentType>,
    pub physical_network: Option<S<String>>,
    pub vlan_id: Option<S<i64>>,
    pub vni: Option<S<i64>>,
    pub local_vtep: Option<S<Text<InterfaceAddr>>>,
    pub remote_vteps: Option<S<Vec<S<Text<Ipv4Addr>>>>>,
    pub arp_responder: Option<S<bool>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub name: S<String>,
    pub external: Option<S<bool>>,
    pub mtu: Option<S<i64>>,
    pub segment: Option<RawSegment>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub destination: S<Text<Ipv4Cidr>>,
    pub nexthop: S<Text<Ipv4Addr>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub start: S<Text<Ipv4Addr>>,
    pub end: S<Text<Ipv4Addr>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSubnet {
    pub name: S<String>,
    pub network: S<String>,
    pub cidr: S<Text<Ipv4Cidr>>,
    pub gateway_ip: Option<S<Text<Ipv4Addr>>>,
    pub enable_dhcp: Option<S<bool>>,
    pub dns_nameservers: Option<S<Vec<S<Text<Ipv4Addr>>>>>,
    pub dns_domain: Option<S<String>>,
    pub lease_seconds: Option<S<i64>>,
    pub host_routes: Option<Vec<RawRoute>>,
    pub allocation_pools: Option<Vec<RawPool>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstance {
    pub uuid: Option<S<String>>,
    pub name: Option<S<String>>,
    pub availability_zone: Option<S<String>>,
    pub project_id: Option<S<String>>,
    pub public_keys: Option<BTreeMap<String, S<String>>>,
    pub user_data: Option<S<String>>,
    pub user_data_file: Option<S<String>>,
    pub meta: Option<BTreeMap<String, S<String>>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPort {
    pub name: S<String>,
    pub network: S<String>,
    pub mac_address: Option<S<Text<MacAddr>>>,
    pub fixed_ip: Option<S<Text<Ipv4Addr>>>,
    pub hostname: Option<S<String>>,
    pub tap: Option<S<String>>,
    pub remote_vtep: Option<S<Text<Ipv4Addr>>>,
    pub instance: Option<RawInstance>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub network: S<String>,
    pub ip: Option<S<Text<Ipv4Addr>>>,
    pub enable_snat: Option<S<bool>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouter {
    pub name: S<String>,
    pub interfaces: Option<S<Vec<S<String>>>>,
    pub external_gateway: Option<RawGateway>,
    pub routes: Option<Vec<RawRoute>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFloatingIp {
    pub ip: S<Text<Ipv4Addr>>,
    pub network: S<String>,
    pub port: Option<S<String>>,
}

/// One resource table and where its header is (for problems about the table as a whole,
/// such as a missing required key).
#[derive(Debug)]
pub(crate) struct Entry<T> {
    pub header: Range<usize>,
    pub raw: T,
}

/// The whole file. Resources whose table did not deserialize are absent; their names are
/// kept in `broken` so that references to them are not reported as unknown as well.
#[derive(Debug, Default)]
pub(crate) struct RawTopology {
    pub physical_networks: BTreeMap<String, S<String>>,
    pub underlay: Option<Entry<RawUnderlay>>,
    pub dns: Option<Entry<RawDns>>,
    pub networks: Vec<Entry<RawNetwork>>,
    pub subnets: Vec<Entry<RawSubnet>>,
    pub ports: Vec<Entry<RawPort>>,
    pub routers: Vec<Entry<RawRouter>>,
    pub floating_ips: Vec<Entry<RawFloatingIp>>,
    pub broken: BTreeSet<(ResourceKind, String)>,
}

impl RawTopology {
    /// True if a resource of this kind and name was declared but could not be read.
    pub fn is_broken(&self, kind: ResourceKind, name: &str) -> bool {
        self.broken.contains(&(kind, name.to_owned()))
    }
}

const TOP_LEVEL: [(&str, ResourceKind); 8] = [
    ("physical_networks", ResourceKind::PhysicalNetworks),
    ("underlay", ResourceKind::Underlay),
    ("dns", ResourceKind::Dns),
    ("network", ResourceKind::Network),
    ("subnet", ResourceKind::Subnet),
    ("port", ResourceKind::Port),
    ("router", ResourceKind::Router),
    ("floating_ip", ResourceKind::FloatingIp),
];

/// Parses the text into raw resources, recording every syntax and serde problem.
pub(crate) fn parse(text: &str, report: &mut Report) -> RawTopology {
    let mut out = RawTopology::default();
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            report.at(&span, None, format!("TOML syntax error: {}", e.message()));
            return out;
        }
    };
    let root = doc.as_table();
    for (key, item) in root.iter() {
        let key_span = root
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| item.span())
            .unwrap_or(0..0);
        let Some(&(_, kind)) = TOP_LEVEL.iter().find(|(k, _)| *k == key) else {
            let known: Vec<&str> = TOP_LEVEL.iter().map(|(k, _)| *k).collect();
            report.at(
                &key_span,
                None,
                format!(
                    "unknown top-level key `{key}`, expected one of the tables {}",
                    known.join(", ")
                ),
            );
            continue;
        };
        match kind {
            ResourceKind::PhysicalNetworks => {
                let Some((header, value)) = single_table(item, &key_span, kind, report) else {
                    continue;
                };
                if let Some(map) = deserialize(value, &header, &Res::unnamed(kind), report) {
                    out.physical_networks = map;
                }
            }
            ResourceKind::Underlay => {
                let Some((header, value)) = single_table(item, &key_span, kind, report) else {
                    continue;
                };
                out.underlay = deserialize(value, &header, &Res::unnamed(kind), report)
                    .map(|raw| Entry { header, raw });
            }
            ResourceKind::Dns => {
                let Some((header, value)) = single_table(item, &key_span, kind, report) else {
                    continue;
                };
                out.dns = deserialize(value, &header, &Res::unnamed(kind), report)
                    .map(|raw| Entry { header, raw });
            }
            ResourceKind::Network => {
                out.networks = resources(item, &key_span, kind, &mut out.broken, report)
            }
            ResourceKind::Subnet => {
                out.subnets = resources(item, &key_span, kind, &mut out.broken, report)
            }
            ResourceKind::Port => {
                out.ports = resources(item, &key_span, kind, &mut out.broken, report)
            }
            ResourceKind::Router => {
                out.routers = resources(item, &key_span, kind, &mut out.broken, report)
            }
            ResourceKind::FloatingIp => {
                out.floating_ips = resources(item, &key_span, kind, &mut out.broken, report)
            }
        }
    }
    out
}

/// `[physical_networks]` / `[underlay]` / `[dns]`: one table (standard or inline).
fn single_table(
    item: &Item,
    key_span: &Range<usize>,
    kind: ResourceKind,
    report: &mut Report,
) -> Option<(Range<usize>, Value)> {
    match item {
        Item::Table(t) => Some((
            t.span().unwrap_or_else(|| key_span.clone()),
            Value::InlineTable(t.clone().into_inline_table()),
        )),
        Item::Value(v @ Value::InlineTable(_)) => {
            Some((v.span().unwrap_or_else(|| key_span.clone()), v.clone()))
        }
        _ => {
            report.at(
                key_span,
                None,
                format!("`{kind}` must be a table: [{kind}]"),
            );
            None
        }
    }
}

/// `[[network]]` and friends: an array of tables (or an array of inline tables).
fn resources<T: for<'de> Deserialize<'de>>(
    item: &Item,
    key_span: &Range<usize>,
    kind: ResourceKind,
    broken: &mut BTreeSet<(ResourceKind, String)>,
    report: &mut Report,
) -> Vec<Entry<T>> {
    let tables: Vec<(Range<usize>, Value)> = match item {
        Item::ArrayOfTables(a) => a
            .iter()
            .map(|t| {
                let header = t.span().unwrap_or_else(|| key_span.clone());
                (header, Value::InlineTable(t.clone().into_inline_table()))
            })
            .collect(),
        Item::Value(Value::Array(a)) if a.iter().all(Value::is_inline_table) => a
            .iter()
            .map(|v| (v.span().unwrap_or_else(|| key_span.clone()), v.clone()))
            .collect(),
        _ => {
            report.at(
                key_span,
                None,
                format!("`{kind}` must be an array of tables: [[{kind}]]"),
            );
            return Vec::new();
        }
    };
    let name_key = if kind == ResourceKind::FloatingIp {
        "ip"
    } else {
        "name"
    };
    let mut out = Vec::new();
    for (header, value) in tables {
        let name = value
            .as_inline_table()
            .and_then(|t| t.get(name_key))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let res = Res {
            kind,
            name: name.clone(),
        };
        match deserialize(value, &header, &res, report) {
            Some(raw) => out.push(Entry { header, raw }),
            None => {
                if let Some(name) = name {
                    broken.insert((kind, name));
                }
            }
        }
    }
    out
}

/// Deserializes one table; a failure becomes a problem at the field's line (or the
/// table's header when serde knows no field, e.g. a missing key).
fn deserialize<T: for<'de> Deserialize<'de>>(
    value: Value,
    header: &Range<usize>,
    res: &Res,
    report: &mut Report,
) -> Option<T> {
    match T::deserialize(value.into_deserializer()) {
        Ok(v) => Some(v),
        Err(e) => {
            let span = e.span().unwrap_or_else(|| header.clone());
            report.at(&span, Some(res), serde_message(&e));
            None
        }
    }
}

/// `e.message()` prefixed with the dotted path of the field it is about. toml_edit only
/// exposes that path through `Display`, as a last line "in `a.b`".
fn serde_message(e: &toml_edit::de::Error) -> String {
    let shown = e.to_string();
    let path = shown
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    match path {
        Some(path) => format!("{path}: {}", e.message()),
        None => e.message().to_owned(),
    }
}
