//! One boot of the machine: the KVM VM, its memory, devices and vCPUs.
//!
//! A [`Vm`] lives from power-on (or reset) to power-off (or the next reset).
//! What must survive a reset (the serial sink, the CMOS NVRAM, the debug
//! log) lives in [`Persistent`] and is handed to each new `Vm`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, KvmIrqRouting, Msrs, kvm_pit_config,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::arch;
use crate::boot::{BootFramebuffer, EntryMode, KernelConfig, load_kernel};
use crate::bus::{Bus, BusError};
use crate::devices::bochs::{BochsDisplay, MMIO_BAR_SIZE};
use crate::devices::cmos::Cmos;
use crate::devices::debug::{DebugCon, DebugExit};
use crate::devices::i8042::I8042;
use crate::devices::pci::{PciBus, PciConfigPorts, PciMmioWindow};
use crate::devices::pm::Pm;
use crate::devices::serial::{SerialDevice, SerialSink, com1};
use crate::devices::virtio::MsiSink;
use crate::devices::virtio::block::{BlockStats, DiskConfig, VirtioBlock};
use crate::devices::virtio::io_thread::IoThread;
use crate::devices::virtio::pci::VirtioPci;
use crate::devices::{Interrupt, IrqLine, Requests};
use crate::layout::{self, irqs, ports};
use crate::memory::{MemoryError, create_guest_memory, register_ram};
use crate::vcpu::{self, OnStop, VcpuControl, VcpuHandle};

/// What the machine is made of.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// What to boot.
    pub kernel: KernelConfig,
    /// VRAM of the framebuffer, in bytes.
    pub vram_size: u64,
    /// The mode set up for a direct boot's screen_info.
    pub resolution: (u16, u16),
    /// Disks, each a virtio-blk PCI device.
    pub disks: Vec<DiskConfig>,
}

/// Why a VM could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM call failed.
    #[error("KVM: {what}: {source}")]
    Kvm {
        /// The step that failed.
        what: &'static str,
        /// The error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// Loading the kernel.
    #[error(transparent)]
    Boot(#[from] crate::boot::BootError),
    /// Two devices claim the same addresses (a bug).
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    /// Platform tables.
    #[error("platform tables: {0}")]
    Tables(String),
    /// Starting a vCPU thread.
    #[error("cannot start vCPU thread: {0}")]
    Thread(String),
    /// Configuration out of range.
    #[error("{0}")]
    Config(String),
    /// A disk image could not be opened.
    #[error(transparent)]
    Disk(#[from] vireo_storage::StorageError),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// An interrupt line into a VM's in-kernel irqchip.
#[derive(Debug)]
pub struct KvmIrq {
    vm: Arc<VmFd>,
    gsi: u32,
}

impl Interrupt for KvmIrq {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, high) {
            crate::ratelimit::guest_warn!("cannot drive IRQ {}: {e}", self.gsi);
        }
    }
}

/// An interrupt line for a device that outlives one boot: it is re-pointed
/// at each new VM.
#[derive(Debug, Default)]
pub struct ReboundIrq {
    target: Mutex<Option<(Arc<VmFd>, u32)>>,
}

impl ReboundIrq {
    /// Points the line at `gsi` of `vm`.
    pub fn bind(&self, vm: Arc<VmFd>, gsi: u32) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some((vm, gsi));
    }
}

impl Interrupt for ReboundIrq {
    fn set_level(&self, high: bool) {
        if let Some((vm, gsi)) = &*self.target.lock().unwrap_or_else(|e| e.into_inner()) {
            let _ = vm.set_irq_line(*gsi, high);
        }
    }
}

/// What survives a reset.
pub struct Persistent {
    /// Serial output: log and console clients.
    pub serial_sink: SerialSink,
    /// Debug-port log.
    pub debug_log: Option<Arc<Mutex<crate::logfile::LogFile>>>,
    /// Bytes written to the debug port.
    pub debug_written: Arc<AtomicU64>,
    /// The CMOS (its NVRAM survives resets, as on real hardware).
    pub cmos: Arc<Mutex<Cmos>>,
    /// The CMOS's interrupt line.
    pub cmos_irq: Arc<ReboundIrq>,
    /// Each disk's request counters, in `--disk` order (kept across
    /// resets, as QEMU's; read without the device lock).
    pub disk_stats: Vec<Arc<BlockStats>>,
}

