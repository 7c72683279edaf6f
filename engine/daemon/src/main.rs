//! `vireod`: the Vireo host engine.

use std::process::ExitCode;

use clap::Parser;
use vireo_api::uri::Scope;
use vireod::paths::EnginePaths;

/// Vireo's host engine: keeps domain definitions and runs one vireo-vmm per
/// running VM.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run the host-wide engine (/run/vireo, /var/lib/vireo) instead of the
    /// calling user's session engine.
    #[arg(long)]
    system: bool,
    /// Print the engine's socket and state directory, then exit.
    #[arg(long)]
    print_paths: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let scope = if args.system {
        Scope::System
    } else {
        Scope::Session
    };
    let paths = match EnginePaths::for_scope(scope, |k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vireod: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.print_paths {
        println!("socket: {}", paths.socket().display());
        println!("state: {}", paths.state_dir.display());
        return ExitCode::SUCCESS;
    }
    eprintln!("vireod: serving the API is not available in this build; see --help");
    ExitCode::from(2)
}
