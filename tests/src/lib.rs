//! Helpers for Vireo's end-to-end tests.
//!
//! [`guest`] builds the tiny freestanding test guests in `tests/guests/` with
//! the machine's gcc, as DESIGN.md prescribes: no SSE, no x87, no red zone,
//! bulk memory with `rep stos`/`rep movs`.

pub mod guest;
