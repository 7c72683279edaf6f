//! virtio 1.x devices over PCI.
//!
//! [`pci::VirtioPci`] is the modern PCI transport (common, notify, ISR and
//! device configuration structures in one memory BAR, found through vendor
//! capabilities); it owns the queues (rust-vmm's `virtio-queue`) and the
//! interrupt, and hands queue work to a [`VirtioDevice`] such as
//! [`block::VirtioBlock`].
//!
//! Interrupts: MSI-X when the driver enables it (one vector per queue plus
//! one for configuration changes, table and PBA in the same BAR, messages
//! sent through an [`MsiSink`]: `KVM_SIGNAL_MSI` in a VM); otherwise INTx:
//! the device asserts its legacy pin (INTA#), routed to an IOAPIC GSI of
//! its own (see [`pci::VirtioPci::new`]), level-triggered, and lowers it
//! when the driver reads the ISR. There is no ACPI `_PRT` yet, so a guest
//! learns the GSI from the Interrupt Line register (0x3c) only; guests with
//! MSI-X support (Linux) do not need it.
//!
//! Queue notifications arrive through KVM ioeventfds and are processed on
//! the device's I/O thread ([`io_thread`]); one that arrives as an MMIO
//! exit is processed on the vCPU thread that wrote it.

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

pub mod block;
pub mod io_thread;
pub mod pci;

/// Feature bit: the device conforms to virtio 1.x.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device needs a reset.
    pub const DEVICE_NEEDS_RESET: u8 = 0x40;
    /// The driver gave up.
    pub const FAILED: u8 = 0x80;
}

/// Where MSI-X messages go (KVM_SIGNAL_MSI in a VM, a recorder in tests).
pub trait MsiSink: Send + Sync {
    /// Delivers the message `data` to `address`.
    fn send(&self, address: u64, data: u32);
}

/// A virtio device behind a transport: features, configuration space and
/// queue processing. Guest input never panics it.
pub trait VirtioDevice: Send {
    /// The virtio device type (2 = block).
    fn device_type(&self) -> u16;
    /// The features offered (including [`VIRTIO_F_VERSION_1`]).
    fn features(&self) -> u64;
    /// The maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Processes the available buffers of queue `index`; returns whether
    /// any were used (so the driver must be interrupted).
    fn process_queue(&mut self, index: usize, queue: &mut Queue, mem: &GuestMemoryMmap) -> bool;
    /// Called when the driver negotiated `features` and set DRIVER_OK.
    fn activate(&mut self, features: u64);
    /// The driver reset the device.
    fn reset(&mut self);
}

#[cfg(test)]
mod tests;
