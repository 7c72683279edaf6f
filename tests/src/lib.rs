//! Helpers for Vireo's end-to-end tests.
//!
//! [`guest`] builds the tiny freestanding test guests in `tests/guests/` with
//! the machine's gcc, as DESIGN.md prescribes: no SSE, no x87, no red zone,
//! bulk memory with `rep stos`/`rep movs`. [`report`] reads the `key=value`
//! lines they print on COM1, and [`qemu`] runs them under QEMU, the
//! reference that vireo-vmm is compared with.

pub mod bytes;
pub mod demo;
pub mod desktop;
pub mod engine;
pub mod guest;
pub mod qemu;
pub mod report;
