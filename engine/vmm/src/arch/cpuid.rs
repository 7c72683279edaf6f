//! The CPUID each vCPU sees: what `KVM_GET_SUPPORTED_CPUID` offers, with
//! the topology rewritten to describe one socket of `vcpus` cores with one
//! thread each (APIC ID = vCPU index), as Firecracker and Cloud Hypervisor
//! do.
//!
//! | leaf | change |
//! |---|---|
//! | 1 | `EBX[31:24]` APIC ID, `EBX[23:16]` logical count, EDX.HTT if > 1, ECX.hypervisor |
//! | 4 | `EAX[31:26]` cores − 1; `EAX[25:14]` sharing: L1/L2 one thread, L3 all |
//! | 6 | zeroed (no thermal or power management) |
//! | 0xA | zeroed (no PMU) |
//! | 0xB, 0x1F | SMT level (1 thread), core level (`vcpus`), then invalid; EDX x2APIC ID |
//! | 0x8000_0008 | AMD only: ECX NC = cores − 1 and ApicIdCoreIdSize |
//!
//! Everything else, including the TSC-deadline bit as KVM reports it, the
//! `KVMKVMKVM` leaves at 0x4000_0000 and the extended feature leaves, passes
//! through unchanged. [`set_tsc_deadline`] adds TSC-deadline when the VMM
//! has checked `KVM_CAP_TSC_DEADLINE_TIMER`.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

/// Leaf 1 ECX: TSC-deadline mode of the local APIC timer.
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: the logical processor count in `EBX[23:16]` is valid.
pub const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Extended topology level types (leaf 0xB/0x1F `ECX[15:8]`).
const LEVEL_INVALID: u32 = 0;
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits of the APIC ID that number `count` items: ceil(log2(count)).
fn id_bits(count: u32) -> u32 {
    match count {
        0 | 1 => 0,
        n => u32::BITS - (n - 1).leading_zeros(),
    }
}

/// Whether leaf 0 names an AMD (or Hygon) processor.
fn is_amd(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .find(|e| e.function == 0 && e.index == 0)
        .is_some_and(|e| {
            let vendor = [e.ebx, e.edx, e.ecx];
            vendor == vendor_words(b"AuthenticAMD") || vendor == vendor_words(b"HygonGenuine")
        })
}

fn vendor_words(v: &[u8; 12]) -> [u32; 3] {
    [
        u32::from_le_bytes([v[0], v[1], v[2], v[3]]),
        u32::from_le_bytes([v[4], v[5], v[6], v[7]]),
        u32::from_le_bytes([v[8], v[9], v[10], v[11]]),
    ]
}

/// Rewrites `cpuid` (as `KVM_GET_SUPPORTED_CPUID` returned it) for vCPU
/// `vcpu_id` of `vcpus`; call it on a fresh copy per vCPU before
/// `KVM_SET_CPUID2`. A `vcpus` of 0 is taken as 1.
pub fn filter_cpuid(cpuid: &mut CpuId, vcpu_id: u8, vcpus: u8) {
    let vcpus = u32::from(vcpus.max(1));
    let apic_id = u32::from(vcpu_id);
    let core_bits = id_bits(vcpus);
    let amd = is_amd(cpuid.as_slice());

    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (apic_id << 24) | (vcpus << 16);
                if vcpus > 1 {
                    entry.edx |= LEAF1_EDX_HTT;
                } else {
                    entry.edx &= !LEAF1_EDX_HTT;
                }
                entry.ecx |= LEAF1_ECX_HYPERVISOR;
            }
            4 => {
                let cache_type = entry.eax & 0x1f;
                if cache_type != 0 {
                    let level = (entry.eax >> 5) & 0x7;
                    let sharing = if level >= 3 { vcpus - 1 } else { 0 };
                    let cores = (vcpus - 1).min(0x3f);
                    entry.eax = (entry.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (cores << 26);
                }
            }
            6 | 0xa => {
                entry.eax = 0;
                entry.ebx = 0;
                entry.ecx = 0;
                entry.edx = 0;
            }
            0xb | 0x1f => {
                let (shift, count, level_type) = match entry.index {
                    0 => (0, 1, LEVEL_SMT),
                    1 => (core_bits, vcpus, LEVEL_CORE),
                    _ => (0, 0, LEVEL_INVALID),
                };
                entry.eax = shift;
                entry.ebx = count;
                entry.ecx = (level_type << 8) | (entry.index & 0xff);
                entry.edx = apic_id;
            }
            0x8000_0008 if amd => {
                // ECX[15:12] ApicIdCoreIdSize, ECX[7:0] NC (cores − 1).
                entry.ecx = (entry.ecx & !0xf0ff) | (core_bits << 12) | (vcpus - 1);
            }
            _ => {}
        }
    }
}

