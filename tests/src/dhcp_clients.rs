//! Three real DHCP clients from Debian, driven the same way: busybox `udhcpc`, ISC
//! `dhclient` and `dhcpcd`. Each runs inside an instance namespace through `ip netns exec`
//! (so /etc/resolv.conf is the namespace's own copy), applies what it was handed as its
//! distribution does, and reports each event through a small hook script into a log the
//! test reads: `<event> ip=… hostname=… domain=…`.

use crate::{Instance, World, find_tool, wait_until};
use anyhow::{Context, anyhow, bail};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Udhcpc,
    Dhclient,
    Dhcpcd,
}

/// What a hook script logged for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `bound`, `renew`, … as each client names it, lowercased.
    pub kind: String,
    pub ip: Option<Ipv4Addr>,
    pub hostname: String,
    pub domain: String,
}

/// A client running in the background on one instance.
pub struct Running {
    pub client: Client,
    pub pid: u32,
    pub log: PathBuf,
}

impl Client {
    pub const ALL: [Client; 3] = [Client::Udhcpc, Client::Dhclient, Client::Dhcpcd];

    pub fn name(self) -> &'static str {
        match self {
            Client::Udhcpc => "udhcpc",
            Client::Dhclient => "dhclient",
            Client::Dhcpcd => "dhcpcd",
        }
    }

    /// The binaries this client needs.
    pub fn tools(self) -> &'static [&'static str] {
        match self {
            Client::Udhcpc => &["busybox"],
            Client::Dhclient => &["dhclient", "dhclient-script"],
            Client::Dhcpcd => &["dhcpcd"],
        }
    }

    /// The events meaning "a lease was bound" and "a lease was renewed".
    fn bound_kinds(self) -> &'static [&'static str] {
        match self {
            Client::Udhcpc => &["bound"],
            Client::Dhclient => &["bound", "reboot"],
            Client::Dhcpcd => &["bound", "reboot"],
        }
    }

    fn renew_kinds(self) -> &'static [&'static str] {
        match self {
            Client::Udhcpc => &["renew"],
            Client::Dhclient => &["renew", "rebind"],
            Client::Dhcpcd => &["renew", "rebind"],
        }
    }

    /// Writes the hook script for `inst` into the world's scratch dir; returns (script,
    /// log).
    fn hook(self, world: &World, tag: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let dir = world.scratch_dir().join(format!("{}-{tag}", self.name()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join("events.log");
        std::fs::write(&log, "").context("creating the event log")?;
        let log_s = log.display();
        let body = match self {
            // udhcpc hands everything to its script, which must configure the interface:
            // busybox's own examples/udhcp/simple.script, with RFC 3442 routes (and the
            // default route among them, which then replaces option 3 as the RFC says).
            Client::Udhcpc => format!(
                r#"#!/bin/sh
echo "$1 ip=$ip hostname=$hostname domain=$domain" >> {log_s}
case "$1" in
  deconfig)
    busybox ip -4 addr flush dev "$interface"
    busybox ip link set dev "$interface" up
    ;;
  bound|renew)
    busybox ifconfig "$interface" $ip netmask $subnet ${{broadcast:+broadcast $broadcast}} ${{mtu:+mtu $mtu}}
    if [ -n "$staticroutes" ]; then
      busybox ip -4 route flush exact 0.0.0.0/0 dev "$interface"
      set -- $staticroutes
      while [ -n "$1" ] && [ -n "$2" ]; do
        if [ "$2" = 0.0.0.0 ]; then
          busybox ip -4 route replace "$1" dev "$interface"
        else
          busybox ip -4 route replace "$1" via "$2" dev "$interface"
        fi
        shift 2
      done
    elif [ -n "$router" ]; then
      busybox ip -4 route replace default via ${{router%% *}} dev "$interface"
    fi
    ;;
esac
exit 0
"#
            ),
            // Debian's dhclient-script (with its rfc3442 exit hook) does the work.
            Client::Dhclient => format!(
                r#"#!/bin/sh
kind=$(echo "$reason" | tr 'A-Z' 'a-z')
echo "$kind ip=$new_ip_address hostname=$new_host_name domain=$new_domain_name" >> {log_s}
exec /sbin/dhclient-script "$@"
"#
            ),
            // dhcpcd configures the interface itself; its hooks only touch resolv.conf,
            // hostname and NTP, which we leave out with --nohook.
            Client::Dhcpcd => format!(
                r#"#!/bin/sh
kind=$(echo "$reason" | tr 'A-Z' 'a-z')
echo "$kind ip=$new_ip_address hostname=$new_host_name domain=$new_domain_name" >> {log_s}
exit 0
"#
            ),
        };
        let script = dir.join("hook.sh");
        std::fs::write(&script, body).context("writing the hook script")?;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
        Ok((script, log))
    }

    /// The client's argv (after `ip netns exec <ns>`). `once` = give up after about
    /// `timeout_secs` without a lease and exit instead of running on.
    fn argv(
        self,
        inst: &Instance,
        script: &Path,
        once: Option<u32>,
    ) -> anyhow::Result<Vec<String>> {
        let dir = script
            .parent()
            .ok_or_else(|| anyhow!("hook has no directory"))?;
        let path = |name: &str| dir.join(name).display().to_string();
        let tool = |name: &str| -> anyhow::Result<String> {
            Ok(find_tool(name)
                .ok_or_else(|| anyhow!("`{name}` is not installed"))?
                .display()
                .to_string())
        };
        let ifname = inst.ifname.clone();
        let script = script.display().to_string();
        Ok(match self {
            Client::Udhcpc => {
                let mut v = vec![
                    tool("busybox")?,
                    "udhcpc".into(),
                    "-f".into(),
                    "-i".into(),
                    ifname,
                ];
                v.extend(["-s".into(), script]);
                for o in ["mtu", "staticroutes", "hostname", "domain"] {
                    v.extend(["-O".into(), o.into()]);
                }
                if let Some(t) = once {
                    v.extend([
                        "-n".into(),
                        "-q".into(),
                        "-t".into(),
                        t.to_string(),
                        "-T".into(),
                        "1".into(),
                    ]);
                }
                v
            }
            Client::Dhclient => {
                let mut v = vec![tool("dhclient")?, "-4".into(), "-d".into(), "-v".into()];
                v.extend(["-sf".into(), script, "-lf".into(), path("dhclient.leases")]);
                v.extend(["-pf".into(), path("dhclient.pid")]);
                if let Some(t) = once {
                    // Debian's request list, with a short timeout for the failure case.
                    let conf = dir.join("dhclient.conf");
                    std::fs::write(
                        &conf,
                        format!(
                            "option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;\n\
                             timeout {t};\nretry 60;\n\
                             request subnet-mask, broadcast-address, routers, domain-name, \
                             domain-name-servers, host-name, interface-mtu, \
                             rfc3442-classless-static-routes;\n"
                        ),
                    )?;
                    v.extend(["-1".into(), "-cf".into(), conf.display().to_string()]);
                }
                v.push(ifname);
                v
            }
            Client::Dhcpcd => {
                let mut v = vec![tool("dhcpcd")?, "-4".into(), "-L".into()];
                if once.is_none() {
                    // Foreground; with --oneshot it must not be set or -t never fires.
                    v.push("-B".into());
                }
                v.extend(["-c".into(), script]);
                v.extend([
                    "--nohook".into(),
                    "resolv.conf".into(),
                    "--nohook".into(),
                    "hostname".into(),
                ]);
                if let Some(t) = once {
                    v.extend(["-1".into(), "-t".into(), t.to_string()]);
                }
                v.push(ifname);
                v
            }
        })
    }

    /// Starts the client in the background on `inst`; the world kills it on drop.
    pub fn start(self, world: &mut World, inst: &Instance, tag: &str) -> anyhow::Result<Running> {
        let (script, log) = self.hook(world, tag)?;
        let argv = self.argv(inst, &script, None)?;
        let out = std::fs::File::create(log.with_extension("out"))?;
        let mut cmd = Command::new(crate::env::ip_path());
        cmd.args(["netns", "exec", &inst.ns])
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let pid = world.spawn(&inst.ns, cmd)?;
        Ok(Running {
            client: self,
            pid,
            log,
        })
    }

    /// Runs the client once in the foreground with a short timeout; true when it got a
    /// lease (exit status 0).
    pub fn try_once(
        self,
        world: &World,
        inst: &Instance,
        tag: &str,
        timeout_secs: u32,
    ) -> anyhow::Result<(bool, Vec<Event>)> {
        let (script, log) = self.hook(world, tag)?;
        let argv = self.argv(inst, &script, Some(timeout_secs))?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = world.exec(&inst.ns, &argv)?;
        Ok((out.status.success(), read_events(&log)?))
    }
}

