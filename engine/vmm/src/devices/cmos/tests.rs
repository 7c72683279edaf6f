use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::devices::testing::RecordingIrq;
use crate::layout::PCI_HOLE_START;

/// 2024-03-09 13:45:30 UTC, a Saturday.
const SAT_2024_03_09_134530: i64 = 1_709_991_930;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A clock the test moves by hand.
#[derive(Clone)]
struct FakeClock(Arc<Mutex<SystemTime>>);

impl FakeClock {
    fn at(secs: i64, nanos: u32) -> Self {
        let c = Self(Arc::new(Mutex::new(UNIX_EPOCH)));
        c.set(secs, nanos);
        c
    }

    fn set(&self, secs: i64, nanos: u32) {
        let base = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        *self.0.lock().unwrap() = base + Duration::from_nanos(u64::from(nanos));
    }

    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

fn cmos_at(secs: i64, nanos: u32) -> (Cmos, FakeClock, Arc<RecordingIrq>) {
    let clock = FakeClock::at(secs, nanos);
    let irq = Arc::new(RecordingIrq::default());
    let cmos = Cmos::with_clock(256 * MIB, 0, 1, irq.clone(), Box::new(clock.clone()));
    (cmos, clock, irq)
}

fn read(cmos: &mut Cmos, idx: u8) -> u8 {
    cmos.write(0, &[idx]);
    let mut b = [0u8];
    cmos.read(1, &mut b);
    b[0]
}

fn write(cmos: &mut Cmos, idx: u8, v: u8) {
    cmos.write(0, &[idx]);
    cmos.write(1, &[v]);
}

/// Seconds, minutes, hours, weekday, day, month, year, century.
fn time(cmos: &mut Cmos) -> [u8; 8] {
    [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|i| read(cmos, i))
}

#[test]
fn power_on_status_registers() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    let regs = [0x0a, 0x0b, 0x0c, 0x0d].map(|i| read(&mut cmos, i));

    assert_eq!(regs, [0x26, 0x02, 0x00, 0x80]);
}

#[test]
fn time_registers_are_bcd_24_hour_by_default() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    let t = time(&mut cmos);

    assert_eq!(t, [0x30, 0x45, 0x13, 0x07, 0x09, 0x03, 0x24, 0x20]);
}

#[test]
fn time_registers_in_binary_mode() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0b, 0x06);
    let t = time(&mut cmos);

    assert_eq!(t, [30, 45, 13, 7, 9, 3, 24, 20]);
}

#[test]
fn twelve_hour_mode_sets_the_pm_bit() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0b, 0x00);
    let bcd_pm = read(&mut cmos, 0x04);
    write(&mut cmos, 0x0b, 0x04);
    let binary_pm = read(&mut cmos, 0x04);
    clock.set(SAT_2024_03_09_134530 - 13 * 3600, 0); // 00:45:30
    let midnight = read(&mut cmos, 0x04);
    clock.set(SAT_2024_03_09_134530 - 3600, 0); // 12:45:30
    let noon = read(&mut cmos, 0x04);

    assert_eq!(bcd_pm, 0x81);
    assert_eq!(binary_pm, 0x81);
    assert_eq!(midnight, 12);
    assert_eq!(noon, 0x80 | 12);
}

#[test]
fn leap_day_and_weekday() {
    // 2024-02-29 00:30:00 UTC, a Thursday.
    let (mut cmos, _, _) = cmos_at(1_709_166_600, 0);

    let t = time(&mut cmos);

    assert_eq!(t, [0x00, 0x30, 0x00, 0x05, 0x29, 0x02, 0x24, 0x20]);
}

#[test]
fn century_rolls_over_and_has_the_ps2_alias() {
    // 2099-12-31 23:59:59 UTC.
    let (mut cmos, clock, _) = cmos_at(4_102_444_799, 0);

    let before = time(&mut cmos);
    clock.advance(Duration::from_secs(1));
    let after = time(&mut cmos);
    let alias = read(&mut cmos, 0x37);

    assert_eq!(before, [0x59, 0x59, 0x23, 0x05, 0x31, 0x12, 0x99, 0x20]);
    // 2100-01-01 is a Friday.
    assert_eq!(after, [0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x21]);
    assert_eq!(alias, 0x21);
}