/// One boot of the machine.
pub struct Vm {
    vcpus: Vec<VcpuHandle>,
    control: Arc<VcpuControl>,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The PS/2 controller.
    pub i8042: Arc<Mutex<I8042>>,
    /// ACPI power management.
    pub pm: Arc<Mutex<Pm>>,
    /// The framebuffer device.
    pub bochs: Arc<Mutex<BochsDisplay>>,
    /// The virtio-blk disks.
    pub disks: Vec<Arc<Mutex<VirtioPci<VirtioBlock>>>>,
    /// Their I/O threads (stopped before the disks are flushed).
    disk_threads: Vec<IoThread>,
    vm_fd: Arc<VmFd>,
    _kvm: Kvm,
    _mem: GuestMemoryMmap,
}

impl Vm {
    /// Builds the machine, loads the kernel and starts the vCPUs.
    pub fn start(
        config: &VmConfig,
        persistent: &Persistent,
        requests: Requests,
        on_stop: OnStop,
        start_paused: bool,
    ) -> Result<Self, VmError> {
        if config.vcpus == 0 || config.vcpus > arch::MAX_VCPUS {
            return Err(VmError::Config(format!(
                "{} vCPUs requested; between 1 and {} are supported",
                config.vcpus,
                arch::MAX_VCPUS
            )));
        }
        vcpu::install_kick_handler().map_err(VmError::Thread)?;
        let kvm = Kvm::new().map_err(kvm_err("open /dev/kvm"))?;
        let vm_fd = Arc::new(kvm.create_vm().map_err(kvm_err("create VM"))?);
        vm_fd
            .set_identity_map_address(layout::KVM_IDENTITY_MAP)
            .map_err(kvm_err("set identity map address"))?;
        vm_fd
            .set_tss_address(layout::KVM_TSS as usize)
            .map_err(kvm_err("set TSS address"))?;
        vm_fd.create_irq_chip().map_err(kvm_err("create irqchip"))?;
        // Route ISA IRQs as the MADT and MP table describe them (IRQ 0 to
        // IOAPIC pin 2); KVM's default would put the PIT on pin 0.
        let routing = KvmIrqRouting::from_entries(&arch::legacy_gsi_routing())
            .map_err(|e| VmError::Tables(format!("GSI routing table: {e:?}")))?;
        vm_fd
            .set_gsi_routing(&routing)
            .map_err(kvm_err("set GSI routing"))?;
        vm_fd
            .create_pit2(kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            })
            .map_err(kvm_err("create PIT"))?;

        let mem = create_guest_memory(config.memory)?;
        let next_slot = register_ram(&vm_fd, &mem)?;

        let irq = |gsi: u32| -> IrqLine {
            Arc::new(KvmIrq {
                vm: vm_fd.clone(),
                gsi,
            })
        };
        let mut pio = Bus::new();
        let mut mmio = Bus::new();

        // COM1.
        let serial = Arc::new(Mutex::new(SerialDevice(com1(
            irq(irqs::COM1),
            persistent.serial_sink.clone(),
        ))));
        pio.insert(serial.clone(), u64::from(ports::COM1), 8)?;

        // PS/2.
        let i8042 = I8042::new(irq(irqs::KEYBOARD), irq(irqs::MOUSE), requests.clone());
        I8042::attach(&i8042, &mut pio)?;

        // CMOS RTC, kept across resets.
        persistent.cmos_irq.bind(vm_fd.clone(), irqs::RTC);
        pio.insert(persistent.cmos.clone(), u64::from(ports::CMOS_INDEX), 2)?;

        // ACPI power management.
        let pm = Arc::new(Mutex::new(Pm::new(irq(irqs::SCI), requests.clone())));
        pio.insert(pm.clone(), u64::from(ports::PM1A_EVT), 6)?;

        // Debug port and isa-debug-exit.
        pio.insert(
            Arc::new(Mutex::new(DebugCon::new(
                persistent.debug_log.clone(),
                persistent.debug_written.clone(),
            ))),
            u64::from(ports::DEBUG_CON),
            1,
        )?;
        pio.insert(
            Arc::new(Mutex::new(DebugExit::new(requests.clone()))),
            u64::from(ports::DEBUG_EXIT),
            1,
        )?;

        // PCI: host bridge and bochs-display.
        let pci = PciBus::new();
        pio.insert(
            Arc::new(Mutex::new(PciConfigPorts::new(
                pci.clone(),
                requests.clone(),
            ))),
            u64::from(ports::PCI_CONFIG_ADDRESS),
            8,
        )?;
        let vram_addr = layout::PCI_MMIO_START;
        let mmio_addr = vram_addr + config.vram_size;
        let mut bochs = BochsDisplay::new(
            vm_fd.clone(),
            next_slot,
            config.vram_size,
            vram_addr,
            mmio_addr,
        )?;
        bochs.enable_decoding()?;
        let (width, height) = config.resolution;
        bochs.set_mode(width, height, 32);
        let bochs = Arc::new(Mutex::new(bochs));
        pci.add(bochs.clone())
            .ok_or_else(|| VmError::Config("no free PCI slot".into()))?;
        mmio.insert(
            Arc::new(Mutex::new(PciMmioWindow::new(
                pci.clone(),
                layout::PCI_MMIO_START,
            ))),
            layout::PCI_MMIO_START,
            layout::PCI_MMIO_END - layout::PCI_MMIO_START,
        )?;

