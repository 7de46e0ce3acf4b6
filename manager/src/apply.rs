//! Making the host match a plan: links first (recorded before they are created, so a
//! manager killed half-way knows what is its own), then appliances — untouched when they
//! already run the same configuration, updated live over the control channel when only
//! ports changed, (re)booted otherwise — and finally what the new plan no longer has is
//! stopped and deleted. Passwords that instances set through a metadata appliance are
//! fetched into the state whenever the manager talks to it (and before it is rebooted),
//! and go back into its configuration each time it boots.

use crate::netlink::{Link, Netlink};
use crate::plan::{ApplianceKind, AppliancePlan, LinkKind, Plan, live_changes, shape};
use crate::process;
use crate::state::{ApplianceRecord, State};
use anyhow::{Context, bail};
use nanovnf_qemu::{Accel, ControlClient, Nic, Vm, VmSpec};
use nanovnf_schema::control::{Op, Report};
use nanovnf_schema::{BootConfig, Role};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long an appliance may take from QEMU's start to `READY`; generous, because 50
/// appliances booting at once on two cores share them.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one control-channel request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a metadata appliance may take to report its passwords: a ready one answers in
/// milliseconds, and one built before the report existed never does.
pub const PASSWORDS_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a stopped appliance gets to exit before SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct Options {
    pub accel: Accel,
    /// Where the images are; `None`: the build tree's (built if missing).
    pub images: Option<PathBuf>,
    /// Print a line per appliance as it becomes ready.
    pub progress: bool,
}

/// What one `up` did, for its summary.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (appliance id, what happened: booted, rebooted, updated (n changes), unchanged,
    /// adopted, failed: why).
    pub appliances: Vec<(String, String)>,
    pub links_created: Vec<String>,
    pub links_deleted: Vec<String>,
    pub stopped: Vec<String>,
    pub failed: usize,
}

pub struct Manager {
    pub state: State,
    pub netlink: Netlink,
    pub options: Options,
}

/// A VM that was started and has not reported ready yet.
struct Booting {
    id: String,
    vm: Vm,
    started: Instant,
    action: &'static str,
}