impl Running {
    pub fn events(&self) -> anyhow::Result<Vec<Event>> {
        read_events(&self.log)
    }

    fn wait_kind(&self, kinds: &[&str], after: usize, timeout: Duration) -> anyhow::Result<Event> {
        let mut found = None;
        wait_until(timeout, Duration::from_millis(50), || {
            found = self.events().ok().and_then(|ev| {
                ev.into_iter()
                    .skip(after)
                    .find(|e| kinds.contains(&e.kind.as_str()))
            });
            found.is_some()
        });
        found.ok_or_else(|| {
            anyhow!(
                "{} logged no {kinds:?} event within {timeout:?}; events: {:?}; output:\n{}",
                self.client.name(),
                self.events().unwrap_or_default(),
                std::fs::read_to_string(self.log.with_extension("out")).unwrap_or_default()
            )
        })
    }

    /// Waits for the first lease.
    pub fn wait_bound(&self, timeout: Duration) -> anyhow::Result<Event> {
        self.wait_kind(self.client.bound_kinds(), 0, timeout)
    }

    /// Waits for a renewal logged after the first `after` events.
    pub fn wait_renewed(&self, after: usize, timeout: Duration) -> anyhow::Result<Event> {
        self.wait_kind(self.client.renew_kinds(), after, timeout)
    }
}

