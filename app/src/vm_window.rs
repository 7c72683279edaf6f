//! One VM's window: its graphical console, embedded.

use adw::prelude::*;
use gettextrs::gettext;
use relm4::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::client::AsyncClient;
use vireo_api::proto::Request;
use vireo_console::{ConsoleEvent, ConsoleView, Input, Session};

use crate::engine;

/// X keysyms used by the Send Key menu.
mod keysym {
    pub const CONTROL_L: u32 = 0xffe3;
    pub const ALT_L: u32 = 0xffe9;
    pub const DELETE: u32 = 0xffff;
    pub const BACKSPACE: u32 = 0xff08;
    pub const PRINT: u32 = 0xff61;
    pub const F1: u32 = 0xffbe;
}

/// A VM window.
#[derive(Debug)]
pub struct VmWindow {
    name: String,
    client: Option<AsyncClient>,
    console: ConsoleView,
    session: Option<Session>,
    /// Why the console is not shown (translated), and the technical details.
    message: Option<(String, String)>,
}

/// Input to a VM window.
#[derive(Debug)]
pub enum VmMsg {
    /// Press a key combination (keysyms, pressed in order, released in
    /// reverse).
    SendKeys(Vec<u32>),
    /// The console session ended.
    Closed(String),
    /// Start the VM.
    Run,
    /// The VM (re)started: connect the console.
    Reconnect,
}

/// Results of work off the GTK thread.
#[derive(Debug)]
pub enum VmCmd {
    /// The console is connected.
    Attached(Session, UnboundedReceiver<ConsoleEvent>),
    /// It could not be.
    Failed(String),
    /// The VM was started.
    Started,
}

#[relm4::component(pub)]
impl Component for VmWindow {
    /// The domain's name and the engine connection.
    type Init = (String, Option<AsyncClient>);
    type Input = VmMsg;
    type Output = ();
    type CommandOutput = VmCmd;

    view! {
        adw::Window {
            #[watch]
            set_title: Some(&gettext("{name} – Vireo").replace("{name}", &model.name)),
            set_default_size: (860, 700),

            #[wrap(Some)]
            set_content = &gtk::Box {
                set_orientation: gtk::Orientation::Vertical,

                adw::HeaderBar {
                    pack_end = &gtk::MenuButton {
                        set_icon_name: "input-keyboard-symbolic",
                        set_tooltip_text: Some(&gettext("Send Key")),
                        #[wrap(Some)]
                        set_popover = &gtk::Popover {
                            gtk::Box {
                                set_orientation: gtk::Orientation::Vertical,
                                gtk::Button {
                                    set_label: &gettext("Ctrl+Alt+Del"),
                                    add_css_class: "flat",
                                    connect_clicked => VmMsg::SendKeys(vec![
                                        keysym::CONTROL_L, keysym::ALT_L, keysym::DELETE,
                                    ]),
                                },
                                gtk::Button {
                                    set_label: &gettext("Ctrl+Alt+Backspace"),
                                    add_css_class: "flat",
                                    connect_clicked => VmMsg::SendKeys(vec![
                                        keysym::CONTROL_L, keysym::ALT_L, keysym::BACKSPACE,
                                    ]),
                                },
                                gtk::Button {
                                    set_label: &gettext("Ctrl+Alt+F1"),
                                    add_css_class: "flat",
                                    connect_clicked => VmMsg::SendKeys(vec![
                                        keysym::CONTROL_L, keysym::ALT_L, keysym::F1,
                                    ]),
                                },
                                gtk::Button {
                                    set_label: &gettext("Print Screen"),
                                    add_css_class: "flat",
                                    connect_clicked => VmMsg::SendKeys(vec![keysym::PRINT]),
                                },
                            },
                        },
                    },
                },

                gtk::Stack {
                    set_vexpand: true,

                    add_named[Some("console")] = model.console.widget(),

                    add_named[Some("message")] = &adw::StatusPage {
                        set_icon_name: Some("computer-symbolic"),
                        #[watch]
                        set_title: model.message.as_ref().map_or("", |m| m.0.as_str()),
                        #[watch]
                        set_description: model.message.as_ref().map(|m| m.1.as_str()),

                        gtk::Button {
                            set_label: &gettext("Run"),
                            set_halign: gtk::Align::Center,
                            add_css_class: "pill",
                            add_css_class: "suggested-action",
                            #[watch]
                            set_visible: model.client.is_some() && model.session.is_none(),
                            connect_clicked => VmMsg::Run,
                        },
                    },

                    #[watch]
                    set_visible_child_name: if model.message.is_some() { "message" } else { "console" },
                },
            },
        }
    }

    fn init(
        (name, client): Self::Init,
        root: Self::Root,
        sender: ComponentSender<Self>,
    ) -> ComponentParts<Self> {
        let model = VmWindow {
            name,
            client,
            console: ConsoleView::new(),
            session: None,
            message: None,
        };
        let widgets = view_output!();
        sender.input(VmMsg::Reconnect);
        ComponentParts { model, widgets }
    }

    fn update(&mut self, msg: VmMsg, sender: ComponentSender<Self>, _root: &Self::Root) {
        match msg {
            VmMsg::SendKeys(keys) => {
                if let Some(s) = &self.session {
                    for &keysym in &keys {
                        s.send(Input::Key { keysym, down: true });
                    }
                    for &keysym in keys.iter().rev() {
                        s.send(Input::Key {
                            keysym,
                            down: false,
                        });
                    }
                }
            }
            VmMsg::Closed(why) => {
                tracing::info!("console {}: closed: {why}", self.name);
                self.session = None;
                self.message = Some((gettext("The Virtual Machine Is Off"), why));
            }
            VmMsg::Run => {
                if let Some(client) = self.client.clone() {
                    let name = self.name.clone();
                    sender.oneshot_command(async move {
                        match client.call(Request::Start { domain: name }).await {
                            // The manager forwards the Started event as Reconnect.
                            Ok(_) => VmCmd::Started,
                            Err(e) => VmCmd::Failed(e.to_string()),
                        }
                    });
                }
            }
            VmMsg::Reconnect => {
                if self.session.is_some() {
                    return;
                }
                let name = self.name.clone();
                sender.oneshot_command(async move {
                    match engine::open_console(&name).await {
                        Ok((session, events)) => VmCmd::Attached(session, events),
                        Err(e) => VmCmd::Failed(e),
                    }
                });
            }
        }
    }

    fn update_cmd(&mut self, cmd: VmCmd, sender: ComponentSender<Self>, _root: &Self::Root) {
        match cmd {
            VmCmd::Attached(session, events) => {
                let input = sender.input_sender().clone();
                self.console.attach(session.clone(), events, move |why| {
                    input.emit(VmMsg::Closed(why));
                });
                self.session = Some(session);
                self.message = None;
                self.console.widget().grab_focus();
                tracing::info!("console {}: attached", self.name);
            }
            VmCmd::Failed(why) => {
                tracing::info!("console {}: {why}", self.name);
                self.message = Some((gettext("The Console Is Not Available"), why));
            }
            VmCmd::Started => {}
        }
    }
}
