//! `vireoctl`: the virsh-style command line for Vireo engines.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vireo_api::ConnectUri;

/// Manage virtual machines on a Vireo engine, virsh-style.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Connection URI (vireo:///session, vireo:///system,
    /// vireo+ssh://[user@]host[:port]/system). Defaults to
    /// $VIREO_DEFAULT_URI, then vireo:///session.
    #[arg(short = 'c', long = "connect", global = true, value_name = "URI")]
    connect: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the canonical URI of the connection.
    Uri,
    /// Print the client version.
    Version,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let env_uri = std::env::var("VIREO_DEFAULT_URI").ok();
    let uri = match ConnectUri::resolve(args.connect.as_deref(), env_uri.as_deref()) {
        Ok(uri) => uri,
        Err(e) => {
            eprintln!("error: failed to connect to the hypervisor\nerror: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        Command::Uri => println!("{uri}"),
        Command::Version => println!(
            "Compiled against library: vireo {}",
            env!("CARGO_PKG_VERSION")
        ),
    }
    ExitCode::SUCCESS
}
