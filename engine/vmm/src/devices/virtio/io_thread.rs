//! Queue notifications through KVM ioeventfds, served by an I/O thread per
//! device, so that a guest's notify write does not wait for the disk on the
//! vCPU thread.
//!
//! Each queue's notify address (BAR4 + 0x3000 + 4 n) is an ioeventfd: KVM
//! completes the guest's write at once and signals the eventfd; the I/O
//! thread then processes the queue under the device lock. The
//! registrations follow BAR4 when the guest (or firmware) moves it or
//! turns decoding off. A notify that reaches the device as an MMIO exit
//! anyway (e.g. through the PCI configuration access capability) is still
//! processed synchronously.

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::VirtioDevice;
use super::pci::{NOTIFY_MULTIPLIER, NOTIFY_OFFSET, VirtioPci};

/// The I/O thread of one virtio device; stopped and joined when dropped.
pub struct IoThread {
    stop: EventFd,
    handle: Option<JoinHandle<()>>,
}

fn notify_address(bar: u64, queue: usize) -> IoEventAddress {
    IoEventAddress::Mmio(bar + NOTIFY_OFFSET + queue as u64 * u64::from(NOTIFY_MULTIPLIER))
}

impl IoThread {
    /// Registers the device's notify ioeventfds and starts its thread.
    pub fn start<D: VirtioDevice + 'static>(
        vm: Arc<VmFd>,
        device: Arc<Mutex<VirtioPci<D>>>,
        name: &str,
    ) -> io::Result<Self> {
        let lock =
            |d: &Arc<Mutex<VirtioPci<D>>>| d.lock().unwrap_or_else(|e| e.into_inner()).num_queues();
        let queues = lock(&device);
        let events = Arc::new(
            (0..queues)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<io::Result<Vec<_>>>()?,
        );
        let registered: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
        let rebind = {
            let vm = vm.clone();
            let events = events.clone();
            let registered = registered.clone();
            move |bar: Option<u64>| {
                let mut current = registered.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(old) = current.take() {
                    for (q, evt) in events.iter().enumerate() {
                        let _ = vm.unregister_ioevent(evt, &notify_address(old, q), NoDatamatch);
                    }
                }
                if let Some(new) = bar {
                    let ok = events.iter().enumerate().all(|(q, evt)| {
                        vm.register_ioevent(evt, &notify_address(new, q), NoDatamatch)
                            .map_err(|e| {
                                crate::ratelimit::guest_warn!("virtio: ioeventfd at {new:#x}: {e}")
                            })
                            .is_ok()
                    });
                    if ok {
                        tracing::debug!("virtio: notify ioeventfds at {new:#x}");
                        *current = Some(new);
                    } else {
                        // Fall back to MMIO exits for this BAR placement.
                        for (q, evt) in events.iter().enumerate() {
                            let _ =
                                vm.unregister_ioevent(evt, &notify_address(new, q), NoDatamatch);
                        }
                    }
                }
            }
        };
        {
            let mut dev = device.lock().unwrap_or_else(|e| e.into_inner());
            rebind(dev.bar_address());
            dev.set_bar_moved(Box::new(rebind));
        }
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let stop_fd = stop.try_clone()?;
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&device, &events, &stop_fd))?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

/// Waits for notifications (or the stop event) and processes queues.
fn run<D: VirtioDevice>(device: &Mutex<VirtioPci<D>>, events: &[EventFd], stop: &EventFd) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = events
        .iter()
        .chain(std::iter::once(stop))
        .map(|e| libc::pollfd {
            fd: e.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of
        // `fds.len()` pollfd structures for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!("virtio I/O thread: poll: {}", io::Error::last_os_error());
            return;
        }
        if fds.last().is_some_and(|f| f.revents != 0) {
            return;
        }
        for (q, evt) in events.iter().enumerate() {
            if fds[q].revents != 0 && evt.read().is_ok() {
                tracing::trace!("virtio: queue {q} notified through its ioeventfd");
                device
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .notify_queue(q);
            }
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
