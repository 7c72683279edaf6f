//! The Details page's data: the domain's information and definition read
//! off the GTK thread, shown through `vm_details`.

use gettextrs::gettext;
use relm4::prelude::*;
use vireo_api::Domain;
use vireo_api::proto::{DomainInfo, Request, Response};

use super::{VmCmd, VmWindow};
use crate::vm_details;

impl VmWindow {
    pub(super) fn show_details(&mut self, info: &DomainInfo, domain: Option<&Domain>) {
        let mut sections = vec![vm_details::overview(info, domain)];
        if let Some(d) = domain {
            sections.extend(vm_details::hardware(d));
        }
        let old = std::mem::take(&mut self.ui.details_groups);
        self.ui.details_groups = vm_details::show(&self.ui.details, old, &sections);
        tracing::info!(
            "details {}: uuid {} state {}",
            self.name,
            info.summary.uuid,
            info.summary.state.as_virsh()
        );
    }

    pub(super) fn fetch_details(&self, sender: &ComponentSender<Self>) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let name = self.name.clone();
        let events = self.state_events;
        sender.oneshot_command(async move {
            let info = match client
                .call(Request::DomInfo {
                    domain: name.clone(),
                })
                .await
            {
                Ok(Response::Info { info }) => info,
                Ok(other) => {
                    return VmCmd::Error(
                        gettext("Could not read the virtual machine’s details"),
                        format!("unexpected answer {other:?}"),
                    );
                }
                Err(e) => {
                    return VmCmd::Error(
                        gettext("Could not read the virtual machine’s details"),
                        e.to_string(),
                    );
                }
            };
            let domain = match client
                .call(Request::DumpXml {
                    domain: name,
                    inactive: false,
                })
                .await
            {
                Ok(Response::Xml { xml }) => Domain::from_xml(&xml).ok().map(Box::new),
                _ => None,
            };
            VmCmd::Details(Box::new(info), domain, events)
        });
    }
}
