//! `nanovnf`: the host manager's command line.

mod demo;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "nanovnf",
    version,
    about = "Per-tenant network functions as tiny unikernel VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the images, boot an appliance in a sandbox network namespace, check it from an
    /// instance namespace, print what was checked with timings, and clean up.
    Demo(demo::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
