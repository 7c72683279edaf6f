//! The contract between Vireo's engine and its clients.
//!
//! Everything the app, `vireoctl` and `vireod` agree on lives here: how a
//! connection is named ([`uri`]), and what a domain is ([`domain`], read and
//! written as libvirt domain XML), and how they talk ([`proto`]: typed
//! messages in length-prefixed frames over any byte stream; [`client`]:
//! blocking and async clients); [`storage`] names pools and volumes.
//! Errors are plain English; the app
//! translates at its edge.

pub mod base64;
pub mod client;
pub mod domain;
pub mod import;
pub mod proto;
pub mod storage;
pub mod uri;

pub use client::{AsyncClient, Client, ClientError, Incoming};
pub use domain::Domain;
pub use uri::ConnectUri;