        // Disks: virtio-blk PCI devices, BARs after bochs-display's, each
        // with an I/O thread fed by ioeventfds.
        let disks = attach_disks(
            &config.disks,
            &persistent.disk_stats,
            &pci,
            &mem,
            mmio_addr + MMIO_BAR_SIZE,
            &vm_fd,
            &irq,
        )?;
        let disk_threads = disks
            .iter()
            .enumerate()
            .map(|(i, d)| IoThread::start(vm_fd.clone(), d.clone(), &format!("disk{i}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| VmError::Thread(e.to_string()))?;

        // Platform tables.
        let rsdp = arch::acpi::create_acpi_tables(
            &mem,
            &arch::acpi::AcpiConfig {
                vcpus: config.vcpus,
                pci_mmio_start: layout::PCI_MMIO_START,
                pci_mmio_end: layout::PCI_MMIO_END,
            },
        )
        .map_err(|e| VmError::Tables(e.to_string()))?;
        // The MP table fits 40 processors in the EBDA; larger guests are
        // described by ACPI alone, as on real machines.
        match arch::mptable::setup_mptable(&mem, config.vcpus) {
            Ok(()) => {}
            Err(arch::mptable::MptableError::VcpuCount { .. })
                if config.vcpus > arch::mptable::MAX_MPTABLE_VCPUS =>
            {
                tracing::info!("{} vCPUs: no MP table, ACPI only", config.vcpus);
            }
            Err(e) => return Err(VmError::Tables(e.to_string())),
        }

        // The kernel, with the framebuffer in screen_info.
        let fb = BootFramebuffer {
            base: vram_addr as u32,
            vram_size: config.vram_size as u32,
            width,
            height,
            stride: width * 4,
        };
        let entry = load_kernel(&mem, config.memory, &config.kernel, rsdp, Some(fb))?;
        let mode = match entry {
            EntryMode::Linux64 { .. } => arch::regs::BootMode::Long64,
            EntryMode::Pvh { .. } => arch::regs::BootMode::Protected32,
        };
        arch::regs::write_boot_gdt_and_idt(&mem, mode)
            .map_err(|e| VmError::Tables(e.to_string()))?;
        arch::regs::write_identity_page_tables(&mem).map_err(|e| VmError::Tables(e.to_string()))?;

        // vCPUs.
        let tsc_deadline = kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer);
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("get supported CPUID"))?;
        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);
        let control = Arc::new(VcpuControl::new(start_paused));
        let mut fds = Vec::new();
        for id in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("create vCPU"))?;
            let mut cpuid = supported.clone();
            arch::cpuid::filter_cpuid(&mut cpuid, id, config.vcpus);
            if tsc_deadline {
                arch::cpuid::set_tsc_deadline(&mut cpuid);
            }
            fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
            let msrs = Msrs::from_entries(&arch::regs::boot_msrs())
                .map_err(|e| VmError::Tables(format!("MSR list: {e:?}")))?;
            let taken = fd.set_msrs(&msrs).map_err(kvm_err("set MSRs"))?;
            if taken != msrs.as_slice().len() {
                let index = msrs.as_slice()[taken].index;
                tracing::warn!("KVM refused boot MSR {index:#x}; continuing without it");
            }
            fd.set_fpu(&arch::regs::boot_fpu())
                .map_err(kvm_err("set FPU"))?;
            arch::regs::setup_lapic_lint(&fd).map_err(kvm_err("set LAPIC"))?;
            if id == 0 {
                let sregs = fd.get_sregs().map_err(kvm_err("get sregs"))?;
                let (regs, sregs) = match entry {
                    EntryMode::Linux64 { entry } => (
                        arch::regs::linux64_regs(entry, layout::ZERO_PAGE),
                        arch::regs::long_mode_sregs(sregs),
                    ),
                    EntryMode::Pvh { entry } => (
                        arch::regs::pvh_regs(entry, layout::PVH_START_INFO),
                        arch::regs::protected_mode_sregs(sregs),
                    ),
                };
                fd.set_sregs(&sregs).map_err(kvm_err("set sregs"))?;
                fd.set_regs(&regs).map_err(kvm_err("set regs"))?;
            }
            fds.push(fd);
        }
        let mut vcpus = Vec::new();
        for (id, fd) in fds.into_iter().enumerate() {
            let handle = vcpu::spawn_vcpu(
                id as u32,
                fd,
                pio.clone(),
                mmio.clone(),
                control.clone(),
                on_stop.clone(),
            );
            match handle {
                Ok(h) => vcpus.push(h),
                Err(e) => {
                    vcpu::stop_all(&control, &mut vcpus);
                    return Err(VmError::Thread(e.to_string()));
                }
            }
        }
        Ok(Self {
            vcpus,
            control,
            serial,
            i8042,
            pm,
            bochs,
            disks,
            disk_threads,
            vm_fd,
            _kvm: kvm,
            _mem: mem,
        })
    }

    /// The vCPU threads.
    pub fn vcpus(&self) -> &[VcpuHandle] {
        &self.vcpus
    }

    /// Pauses every vCPU.
    pub fn pause(&self) {
        vcpu::pause_all(&self.control, &self.vcpus);
    }

    /// Resumes every vCPU.
    pub fn resume(&self) {
        vcpu::resume_all(&self.control);
    }

    /// Stops every vCPU; the VM cannot run again.
    pub fn stop(&mut self) {
        vcpu::stop_all(&self.control, &mut self.vcpus);
    }

    /// The VM's KVM handle.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm_fd
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
        self.disk_threads.clear();
        for disk in &self.disks {
            let dev = disk.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = dev.device().image().flush() {
                tracing::warn!("disk: {e}");
            }
        }
    }
}

