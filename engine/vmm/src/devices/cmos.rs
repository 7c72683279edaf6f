//! The MC146818 real-time clock and its 128 bytes of CMOS NVRAM, at ports
//! 0x70 (index) and 0x71 (data), modelled on QEMU's `hw/rtc/mc146818rtc.c`
//! and filled the way QEMU's `pc_cmos_init` fills it for firmware.
//!
//! # Wiring
//!
//! ```no_run
//! # use std::sync::{Arc, Mutex};
//! # use vireo_vmm::bus::Bus;
//! # use vireo_vmm::devices::cmos::Cmos;
//! # fn wire(rtc_irq: vireo_vmm::devices::IrqLine, bus: &mut Bus) -> Result<(), vireo_vmm::bus::BusError> {
//! // 5 GiB of RAM: 3 GiB below the PCI hole, 2 GiB above 4 GiB; 2 vCPUs.
//! let cmos = Cmos::new(3 << 30, 2 << 30, 2, rtc_irq); // IRQ 8
//! bus.insert(Arc::new(Mutex::new(cmos)), 0x70, 2)?;
//! # Ok(()) }
//! ```
//!
//! # Model
//!
//! - Writing the index port selects a register with its low 7 bits; bit 7
//!   disables NMI and is remembered ([`Cmos::nmi_disabled`]). Reading the
//!   index port gives 0xff. A two-byte access at 0x70 is an index write or
//!   read followed by one of the data port, as on the ISA bus.
//! - The clock is the host's wall clock (UTC, from a [`Clock`]) plus a
//!   whole-second offset the guest changes by writing time registers. While
//!   the clock runs, time registers are computed at each read in the format
//!   register B asks for (BCD or binary, 24 or 12 hours with bit 7 of the
//!   hour for PM). Setting register B's SET bit, or holding the divider in
//!   reset (register A bits 6–5 both set), stops the clock: the time is
//!   frozen into the registers, the guest writes them, and when the clock
//!   runs again the written time becomes the new offset. A time register
//!   written while the clock runs moves the offset at once (QEMU does the
//!   same). The weekday is computed from the date; a written weekday is
//!   only kept while the clock is stopped. The century is at 0x32 (and
//!   0x37, IBM's PS/2 location).
//! - Register A's update-in-progress bit reads 1 during the last 244 µs of
//!   every second (QEMU's window), so a guest waiting for it to rise and
//!   fall finishes within a second. The divider and rate bits are kept.
//! - Register C's flags are computed when it is read: UF if a second
//!   boundary passed since the last look, PF if a periodic interval (rate
//!   in register A) did. The alarm flag AF is never set. Nothing drives
//!   IRQ 8 on its own: the device has no timer. [`Cmos::poll`] does the
//!   same look and raises IRQ 8 when an enabled flag is set, so a VMM timer
//!   calling it would give the guest update and periodic interrupts; until
//!   then guests that wait for IRQ 8 (Linux's `hwclock` through
//!   `/dev/rtc` update interrupts) time out and fall back to polling.
//! - NVRAM is filled as QEMU leaves it for SeaBIOS: memory sizes, CPU count,
//!   equipment byte (FPU, PS/2 mouse, no floppy), and the boot order
//!   "disk, then CD-ROM" (`-boot cd`): 0x3D = 0x32, 0x38 = 0x00 (third
//!   device none; bit 0 clear = floppy boot signature checked).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;
use crate::devices::IrqLine;

