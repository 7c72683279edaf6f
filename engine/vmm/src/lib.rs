//! `vireo-vmm`: one virtual machine on `/dev/kvm`.
//!
//! The VMM is a process per VM. This library holds its parts so they can be
//! unit tested without a VM: the [`bus`] that routes port and MMIO accesses to
//! devices, and the [`kvm`] capability check.

pub mod bus;
pub mod devices;
pub mod kvm;
pub mod layout;
pub mod memory;