/// Disks interrupt through MSI-X (KVM_SIGNAL_MSI) once the guest driver
/// enables it, and through INTx otherwise.
///
/// The first virtio-blk disk's INTx GSI; disk `n` uses `DISK_GSI_BASE + n`.
/// GSIs 16..23 are IOAPIC pins with no ISA IRQ and no PIC route (see
/// `arch::legacy_gsi_routing`). There is no ACPI `_PRT` yet: the GSI is
/// only written to each device's Interrupt Line register.
pub const DISK_GSI_BASE: u32 = 16;
/// At most this many disks (one GSI each, up to the last IOAPIC pin).
pub const MAX_DISKS: usize = 8;
/// Each virtio device's BAR (16 KiB, so 16 KiB apart and aligned).
const VIRTIO_BAR_STRIDE: u64 = crate::devices::virtio::pci::BAR_SIZE;

/// MSI-X messages into the VM through KVM_SIGNAL_MSI.
struct KvmMsi {
    vm: Arc<VmFd>,
}

impl MsiSink for KvmMsi {
    fn send(&self, address: u64, data: u32) {
        let msi = kvm_bindings::kvm_msi {
            address_lo: address as u32,
            address_hi: (address >> 32) as u32,
            data,
            ..Default::default()
        };
        if let Err(e) = self.vm.signal_msi(msi) {
            crate::ratelimit::guest_warn!("cannot signal MSI to {address:#x}: {e}");
        }
    }
}

/// Opens each disk and plugs a virtio-blk device for it into `pci`.
fn attach_disks(
    disks: &[DiskConfig],
    stats: &[Arc<BlockStats>],
    pci: &PciBus,
    mem: &GuestMemoryMmap,
    bar_start: u64,
    vm_fd: &Arc<VmFd>,
    irq: &dyn Fn(u32) -> IrqLine,
) -> Result<Vec<Arc<Mutex<VirtioPci<VirtioBlock>>>>, VmError> {
    if disks.len() > MAX_DISKS {
        return Err(VmError::Config(format!(
            "{} disks requested; at most {MAX_DISKS} are supported",
            disks.len()
        )));
    }
    let first_bar = bar_start.next_multiple_of(VIRTIO_BAR_STRIDE);
    let msi: Arc<dyn MsiSink> = Arc::new(KvmMsi { vm: vm_fd.clone() });
    let mut devices = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        let image = disk.open()?;
        let mut block = VirtioBlock::new(
            image,
            &disk
                .serial
                .clone()
                .unwrap_or_else(|| format!("vireo-disk-{i}")),
            disk.queues,
        )
        .with_unmap(disk.unmap);
        if let Some(s) = stats.get(i) {
            block = block.with_stats(s.clone());
        }
        let gsi = DISK_GSI_BASE + i as u32;
        let bar = first_bar + i as u64 * VIRTIO_BAR_STRIDE;
        let mut dev = VirtioPci::new(
            block,
            mem.clone(),
            bar,
            irq(gsi),
            gsi as u8,
            Some(msi.clone()),
        );
        dev.enable_decoding();
        let dev = Arc::new(Mutex::new(dev));
        pci.add(dev.clone())
            .ok_or_else(|| VmError::Config("no free PCI slot".into()))?;
        devices.push(dev);
    }
    Ok(devices)
}
