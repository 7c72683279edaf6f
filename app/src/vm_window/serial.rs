//! The Serial page's stream: a watcher on the domain's serial console
//! through the window's endpoint, its output, input and held state.

use relm4::prelude::*;
use vireo_api::client::Incoming;

use super::{VmCmd, VmWindow};

/// What the serial console's stream reports.
#[derive(Debug)]
pub enum SerialCmd {
    /// The serial console is open.
    Attached(vireo_api::client::AsyncClient),
    /// Bytes from the serial console.
    Output(Vec<u8>),
    /// The serial console ended or could not open.
    Closed(String),
    /// Another client (named) holds the serial console, or (`None`) no
    /// longer does.
    Held(Option<String>),
}

impl VmWindow {
    /// Opens the serial console unless it is open or opening.
    pub(super) fn open_serial(&mut self, sender: &ComponentSender<Self>) {
        if self.serial_client.is_some() || self.serial_connecting {
            return;
        }
        self.serial_connecting = true;
        let name = self.name.clone();
        let endpoint = self.endpoint.clone();
        sender.command(move |out, shutdown| {
            shutdown
                .register(async move {
                    let (client, mut incoming) = match endpoint.open_serial(&name).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = out.send(VmCmd::Serial(SerialCmd::Closed(e)));
                            return;
                        }
                    };
                    let _ = out.send(VmCmd::Serial(SerialCmd::Attached(client)));
                    while let Some(msg) = incoming.recv().await {
                        let cmd = match msg {
                            Incoming::ConsoleOutput(data) => SerialCmd::Output(data),
                            Incoming::ConsoleClosed => {
                                SerialCmd::Closed("the serial console ended".into())
                            }
                            Incoming::Disconnected(why) => SerialCmd::Closed(why),
                            Incoming::ConsoleHeld(by) => SerialCmd::Held(Some(by)),
                            Incoming::ConsoleReleased => SerialCmd::Held(None),
                            Incoming::Event(_) => continue,
                        };
                        let end = matches!(cmd, SerialCmd::Closed(_));
                        if out.send(VmCmd::Serial(cmd)).is_err() || end {
                            return;
                        }
                    }
                })
                .drop_on_shutdown()
        });
    }

    /// Sends what was typed into the serial page.
    pub(super) fn serial_input(&self, data: Vec<u8>, sender: &ComponentSender<Self>) {
        // (The engine would drop it while another client holds the
        // console.)
        if !self.serial.input_enabled() {
            tracing::debug!("serial {}: input while held, not sent", self.name);
        } else if let Some(c) = self.serial_client.clone() {
            sender.oneshot_command(async move {
                match c.console_input(&data).await {
                    Ok(()) => VmCmd::Done,
                    Err(e) => VmCmd::Serial(SerialCmd::Closed(e.to_string())),
                }
            });
        }
    }

    pub(super) fn serial_cmd(&mut self, cmd: SerialCmd) {
        match cmd {
            SerialCmd::Attached(client) => {
                self.serial_connecting = false;
                self.serial_client = Some(client);
                self.serial.set_connected(true);
                tracing::info!("serial {}: attached", self.name);
            }
            SerialCmd::Output(data) => {
                tracing::debug!("serial {}: output \"{}\"", self.name, data.escape_ascii());
                self.serial.feed(&data);
            }
            SerialCmd::Held(by) => {
                self.serial.set_held(by.as_deref());
                match by {
                    Some(by) => tracing::info!(
                        "serial {}: held by {by}: banner shown, input enabled {}",
                        self.name,
                        self.serial.input_enabled()
                    ),
                    None => tracing::info!(
                        "serial {}: released: banner hidden, input enabled {}",
                        self.name,
                        self.serial.input_enabled()
                    ),
                }
            }
            SerialCmd::Closed(why) => {
                tracing::info!("serial {}: closed: {why}", self.name);
                self.serial_connecting = false;
                self.serial_client = None;
                self.serial.set_connected(false);
            }
        }
    }
}
