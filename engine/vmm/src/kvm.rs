//! Checks that the host's KVM offers what the VMM relies on.

use kvm_ioctls::{Cap, Kvm};

/// The KVM API version every modern kernel reports.
pub const KVM_API_VERSION: i32 = 12;

/// Capabilities the VMM cannot run without, with what each is for.
pub const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "in-kernel PIC, IOAPIC and LAPIC"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::UserMemory, "guest memory slots"),
    (Cap::SetTssAddr, "the TSS address for real mode"),
    (Cap::Irqfd, "interrupts from device threads"),
    (Cap::Ioeventfd, "doorbells from device queues"),
    (Cap::ExtCpuid, "CPUID configuration"),
    (Cap::ImmediateExit, "stopping vCPUs on pause"),
];

/// Why this host cannot run VMs.
#[derive(Debug, thiserror::Error)]
pub enum KvmCheckError {
    /// `/dev/kvm` is missing or not accessible.
    #[error("cannot open /dev/kvm: {0} (is the kvm module loaded, and may this user open it?)")]
    Open(#[source] kvm_ioctls::Error),
    /// An API version we do not know.
    #[error("KVM API version {0} is not supported (expected {KVM_API_VERSION})")]
    ApiVersion(i32),
    /// A capability is missing.
    #[error("KVM lacks {name:?}, needed for {purpose}")]
    MissingCap {
        /// The capability.
        name: Cap,
        /// What the VMM uses it for.
        purpose: &'static str,
    },
}

/// What the host's KVM reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvmReport {
    /// The API version.
    pub api_version: i32,
    /// The recommended vCPU count.
    pub nr_vcpus: usize,
    /// The largest vCPU count.
    pub max_vcpus: usize,
    /// The number of memory slots.
    pub nr_memslots: usize,
}

/// Opens `/dev/kvm` and checks the API version and every required capability.
pub fn check() -> Result<KvmReport, KvmCheckError> {
    let kvm = Kvm::new().map_err(KvmCheckError::Open)?;
    let api_version = kvm.get_api_version();
    if api_version != KVM_API_VERSION {
        return Err(KvmCheckError::ApiVersion(api_version));
    }
    for &(cap, purpose) in REQUIRED_CAPS {
        if !kvm.check_extension(cap) {
            return Err(KvmCheckError::MissingCap { name: cap, purpose });
        }
    }
    Ok(KvmReport {
        api_version,
        nr_vcpus: kvm.get_nr_vcpus(),
        max_vcpus: kvm.get_max_vcpus(),
        nr_memslots: kvm.get_nr_memslots(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_kvm_has_every_required_capability() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: /dev/kvm is absent on this machine");
            return;
        }
        let report = check().unwrap();
        assert_eq!(report.api_version, KVM_API_VERSION);
        assert!(report.max_vcpus >= report.nr_vcpus && report.nr_vcpus >= 1);
        assert!(report.nr_memslots >= 8);
    }
}
