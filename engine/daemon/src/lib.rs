//! `vireod`, Vireo's host engine.
//!
//! [`paths`] decides where an engine keeps its sockets and state;
//! [`state`] writes that state so that a crash never leaves half a file;
//! [`engine`] holds domains and their lifecycle; [`vmm`] runs and reads one
//! `vireo-vmm`; [`serial`] keeps each running domain's console backlog and
//! sessions; [`pools`] holds storage pools and volumes; [`server`]
//! serves the API to clients; [`launch`] starts the
//! session engine for clients that find it absent.

pub mod engine;
pub mod launch;
pub mod paths;
pub mod pools;
pub mod serial;
pub mod server;
pub mod state;
pub mod vmm;
