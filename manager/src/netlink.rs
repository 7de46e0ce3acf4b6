//! The host's links, through rtnetlink (never the `ip` command): bridges, VLAN
//! sub-interfaces, enslaving, MTU and up/down, deletion; and persistent taps through the
//! tun device's ioctls (the kernel creates tun/tap devices only that way).
//!
//! Every call acts in the manager's own network namespace: run the manager inside a
//! namespace (`ip netns exec NS nanovnf up …`) to build a sandbox.

use anyhow::{Context, bail};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVlan};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

/// What the manager needs to know of an existing link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The bridge (or other controller) it is enslaved to, by index.
    pub master: Option<u32>,
    /// `bridge`, `vlan`, `tun`, `veth`…; `None` for a physical NIC.
    pub kind: Option<String>,
    pub up: bool,
}

/// A netlink connection with its own single-threaded runtime; every method blocks.
pub struct Netlink {
    runtime: tokio::runtime::Runtime,
    handle: Handle,
}

impl Netlink {
    pub fn open() -> anyhow::Result<Netlink> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .context("start the netlink runtime")?;
        let handle = runtime.block_on(async {
            let (connection, handle, _) =
                rtnetlink::new_connection().context("open a netlink socket")?;
            tokio::spawn(connection);
            anyhow::Ok(handle)
        })?;
        Ok(Netlink { runtime, handle })
    }

    /// Every link of this namespace.
    pub fn links(&self) -> anyhow::Result<Vec<Link>> {
        let handle = self.handle.clone();
        self.runtime.block_on(async move {
            let mut stream = handle.link().get().execute();
            let mut links = Vec::new();
            while let Some(message) = stream.try_next().await.context("list links")? {
                links.push(link_of(&message));
            }
            Ok(links)
        })
    }

    /// The link called `name`, if any.
    pub fn link(&self, name: &str) -> anyhow::Result<Option<Link>> {
        let handle = self.handle.clone();
        let name = name.to_owned();
        self.runtime.block_on(async move {
            let mut stream = handle.link().get().match_name(name.clone()).execute();
            match stream.try_next().await {
                Ok(message) => Ok(message.map(|m| link_of(&m))),
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::ENODEV || e.raw_code() == -libc::EINVAL =>
                {
                    Ok(None)
                }
                Err(e) => Err(e).with_context(|| format!("look up link {name}")),
            }
        })
    }

    fn require(&self, name: &str) -> anyhow::Result<Link> {
        self.link(name)?
            .with_context(|| format!("link {name} does not exist"))
    }

    /// Creates a bridge, up, with this MTU.
    pub fn add_bridge(&self, name: &str, mtu: u16) -> anyhow::Result<()> {
        let message = LinkBridge::new(name).mtu(u32::from(mtu)).build();
        self.add(message)
            .with_context(|| format!("create bridge {name}"))
    }

    /// Creates `name`, a VLAN `vlan_id` sub-interface of `parent`.
    pub fn add_vlan(&self, name: &str, parent: &str, vlan_id: u16, mtu: u16) -> anyhow::Result<()> {
        let parent = self.require(parent)?;
        let message = LinkVlan::new(name, parent.index, vlan_id)
            .mtu(u32::from(mtu))
            .build();
        self.add(message)
            .with_context(|| format!("create VLAN {vlan_id} link {name} on {}", parent.name))
    }

    /// Creates a persistent tap (`IFF_TAP | IFF_NO_PI`, as QEMU's `-netdev tap` opens it).
    pub fn add_tap(&self, name: &str) -> anyhow::Result<()> {
        create_persistent_tap(name).with_context(|| format!("create tap {name}"))
    }

    fn add(&self, message: LinkMessage) -> anyhow::Result<()> {
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move { handle.link().add(message).execute().await })?;
        Ok(())
    }

    /// Sets the link's controller (a bridge's index; `None` releases it), MTU, and brings
    /// it up.
    pub fn configure(&self, link: &Link, master: Option<u32>, mtu: u16) -> anyhow::Result<()> {
        let mut builder = LinkUnspec::new_with_index(link.index)
            .mtu(u32::from(mtu))
            .up();
        builder = match master {
            Some(index) => builder.controller(index),
            None => builder.nocontroller(),
        };
        self.set(builder.build())
            .with_context(|| format!("configure link {}", link.name))
    }

    /// Takes the link out of whatever bridge holds it (an enslaved physical interface the
    /// manager must not delete).
    pub fn release(&self, name: &str) -> anyhow::Result<()> {
        let Some(link) = self.link(name)? else {
            return Ok(());
        };
        self.set(
            LinkUnspec::new_with_index(link.index)
                .nocontroller()
                .build(),
        )
        .with_context(|| format!("release link {name} from its bridge"))
    }

    fn set(&self, message: LinkMessage) -> anyhow::Result<()> {
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move { handle.link().set(message).execute().await })?;
        Ok(())
    }

    /// Deletes the link; a link that is already gone is fine.
    pub fn delete(&self, name: &str) -> anyhow::Result<()> {
        let Some(link) = self.link(name)? else {
            return Ok(());
        };
        let handle = self.handle.clone();
        self.runtime
            .block_on(async move { handle.link().del(link.index).execute().await })
            .with_context(|| format!("delete link {name}"))
    }
}

/// True when this kernel can make VLAN links: 8021q is loaded (or built in), or its
/// module is there for the kernel to load on demand.
pub fn vlan_supported() -> bool {
    if std::path::Path::new("/proc/net/vlan").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    std::path::Path::new("/lib/modules")
        .join(release.trim())
        .join("kernel/net/8021q")
        .is_dir()
}

fn link_of(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        master: None,
        kind: None,
        up: message.header.flags.contains(LinkFlags::Up),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(index) => link.master = Some(*index),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind_name(kind));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Tun => "tun".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Vxlan => "vxlan".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (the rest of the union
/// is padding).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

fn create_persistent_tap(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("tap name {name:?} must have 1 to 15 characters");
    }
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("open /dev/net/tun (is the tun module loaded?)")?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and may write back) one `struct ifreq`, which `request`
    // matches in layout and size (40 bytes); the fd is an open /dev/net/tun.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF, &mut request) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TUNSETIFF");
    }
    // SAFETY: TUNSETPERSIST takes an integer argument; the fd is attached to the tap.
    if unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TUNSETPERSIST");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }
}
