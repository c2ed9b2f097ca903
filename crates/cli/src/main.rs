//! `lmforge`: the command line of lmforge, one subcommand per stage.
//!
//! ```text
//! lmforge device --device auto        # open a device and train a tiny GPT one step on it
//! ```
//!
//! Every subcommand that computes takes `--device` (`flex`, `wgpu`, `cuda:N`, `auto`), parsed
//! once by [`lmforge_model::DeviceSpec`].

mod device;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lmforge",
    version,
    about = "From a raw text corpus to a served language model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open a compute device and check that it trains: a forward and backward pass of a tiny
    /// GPT, timed, with a JSON report.
    Device(device::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Device(args) => device::run(&args),
    }
}
