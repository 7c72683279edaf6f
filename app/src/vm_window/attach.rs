//! Attaching the console.
//!
//! One attempt at a time: it asks the engine whether the VM runs (so a VM
//! that is off gets a plain sentence rather than the engine's refusal to
//! attach), then attaches through the window's endpoint. A reconnect asked
//! for while an attempt is in flight is queued: if that attempt does not
//! attach, its answer, which may predate the request (the VM reported off
//! just before it started), is dropped and a new attempt made. Attempts
//! are numbered, and the answer of one that something newer superseded
//! (Reconnect pressed, the remote host reconnected, the VM stopped) is
//! dropped.
//!
//! When the console cannot be attached while the VM runs (its VNC server
//! not up, the engine restarting), the window tries again by itself, as
//! remote-viewer's reconnection does: after [`RETRY_DELAYS`], only while
//! the VM is known to run and the window is open; an attached console, the
//! VM stopping or the window closing end the retries. Reconnect tries at
//! once with a fresh budget.
//!
//! Attaching does not renew the budget: a console dropped soon after it
//! attached (a VNC server that accepts and then closes) counts as one more
//! failed attempt and is retried after the next wait, so such a server
//! gets at most [`RETRY_DELAYS`]`.len()` more attempts. Only a console that
//! stayed attached for [`STABLE_AFTER`] earns a fresh budget when it closes
//! (and is then re-attached at once).

use std::time::{Duration, Instant};

use adw::prelude::*;
use gettextrs::gettext;
use relm4::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;
use vireo_api::proto::{DomainInfo, DomainState, Request, Response};
use vireo_console::{ConsoleEvent, Session};

use super::{VmCmd, VmMsg, VmWindow};

/// The waits before the automatic retries after a failed attach: growing,
/// and bounded (15 s in all; then only Reconnect tries again).
pub(super) const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
];

/// How long a console must stay attached for its closing to renew the
/// retry budget rather than count as one more failed attempt.
pub(super) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How an attach attempt ended.
#[derive(Debug)]
pub enum AttachResult {
    /// The console is connected.
    Attached(Session, UnboundedReceiver<ConsoleEvent>),
    /// It could not be (why, in English); `state` is what the engine said
    /// just before, when it was asked.
    Failed {
        why: String,
        state: Option<DomainState>,
    },
    /// The VM is not running.
    Off(Box<DomainInfo>),
}

/// The bookkeeping of attach attempts and automatic retries, apart from
/// GTK so that it is unit tested.
#[derive(Debug, Default)]
pub(super) struct Attach {
    /// The latest attempt's number; answers of older ones are dropped.
    generation: u64,
    /// Whether the latest attempt has not answered yet.
    in_flight: bool,
    /// A reconnect was asked for while the attempt was in flight.
    again: bool,
    /// Automatic retries made since the budget was last reset.
    retries: usize,
    /// The token of the retry waiting for its time, if any.
    pending: Option<u64>,
    /// The last token handed out.
    tokens: u64,
    /// When the console attached, while it is.
    attached_at: Option<Instant>,
}

/// What to do with an attempt's answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Show it.
    Use,
    /// Drop it: a newer attempt or a lifecycle event superseded it.
    Stale,
    /// Drop it and make a new attempt (a reconnect was asked for
    /// meanwhile, and this one did not attach).
    Again,
}

/// An automatic retry, due after `delay`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Retry {
    pub token: u64,
    pub delay: Duration,
    /// 1 for the first retry since the budget was reset.
    pub number: usize,
}

impl Attach {
    /// A reconnect is asked for: the new attempt's number, or `None` when
    /// it is queued behind the one in flight. `supersede` starts a new
    /// attempt anyway (the older one's answer will be dropped). A pending
    /// retry is replaced by the attempt.
    pub fn begin(&mut self, supersede: bool) -> Option<u64> {
        if self.in_flight && !supersede {
            self.again = true;
            return None;
        }
        self.generation += 1;
        self.in_flight = true;
        self.again = false;
        self.pending = None;
        Some(self.generation)
    }

