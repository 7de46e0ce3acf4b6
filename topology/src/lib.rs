//! nanovnf's topology file (TOPOLOGY.md, documented in docs/topology.md): parse the TOML,
//! check it (reporting every problem as `FILE:LINE: resource "NAME": message`), and resolve
//! it into the plain model the manager applies — defaults, addresses, MACs and link names.
//!
//! ```no_run
//! let topology = nanovnf_topology::load("topology.toml".as_ref(), "/var/lib/nanovnf")
//!     .unwrap_or_else(|errors| {
//!         eprintln!("{errors}");
//!         std::process::exit(2)
//!     });
//! for network in &topology.networks {
//!     println!("{} -> bridge {}", network.name, network.bridge);
//! }
//! ```

#![forbid(unsafe_code)]

mod alloc;
mod model;
mod names;
mod problem;
mod raw;
mod resolve;
mod types;
mod validate;

use std::path::Path;

pub use model::{
    Appliance, ApplianceKind, DhcpConfig, Dns, ExternalGateway, FloatingIp, Instance, METADATA_IP,
    Network, Pool, Port, Reservation, Route, Router, RouterNic, Segment, Subnet, SubnetAddr,
    Topology, Underlay, VxlanGateway,
};
pub use names::{
    BRIDGE_PREFIX, LinkKind, MAC_PREFIX, RESERVED_PREFIXES, TAP_PREFIX, VLAN_PREFIX, fnv1a32,
    link_name, stable_mac, stable_uuid,
};
pub use problem::{Errors, Problem, ResourceKind};
pub use resolve::{
    DEFAULT_AVAILABILITY_ZONE, DEFAULT_DNS_DOMAIN, DEFAULT_LEASE_SECONDS, DEFAULT_MTU,
    DEFAULT_UDP_PORT, DEFAULT_VXLAN_MTU, default_hostname,
};
pub use types::{InterfaceAddr, Ipv4Cidr, MAX_IFNAME_LEN, MacAddr, check_ifname};
pub use validate::MAX_USER_DATA;

/// Reads, validates and resolves the topology file at `path`. `user_data_file` paths are
/// relative to the file's directory; `link_salt` makes link names unique to one manager
/// (pass something stable derived from the state dir, see `link_name`). Problems name the
/// file as `path` is written.
pub fn load(path: &Path, link_salt: &str) -> Result<Topology, Errors> {
    let file_name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| {
        Errors(vec![Problem {
            file: file_name.clone(),
            line: None,
            resource_kind: None,
            resource_name: None,
            message: format!("cannot read the topology file: {e}"),
        }])
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Errors(vec![Problem {
            file: file_name.clone(),
            line: Some(line),
            resource_kind: None,
            resource_name: None,
            message: "the topology file is not valid UTF-8".into(),
        }])
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &file_name, base_dir, link_salt)
}

/// Validates and resolves topology text. `file_name` is how problems name the file,
/// `base_dir` is where `user_data_file` paths start, `link_salt` as for `load`.
pub fn parse(
    text: &str,
    file_name: &str,
    base_dir: &Path,
    link_salt: &str,
) -> Result<Topology, Errors> {
    let mut report = problem::Report::new(file_name, text);
    let raw = raw::parse(text, &mut report);
    let plan = validate::check(&raw, base_dir, &mut report);
    if !report.is_empty() {
        return Err(report.into_errors());
    }
    let topology = resolve::resolve(&raw, &plan, link_salt, &mut report);
    if report.is_empty() {
        Ok(topology)
    } else {
        Err(report.into_errors())
    }
}