/// Where the RTC gets the host's wall-clock time.
pub trait Clock: Send {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The host's clock: [`SystemTime::now`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

// Time registers.
const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_CENTURY: u8 = 0x32;
/// IBM PS/2's century byte, an alias of [`REG_CENTURY`].
const REG_PS2_CENTURY: u8 = 0x37;

// Status registers.
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;

const A_UIP: u8 = 0x80;
/// Divider bits 6–5 both set: the divider chain is held in reset.
const A_DIVIDER_RESET: u8 = 0x60;
const A_RATE: u8 = 0x0f;
/// QEMU's power-on register A: 32.768 kHz time base, 1024 Hz periodic rate.
const A_POWER_ON: u8 = 0x26;

const B_SET: u8 = 0x80;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;
/// Power-on register B: 24-hour, BCD, no interrupts.
const B_POWER_ON: u8 = B_24H;

const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_UF: u8 = 0x10;
/// The flags that can interrupt, and their enables in register B.
const C_FLAGS: u8 = 0x70;

const D_VRT: u8 = 0x80;

// NVRAM layout (QEMU's pc_cmos_init).
const REG_SHUTDOWN_STATUS: u8 = 0x0f;
const REG_FLOPPY: u8 = 0x10;
const REG_EQUIPMENT: u8 = 0x14;
const REG_BASE_MEM: u8 = 0x15;
const REG_EXT_MEM: u8 = 0x17;
const REG_EXT_MEM_2: u8 = 0x30;
const REG_MEM_ABOVE_16M: u8 = 0x34;
const REG_BOOT_ORDER_3: u8 = 0x38;
const REG_BOOT_ORDER_1_2: u8 = 0x3d;
const REG_MEM_ABOVE_4G: u8 = 0x5b;
const REG_CPUS: u8 = 0x5f;

/// Equipment byte: maths coprocessor (bit 1) and PS/2 mouse (bit 2).
const EQUIPMENT: u8 = 0x06;
/// SeaBIOS's boot device nibbles: 2 = hard disk, 3 = CD-ROM.
const BOOT_ORDER_1_2: u8 = 0x32;
/// No third boot device; bit 0 clear: check the floppy boot signature.
const BOOT_ORDER_3: u8 = 0x00;

/// UIP is set this long before each second boundary: 8 ticks of 32768 Hz.
const UIP_HOLD_NS: u32 = 244_140;
const NANOS_PER_SEC: u32 = 1_000_000_000;

/// The clock is kept within years 0000..=9999.
const MIN_SECS: i64 = -62_167_219_200;
const MAX_SECS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`). `month` is 1..=12; years are bounded by the caller.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month 1..=12, day).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A broken-down UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    /// 1 = Sunday .. 7 = Saturday, as the RTC counts.
    weekday: i64,
}

impl DateTime {
    fn from_secs(secs: i64) -> Self {
        let secs = secs.clamp(MIN_SECS, MAX_SECS);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) + 1,
        }
    }
}

/// Seconds since the epoch of possibly out-of-range fields, normalised the
/// way `mktime` does (month 13 is January next year, day 0 the last of the
/// previous month), then clamped to the supported years. Inputs are what
/// two BCD digits can decode to, so nothing overflows.
fn secs_from_fields(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> i64 {
    let m0 = month - 1;
    let year = year + m0.div_euclid(12);
    let month = m0.rem_euclid(12) + 1;
    let year = year.clamp(-1, 10_000);
    let days = days_from_civil(year, month, 1) + day - 1;
    (days * 86_400 + hour * 3600 + minute * 60 + second).clamp(MIN_SECS, MAX_SECS)
}

/// The RTC and NVRAM. Insert at port 0x70 with length 2.
pub struct Cmos {
    regs: [u8; 128],
    index: u8,
    nmi_disabled: bool,
    /// Guest time minus host time, in seconds.
    offset_secs: i64,
    clock: Box<dyn Clock>,
    irq: IrqLine,
    irq_level: bool,
    /// Host time of the last flag evaluation, in nanoseconds.
    last_host_ns: i128,
    /// Guest second of the last flag evaluation.
    last_guest_secs: i64,
}

impl fmt::Debug for Cmos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmos")
            .field("index", &self.index)
            .field("nmi_disabled", &self.nmi_disabled)
            .field("offset_secs", &self.offset_secs)
            .field("reg_a", &self.regs[usize::from(REG_A)])
            .field("reg_b", &self.regs[usize::from(REG_B)])
            .finish_non_exhaustive()
    }
}

impl Cmos {
    /// An RTC on the host's clock. `mem_below_4g` and `mem_above_4g` are the
    /// guest's RAM below and above 4 GiB in bytes, `ncpus` its vCPU count;
    /// `irq` is IRQ 8.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64, ncpus: u32, irq: IrqLine) -> Self {
        Self::with_clock(
            mem_below_4g,
            mem_above_4g,
            ncpus,
            irq,
            Box::new(SystemClock),
        )
    }

    /// As [`Cmos::new`], reading the time from `clock`.
    pub fn with_clock(
        mem_below_4g: u64,
        mem_above_4g: u64,
        ncpus: u32,
        irq: IrqLine,
        clock: Box<dyn Clock>,
    ) -> Self {
        let mut regs = [0u8; 128];
        regs[usize::from(REG_A)] = A_POWER_ON;
        regs[usize::from(REG_B)] = B_POWER_ON;
        regs[usize::from(REG_D)] = D_VRT;
        regs[usize::from(REG_SHUTDOWN_STATUS)] = 0;
        regs[usize::from(REG_FLOPPY)] = 0;
        regs[usize::from(REG_EQUIPMENT)] = EQUIPMENT;
        regs[usize::from(REG_BOOT_ORDER_1_2)] = BOOT_ORDER_1_2;
        regs[usize::from(REG_BOOT_ORDER_3)] = BOOT_ORDER_3;
        fill_memory(&mut regs, mem_below_4g, mem_above_4g);
        // QEMU: more CPUs than a byte counts are left to fw_cfg; 0 here.
        regs[usize::from(REG_CPUS)] = match u8::try_from(ncpus) {
            Ok(n) => n.saturating_sub(1),
            Err(_) => 0,
        };
        let mut cmos = Self {
            regs,
            index: 0,
            nmi_disabled: false,
            offset_secs: 0,
            clock,
            irq,
            irq_level: false,
            last_host_ns: 0,
            last_guest_secs: 0,
        };
        let (secs, nanos) = cmos.host_now();
        cmos.last_host_ns = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
        cmos.last_guest_secs = cmos.guest_now().0;
        cmos
    }

    /// Whether the guest last wrote the index port with bit 7 set.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    /// The stored byte at `index` (low 7 bits), without the side effects of
    /// a guest read. Time registers hold the clock only while it is stopped.
    pub fn nvram(&self, index: u8) -> u8 {
        self.regs[usize::from(index & 0x7f)]
    }

    /// Stores `value` at `index` (low 7 bits) for the firmware to find, as
    /// QEMU sets the shutdown status (0x0F) to 0xFE before an S3 resume.
    pub fn set_nvram(&mut self, index: u8, value: u8) {
        self.regs[usize::from(index & 0x7f)] = value;
    }

    /// Evaluates the update and periodic flags and drives IRQ 8 high if a
    /// flag is set whose interrupt register B enables. Reading register C
    /// clears the flags and lowers the line. Meant for a VMM timer; nothing
    /// calls it yet.
    pub fn poll(&mut self) {
        self.update_flags();
        self.update_irq();
    }

    /// A guest read of the data port (0x71).
    fn read_data(&mut self) -> u8 {
        let idx = alias(self.index);
        match idx {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                if self.running() {
                    let (secs, _) = self.guest_now();
                    self.encode(idx, &DateTime::from_secs(secs))
                } else {
                    self.regs[usize::from(idx)]
                }
            }
            REG_A => {
                let mut v = self.regs[usize::from(REG_A)] & !A_UIP;
                if self.running() && self.guest_now().1 >= NANOS_PER_SEC - UIP_HOLD_NS {
                    v |= A_UIP;
                }
                v
            }
            REG_C => {
                self.update_flags();
                let flags = self.regs[usize::from(REG_C)] & C_FLAGS;
                let irqf = flags & self.regs[usize::from(REG_B)] != 0;
                self.regs[usize::from(REG_C)] = 0;
                self.update_irq();
                if irqf { flags | C_IRQF } else { flags }
            }
            REG_D => D_VRT,
            _ => self.regs[usize::from(idx)],
        }
    }

    /// A guest write of the data port (0x71).
    fn write_data(&mut self, v: u8) {
        let idx = alias(self.index);
        match idx {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                if self.running() {
                    let (now, _) = self.guest_now();
                    self.freeze(now);
                    self.regs[usize::from(idx)] = v;
                    let set = self.decode();
                    self.offset_secs = self.offset_secs.saturating_add(set - now);
                } else {
                    self.regs[usize::from(idx)] = v;
                }
            }
            REG_A => {
                let a = v & !A_UIP;
                let b = self.regs[usize::from(REG_B)];
                self.transition(running(a, b));
                self.regs[usize::from(REG_A)] = a;
            }
            REG_B => {
                // Setting SET clears UIE, as on the MC146818 (and in QEMU).
                let b = if v & B_SET != 0 { v & !B_UIE } else { v };
                let a = self.regs[usize::from(REG_A)];
                self.transition(running(a, b));
                self.regs[usize::from(REG_B)] = b;
                self.update_irq();
            }
            REG_C | REG_D => {}
            _ => self.regs[usize::from(idx)] = v,
        }
    }

    fn running(&self) -> bool {
        running(self.regs[usize::from(REG_A)], self.regs[usize::from(REG_B)])
    }

    /// Handles the clock stopping or starting, before A or B changes: a
    /// stopping clock is frozen into the registers (in the format in force
    /// so far), a starting one takes its time from them.
    fn transition(&mut self, will_run: bool) {
        match (self.running(), will_run) {
            (true, false) => {
                let (now, _) = self.guest_now();
                self.freeze(now);
            }
            (false, true) => {
                let set = self.decode();
                let (host, _) = self.host_now();
                self.offset_secs = set.saturating_sub(host);
                self.last_guest_secs = self.guest_now().0;
            }
            _ => {}
        }
    }

    /// Writes the time `secs` into the time registers.
    fn freeze(&mut self, secs: i64) {
        let dt = DateTime::from_secs(secs);
        for idx in [
            REG_SECONDS,
            REG_MINUTES,
            REG_HOURS,
            REG_WEEKDAY,
            REG_DAY,
            REG_MONTH,
            REG_YEAR,
            REG_CENTURY,
        ] {
            self.regs[usize::from(idx)] = self.encode(idx, &dt);
        }
    }

    /// The time in the time registers, read in register B's format.
    fn decode(&self) -> i64 {
        let binary = self.regs[usize::from(REG_B)] & B_DM_BINARY != 0;
        let num = |idx: u8, mask: u8| {
            let v = self.regs[usize::from(idx)] & mask;
            if binary {
                i64::from(v)
            } else {
                i64::from(v >> 4) * 10 + i64::from(v & 0x0f)
            }
        };
        let mut hour = num(REG_HOURS, 0x7f);
        if self.regs[usize::from(REG_B)] & B_24H == 0 {
            hour %= 12;
            if self.regs[usize::from(REG_HOURS)] & 0x80 != 0 {
                hour += 12;
            }
        }
        secs_from_fields(
            num(REG_CENTURY, 0xff) * 100 + num(REG_YEAR, 0xff),
            num(REG_MONTH, 0xff),
            num(REG_DAY, 0xff),
            hour,
            num(REG_MINUTES, 0xff),
            num(REG_SECONDS, 0xff),
        )
    }

    /// Time register `idx` of `dt` in register B's format.
    fn encode(&self, idx: u8, dt: &DateTime) -> u8 {
        let b = self.regs[usize::from(REG_B)];
        let num = |v: i64| {
            let v = v.rem_euclid(100) as u8;
            if b & B_DM_BINARY != 0 {
                v
            } else {
                ((v / 10) << 4) | (v % 10)
            }
        };
        match idx {
            REG_SECONDS => num(dt.second),
            REG_MINUTES => num(dt.minute),
            REG_HOURS if b & B_24H != 0 => num(dt.hour),
            REG_HOURS => {
                let h = match dt.hour % 12 {
                    0 => 12,
                    h => h,
                };
                let pm = if dt.hour >= 12 { 0x80 } else { 0 };
                num(h) | pm
            }
            REG_WEEKDAY => num(dt.weekday),
            REG_DAY => num(dt.day),
            REG_MONTH => num(dt.month),
            REG_YEAR => num(dt.year),
            REG_CENTURY => num(dt.year.div_euclid(100)),
            _ => 0,
        }
    }

    /// Host wall-clock time: whole seconds since the epoch (negative before
    /// it) and nanoseconds into that second.
    fn host_now(&self) -> (i64, u32) {
        match self.clock.now().duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (-secs, 0),
                    n => (-secs - 1, NANOS_PER_SEC - n),
                }
            }
        }
    }

    /// Guest time: host time plus the offset, within the supported years.
    fn guest_now(&self) -> (i64, u32) {
        let (secs, nanos) = self.host_now();
        (
            secs.saturating_add(self.offset_secs)
                .clamp(MIN_SECS, MAX_SECS),
            nanos,
        )
    }

    /// Sets register C's UF and PF for the time passed since the last look.
    fn update_flags(&mut self) {
        let (host_secs, host_nanos) = self.host_now();
        let host_ns = i128::from(host_secs) * i128::from(NANOS_PER_SEC) + i128::from(host_nanos);
        let a = self.regs[usize::from(REG_A)];
        if a & A_DIVIDER_RESET != A_DIVIDER_RESET
            && let Some(period) = periodic_ns(a & A_RATE)
            && host_ns.div_euclid(period) > self.last_host_ns.div_euclid(period)
        {
            self.regs[usize::from(REG_C)] |= C_PF;
        }
        self.last_host_ns = host_ns;
        let (guest_secs, _) = self.guest_now();
        if self.running() && guest_secs > self.last_guest_secs {
            self.regs[usize::from(REG_C)] |= C_UF;
        }
        self.last_guest_secs = guest_secs;
    }

    /// IRQ 8 is high while a flag in register C is enabled in register B.
    fn update_irq(&mut self) {
        let level = self.regs[usize::from(REG_C)] & self.regs[usize::from(REG_B)] & C_FLAGS != 0;
        if level != self.irq_level {
            self.irq_level = level;
            self.irq.set_level(level);
        }
    }

    fn write_index(&mut self, v: u8) {
        self.index = v & 0x7f;
        self.nmi_disabled = v & 0x80 != 0;
    }
}

/// Whether the clock runs with these register A and B values.
fn running(a: u8, b: u8) -> bool {
    b & B_SET == 0 && a & A_DIVIDER_RESET != A_DIVIDER_RESET
}

/// The century byte has two addresses.
fn alias(idx: u8) -> u8 {
    if idx == REG_PS2_CENTURY {
        REG_CENTURY
    } else {
        idx
    }
}

/// The periodic interrupt's period for rate select `rate` with a 32.768 kHz
/// time base, in nanoseconds; `None` for rate 0 (off).
fn periodic_ns(rate: u8) -> Option<i128> {
    let ticks: i128 = match rate {
        0 => return None,
        1 | 2 => 1 << (rate + 6),
        r => 1 << (r - 1),
    };
    Some(ticks * i128::from(NANOS_PER_SEC) / 32_768)
}

/// The memory size registers SeaBIOS reads when it has no fw_cfg.
fn fill_memory(regs: &mut [u8; 128], below_4g: u64, above_4g: u64) {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    let mut put = |idx: u8, v: u64, bytes: usize| {
        for i in 0..bytes {
            regs[usize::from(idx) + i] = (v >> (8 * i)) as u8;
        }
    };
    // Conventional memory in KiB.
    put(REG_BASE_MEM, (below_4g / KIB).min(640), 2);
    // Memory above 1 MiB in KiB, saturating at 64 MiB.
    let ext = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
    put(REG_EXT_MEM, ext, 2);
    put(REG_EXT_MEM_2, ext, 2);
    // Memory above 16 MiB (below 4 GiB) in 64 KiB units.
    put(
        REG_MEM_ABOVE_16M,
        (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff),
        2,
    );
    // Memory above 4 GiB in 64 KiB units, 24 bits.
    put(REG_MEM_ABOVE_4G, (above_4g / (64 * KIB)).min(0xff_ffff), 3);
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        for (i, b) in data.iter_mut().enumerate().take(2) {
            if offset.checked_add(i as u64) == Some(1) {
                *b = self.read_data();
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &v) in data.iter().enumerate().take(2) {
            match offset.checked_add(i as u64) {
                Some(0) => self.write_index(v),
                Some(1) => self.write_data(v),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
