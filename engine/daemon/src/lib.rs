//! `vireod`, Vireo's host engine.
//!
//! [`paths`] decides where an engine keeps its sockets and state;
//! [`state`] writes that state so that a crash never leaves half a file.

pub mod paths;
pub mod state;
