//! The connections' life: a section per connection, connecting (one task
//! per attempt that then forwards the engine's events), retries with
//! backoff, the remembered remote connections.

use adw::prelude::*;
use gettextrs::gettext;
use gtk::gio;
use relm4::prelude::*;
use vireo_api::client::Incoming;
use vireo_api::proto::{Request, Response};

use super::{CmdOut, ManagerWindow, Msg};
use crate::connection::{ConnState, Connection, Target};
use crate::engine::Endpoint;
use crate::remote;

impl ManagerWindow {
    /// Adds a connection's section and starts connecting it.
    pub(super) fn add_connection(
        &mut self,
        target: Target,
        connect: bool,
        sender: &ComponentSender<Self>,
    ) {
        let id = self.conns.len();
        let conn = Connection::new(id, target.clone());
        self.sections.append(&conn.store);
        self.conns.push(conn);

        let conn_menu = gio::Menu::new();
        for (label, action, remote_only) in [
            (gettext("Connect"), "win.conn-connect", false),
            (gettext("Disconnect"), "win.conn-disconnect", false),
            (gettext("Remove"), "win.conn-remove", true),
        ] {
            if remote_only && !target.is_remote() {
                continue;
            }
            let item = gio::MenuItem::new(Some(&label), None);
            item.set_action_and_target_value(Some(action), Some(&(id as u32).to_variant()));
            conn_menu.append_item(&item);
        }
        if let Some(c) = self.conns.last() {
            c.add_menu(&conn_menu);
        }
        if connect {
            self.start_connect(id, sender);
        } else if let Some(c) = self.conns.get_mut(id) {
            c.wanted = false;
            c.set_state(ConnState::Disconnected);
        }
    }

    /// Connects connection `id` (again): one task connects, lists the
    /// domains, then forwards events until the connection ends or is
    /// cancelled.
    pub(super) fn start_connect(&mut self, id: usize, sender: &ComponentSender<Self>) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        c.generation += 1;
        c.wanted = true;
        c.set_state(ConnState::Connecting);
        c.set_error(None);
        let generation = c.generation;
        let target = c.target.clone();
        let (cancel, mut cancelled) = tokio::sync::oneshot::channel();
        c.cancel = Some(cancel);
        let s = sender.input_sender().clone();
        let prompter: std::sync::Arc<dyn vireo_remote::Prompter> =
            std::sync::Arc::new(remote::DialogPrompter::new(move |request| {
                s.emit(Msg::Prompt(request))
            }));
        sender.command(move |out, shutdown| {
            shutdown
                .register(async move {
                    let (endpoint, client, mut incoming) = match target.connect(prompter).await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = out.send(CmdOut::ConnectFailed(id, generation, e));
                            return;
                        }
                    };
                    match client.call(Request::ListDomains { all: true }).await {
                        Ok(Response::Domains { domains }) => {
                            let _ = out.send(CmdOut::Connected(
                                id,
                                generation,
                                endpoint.clone(),
                                client,
                                domains,
                            ));
                        }
                        Ok(other) => {
                            let _ = out.send(CmdOut::ConnectFailed(
                                id,
                                generation,
                                format!("unexpected answer to list: {other:?}").into(),
                            ));
                            return;
                        }
                        Err(e) => {
                            let _ = out.send(CmdOut::ConnectFailed(
                                id,
                                generation,
                                e.to_string().into(),
                            ));
                            return;
                        }
                    }
                    // The SSH connection's end shows on the API stream; it
                    // is also checked every second, in case a channel lingers.
                    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                    loop {
                        let i = tokio::select! {
                            i = incoming.recv() => match i {
                                Some(i) => i,
                                None => Incoming::Disconnected("the connection ended".into()),
                            },
                            _ = &mut cancelled => {
                                if let Endpoint::Remote(conn) = &endpoint {
                                    conn.close().await;
                                }
                                return;
                            }
                            _ = tick.tick() => {
                                if !endpoint.is_closed() {
                                    continue;
                                }
                                Incoming::Disconnected("the SSH connection ended".into())
                            }
                        };
                        let last = matches!(i, Incoming::Disconnected(_));
                        if out.send(CmdOut::Incoming(id, i)).is_err() || last {
                            break;
                        }
                    }
                })
                .drop_on_shutdown()
        });
    }

    /// Connection `id` failed or dropped: retry a wanted remote one after
    /// its backoff (1 s doubling to 60 s).
    pub(super) fn schedule_retry(&mut self, id: usize, sender: &ComponentSender<Self>) {
        let Some(c) = self.conns.get_mut(id) else {
            return;
        };
        if !c.wanted || !c.target.is_remote() || !c.was_connected {
            c.set_state(ConnState::Disconnected);
            return;
        }
        let delay = c.backoff;
        c.backoff = (c.backoff * 2).min(60);
        c.set_state(ConnState::Retrying(delay));
        let generation = c.generation;
        sender.oneshot_command(async move {
            tokio::time::sleep(std::time::Duration::from_secs(delay)).await;
            CmdOut::Retry(id, generation)
        });
    }

    /// Writes the remembered connections.
    pub(super) fn save_connections(&self, sender: &ComponentSender<Self>) {
        let Some(path) = &self.saved_path else {
            return;
        };
        if let Err(e) = remote::save(path, &self.saved) {
            self.toast(&gettext("Could not save the connections"), e, sender);
        }
    }
}