#[test]
fn host_clock_before_the_epoch() {
    // 1969-12-31 00:00:00 UTC, a Wednesday.
    let (mut cmos, _, _) = cmos_at(-86_400, 0);

    let t = time(&mut cmos);

    assert_eq!(t, [0x00, 0x00, 0x00, 0x04, 0x31, 0x12, 0x69, 0x19]);
}

#[test]
fn uip_is_set_in_the_last_244_us_of_a_second() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 500_000_000);

    let mid_second = read(&mut cmos, 0x0a);
    clock.set(SAT_2024_03_09_134530, 999_755_859);
    let just_before = read(&mut cmos, 0x0a);
    clock.set(SAT_2024_03_09_134530, 999_800_000);
    let inside = read(&mut cmos, 0x0a);
    clock.advance(Duration::from_micros(250));
    let after_boundary = read(&mut cmos, 0x0a);

    assert_eq!(mid_second & A_UIP, 0);
    assert_eq!(just_before & A_UIP, 0);
    assert_eq!(inside, 0x26 | A_UIP);
    assert_eq!(after_boundary & A_UIP, 0);
}

#[test]
fn uip_stays_clear_while_set_bit_is_set() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 999_900_000);

    write(&mut cmos, 0x0b, 0x82);

    assert_eq!(read(&mut cmos, 0x0a) & A_UIP, 0);
}

#[test]
fn register_a_uip_bit_is_read_only() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0a, 0xa5);

    assert_eq!(read(&mut cmos, 0x0a), 0x25);
}

#[test]
fn registers_c_and_d_ignore_writes() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0c, 0xff);
    write(&mut cmos, 0x0d, 0x00);

    assert_eq!(read(&mut cmos, 0x0c), 0x00);
    assert_eq!(read(&mut cmos, 0x0d), 0x80);
}

#[test]
fn setting_the_set_bit_clears_uie() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0b, 0x92);

    assert_eq!(read(&mut cmos, 0x0b), 0x82);
}

#[test]
fn time_written_under_set_bit_becomes_the_clock() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0b, 0x82);
    for (idx, v) in [
        (0x00, 0x00),
        (0x02, 0x00),
        (0x04, 0x08),
        (0x07, 0x01),
        (0x08, 0x01),
        (0x09, 0x30),
        (0x32, 0x20),
    ] {
        write(&mut cmos, idx, v);
    }
    clock.advance(Duration::from_secs(3));
    let while_set = time(&mut cmos);
    write(&mut cmos, 0x0b, 0x02);
    clock.advance(Duration::from_secs(5));
    let running = time(&mut cmos);

    // The frozen weekday (Saturday) stays until the clock runs.
    assert_eq!(while_set, [0x00, 0x00, 0x08, 0x07, 0x01, 0x01, 0x30, 0x20]);
    // 2030-01-01 08:00:05, a Tuesday.
    assert_eq!(running, [0x05, 0x00, 0x08, 0x03, 0x01, 0x01, 0x30, 0x20]);
}

#[test]
fn time_register_written_while_running_moves_the_clock() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x00, 0x00);
    write(&mut cmos, 0x04, 0x20);
    clock.advance(Duration::from_secs(1));

    assert_eq!(&time(&mut cmos)[..3], &[0x01, 0x45, 0x20]);
}

#[test]
fn holding_the_divider_in_reset_stops_the_clock() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 0);

    write(&mut cmos, 0x0a, 0x66);
    clock.advance(Duration::from_secs(10));
    let stopped = read(&mut cmos, 0x00);
    write(&mut cmos, 0x0a, 0x26);
    clock.advance(Duration::from_secs(2));
    let restarted = read(&mut cmos, 0x00);

    assert_eq!(stopped, 0x30);
    assert_eq!(restarted, 0x32);
}

