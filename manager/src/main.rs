//! `nanovnf`: the host manager. It reads a topology file (TOPOLOGY.md, docs/topology.md),
//! creates bridges and taps through netlink, boots one appliance VM per tenant function,
//! records all of it in an SQLite state directory, and keeps it running.

mod apply;
mod demo;
mod netlink;
mod plan;
mod process;
mod state;
mod status;
mod supervise;

use anyhow::Context;
use apply::{Manager, Options, Outcome};
use clap::{Parser, Subcommand};
use nanovnf_qemu::Accel;
use plan::Plan;
use state::State;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "nanovnf",
    version,
    about = "Per-tenant network functions (DHCP, metadata, routing, VXLAN) as tiny unikernel VMs",
    long_about = "Per-tenant network functions as tiny unikernel VMs.\n\n\
        `nanovnf up FILE` makes this host (or the network namespace it runs in) match a \
        topology file: one Linux bridge per network, taps, and one appliance VM per tenant \
        function. Logs go to stderr; RUST_LOG=debug shows more."
)]
struct Cli {
    /// Where the manager records what it created (SQLite), and where appliances' sockets
    /// and logs live.
    #[arg(long, global = true, env = "NANOVNF_STATE_DIR", default_value = state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate FILE, then make the host match it: create links, boot appliances, update
    /// running ones live; return when every appliance is ready. Exit status 0 ok, 2 invalid
    /// file (nothing changed), 1 other failure.
    Up(UpArgs),
    /// Stop every appliance and remove every link this state directory created.
    Down,
    /// Show what runs now.
    Status {
        /// One JSON object (networks, routers, ports) instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Build the images, then run the main job on an embedded topology inside a sandbox
    /// network namespace: a tenant network with DHCP and metadata appliances and an
    /// instance that takes a lease with a real DHCP client. Prints what it checked, with
    /// timings, and a picture of the topology; cleans up. Exit 0 when every check passed.
    Demo(demo::Args),
}

#[derive(clap::Args)]
struct UpArgs {
    /// The topology file.
    file: PathBuf,
    /// Stay in the foreground afterwards: restart appliances that exit, re-apply FILE on
    /// SIGHUP. SIGTERM/Ctrl-C ends the watch and leaves the appliances running.
    #[arg(long)]
    watch: bool,
    /// Accelerator: auto (KVM, except where this host's KVM is the slow nested kvm_pvm),
    /// kvm or tcg.
    #[arg(long, default_value = "auto", value_parser = parse_accel)]
    accel: Accel,
    /// Directory holding the appliance images (default: this build's, built if missing).
    #[arg(long, env = "NANOVNF_IMAGES")]
    images: Option<PathBuf>,
    /// No progress lines while booting.
    #[arg(long, short)]
    quiet: bool,
}

pub fn parse_accel(name: &str) -> Result<Accel, String> {
    match name {
        "auto" => Ok(Accel::Auto),
        "kvm" => Ok(Accel::Kvm),
        "tcg" => Ok(Accel::Tcg),
        other => Err(format!("{other}: expected auto, kvm or tcg")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    // The netlink crate warns about every kernel attribute newer than it.
                    "warn,netlink_packet_route=error",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => up(&cli.state_dir, &args),
        Command::Down => down(&cli.state_dir),
        Command::Status { json } => status(&cli.state_dir, json),
        Command::Demo(args) => demo::run(&args).map(|ok| if ok { 0 } else { 1 }),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The state directory, created, as an absolute path (it salts link names, so it must not
/// depend on the working directory).
fn state_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("create state directory {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))
}

/// Reads and resolves FILE; `Err` carries the problems, one per line.
pub fn load_plan(file: &Path, state_dir: &Path) -> Result<Plan, String> {
    nanovnf_topology::load(file, &state_dir.display().to_string())
        .map(|t| Plan::from_topology(&t))
        .map_err(|errors| errors.to_string())
}

fn up(dir: &Path, args: &UpArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let dir = state_dir(dir)?;
    let plan = match load_plan(&args.file, &dir) {
        Ok(plan) => plan,
        Err(problems) => {
            eprint!("{problems}");
            if !problems.ends_with('\n') {
                eprintln!();
            }
            eprintln!("{}: refused; nothing was changed", args.file.display());
            return Ok(2);
        }
    };
    nanovnf_qemu::preflight()?;
    let mut manager = Manager {
        state: State::open(&dir)?,
        netlink: netlink::Netlink::open()?,
        options: Options {
            accel: args.accel,
            images: args.images.clone(),
            progress: !args.quiet,
        },
    };
    let file = args.file.display().to_string();
    let outcome = manager.up(&file, &plan)?;
    print_summary(&manager, &plan, &outcome, started)?;
    let mut code = report_problems(&plan, &outcome);
    if args.watch {
        let file_path = args.file.clone();
        let dir2 = dir.clone();
        let mut reload = move |m: &mut Manager| -> anyhow::Result<()> {
            let started = Instant::now();
            let plan = load_plan(&file_path, &dir2).map_err(|p| anyhow::anyhow!("{p}"))?;
            let outcome = m.up(&file_path.display().to_string(), &plan)?;
            print_summary(m, &plan, &outcome, started)?;
            report_problems(&plan, &outcome);
            Ok(())
        };
        supervise::watch(&mut manager, &mut reload)?;
        code = 0;
    }
    Ok(code)
}

/// Names what could not run; the exit status `up` should have (0 or 1).
fn report_problems(plan: &Plan, outcome: &Outcome) -> u8 {
    let mut code = 0;
    for a in plan.unavailable() {
        eprintln!(
            "not started: {} appliance for {:?} — this build has no `{}` appliance yet",
            a.kind.as_str(),
            a.owner,
            plan::image(a.kind)
        );
        code = 1;
    }
    for (id, what) in &outcome.appliances {
        if what.starts_with("failed") {
            eprintln!("{id}: {what}");
            code = 1;
        }
    }
    code
}

fn print_summary(
    manager: &Manager,
    plan: &Plan,
    outcome: &Outcome,
    started: Instant,
) -> anyhow::Result<()> {
    let status = status::collect(&manager.state)?;
    println!(
        "{:<24} {:<12} {:>8}  WHAT HAPPENED",
        "APPLIANCE", "STATE", "PID"
    );
    for a in &plan.appliances {
        let (state, pid) = status
            .networks
            .iter()
            .flat_map(|n| n.appliances.iter().map(move |s| (n.name.as_str(), s)))
            .find(|(owner, s)| *owner == a.owner && s.kind == a.kind)
            .map(|(_, s)| (s.state.clone(), s.pid))
            .or_else(|| {
                status
                    .routers
                    .iter()
                    .find(|r| r.name == a.owner)
                    .map(|r| (r.state.clone(), r.pid))
            })
            .unwrap_or_else(|| ("-".into(), None));
        let what = outcome
            .appliances
            .iter()
            .find(|(id, _)| id == &a.id)
            .map_or_else(
                || {
                    if a.config.is_none() {
                        "not started: no image for this kind yet".to_owned()
                    } else {
                        "-".to_owned()
                    }
                },
                |(_, w)| w.clone(),
            );
        println!(
            "{:<24} {:<12} {:>8}  {what}",
            a.id,
            state,
            pid.map_or("-".into(), |p| p.to_string())
        );
    }
    for id in &outcome.stopped {
        println!(
            "{id:<24} {:<12} {:>8}  stopped (no longer in the file)",
            "gone", "-"
        );
    }
    println!(
        "{} network(s), {} appliance(s), {} port(s); links created {}, deleted {}; {:.2} s",
        plan.networks.len(),
        plan.appliances.len(),
        plan.ports.len(),
        outcome.links_created.len(),
        outcome.links_deleted.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn down(dir: &Path) -> anyhow::Result<u8> {
    let dir = state_dir(dir)?;
    let mut manager = Manager {
        state: State::open(&dir)?,
        netlink: netlink::Netlink::open()?,
        options: Options {
            accel: Accel::Auto,
            images: None,
            progress: false,
        },
    };
    let outcome = manager.down()?;
    println!(
        "stopped {} appliance(s), deleted {} link(s)",
        outcome.stopped.len(),
        outcome.links_deleted.len()
    );
    Ok(0)
}

fn status(dir: &Path, json: bool) -> anyhow::Result<u8> {
    let dir = state_dir(dir)?;
    let state = State::open_shared(&dir)?;
    let status = status::collect(&state)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status::table(&status));
    }
    Ok(0)
}