    /// Attempt `generation` answered (`attached`: with a console).
    pub fn answer(&mut self, generation: u64, attached: bool) -> Answer {
        if generation != self.generation || !self.in_flight {
            return Answer::Stale;
        }
        self.in_flight = false;
        if std::mem::take(&mut self.again) && !attached {
            Answer::Again
        } else {
            Answer::Use
        }
    }

    /// The VM stopped: the attempt in flight (if any) no longer counts,
    /// and neither do retries.
    pub fn supersede(&mut self) {
        self.generation += 1;
        self.in_flight = false;
        self.again = false;
        self.reset();
    }

    /// The next automatic retry, or `None` once the budget is used up.
    pub fn schedule_retry(&mut self) -> Option<Retry> {
        if self.pending.is_some() {
            return None;
        }
        let delay = *RETRY_DELAYS.get(self.retries)?;
        self.retries += 1;
        self.tokens += 1;
        self.pending = Some(self.tokens);
        Some(Retry {
            token: self.tokens,
            delay,
            number: self.retries,
        })
    }

    /// Whether the retry with `token` is still wanted now that its time
    /// came.
    pub fn retry_due(&mut self, token: u64) -> bool {
        if self.pending == Some(token) {
            self.pending = None;
            true
        } else {
            false
        }
    }

    /// Whether a retry waits for its time.
    pub fn retry_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Cancels the pending retry (the window closed); the budget stays
    /// used.
    pub fn stop_retrying(&mut self) {
        self.pending = None;
    }

    /// The console attached at `now`. The budget stays as used: it is
    /// renewed only if the console stays attached (see [`Self::closed`]).
    pub fn attached(&mut self, now: Instant) {
        self.pending = None;
        self.attached_at = Some(now);
    }

    /// The attached console closed at `now`: whether it had stayed
    /// attached for [`STABLE_AFTER`], in which case the budget is fresh
    /// again (try at once). Otherwise its end is one more failed attempt,
    /// retried after the next wait of the budget left.
    pub fn closed(&mut self, now: Instant) -> bool {
        let lived = self
            .attached_at
            .take()
            .is_some_and(|at| now.saturating_duration_since(at) >= STABLE_AFTER);
        if lived {
            self.reset();
        }
        lived
    }

    /// Cancels the pending retry and gives a fresh budget (the VM is off,
    /// Reconnect was pressed, or the connection came back).
    pub fn reset(&mut self) {
        self.pending = None;
        self.retries = 0;
    }
}

impl VmWindow {
    /// Attaches the console unless it is attached (see the module docs;
    /// `supersede`: do not wait for an attempt in flight).
    pub(super) fn reconnect(&mut self, supersede: bool, sender: &ComponentSender<Self>) {
        if self.session.is_some() {
            return;
        }
        let Some(generation) = self.attach.begin(supersede) else {
            tracing::info!(
                "console {}: reconnect queued behind the attempt in flight",
                self.name
            );
            return;
        };
        let name = self.name.clone();
        let client = self.client.clone();
        let endpoint = self.endpoint.clone();
        sender.oneshot_command(async move {
            let mut state = None;
            if let Some(c) = &client
                && let Ok(Response::Info { info }) = c
                    .call(Request::DomInfo {
                        domain: name.clone(),
                    })
                    .await
            {
                if !info.summary.state.is_active() {
                    return VmCmd::Attach(generation, AttachResult::Off(Box::new(info)));
                }
                state = Some(info.summary.state);
            }
            let result = match endpoint.open_console(&name).await {
                Ok((session, events)) => AttachResult::Attached(session, events),
                Err(why) => AttachResult::Failed { why, state },
            };
            VmCmd::Attach(generation, result)
        });
        self.open_serial(sender);
    }

