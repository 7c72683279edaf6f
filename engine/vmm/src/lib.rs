//! `vireo-vmm`: one virtual machine on `/dev/kvm`.
//!
//! The VMM is a process per VM. This library holds its parts so they can be
//! unit tested without a VM: the [`bus`] that routes port and MMIO accesses to
//! devices, and the [`kvm`] capability check.

pub mod arch;
pub mod boot;
pub mod bus;
pub mod control;
pub mod devices;
pub mod kvm;
pub mod layout;
pub mod logfile;
pub mod machine;
pub mod memory;
pub mod ratelimit;
pub mod vcpu;
pub mod vm;
pub mod vnc;
