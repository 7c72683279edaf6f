//! `build-guest NAME [pvh|elf64|bzimage]`: builds one of the tiny guests in
//! tests/guests/ and prints the image's path. `make run` uses it for the
//! demo VM.

use std::process::ExitCode;

use vireo_tests::guest::{Flavor, build};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: build-guest NAME [pvh|elf64|bzimage]");
        return ExitCode::from(2);
    };
    let flavor = match args.next().as_deref() {
        None | Some("pvh") => Flavor::Pvh,
        Some("elf64") => Flavor::Elf64,
        Some("bzimage") => Flavor::BzImage,
        Some(other) => {
            eprintln!("build-guest: unknown flavour '{other}' (pvh, elf64 or bzimage)");
            return ExitCode::from(2);
        }
    };
    if !vireo_tests::guest::guests_dir()
        .join(format!("{name}.c"))
        .exists()
    {
        eprintln!("build-guest: there is no tests/guests/{name}.c");
        return ExitCode::from(2);
    }
    // `build` panics with gcc's output when the guest does not compile.
    let path = build(&name, flavor);
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    println!("{}", path.display());
    ExitCode::SUCCESS
}
