//! ACPI fixed-feature power management registers (PM1a event and control
//! blocks at 0x600..0x606, as QEMU's PIIX4 places them): the power button
//! and the S5 soft-off request.

use crate::bus::BusDevice;
use crate::devices::{IrqLine, Requests, VmRequest};

/// PM1_STS/PM1_EN: power button status/enable.
pub const PWRBTN: u16 = 1 << 8;
/// PM1_CNT: SCI_EN, always set (ACPI mode; there is no SMI_CMD to switch).
pub const SCI_EN: u16 = 1;
/// PM1_CNT: sleep enable.
pub const SLP_EN: u16 = 1 << 13;
/// The SLP_TYP value our DSDT's `\_S5_` package names.
pub const S5_SLP_TYP: u16 = 5;

/// PM1a status, enable and control registers.
pub struct Pm {
    status: u16,
    enable: u16,
    control: u16,
    sci: IrqLine,
    requests: Requests,
    sci_level: bool,
}

impl Pm {
    /// Registers in their power-on state, raising `sci` (IRQ 9).
    pub fn new(sci: IrqLine, requests: Requests) -> Self {
        Self {
            status: 0,
            enable: 0,
            control: SCI_EN,
            sci,
            requests,
            sci_level: false,
        }
    }

    /// Presses the power button: sets PWRBTN_STS and raises the SCI if the
    /// guest enabled it.
    pub fn press_power_button(&mut self) {
        self.status |= PWRBTN;
        self.update_sci();
    }

    /// Whether the guest has armed the power button (PWRBTN_EN).
    pub fn power_button_armed(&self) -> bool {
        self.enable & PWRBTN != 0
    }

    fn update_sci(&mut self) {
        let level = self.status & self.enable & PWRBTN != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn reg(&self, offset: u64) -> Option<u16> {
        match offset {
            0 => Some(self.status),
            2 => Some(self.enable),
            4 => Some(self.control),
            _ => None,
        }
    }

    fn write_reg(&mut self, offset: u64, value: u16) {
        match offset {
            // Write-one-to-clear.
            0 => self.status &= !value,
            2 => self.enable = value & PWRBTN,
            4 => {
                self.control = (value & !SLP_EN) | SCI_EN;
                if value & SLP_EN != 0 {
                    let typ = (value >> 10) & 7;
                    if typ == S5_SLP_TYP {
                        self.requests.request(VmRequest::PowerOff);
                    }
                }
            }
            _ => {}
        }
        self.update_sci();
    }
}

impl BusDevice for Pm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Registers are 16-bit; byte accesses read either half.
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = match self.reg(at & !1) {
                Some(v) => v.to_le_bytes()[(at & 1) as usize],
                None => 0,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match data.len() {
            1 => {
                let reg = offset & !1;
                if let Some(old) = self.reg(reg) {
                    let mut bytes = old.to_le_bytes();
                    if reg == 0 {
                        bytes = [0, 0]; // W1C: untouched half clears nothing
                    }
                    bytes[(offset & 1) as usize] = data[0];
                    self.write_reg(reg, u16::from_le_bytes(bytes));
                }
            }
            2 if offset.is_multiple_of(2) => {
                self.write_reg(offset, u16::from_le_bytes([data[0], data[1]]))
            }
            4 if offset.is_multiple_of(2) => {
                self.write_reg(offset, u16::from_le_bytes([data[0], data[1]]));
                self.write_reg(offset + 2, u16::from_le_bytes([data[2], data[3]]));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::devices::testing::{RecordingIrq, RecordingRequests};

    fn pm() -> (Pm, Arc<RecordingIrq>, Arc<RecordingRequests>) {
        let irq = Arc::new(RecordingIrq::default());
        let req = Arc::new(RecordingRequests::default());
        (Pm::new(irq.clone(), req.clone()), irq, req)
    }

    fn read16(pm: &mut Pm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        pm.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    #[test]
    fn power_button_sets_status_and_raises_sci_when_enabled() {
        let (mut pm, irq, _) = pm();
        pm.press_power_button();
        assert_eq!(read16(&mut pm, 0), PWRBTN);
        assert!(!irq.level(), "no SCI while PWRBTN_EN is clear");
        pm.write(2, &PWRBTN.to_le_bytes());
        assert!(irq.level());
        // The guest acknowledges by writing 1 to the status bit.
        pm.write(0, &PWRBTN.to_le_bytes());
        assert_eq!(read16(&mut pm, 0), 0);
        assert!(!irq.level());
    }

    #[test]
    fn s5_sleep_requests_power_off() {
        let (mut pm, _, req) = pm();
        pm.write(4, &((S5_SLP_TYP << 10) | SLP_EN).to_le_bytes());
        assert_eq!(*req.seen.lock().unwrap(), vec![VmRequest::PowerOff]);
        assert_eq!(read16(&mut pm, 4) & SLP_EN, 0, "SLP_EN reads as 0");
        assert_eq!(read16(&mut pm, 4) & SCI_EN, SCI_EN);
    }

    #[test]
    fn other_sleep_types_are_ignored() {
        let (mut pm, _, req) = pm();
        pm.write(4, &((1 << 10) | SLP_EN).to_le_bytes());
        assert!(req.seen.lock().unwrap().is_empty());
    }

    #[test]
    fn byte_and_odd_accesses_work_or_are_ignored() {
        let (mut pm, _, _) = pm();
        pm.press_power_button();
        let mut b = [0u8];
        pm.read(1, &mut b);
        assert_eq!(b[0], 1, "PWRBTN_STS is bit 0 of the high byte");
        pm.write(1, &[1]);
        assert_eq!(read16(&mut pm, 0), 0);
        pm.write(1, &[1, 2, 3]);
        pm.write(7, &[1, 2]);
        pm.read(9, &mut [0u8; 3]);
    }
}