/// Advertises the local APIC timer's TSC-deadline mode in leaf 1, for when
/// KVM has `KVM_CAP_TSC_DEADLINE_TIMER` (it emulates the mode, but older
/// kernels leave the bit out of `KVM_GET_SUPPORTED_CPUID`).
pub fn set_tsc_deadline(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == 1 {
            entry.ecx |= LEAF1_ECX_TSC_DEADLINE;
        }
    }
}

#[cfg(test)]
mod tests {
    use kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

    use super::*;

    fn leaf(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags: if matches!(function, 4 | 0xb | 0x1f) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    /// A host-like CPUID: Intel, 8 threads per core reported by the host,
    /// TSC-deadline, three cache levels and two topology levels.
    fn host(vendor: &[u8; 12]) -> CpuId {
        let [b, d, c] = vendor_words(vendor);
        CpuId::from_entries(&[
            leaf(0, 0, [0x1f, b, c, d]),
            leaf(
                1,
                0,
                [
                    0x000906ea,
                    0x0810_0800,
                    0x7ffa_fbff | LEAF1_ECX_TSC_DEADLINE,
                    0xbfeb_fbff,
                ],
            ),
            leaf(4, 0, [0x1c00_4121, 0x01c0_003f, 0x3f, 0]),
            leaf(4, 1, [0x1c00_4122, 0x01c0_003f, 0x3f, 0]),
            leaf(4, 2, [0x1c00_4143, 0x03c0_003f, 0x3ff, 0]),
            leaf(4, 3, [0x1c03_c163, 0x03c0_003f, 0x2fff, 6]),
            leaf(4, 4, [0, 0, 0, 0]),
            leaf(6, 0, [0x77, 2, 9, 0]),
            leaf(0xa, 0, [0x0730_0404, 0, 0, 0x603]),
            leaf(0xb, 0, [1, 2, 0x100, 7]),
            leaf(0xb, 1, [4, 8, 0x201, 7]),
            leaf(0xb, 2, [0, 0, 2, 7]),
            leaf(0x1f, 0, [1, 2, 0x100, 7]),
            leaf(0x1f, 1, [4, 8, 0x201, 7]),
            leaf(0x1f, 2, [0, 0, 2, 7]),
            leaf(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            leaf(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
            leaf(0x8000_0008, 0, [0x3027, 0, 0x0003_7007, 0]),
        ])
        .unwrap()
    }

    fn get(cpuid: &CpuId, function: u32, index: u32) -> kvm_cpuid_entry2 {
        *cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn leaf1_reports_apic_id_count_htt_and_hypervisor() {
        let mut cpuid = host(b"GenuineIntel");

        filter_cpuid(&mut cpuid, 3, 4);

        let e = get(&cpuid, 1, 0);
        assert_eq!(e.ebx >> 24, 3, "initial APIC ID");
        assert_eq!((e.ebx >> 16) & 0xff, 4, "logical processors");
        assert_eq!(e.ebx & 0xffff, 0x0800, "CLFLUSH size and brand kept");
        assert_ne!(e.edx & LEAF1_EDX_HTT, 0);
        assert_ne!(e.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e.ecx & LEAF1_ECX_TSC_DEADLINE, 0, "TSC-deadline kept");
        assert_eq!(e.eax, 0x000906ea, "signature kept");
    }

    #[test]
    fn single_vcpu_clears_htt() {
        let mut cpuid = host(b"GenuineIntel");

        filter_cpuid(&mut cpuid, 0, 1);

        let e = get(&cpuid, 1, 0);
        assert_eq!(e.edx & LEAF1_EDX_HTT, 0);
        assert_eq!((e.ebx >> 16) & 0xff, 1);
        assert_eq!(e.ebx >> 24, 0);
    }

    #[test]
    fn leaf4_describes_cores_and_cache_sharing() {
        let mut cpuid = host(b"GenuineIntel");

        filter_cpuid(&mut cpuid, 0, 6);

        for index in 0..3 {
            let e = get(&cpuid, 4, index);
            assert_eq!(e.eax >> 26, 5, "cores - 1 in subleaf {index}");
            assert_eq!((e.eax >> 14) & 0xfff, 0, "L1/L2 private in subleaf {index}");
        }
        let l3 = get(&cpuid, 4, 3);
        assert_eq!((l3.eax >> 14) & 0xfff, 5, "L3 shared by all");
        assert_eq!(l3.eax & 0x3fff, 0x0163, "type and level kept");
        assert_eq!(get(&cpuid, 4, 4).eax, 0, "terminator untouched");
    }

    #[test]
    fn extended_topology_is_one_thread_per_core_and_vcpus_cores() {
        let mut cpuid = host(b"GenuineIntel");

        filter_cpuid(&mut cpuid, 5, 6);

        for leaf in [0xb, 0x1f] {
            let smt = get(&cpuid, leaf, 0);
            assert_eq!((smt.eax, smt.ebx, smt.ecx, smt.edx), (0, 1, 0x100, 5));
            let core = get(&cpuid, leaf, 1);
            assert_eq!((core.eax, core.ebx, core.ecx, core.edx), (3, 6, 0x201, 5));
            let end = get(&cpuid, leaf, 2);
            assert_eq!((end.eax, end.ebx, end.ecx, end.edx), (0, 0, 2, 5));
        }
    }

    #[test]
    fn thermal_and_pmu_leaves_are_zeroed() {
        let mut cpuid = host(b"GenuineIntel");

        filter_cpuid(&mut cpuid, 0, 2);

        for function in [6, 0xa] {
            let e = get(&cpuid, function, 0);
            assert_eq!(
                (e.eax, e.ebx, e.ecx, e.edx),
                (0, 0, 0, 0),
                "leaf {function:#x}"
            );
        }
    }

    #[test]
    fn other_leaves_pass_through() {
        let before = host(b"GenuineIntel");
        let mut cpuid = before.clone();

        filter_cpuid(&mut cpuid, 1, 2);

        for (function, index) in [(0, 0), (0x4000_0000, 0), (0x8000_0001, 0), (0x8000_0008, 0)] {
            assert_eq!(get(&cpuid, function, index), get(&before, function, index));
        }
        assert_eq!(cpuid.as_slice().len(), before.as_slice().len());
    }

    #[test]
    fn amd_leaf_8000_0008_counts_cores() {
        let mut cpuid = host(b"AuthenticAMD");

        filter_cpuid(&mut cpuid, 0, 3);

        let e = get(&cpuid, 0x8000_0008, 0);
        assert_eq!(e.ecx & 0xff, 2, "NC");
        assert_eq!((e.ecx >> 12) & 0xf, 2, "ApicIdCoreIdSize");
        assert_eq!(e.ecx >> 16, 3, "PerfTscSize kept");
    }

    #[test]
    fn zero_vcpus_is_taken_as_one() {
        let mut cpuid = host(b"GenuineIntel");

        filter_cpuid(&mut cpuid, 0, 0);

        assert_eq!((get(&cpuid, 1, 0).ebx >> 16) & 0xff, 1);
        assert_eq!(get(&cpuid, 0xb, 1).ebx, 1);
    }

    #[test]
    fn tsc_deadline_can_be_advertised() {
        let mut cpuid = CpuId::from_entries(&[leaf(1, 0, [0, 0, 0, 0])]).unwrap();

        set_tsc_deadline(&mut cpuid);

        assert_ne!(get(&cpuid, 1, 0).ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }

    #[test]
    fn id_bits_is_ceil_log2() {
        let got: Vec<u32> = [1, 2, 3, 4, 5, 8, 9, 254].map(id_bits).to_vec();

        assert_eq!(got, vec![0, 1, 2, 2, 3, 3, 4, 8]);
    }
}