impl Manager {
    pub fn image(&self, name: &str) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.options.images {
            let path = dir.join(name);
            anyhow::ensure!(path.exists(), "image {} does not exist", path.display());
            return Ok(path);
        }
        let path = nanovnf_build_images::image_path(name);
        if !path.exists() {
            eprintln!("building appliance images (x86_64-unknown-none)...");
            nanovnf_build_images::build_all()?;
        }
        Ok(path)
    }

    /// Makes the host match `plan` (from `file`).
    pub fn up(&mut self, file: &str, plan: &Plan) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        self.check_host(plan)?;
        self.stop_strays()?;
        // Appliances the new plan no longer runs (or runs differently: rebooted below).
        for record in self.state.appliances()? {
            if plan
                .appliance(&record.id)
                .is_none_or(|a| a.config.is_none())
            {
                self.stop_appliance(&record)?;
                self.state.forget_appliance(&record.id)?;
                outcome.stopped.push(record.id.clone());
            }
        }
        self.remove_stale_links(plan, &mut outcome)?;
        self.ensure_links(plan, &mut outcome)?;

        let mut booting = Vec::new();
        for appliance in &plan.appliances {
            let Some(config) = &appliance.config else {
                continue;
            };
            match self.converge(appliance, config) {
                Ok(Converged::Done(action)) => {
                    outcome.appliances.push((appliance.id.clone(), action))
                }
                Ok(Converged::Booting(b)) => booting.push(*b),
                Err(e) => {
                    outcome.failed += 1;
                    outcome
                        .appliances
                        .push((appliance.id.clone(), format!("failed: {e:#}")));
                }
            }
        }
        self.wait_booting(booting, &mut outcome)?;
        self.state.set_plan(file, plan)?;
        Ok(outcome)
    }

    /// Stops QEMUs of this state directory that no record names (started by a manager
    /// killed before it could record them).
    fn stop_strays(&mut self) -> anyhow::Result<()> {
        let known: Vec<u32> = self
            .state
            .appliances()?
            .iter()
            .filter_map(|a| a.pid)
            .collect();
        for (pid, start_time) in process::strays(&self.state.run_dir(), &known) {
            eprintln!("stopping unrecorded appliance QEMU pid {pid} (left by a killed manager)");
            process::stop(pid, start_time, STOP_GRACE);
        }
        Ok(())
    }

    /// Refuses before changing anything when the host lacks what the plan needs.
    fn check_host(&self, plan: &Plan) -> anyhow::Result<()> {
        let links = self.netlink.links()?;
        let recorded = self.state.links()?;
        let ours = |name: &str| {
            recorded
                .iter()
                .any(|(n, how, ..)| n == name && how == "created")
        };
        for link in &plan.links {
            let existing = links.iter().find(|l| l.name == link.name);
            match &link.kind {
                LinkKind::Physical => {
                    if existing.is_none() {
                        bail!(
                            "network {:?} needs host interface {}, which does not exist",
                            link.network,
                            link.name
                        );
                    }
                }
                LinkKind::Vlan { parent, .. } => {
                    if existing.is_none() && !crate::netlink::vlan_supported() {
                        bail!(
                            "network {:?} has a vlan segment, but this kernel has no 802.1Q \
                             VLAN support (no 8021q module, no /proc/net/vlan)",
                            link.network
                        );
                    }
                    if !links.iter().any(|l| &l.name == parent) {
                        bail!(
                            "network {:?} needs host interface {parent} for its VLAN, which \
                             does not exist",
                            link.network
                        );
                    }
                    if existing.is_some() && !ours(&link.name) {
                        bail!("link {} exists and nanovnf did not create it", link.name);
                    }
                }
                LinkKind::Bridge | LinkKind::Tap => {
                    if existing.is_some() && !ours(&link.name) {
                        bail!(
                            "link {} exists and nanovnf did not create it (a name in the \
                             topology collides with a host link)",
                            link.name
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn ensure_links(&mut self, plan: &Plan, outcome: &mut Outcome) -> anyhow::Result<()> {
        // One dump up front; links created below are looked up once each.
        let mut links: HashMap<String, Link> = self
            .netlink
            .links()?
            .into_iter()
            .map(|l| (l.name.clone(), l))
            .collect();
        for link in &plan.links {
            let how = if link.kind == LinkKind::Physical {
                "enslaved"
            } else {
                "created"
            };
            self.state
                .record_link(&link.name, how, link.kind.as_str(), &link.network)?;
            if !links.contains_key(&link.name) {
                match &link.kind {
                    LinkKind::Bridge => self.netlink.add_bridge(&link.name, link.mtu)?,
                    LinkKind::Tap => self.netlink.add_tap(&link.name)?,
                    LinkKind::Vlan { parent, vlan_id } => self
                        .netlink
                        .add_vlan(&link.name, parent, *vlan_id, link.mtu)?,
                    // `check_host` made sure it exists.
                    LinkKind::Physical => bail!("host interface {} vanished", link.name),
                }
                outcome.links_created.push(link.name.clone());
                let created = self
                    .netlink
                    .link(&link.name)?
                    .with_context(|| format!("link {} vanished after creation", link.name))?;
                links.insert(link.name.clone(), created);
            }
            let current = &links[&link.name];
            let master = match &link.master {
                Some(m) => Some(
                    links
                        .get(m)
                        .with_context(|| format!("bridge {m} of {} is missing", link.name))?
                        .index,
                ),
                None => None,
            };
            if current.mtu != u32::from(link.mtu) || current.master != master || !current.up {
                self.netlink.configure(current, master, link.mtu)?;
            }
        }
        Ok(())
    }

    fn remove_stale_links(&mut self, plan: &Plan, outcome: &mut Outcome) -> anyhow::Result<()> {
        let mut stale: Vec<(String, String, String)> = self
            .state
            .links()?
            .into_iter()
            .filter(|(name, how, ..)| {
                !plan.links.iter().any(|l| {
                    &l.name == name && (how == "enslaved") == (l.kind == LinkKind::Physical)
                })
            })
            .map(|(name, how, kind, _)| (name, how, kind))
            .collect();
        // Taps and VLAN links before their bridges.
        stale.sort_by_key(|(_, _, kind)| kind == "bridge");
        for (name, how, _) in stale {
            if how == "enslaved" {
                self.netlink.release(&name)?;
            } else {
                self.netlink.delete(&name)?;
                outcome.links_deleted.push(name.clone());
            }
            self.state.forget_link(&name)?;
        }
        Ok(())
    }

    fn converge(&mut self, plan: &AppliancePlan, config: &BootConfig) -> anyhow::Result<Converged> {
        let wanted_shape = shape(config);
        let record = self.state.appliance(&plan.id)?;
        if let Some(record) = &record
            && record_alive(record)
        {
            if record.shape == wanted_shape {
                return self.update_live(record, config).map(Converged::Done);
            }
            if record.kind == ApplianceKind::Metadata {
                // What instances set since the last look, before the VM goes.
                if let Err(e) = self.collect_passwords(record, 0) {
                    tracing::warn!(appliance = %record.id, "passwords not fetched: {e:#}");
                }
            }
            self.stop_appliance(record)?;
            let b = self.boot(
                plan,
                config,
                record.generation + 1,
                record.restarts,
                "rebooted",
            )?;
            return Ok(Converged::Booting(Box::new(b)));
        }
        let generation = record.as_ref().map_or(1, |r| r.generation + 1);
        let restarts = record.as_ref().map_or(0, |r| r.restarts);
        let action = if record.is_some() {
            "restarted"
        } else {
            "booted"
        };
        let booting = self.boot(plan, config, generation, restarts, action)?;
        Ok(Converged::Booting(Box::new(booting)))
    }

    /// Brings a running appliance from the configuration it holds to `config` with
    /// control-channel requests; no reboot.
    fn update_live(
        &mut self,
        record: &ApplianceRecord,
        config: &BootConfig,
    ) -> anyhow::Result<String> {
        let held = nanovnf_schema::decode(&record.config)
            .map_err(|e| anyhow::anyhow!("recorded config of {}: {e}", record.id))?;
        let ops = live_changes(&held, config);
        let adopted = record.state != "ready";
        if ops.is_empty() && !adopted {
            return Ok("unchanged".into());
        }
        let mut client = ControlClient::connect(&record.control_socket, CONTROL_TIMEOUT)
            .with_context(|| format!("control channel of {}", record.id))?;
        // Also confirms that an appliance found booting (manager killed mid-`up`) serves.
        client.ping(CONTROL_TIMEOUT)?;
        if record.kind == ApplianceKind::Metadata {
            if let Err(e) = self.passwords_from(&mut client, &record.id, 0) {
                tracing::warn!(appliance = %record.id, "passwords not fetched: {e:#}");
            }
            if let Role::Metadata(role) = &config.role {
                self.state.retain_passwords(&record.id, &role.instances)?;
            }
        }
        let generation = if ops.is_empty() {
            record.generation
        } else {
            record.generation + 1
        };
        for op in &ops {
            match client.call(op.clone(), CONTROL_TIMEOUT)? {
                Report::Done { .. } => {}
                Report::Refused { reason, .. } => {
                    bail!("{} refused {}: {reason}", record.id, op_name(op))
                }
                other => bail!("{} answered {other:?} to {}", record.id, op_name(op)),
            }
        }
        if !ops.is_empty() {
            client.call(Op::SetGeneration { generation }, CONTROL_TIMEOUT)?;
        }
        let mut held_now = config.clone();
        held_now.generation = generation;
        let mut updated = record.clone();
        updated.config = nanovnf_schema::encode(&held_now);
        updated.generation = generation;
        updated.state = "ready".into();
        self.state.save_appliance(&updated)?;
        Ok(match ops.len() {
            0 => "adopted".into(),
            n => format!("updated live ({n} change{})", if n == 1 { "" } else { "s" }),
        })
    }

    fn boot(
        &mut self,
        plan: &AppliancePlan,
        config: &BootConfig,
        generation: u64,
        restarts: u32,
        action: &'static str,
    ) -> anyhow::Result<Booting> {
        let mut config = config.clone();
        config.generation = generation;
        if let Role::Metadata(role) = &mut config.role {
            // The passwords instances set before: GET /openstack/<v>/password goes on
            // returning them, and a second POST still gets 409.
            self.state.retain_passwords(&plan.id, &role.instances)?;
            role.passwords = self.state.passwords(&plan.id)?;
        }
        let blob = nanovnf_schema::encode(&config);
        let mut spec = VmSpec::new(&plan.vm_name, self.image(crate::plan::image(plan.kind))?)
            .accel(self.options.accel)
            .memory_mib(crate::plan::memory_mib(
                plan.kind,
                blob.len(),
                plan.nics.len(),
            ))
            .run_dir(self.state.run_dir())
            .control(true)
            .config(blob.clone());
        for nic in &plan.nics {
            spec = spec.nic(Nic::new(nic.tap.clone(), nic.mac));
        }
        let control_socket = spec.control_socket_path();
        let vm = spec
            .spawn()
            .with_context(|| format!("start appliance {}", plan.id))?;
        let pid = vm.pid();
        let record = ApplianceRecord {
            id: plan.id.clone(),
            kind: plan.kind,
            owner: plan.owner.clone(),
            vm_name: plan.vm_name.clone(),
            pid: Some(pid),
            start_time: process::start_time(pid),
            generation,
            control_socket,
            state: "booting".into(),
            shape: shape(&config),
            config: blob,
            restarts,
            accel: vm.accel().as_str().into(),
        };
        self.state.save_appliance(&record)?;
        tracing::info!(appliance = %plan.id, pid, generation, "started");
        Ok(Booting {
            id: plan.id.clone(),
            vm,
            started: Instant::now(),
            action,
        })
    }

    fn wait_booting(&mut self, booting: Vec<Booting>, outcome: &mut Outcome) -> anyhow::Result<()> {
        let total = booting.len();
        if total == 0 {
            return Ok(());
        }
        if self.options.progress {
            eprintln!(
                "booting {total} appliance{}...",
                if total == 1 { "" } else { "s" }
            );
        }
        for (i, mut b) in booting.into_iter().enumerate() {
            let result = b.vm.wait_ready(READY_TIMEOUT);
            match result {
                Ok(_) => {
                    self.state.set_appliance_state(&b.id, "ready")?;
                    if self.options.progress {
                        eprintln!(
                            "  [{}/{total}] {} ready ({:.0} ms)",
                            i + 1,
                            b.id,
                            b.started.elapsed().as_secs_f64() * 1000.0
                        );
                    }
                    outcome.appliances.push((b.id.clone(), b.action.into()));
                    b.vm.detach();
                }
                Err(e) => {
                    self.state.set_appliance_state(&b.id, "failed")?;
                    outcome.failed += 1;
                    outcome
                        .appliances
                        .push((b.id.clone(), format!("failed: {e}")));
                    // Dropping the handle kills the VM.
                }
            }
        }
        Ok(())
    }

    pub fn stop_appliance(&mut self, record: &ApplianceRecord) -> anyhow::Result<()> {
        if let (Some(pid), Some(t)) = (record.pid, record.start_time) {
            process::stop(pid, t, STOP_GRACE);
            tracing::info!(appliance = %record.id, pid, "stopped");
        }
        let run = self.state.run_dir();
        for suffix in ["ctl", "serial", "qemu.log", "config"] {
            let _ = std::fs::remove_file(run.join(format!("{}.{suffix}", record.vm_name)));
        }
        let _ = std::fs::remove_file(&record.control_socket);
        Ok(())
    }

    /// Stops every appliance and removes every link this state directory created.
    pub fn down(&mut self) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        for record in self.state.appliances()? {
            self.stop_appliance(&record)?;
            self.state.forget_appliance(&record.id)?;
            outcome.stopped.push(record.id);
        }
        self.remove_stale_links(&Plan::default(), &mut outcome)?;
        self.state.clear_plan()?;
        let _ = std::fs::remove_dir(self.state.run_dir());
        Ok(outcome)
    }

    /// Fetches the passwords `record`'s metadata appliance has that were set after serial
    /// `since` (0: all) into the state; returns the serial to ask from next time (the
    /// appliance's count since its boot).
    pub fn collect_passwords(
        &mut self,
        record: &ApplianceRecord,
        since: u64,
    ) -> anyhow::Result<u64> {
        let mut client = ControlClient::connect(&record.control_socket, PASSWORDS_TIMEOUT)
            .with_context(|| format!("control channel of {}", record.id))?;
        self.passwords_from(&mut client, &record.id, since)
    }

    fn passwords_from(
        &mut self,
        client: &mut ControlClient,
        id: &str,
        mut since: u64,
    ) -> anyhow::Result<u64> {
        loop {
            let page = client.metadata_passwords(since, PASSWORDS_TIMEOUT)?;
            let changed = self.state.save_passwords(id, &page.passwords)?;
            if changed > 0 {
                tracing::info!(appliance = %id, changed, "instance passwords saved");
            }
            // `upto` only grows; a page that does not move it cannot be followed.
            if !page.more || page.upto <= since {
                return Ok(page.upto.max(since));
            }
            since = page.upto;
        }
    }

    /// Restarts `record`'s appliance with the configuration it held (live changes
    /// included) and a new generation; returns once it is ready.
    pub fn restart(
        &mut self,
        record: &ApplianceRecord,
        plan: &AppliancePlan,
    ) -> anyhow::Result<()> {
        let held = nanovnf_schema::decode(&record.config)
            .map_err(|e| anyhow::anyhow!("recorded config of {}: {e}", record.id))?;
        self.state.set_appliance_state(&record.id, "restarting")?;
        let mut b = self.boot(
            plan,
            &held,
            record.generation + 1,
            record.restarts + 1,
            "restarted",
        )?;
        match b.vm.wait_ready(READY_TIMEOUT) {
            Ok(_) => {
                self.state.set_appliance_state(&record.id, "ready")?;
                b.vm.detach();
                Ok(())
            }
            Err(e) => {
                self.state.set_appliance_state(&record.id, "failed")?;
                Err(e.into())
            }
        }
    }
}

enum Converged {
    Done(String),
    Booting(Box<Booting>),
}

pub fn record_alive(record: &ApplianceRecord) -> bool {
    matches!((record.pid, record.start_time), (Some(p), Some(t)) if process::alive(p, t))
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Ping => "Ping",
        Op::Counters => "Counters",
        Op::DhcpUpsert(_) => "DhcpUpsert",
        Op::DhcpRemove { .. } => "DhcpRemove",
        Op::SetGeneration { .. } => "SetGeneration",
        Op::MetadataUpsert(_) => "MetadataUpsert",
        Op::MetadataRemove { .. } => "MetadataRemove",
        Op::FloatingIpUpsert(_) => "FloatingIpUpsert",
        Op::FloatingIpRemove { .. } => "FloatingIpRemove",
        Op::VxlanRemotes(_) => "VxlanRemotes",
        Op::VxlanStaticUpsert(_) => "VxlanStaticUpsert",
        Op::VxlanStaticRemove { .. } => "VxlanStaticRemove",
        Op::MetadataPasswords { .. } => "MetadataPasswords",
    }
}