#[test]
fn register_c_reports_update_ended_once_per_second_boundary() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 100_000_000);
    write(&mut cmos, 0x0a, 0x20); // periodic rate off

    let same_second = read(&mut cmos, 0x0c);
    clock.advance(Duration::from_secs(1));
    let next_second = read(&mut cmos, 0x0c);
    let cleared = read(&mut cmos, 0x0c);

    assert_eq!(same_second, 0);
    assert_eq!(next_second, C_UF);
    assert_eq!(cleared, 0);
}

#[test]
fn register_c_reports_periodic_flag() {
    let (mut cmos, clock, _) = cmos_at(SAT_2024_03_09_134530, 100_000_000);
    read(&mut cmos, 0x0c);

    clock.advance(Duration::from_millis(2)); // rate 6: 976.5 µs

    assert_eq!(read(&mut cmos, 0x0c), C_PF);
}

#[test]
fn poll_raises_irq_8_for_enabled_flags_and_reading_c_lowers_it() {
    let (mut cmos, clock, irq) = cmos_at(SAT_2024_03_09_134530, 100_000_000);
    write(&mut cmos, 0x0a, 0x20);
    write(&mut cmos, 0x0b, 0x12); // UIE

    cmos.poll();
    let within_second = irq.level();
    clock.advance(Duration::from_secs(1));
    cmos.poll();
    let after_update = irq.level();
    let c = read(&mut cmos, 0x0c);

    assert!(!within_second);
    assert!(after_update);
    assert_eq!(c, C_IRQF | C_UF);
    assert!(!irq.level());
    assert_eq!(irq.rising_edges(), 1);
}

#[test]
fn flags_without_enables_do_not_interrupt() {
    let (mut cmos, clock, irq) = cmos_at(SAT_2024_03_09_134530, 100_000_000);

    clock.advance(Duration::from_secs(1));
    cmos.poll();

    assert!(!irq.level());
    assert_eq!(read(&mut cmos, 0x0c), C_PF | C_UF);
}

#[test]
fn memory_registers_for_256_mib() {
    let irq = Arc::new(RecordingIrq::default());

    let mut cmos = Cmos::new(256 * MIB, 0, 1, irq);

    let regs: Vec<u8> = [
        0x15, 0x16, 0x17, 0x18, 0x30, 0x31, 0x34, 0x35, 0x5b, 0x5c, 0x5d,
    ]
    .iter()
    .map(|&i| read(&mut cmos, i))
    .collect();
    assert_eq!(
        regs,
        [
            0x80, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0x0f, 0x00, 0x00, 0x00
        ]
    );
}

#[test]
fn memory_registers_for_5_gib() {
    let irq = Arc::new(RecordingIrq::default());
    let below = PCI_HOLE_START;
    let above = 5 * GIB - below;

    let mut cmos = Cmos::new(below, above, 1, irq);

    let regs: Vec<u8> = [0x15, 0x16, 0x17, 0x18, 0x34, 0x35, 0x5b, 0x5c, 0x5d]
        .iter()
        .map(|&i| read(&mut cmos, i))
        .collect();
    // 3056 MiB above 16 MiB = 0xbf00 units; 2 GiB above 4 GiB = 0x8000.
    assert_eq!(regs, [0x80, 0x02, 0xff, 0xff, 0x00, 0xbf, 0x00, 0x80, 0x00]);
}

#[test]
fn small_memory_is_not_rounded_up() {
    let irq = Arc::new(RecordingIrq::default());

    let mut cmos = Cmos::new(512 * 1024, 0, 1, irq);

    let regs = [0x15, 0x16, 0x17, 0x18, 0x34, 0x35].map(|i| read(&mut cmos, i));
    assert_eq!(regs, [0x00, 0x02, 0, 0, 0, 0]);
}

