//! The selected VM: following the list's selection, keeping it across
//! engine events, the actions that fit its state, its context menu.

use adw::prelude::*;
use gtk::{gdk, glib};
use relm4::prelude::*;
use vireo_api::proto::DomainState;

use super::ManagerWindow;
use crate::vm_list::{self, Entry};

impl ManagerWindow {
    pub(super) fn set_state(&mut self, conn: usize, name: &str, state: Option<DomainState>) {
        self.apply_states(conn, vec![(name.to_owned(), state)]);
    }

    /// Applies VM state changes (`None`: undefined) to connection `conn`'s
    /// section in one go, keeping the selection (a VM that went loses it
    /// to the section's first VM) and the scroll position.
    pub(super) fn apply_states(
        &mut self,
        conn: usize,
        changes: Vec<(String, Option<DomainState>)>,
    ) {
        let Some(c) = self.conns.get_mut(conn) else {
            return;
        };
        c.apply(&changes);
        let uri = c.target.uri();
        for (name, state) in &changes {
            let state = state.map_or("undefined", |s| s.as_virsh());
            tracing::info!("vm {name}: {state}");
            tracing::info!("connection {uri}: vm {name}: {state}");
        }
        if let Some((sc, sn)) = &self.selected
            && *sc == conn
            && c.vm(sn).is_none()
        {
            self.selected = None;
        }
        // With nothing selected, select the first VM, so the toolbar and
        // the keyboard act on something.
        if self.selected.is_none()
            && let Some(first) = c.first_vm()
        {
            self.select(conn, &first, true);
        }
    }

    /// The position of connection `conn`'s `entry` in the list.
    fn position(&self, conn: usize, entry: &Entry) -> Option<u32> {
        let before: u32 = self
            .conns
            .get(..conn)?
            .iter()
            .map(|c| c.store.n_items())
            .sum();
        Some(before + self.conns.get(conn)?.store.find(entry)?)
    }

    /// Selects a VM's row and, with `focus`, gives it the keyboard focus
    /// (scrolled into view).
    pub(super) fn select(&mut self, conn: usize, entry: &Entry, focus: bool) {
        let Some(pos) = self.position(conn, entry) else {
            return;
        };
        self.selection.set_selected(pos);
        self.note_selection();
        if focus && !focus_selected(&self.list, &self.selection) {
            // Not laid out yet (the window is still opening): try again
            // for a while.
            let (list, selection) = (self.list.clone(), self.selection.clone());
            let mut tries = 0;
            glib::timeout_add_local(std::time::Duration::from_millis(20), move || {
                tries += 1;
                if focus_selected(&list, &selection) || tries >= 250 {
                    glib::ControlFlow::Break
                } else {
                    glib::ControlFlow::Continue
                }
            });
        }
    }

    /// Takes the list's selection as the selected VM.
    pub(super) fn note_selection(&mut self) {
        let now = self
            .selection
            .selected_item()
            .and_downcast::<Entry>()
            .and_then(|e| e.vm());
        if now != self.selected {
            if let Some((_, name)) = &now {
                tracing::debug!("selected {name}");
            }
            self.selected = now;
        }
    }

    /// The selected VM's state.
    pub(super) fn selected_state(&self) -> Option<DomainState> {
        let (conn, name) = self.selected.as_ref()?;
        self.conns.get(*conn)?.vm_state(name)
    }

    /// Enables the actions that fit the selected VM's state.
    pub(super) fn update_actions(&self) {
        let state = self.selected_state();
        let connected = self
            .selected
            .as_ref()
            .and_then(|(c, _)| self.conns.get(*c))
            .is_some_and(|c| c.client.is_some());
        for (action, a) in &self.actions {
            a.set_enabled(connected && state.is_some_and(|s| action.allowed(s)));
        }
    }

    /// Pops up the context menu for the selected row, at the pointer
    /// (`Some`, the list's coordinates) or under the row (keyboard).
    pub(super) fn context_menu(&self, at: Option<(f64, f64)>) {
        let rect = match at {
            Some((x, y)) => gdk::Rectangle::new(x as i32, y as i32, 1, 1),
            None => {
                let Some(entry) = self.selection.selected_item().and_downcast::<Entry>() else {
                    return;
                };
                let Some(bounds) =
                    vm_list::row_of(&self.list, &entry).and_then(|r| r.compute_bounds(&self.list))
                else {
                    return;
                };
                gdk::Rectangle::new(
                    bounds.x() as i32 + 48,
                    (bounds.y() + bounds.height()) as i32,
                    1,
                    1,
                )
            }
        };
        self.menu.set_pointing_to(Some(&rect));
        self.menu.popup();
        tracing::info!("context menu shown");
    }
}

/// Scrolls the selected row into view and gives it the keyboard focus;
/// false while the list has no widget for it yet.
fn focus_selected(list: &gtk::ListView, selection: &gtk::SingleSelection) -> bool {
    let Some(entry) = selection.selected_item().and_downcast::<Entry>() else {
        return true;
    };
    if !list.is_mapped() {
        return false;
    }
    // GTK 4.8 has no ListView::scroll_to: this action scrolls to the item
    // and makes it the one the list moves on from.
    let _ = list.activate_action(
        "list.scroll-to-item",
        Some(&selection.selected().to_variant()),
    );
    vm_list::row_of(list, &entry)
        .and_then(|row| row.parent())
        .is_some_and(|item| item.grab_focus())
}