fn read_events(log: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let Some(kind) = words.next() else { continue };
        let mut e = Event {
            kind: kind.to_owned(),
            ip: None,
            hostname: String::new(),
            domain: String::new(),
        };
        for w in words {
            match w.split_once('=') {
                Some(("ip", v)) => e.ip = v.parse().ok(),
                Some(("hostname", v)) => e.hostname = v.to_owned(),
                Some(("domain", v)) => e.domain = v.to_owned(),
                _ => {}
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// The instance's IPv4 addresses on its interface, as `a.b.c.d/len`.
pub fn addresses(world: &World, inst: &Instance) -> anyhow::Result<Vec<String>> {
    let out = world.ip(&inst.ns, &["-4", "-o", "addr", "show", "dev", &inst.ifname])?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            w.next().map(str::to_owned)
        })
        .collect())
}

/// The instance interface's MTU.
pub fn mtu(world: &World, inst: &Instance) -> anyhow::Result<u32> {
    let out = world.ip(&inst.ns, &["-o", "link", "show", "dev", &inst.ifname])?;
    let mut w = out.split_whitespace();
    w.position(|x| x == "mtu");
    w.next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| anyhow!("no mtu in {out:?}"))
}

/// The instance's IPv4 routes, one `ip route` line each.
pub fn routes(world: &World, inst: &Instance) -> anyhow::Result<Vec<String>> {
    let out = world.ip(&inst.ns, &["-4", "route", "show"])?;
    Ok(out.lines().map(|l| l.trim().to_owned()).collect())
}

/// Fails unless `routes` holds a line starting with `prefix`.
pub fn expect_route(routes: &[String], prefix: &str) -> anyhow::Result<()> {
    if routes.iter().any(|r| r.starts_with(prefix)) {
        Ok(())
    } else {
        bail!("no route `{prefix}…` among {routes:#?}")
    }
}