#[test]
fn cpu_count_register_holds_cpus_minus_one() {
    let irq: IrqLine = Arc::new(RecordingIrq::default());

    let four = Cmos::new(GIB, 0, 4, irq.clone()).nvram(0x5f);
    let none = Cmos::new(GIB, 0, 0, irq.clone()).nvram(0x5f);
    let too_many = Cmos::new(GIB, 0, 300, irq).nvram(0x5f);

    assert_eq!(four, 3);
    assert_eq!(none, 0);
    assert_eq!(too_many, 0);
}

#[test]
fn equipment_floppy_shutdown_and_boot_order_match_qemu() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    let regs = [0x0f, 0x10, 0x14, 0x3d, 0x38].map(|i| read(&mut cmos, i));

    assert_eq!(regs, [0x00, 0x00, 0x06, 0x32, 0x00]);
}

#[test]
fn nvram_round_trips() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    for i in 0x40..0x80u8 {
        write(&mut cmos, i, i ^ 0xa5);
    }
    write(&mut cmos, 0x01, 0x59); // alarm seconds are plain storage

    for i in 0x40..0x80u8 {
        assert_eq!(read(&mut cmos, i), i ^ 0xa5, "index {i:#x}");
    }
    assert_eq!(read(&mut cmos, 0x01), 0x59);
}

#[test]
fn nmi_bit_is_masked_off_the_index_and_remembered() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    cmos.write(0, &[0x80 | 0x50]);
    cmos.write(1, &[0x5a]);
    let disabled = cmos.nmi_disabled();
    let value = read(&mut cmos, 0x50);

    assert!(disabled);
    assert_eq!(value, 0x5a);
    assert!(!cmos.nmi_disabled());
}

#[test]
fn index_port_reads_0xff() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);
    cmos.write(0, &[0x0b]);

    let mut b = [0u8];
    cmos.read(0, &mut b);

    assert_eq!(b, [0xff]);
}

#[test]
fn word_write_at_the_index_port_writes_index_then_data() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    cmos.write(0, &[0x45, 0x99]);
    let mut word = [0u8; 2];
    cmos.read(0, &mut word);

    assert_eq!(word, [0xff, 0x99]);
}

#[test]
fn odd_size_accesses_do_not_panic() {
    let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);

    for offset in [0, 1, 2, 3, 100, u64::MAX] {
        for len in [0, 1, 2, 3, 4, 8, 64] {
            let mut buf = vec![0u8; len];
            cmos.read(offset, &mut buf);
            cmos.write(offset, &buf);
            assert!(offset <= 1 || buf.iter().all(|&b| b == 0xff));
        }
    }
}

#[test]
fn garbage_time_values_do_not_panic() {
    for b in [0x82, 0x86, 0x80, 0x84] {
        let (mut cmos, _, _) = cmos_at(SAT_2024_03_09_134530, 0);
        write(&mut cmos, 0x0b, b);
        for idx in [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32] {
            write(&mut cmos, idx, 0xff);
        }

        write(&mut cmos, 0x0b, b & !B_SET);
        let t = time(&mut cmos);
        for idx in [0x00, 0x04, 0x32] {
            write(&mut cmos, idx, 0xff);
        }
        write(&mut cmos, 0x0a, 0x2f);
        read(&mut cmos, 0x0c);

        assert_eq!(t.len(), 8);
    }
}

#[test]
fn extreme_host_clocks_do_not_panic() {
    for secs in [
        i64::from(i32::MIN) * 100,
        MIN_SECS - 1,
        MAX_SECS + 1,
        1 << 40,
    ] {
        let (mut cmos, _, _) = cmos_at(secs, 0);

        write(&mut cmos, 0x00, 0x59);
        let t = time(&mut cmos);

        assert_eq!(t.len(), 8);
    }
}

#[test]
fn civil_conversions_round_trip() {
    for days in (-800_000..3_000_000).step_by(997) {
        let (y, m, d) = civil_from_days(days);
        assert_eq!(days_from_civil(y, m, d), days);
    }
}
