//! The x86-64 platform: the tables a guest reads to learn the machine, and
//! the vCPU state it starts in.
//!
//! - [`acpi`]: RSDP, XSDT, FADT, FACS, MADT and DSDT at
//!   [`ACPI_START`](crate::layout::ACPI_START).
//! - [`mptable`]: the Intel MP 1.4 table in the EBDA, for guests without
//!   ACPI.
//! - [`cpuid`]: the filter applied to `KVM_GET_SUPPORTED_CPUID` per vCPU.
//! - [`regs`]: boot GDT, IDT and identity page tables in guest memory, and
//!   the segment, control, MSR, FPU and LAPIC state of a direct boot.
//!
//! # Interrupt wiring
//!
//! The tables and the irqchip must tell the same story, so it is written
//! down once here. ISA IRQ `n` reaches the 8259 PICs on pin `n` and the
//! IOAPIC on pin `n`, except the PIT's IRQ 0, which enters the IOAPIC on
//! pin 2 (pin 2 of the master PIC is the cascade, so IRQ 2 does not exist).
//! This is the PC convention that QEMU and SeaBIOS follow; the MADT says it
//! with an interrupt source override, the MP table with its I/O interrupt
//! entries, and [`legacy_gsi_routing`] tells KVM. KVM's default routing is
//! the identity, so the VMM **must** install [`legacy_gsi_routing`] (with
//! any MSI routes appended) after creating the in-kernel irqchip.
//!
//! The SCI (IRQ 9) is level-triggered and active high on both PICs and
//! IOAPIC, as the PM device drives it.

pub mod acpi;
pub mod cpuid;
pub mod mptable;
pub mod regs;
#[cfg(test)]
mod test_util;

use kvm_bindings::{
    KVM_IOAPIC_NUM_PINS, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, kvm_irq_routing_entry, kvm_irq_routing_irqchip,
};

/// The ISA IRQ of the PIT.
pub const PIT_IRQ: u8 = 0;
/// The IOAPIC pin the PIT's IRQ 0 is wired to.
pub const PIT_IOAPIC_PIN: u8 = 2;
/// Number of ISA IRQ lines (two cascaded 8259s).
pub const ISA_IRQS: u8 = 16;
/// Number of IOAPIC pins (KVM's in-kernel IOAPIC).
pub const IOAPIC_PINS: u8 = KVM_IOAPIC_NUM_PINS as u8;
/// Version of KVM's in-kernel IOAPIC (82093AA: 0x11).
pub const IOAPIC_VERSION: u8 = 0x11;
/// Version of KVM's local APIC (integrated xAPIC: 0x14).
pub const LAPIC_VERSION: u8 = 0x14;
/// Most vCPUs the tables describe: xAPIC IDs are 8 bits, 0xff is the
/// broadcast ID, and the IOAPIC takes the ID after the last vCPU.
pub const MAX_VCPUS: u8 = 254;

/// The IOAPIC's APIC ID: the first ID after the vCPUs' (which are
/// `0..vcpus`), as the MADT and MP table both give it.
pub fn ioapic_id(vcpus: u8) -> u8 {
    vcpus
}

/// The IOAPIC pin that ISA IRQ `irq` arrives on, or `None` for IRQ 2 (the
/// cascade) and lines that are not ISA IRQs.
pub fn isa_irq_to_ioapic_pin(irq: u8) -> Option<u8> {
    match irq {
        PIT_IRQ => Some(PIT_IOAPIC_PIN),
        2 => None,
        1..ISA_IRQS => Some(irq),
        _ => None,
    }
}

fn irqchip_route(gsi: u32, irqchip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut entry = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    entry.u.irqchip = kvm_irq_routing_irqchip { irqchip, pin };
    entry
}

/// The GSI routing table for the in-kernel PICs and IOAPIC that matches the
/// MADT and MP table (see [the module docs](self)): GSI `n` < 16 drives PIC
/// pin `n`, GSI 0 drives IOAPIC pin 2, every other GSI `n` < 24 except 2
/// drives IOAPIC pin `n`.
///
/// `KVM_SET_GSI_ROUTING` replaces the whole table: pass these entries plus
/// any MSI routes, wrapped in a `kvm_bindings::KvmIrqRouting`.
pub fn legacy_gsi_routing() -> Vec<kvm_irq_routing_entry> {
    let mut routes = Vec::with_capacity(usize::from(ISA_IRQS + IOAPIC_PINS));
    for irq in 0..u32::from(ISA_IRQS) {
        match irq {
            2 => {}
            0..8 => routes.push(irqchip_route(irq, KVM_IRQCHIP_PIC_MASTER, irq)),
            _ => routes.push(irqchip_route(irq, KVM_IRQCHIP_PIC_SLAVE, irq - 8)),
        }
    }
    for gsi in 0..u32::from(IOAPIC_PINS) {
        let pin = match gsi {
            0 => u32::from(PIT_IOAPIC_PIN),
            2 => continue,
            _ => gsi,
        };
        routes.push(irqchip_route(gsi, KVM_IRQCHIP_IOAPIC, pin));
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (gsi, irqchip, pin) of every route.
    fn triples(routes: &[kvm_irq_routing_entry]) -> Vec<(u32, u32, u32)> {
        routes
            .iter()
            .map(|r| {
                assert_eq!(r.type_, KVM_IRQ_ROUTING_IRQCHIP);
                // SAFETY: every entry was built with type KVM_IRQ_ROUTING_IRQCHIP,
                // whose union member is `irqchip`; both members are plain u32s.
                let chip = unsafe { r.u.irqchip };
                (r.gsi, chip.irqchip, chip.pin)
            })
            .collect()
    }

    #[test]
    fn gsi_routing_sends_pit_to_ioapic_pin_2_and_pic_pin_0() {
        let routes = triples(&legacy_gsi_routing());

        assert!(routes.contains(&(0, KVM_IRQCHIP_PIC_MASTER, 0)));
        assert!(routes.contains(&(0, KVM_IRQCHIP_IOAPIC, 2)));
        assert!(!routes.iter().any(|&(gsi, _, _)| gsi == 2));
        assert!(!routes.contains(&(0, KVM_IRQCHIP_IOAPIC, 0)));
    }

    #[test]
    fn gsi_routing_is_identity_for_other_isa_irqs_and_pci_pins() {
        let routes = triples(&legacy_gsi_routing());

        for irq in [1u32, 3, 4, 7] {
            assert!(routes.contains(&(irq, KVM_IRQCHIP_PIC_MASTER, irq)));
        }
        for irq in 8u32..16 {
            assert!(routes.contains(&(irq, KVM_IRQCHIP_PIC_SLAVE, irq - 8)));
        }
        for gsi in (1u32..24).filter(|&g| g != 2) {
            assert!(routes.contains(&(gsi, KVM_IRQCHIP_IOAPIC, gsi)));
        }
        // 15 PIC routes (no IRQ 2) + 23 IOAPIC routes (no GSI 2).
        assert_eq!(routes.len(), 15 + 23);
    }

    #[test]
    fn isa_irq_pins_match_the_routing() {
        assert_eq!(isa_irq_to_ioapic_pin(0), Some(2));
        assert_eq!(isa_irq_to_ioapic_pin(2), None);
        assert_eq!(isa_irq_to_ioapic_pin(9), Some(9));
        assert_eq!(isa_irq_to_ioapic_pin(15), Some(15));
        assert_eq!(isa_irq_to_ioapic_pin(16), None);
    }
}