    /// The answer of attempt `generation`.
    pub(super) fn attach_answer(
        &mut self,
        generation: u64,
        result: AttachResult,
        sender: &ComponentSender<Self>,
        root: &adw::Window,
    ) {
        let attached = matches!(result, AttachResult::Attached(..));
        match self.attach.answer(generation, attached) {
            Answer::Stale => {
                tracing::info!(
                    "console {}: the answer of superseded attempt {generation} dropped",
                    self.name
                );
                return;
            }
            Answer::Again => {
                tracing::info!(
                    "console {}: a reconnect was asked for during attempt {generation}: trying again",
                    self.name
                );
                self.reconnect(false, sender);
                return;
            }
            Answer::Use => {}
        }
        match result {
            AttachResult::Attached(session, events) => {
                let input = sender.input_sender().clone();
                let resized = sender.input_sender().clone();
                self.console.attach(
                    session.clone(),
                    events,
                    move |r| resized.emit(VmMsg::Resized(r)),
                    move |why| input.emit(VmMsg::Closed(why)),
                );
                self.session = Some(session);
                self.message = None;
                self.console_failed = false;
                self.attach.attached(Instant::now());
                self.state = Some(DomainState::Running);
                if self.ui.stack.visible_child_name().as_deref() == Some("console") {
                    self.console.focus_widget().grab_focus();
                }
                tracing::info!("console {}: attached", self.name);
                self.fetch_details(sender);
            }
            AttachResult::Failed { why, state } => self.unavailable(why, state, sender, root),
            AttachResult::Off(info) => {
                self.state = Some(info.summary.state);
                self.attach.reset();
                self.show_off(info.summary.state, &info.summary.reason);
                self.show_details(&info, None);
                self.fetch_details(sender);
            }
        }
    }

    /// The attached console closed (`why`, in English). If the VM is known
    /// to be off, or the console had stayed attached a while, an attempt
    /// is made at once (it learns why the VM stopped, or re-attaches with a
    /// fresh budget); a console dropped soon after attaching is one more
    /// failed attempt, retried after the next wait while the budget lasts.
    pub(super) fn console_closed(
        &mut self,
        why: String,
        sender: &ComponentSender<Self>,
        root: &adw::Window,
    ) {
        tracing::info!("console {}: closed: {why}", self.name);
        self.session = None;
        let lived = self.attach.closed(Instant::now());
        if lived || !self.state.is_some_and(DomainState::is_active) {
            self.console_failed = false;
            self.message = Some((gettext("The virtual machine is off"), String::new()));
            // Ask why (off or crashed), and refresh the details.
            sender.input(VmMsg::Reconnect);
        } else {
            tracing::info!(
                "console {}: closed within {} s of attaching",
                self.name,
                STABLE_AFTER.as_secs()
            );
            self.unavailable(why, None, sender, root);
        }
    }

    /// The console could not be attached: says so, and schedules a retry
    /// while the VM runs, the window is open and the budget lasts.
    fn unavailable(
        &mut self,
        why: String,
        state: Option<DomainState>,
        sender: &ComponentSender<Self>,
        root: &adw::Window,
    ) {
        if state.is_some() {
            self.state = state;
        }
        self.console_failed = true;
        let running = self.state.is_some_and(DomainState::is_active);
        let retry = if running && root.is_visible() {
            self.attach.schedule_retry()
        } else {
            None
        };
        let details = match retry {
            Some(Retry {
                token,
                delay,
                number,
            }) => {
                tracing::info!(
                    "console {}: not available: {why}; retry {number} of {} in {} s",
                    self.name,
                    RETRY_DELAYS.len(),
                    delay.as_secs()
                );
                sender.command(move |out, shutdown| {
                    shutdown
                        .register(async move {
                            tokio::time::sleep(delay).await;
                            let _ = out.send(VmCmd::RetryDue(token));
                        })
                        .drop_on_shutdown()
                });
                // Translators: {error} is the engine's English text.
                gettext("{error}\n\nTrying again in {seconds} s.")
                    .replace("{error}", &why)
                    .replace("{seconds}", &delay.as_secs().to_string())
            }
            None if running => {
                tracing::info!(
                    "console {}: not available: {why}; no automatic retry left",
                    self.name
                );
                // Translators: {error} is the engine's English text.
                gettext("{error}\n\nPress Reconnect to try again.").replace("{error}", &why)
            }
            None => {
                tracing::info!("console {}: not available: {why}", self.name);
                why
            }
        };
        self.message = Some((gettext("The console is not available"), details));
    }

