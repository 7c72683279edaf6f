//! `vireo-vmm`: runs one virtual machine. Normally started by `vireod`.

use std::process::ExitCode;

use clap::Parser;

/// Runs one Vireo virtual machine on /dev/kvm.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Check that this host's KVM has what the VMM needs, print what it
    /// reports, and exit.
    #[arg(long)]
    check_kvm: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_kvm {
        return match vireo_vmm::kvm::check() {
            Ok(r) => {
                println!(
                    "KVM API {}: {} vCPUs recommended, {} at most, {} memory slots",
                    r.api_version, r.nr_vcpus, r.max_vcpus, r.nr_memslots
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vireo-vmm: {e}");
                ExitCode::FAILURE
            }
        };
    }
    eprintln!("vireo-vmm: no machine given; see --help");
    ExitCode::from(2)
}
