//! Forwarding appliances under test (wire, router, VXLAN gateway): booting one with
//! several NICs, and iperf3 between two namespaces of a [`World`], read from its JSON.

use crate::appliance::{self, READY_TIMEOUT, appliance_mac};
use crate::{Instance, World, bench};
use anyhow::{Context, bail};
use nanovnf_qemu::{Accel, Nic, Vm};
use nanovnf_schema::{BootConfig, LogLevel, NicConfig, Role};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

/// Guest RAM of a forwarder: superframe-sized rings (about 8.5 MiB per NIC with offloads)
/// and its tables.
pub const FORWARDER_MEMORY_MIB: u32 = 64;

/// Boots `image_name` with `config`, NIC `i` on `taps[i]`, with a control channel, and
/// waits for `READY`. `offloads` false withdraws every virtio-net offload.
pub fn boot_forwarder(
    world: &World,
    name: &str,
    image_name: &str,
    config: &BootConfig,
    taps: &[String],
    offloads: bool,
    accel: Accel,
) -> anyhow::Result<Vm> {
    if taps.len() != config.nics.len() {
        bail!("{name}: {} taps for {} NICs", taps.len(), config.nics.len());
    }
    let mut spec = appliance::spec(world, name, image_name, &[])?
        .memory_mib(FORWARDER_MEMORY_MIB)
        .accel(accel)
        .control(true)
        .config(nanovnf_schema::encode(config));
    for (nic, tap) in config.nics.iter().zip(taps) {
        let mut n = Nic::new(tap.clone(), nic.mac);
        if !offloads {
            n = n.without_offloads();
        }
        spec = spec.nic(n);
    }
    let mut vm = spec.spawn().with_context(|| format!("spawn {name}"))?;
    vm.wait_ready(READY_TIMEOUT)
        .with_context(|| format!("{name} ready"))?;
    Ok(vm)
}

/// A wire appliance's configuration: two NICs without addresses, MTU `mtu`.
pub fn wire_config(world: &World, name: &str, mtu: u16) -> BootConfig {
    BootConfig {
        generation: 1,
        name: name.to_owned(),
        log_level: LogLevel::Info,
        nics: (0..2)
            .map(|i| NicConfig {
                mac: appliance_mac(world, i),
                addresses: Vec::new(),
                mtu,
            })
            .collect(),
        role: Role::Wire,
    }
}

/// `--accel tcg,kvm` of the forwarding benchmarks.
pub fn accels(value: &str) -> anyhow::Result<Vec<Accel>> {
    bench::choices(
        "--accel",
        value,
        &[("tcg", Accel::Tcg), ("kvm", Accel::Kvm)],
    )
}

/// Where a forwarding benchmark's instances run their receive path (`--receive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Receive {
    /// In their own NAPI threads, as separate hosts would ([`World::receive_in_own_thread`]).
    Thread,
    /// Inside whichever thread sent the frame: for frames an appliance sends, QEMU's I/O
    /// thread (Linux's default for veth).
    Inline,
}

impl Receive {
    pub fn label(self) -> &'static str {
        match self {
            Receive::Thread => "rx thread",
            Receive::Inline => "rx inline",
        }
    }

    /// Applies this mode to `instances` of `world`.
    pub fn apply(self, world: &World, instances: &[&Instance]) -> anyhow::Result<()> {
        if self == Receive::Thread {
            for inst in instances {
                world.receive_in_own_thread(inst)?;
            }
        }
        Ok(())
    }
}

/// `--receive thread,inline` of the forwarding benchmarks.
pub fn receives(value: &str) -> anyhow::Result<Vec<Receive>> {
    bench::choices(
        "--receive",
        value,
        &[("thread", Receive::Thread), ("inline", Receive::Inline)],
    )
}

/// An iperf3 result (or its failure) for a benchmark's JSON report.
pub fn iperf_json(result: &anyhow::Result<Iperf>) -> Value {
    match result {
        Ok(i) => serde_json::json!({"bits_per_second": i.bits_per_second,
                                    "packets_per_second": i.packets_per_second,
                                    "lost_percent": i.lost_percent,
                                    "range": i.range}),
        Err(e) => serde_json::json!({"error": format!("{e:#}")}),
    }
}

/// Table cells for an iperf3 result: TCP Gbit/s, UDP packets/s with loss.
/// With several runs the median comes first and the range after it.
pub fn gbits_cell(result: &anyhow::Result<Iperf>) -> String {
    result.as_ref().map_or("failed".into(), |i| {
        let g = |bps: f64| format!("{:.2}", bps / 1e9);
        match i.range {
            Some((lo, hi)) => format!("{} ({}–{})", g(i.bits_per_second), g(lo), g(hi)),
            None => g(i.bits_per_second),
        }
    })
}

pub fn packets_cell(result: &anyhow::Result<Iperf>) -> String {
    result.as_ref().map_or("failed".into(), |i| match i.range {
        Some((lo, hi)) => format!(
            "{:.0} ({:.0}–{:.0}; {:.0}% lost)",
            i.packets_per_second, lo, hi, i.lost_percent
        ),
        None => format!("{:.0} ({:.0}% lost)", i.packets_per_second, i.lost_percent),
    })
}