    /// A retry's time came.
    pub(super) fn retry_due(
        &mut self,
        token: u64,
        sender: &ComponentSender<Self>,
        root: &adw::Window,
    ) {
        if !self.attach.retry_due(token) {
            return;
        }
        if self.session.is_some()
            || !self.state.is_some_and(DomainState::is_active)
            || !root.is_visible()
        {
            tracing::info!("console {}: retry no longer wanted", self.name);
            return;
        }
        tracing::info!("console {}: trying to attach again", self.name);
        self.reconnect(false, sender);
    }

    /// The VM's state changed (an engine event).
    pub(super) fn set_state(
        &mut self,
        state: DomainState,
        reason: &str,
        sender: &ComponentSender<Self>,
    ) {
        self.state = Some(state);
        self.state_events += 1;
        if state.is_active() {
            sender.input(VmMsg::Reconnect);
        } else {
            self.perf.clear();
            // What an attempt in flight learnt predates this.
            self.attach.supersede();
            if self.session.is_none() {
                self.show_off(state, reason);
            }
        }
    }

    /// Says on the console page that the VM is off (or crashed, and why).
    pub(super) fn show_off(&mut self, state: DomainState, reason: &str) {
        tracing::info!("console {}: the VM is off", self.name);
        self.console_failed = false;
        self.message = Some(if state == DomainState::Crashed {
            (
                gettext("The virtual machine crashed"),
                // Translators: {reason} is the engine's text.
                gettext("{reason}. Run it again to see its screen here.")
                    .replace("{reason}", reason),
            )
        } else {
            (
                gettext("The virtual machine is off"),
                gettext("Run it to see its screen here."),
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnect_during_an_attempt_drops_its_off_answer_and_tries_again() {
        let mut a = Attach::default();
        let first = a.begin(false).unwrap();
        // The VM started while the first attempt was asking: queued.
        assert_eq!(a.begin(false), None);
        assert_eq!(a.answer(first, false), Answer::Again);
        let second = a.begin(false).unwrap();
        assert_ne!(first, second);
        assert_eq!(a.answer(second, false), Answer::Use);
    }

    #[test]
    fn a_reconnect_during_an_attempt_keeps_its_console() {
        let mut a = Attach::default();
        let first = a.begin(false).unwrap();
        assert_eq!(a.begin(false), None);
        assert_eq!(a.answer(first, true), Answer::Use);
        // Nothing queued any more: the next answer is shown.
        let next = a.begin(false).unwrap();
        assert_eq!(a.answer(next, false), Answer::Use);
    }

    #[test]
    fn a_superseded_attempt_answers_stale() {
        let mut a = Attach::default();
        let old = a.begin(false).unwrap();
        let new = a.begin(true).unwrap();
        assert_eq!(a.answer(old, true), Answer::Stale);
        assert_eq!(a.answer(new, false), Answer::Use);
        // The VM stopped while an attempt was in flight.
        let gone = a.begin(false).unwrap();
        a.supersede();
        assert_eq!(a.answer(gone, true), Answer::Stale);
    }

    #[test]
    fn retries_wait_longer_each_time_and_stop_when_the_budget_is_used() {
        let mut a = Attach::default();
        let mut delays = Vec::new();
        while let Some(r) = a.schedule_retry() {
            assert_eq!(r.number, delays.len() + 1);
            delays.push(r.delay);
            assert!(a.retry_due(r.token));
            let g = a.begin(false).unwrap();
            assert_eq!(a.answer(g, false), Answer::Use);
            assert!(delays.len() <= RETRY_DELAYS.len(), "unbounded retries");
        }
        assert_eq!(delays, RETRY_DELAYS);
        assert!(delays.windows(2).all(|w| w[0] < w[1]));
        // Reconnect (or the VM off) gives a fresh budget.
        a.reset();
        assert_eq!(a.schedule_retry().unwrap().delay, RETRY_DELAYS[0]);
    }

    #[test]
    fn one_retry_waits_at_a_time_and_cancelled_ones_never_fire() {
        let mut a = Attach::default();
        let r = a.schedule_retry().unwrap();
        assert_eq!(a.schedule_retry(), None);
        a.stop_retrying();
        assert!(!a.retry_due(r.token));
        // An attempt started meanwhile replaces the pending retry.
        let r = a.schedule_retry().unwrap();
        let g = a.begin(false).unwrap();
        assert!(!a.retry_due(r.token));
        assert_eq!(a.answer(g, false), Answer::Use);
        // The window closing keeps the budget used.
        assert_eq!(a.schedule_retry().unwrap().number, 3);
    }

    /// One attach of a console that a server accepts and drops at once;
    /// whether the budget was renewed by its closing `after` attaching.
    fn attach_and_drop(a: &mut Attach, at: Instant, after: Duration) -> bool {
        let g = a.begin(false).unwrap();
        assert_eq!(a.answer(g, true), Answer::Use);
        a.attached(at);
        a.closed(at + after)
    }

    #[test]
    fn consoles_dropped_right_after_attaching_back_off_and_stop() {
        let mut a = Attach::default();
        let mut now = Instant::now();
        let mut delays = Vec::new();
        // Attached, dropped 100 ms later: not renewed, so retried after
        // the next wait, until the budget is used up.
        while !attach_and_drop(&mut a, now, Duration::from_millis(100)) {
            let Some(r) = a.schedule_retry() else { break };
            assert_eq!(r.number, delays.len() + 1);
            delays.push(r.delay);
            assert!(delays.len() <= RETRY_DELAYS.len(), "unbounded retries");
            now += Duration::from_millis(100) + r.delay;
            assert!(a.retry_due(r.token));
        }
        assert_eq!(delays, RETRY_DELAYS, "a quick drop renewed the budget");
        // Only Reconnect tries again, with a fresh budget.
        a.reset();
        assert_eq!(a.schedule_retry().unwrap().delay, RETRY_DELAYS[0]);
    }

    #[test]
    fn a_console_that_stayed_attached_renews_the_budget_when_it_closes() {
        let mut a = Attach::default();
        let t0 = Instant::now();
        // Two failed attempts, then one that attaches.
        for _ in 0..2 {
            let r = a.schedule_retry().unwrap();
            assert!(a.retry_due(r.token));
        }
        // Just short of STABLE_AFTER: still one more failed attempt.
        assert!(!attach_and_drop(
            &mut a,
            t0,
            STABLE_AFTER - Duration::from_millis(1)
        ));
        assert_eq!(a.schedule_retry().unwrap().number, 3);
        a.stop_retrying();
        // STABLE_AFTER or more: a fresh budget.
        let t1 = t0 + Duration::from_secs(60);
        assert!(attach_and_drop(&mut a, t1, STABLE_AFTER));
        let r = a.schedule_retry().unwrap();
        assert_eq!((r.number, r.delay), (1, RETRY_DELAYS[0]));
        // A close without an attach (already counted) renews nothing,
        // nor does a clock that went backwards.
        assert!(!a.closed(t1 + STABLE_AFTER * 2));
        a.attached(t1);
        assert!(!a.closed(t0));
    }

    #[test]
    fn attaching_cancels_the_pending_retry_but_keeps_the_budget_used() {
        let mut a = Attach::default();
        let r = a.schedule_retry().unwrap();
        assert!(a.retry_due(r.token));
        let pending = a.schedule_retry().unwrap();
        // An attempt made meanwhile (the VM restarted) attaches.
        let g = a.begin(false).unwrap();
        assert_eq!(a.answer(g, true), Answer::Use);
        a.attached(Instant::now());
        assert!(!a.retry_pending());
        assert!(!a.retry_due(pending.token));
        assert_eq!(a.schedule_retry().unwrap().number, 3);
    }
}
