//! The contract between Vireo's engine and its clients.
//!
//! Everything the app, `vireoctl` and `vireod` agree on lives here: how a
//! connection is named ([`uri`]), and what a domain is ([`domain`], read and
//! written as libvirt domain XML). Errors are plain English; the app
//! translates at its edge.

pub mod domain;
pub mod uri;

pub use domain::Domain;
pub use uri::ConnectUri;