/// What one iperf3 run measured, from the client's JSON.
#[derive(Debug, Clone, Copy)]
pub struct Iperf {
    /// Received bits per second (TCP: the receiver's figure; UDP: sent minus lost).
    pub bits_per_second: f64,
    /// UDP: datagrams per second that arrived; TCP: 0.
    pub packets_per_second: f64,
    pub lost_percent: f64,
    /// Over repeated runs ([`iperf3_median`]): the lowest and highest headline figure
    /// (TCP bits/s, UDP packets/s); the fields above are the median run's.
    pub range: Option<(f64, f64)>,
}

impl Iperf {
    /// The figure a run is judged by: UDP packets/s when `udp`, else TCP bits/s.
    pub fn headline(&self, udp: bool) -> f64 {
        if udp {
            self.packets_per_second
        } else {
            self.bits_per_second
        }
    }
}

/// [`iperf3`] `runs` times on the same setup: the median run by its headline figure (TCP
/// bits/s, UDP packets/s), with the range beside it. This machine's figures swing from
/// run to run (2 cores shared by QEMU, iperf3 and the kernel); one run is an anecdote.
pub fn iperf3_median(
    world: &mut World,
    server_ns: &str,
    client_ns: &str,
    server: Ipv4Addr,
    client_args: &[&str],
    runs: usize,
) -> anyhow::Result<Iperf> {
    let mut all = Vec::new();
    for _ in 0..runs.max(1) {
        all.push(iperf3(world, server_ns, client_ns, server, client_args)?);
    }
    Ok(median_run(all, client_args.contains(&"-u")))
}

/// The median of `runs` by their headline figure (TCP bits/s, or UDP packets/s when
/// `udp`), with the range beside it when there are several.
pub fn median_run(mut runs: Vec<Iperf>, udp: bool) -> Iperf {
    runs.sort_by(|a, b| a.headline(udp).total_cmp(&b.headline(udp)));
    let mut median = runs[runs.len() / 2];
    if runs.len() > 1 {
        median.range = Some((runs[0].headline(udp), runs[runs.len() - 1].headline(udp)));
    }
    median
}

/// A table cell for ratios (`0.87` as `87%`): the median, and the range when there are
/// several; `–` for none.
pub fn ratio_cell(ratios: &[f64]) -> String {
    let mut r = ratios.to_vec();
    r.sort_by(f64::total_cmp);
    match r.as_slice() {
        [] => "–".into(),
        [one] => format!("{:.0}%", one * 100.0),
        all => format!(
            "{:.0}% ({:.0}–{:.0}%)",
            all[all.len() / 2] * 100.0,
            all[0] * 100.0,
            all[all.len() - 1] * 100.0
        ),
    }
}

/// Runs `iperf3 -s` in `server_ns`, then the client in `client_ns` against `server`
/// with `client_args` (e.g. `["-t", "3"]` or `["-u", "-l", "64", "-b", "0"]`), retrying
/// the connection for up to 5 s while the server starts.
pub fn iperf3(
    world: &mut World,
    server_ns: &str,
    client_ns: &str,
    server: Ipv4Addr,
    client_args: &[&str],
) -> anyhow::Result<Iperf> {
    let port = 5201 + (std::process::id() % 1000) as u16;
    let port_s = port.to_string();
    let mut server_cmd = Command::new("iperf3");
    server_cmd
        .args(["-s", "-1", "-p", &port_s])
        .stdout(std::process::Stdio::null());
    let server_pid = world.spawn(server_ns, server_cmd)?;
    // The server listens within a few ms; retry the client's connect briefly.
    let server_s = server.to_string();
    let mut argv = vec!["iperf3", "-c", &server_s, "-p", &port_s, "-J"];
    argv.extend_from_slice(client_args);
    let mut result = Err(anyhow::anyhow!("iperf3 did not run"));
    crate::wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        result = world.exec(client_ns, &argv).and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() {
                return parse_iperf(&text);
            }
            bail!(
                "iperf3 to {server} failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        // Only a server that does not listen yet is worth another try.
        !matches!(&result, Err(e) if format!("{e:#}").contains("onnect"))
    });
    let _ = world.kill(server_pid);
    result
}

pub fn parse_iperf(json: &str) -> anyhow::Result<Iperf> {
    let v: Value = serde_json::from_str(json).context("iperf3 JSON")?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    let udp = end["sum"].get("lost_packets").is_some();
    if !udp && let Some(sum) = end.get("sum_received").filter(|s| s.is_object()) {
        let bps = sum["bits_per_second"].as_f64().unwrap_or(0.0);
        return Ok(Iperf {
            bits_per_second: bps,
            packets_per_second: 0.0,
            lost_percent: 0.0,
            range: None,
        });
    }
    // UDP: the receiver's count (newer iperf3 has `sum_received`, older only `sum`).
    let sum = end
        .get("sum_received")
        .filter(|s| s.get("packets").is_some())
        .unwrap_or(&end["sum"]);
    let seconds = sum["seconds"].as_f64().unwrap_or(0.0);
    let packets = sum["packets"].as_f64().unwrap_or(0.0);
    let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
    if seconds <= 0.0 {
        bail!("iperf3 reported no duration");
    }
    let received = (packets - lost).max(0.0);
    let bytes_per_packet = if packets > 0.0 {
        sum["bytes"].as_f64().unwrap_or(0.0) / packets
    } else {
        0.0
    };
    Ok(Iperf {
        bits_per_second: received * bytes_per_packet * 8.0 / seconds,
        packets_per_second: received / seconds,
        lost_percent: sum["lost_percent"].as_f64().unwrap_or(0.0),
        range: None,
    })
}
