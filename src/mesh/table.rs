//! Pure state tables of the mesh: what an owner exports, what a watcher mirrors.
//!
//! Values in, values out, no I/O: the agent feeds them AMI events and stream messages and
//! writes what [`MirrorTable::take_pending`] returns with one AMI `Setvar` each.

use std::collections::{BTreeMap, BTreeSet};

use crate::ami::{DeviceState, ExtensionState};
use crate::render::MeshPlan;

/// Where an update stands in its owner's history: a new epoch on every owner restart, then a
/// sequence number that only grows within the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Changes when the owner agent restarts.
    pub epoch: u64,
    /// Grows with every change the owner sends within an epoch.
    pub seq: u64,
}

/// One extension's state as its owner reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateUpdate {
    /// The extension on the owning node.
    pub extension: String,
    /// Its state, as a device state (what `Setvar DEVICE_STATE(Custom:…)` takes).
    pub state: DeviceState,
    /// Its place in the owner's history.
    pub version: Version,
}

/// The extension states an owner exports, with the versions it hands out.
#[derive(Clone, Debug)]
pub struct ExportTable {
    epoch: u64,
    seq: u64,
    /// Exported extension → (hint context, last state and its version, watchers).
    #[allow(clippy::type_complexity)]
    exports: BTreeMap<String, (String, Option<(DeviceState, Version)>, Vec<String>)>,
}

impl ExportTable {
    /// An empty table for a new epoch (pick one that grows across restarts, e.g. start time).
    pub fn new(epoch: u64) -> Self {
        Self { epoch, seq: 0, exports: BTreeMap::new() }
    }

    /// The owner's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sets which extensions are exported (from the node's mesh plan); keeps known states.
    pub fn set_plan(&mut self, plan: &MeshPlan) {
        let mut next = BTreeMap::new();
        for export in &plan.exports {
            let known = self.exports.remove(&export.extension).and_then(|(_, s, _)| s);
            next.insert(export.extension.clone(), (export.context.clone(), known, export.watchers.clone()));
        }
        self.exports = next;
    }

    /// Is `extension` exported?
    pub fn exports(&self, extension: &str) -> bool {
        self.exports.contains_key(extension)
    }

    /// Feeds one observed hint state (AMI ExtensionStatus or ExtensionStateList). Returns the
    /// update to send when the extension is exported from that context and its state changed.
    /// Mirrored hints live in another context, so imported states never leave again.
    pub fn observe(&mut self, extension: &str, context: &str, state: ExtensionState) -> Option<StateUpdate> {
        let (export_context, last, _) = self.exports.get_mut(extension)?;
        if export_context != context {
            return None;
        }
        let state = state.to_device_state();
        if last.is_some_and(|(s, _)| s == state) {
            return None;
        }
        self.seq += 1;
        let version = Version { epoch: self.epoch, seq: self.seq };
        *last = Some((state, version));
        Some(StateUpdate { extension: extension.to_owned(), state, version })
    }

    /// May `watcher` see `extension`? Only nodes the plan names as its watchers do.
    pub fn allowed(&self, watcher: &str, extension: &str) -> bool {
        self.exports.get(extension).is_some_and(|(_, _, w)| w.iter().any(|x| x == watcher))
    }

    /// The latest version handed out.
    pub fn version(&self) -> Version {
        Version { epoch: self.epoch, seq: self.seq }
    }

    /// Asterisk went away: every exported extension that had another state becomes UNAVAILABLE
    /// (its phones are gone with it). Returns the updates to send.
    pub fn all_unavailable(&mut self) -> Vec<StateUpdate> {
        let contexts: Vec<(String, String)> =
            self.exports.iter().map(|(e, (c, _, _))| (e.clone(), c.clone())).collect();
        contexts.into_iter().filter_map(|(e, c)| self.observe(&e, &c, ExtensionState::Unavailable)).collect()
    }

    /// The current state of every exported extension in `interest` (a subscriber's snapshot).
    /// Extensions not observed yet are reported UNKNOWN→UNAVAILABLE: never idle by default.
    pub fn snapshot<'a>(&self, interest: impl IntoIterator<Item = &'a str>) -> Vec<StateUpdate> {
        let now = Version { epoch: self.epoch, seq: self.seq };
        interest
            .into_iter()
            .filter_map(|ext| {
                let (_, last, _) = self.exports.get(ext)?;
                let (state, version) = last.unwrap_or((DeviceState::Unavailable, now));
                Some(StateUpdate { extension: ext.to_owned(), state, version })
            })
            .collect()
    }
}

/// What happened to an incoming update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Newer than what the table had: the mirrored state follows it.
    Accepted,
    /// Not newer than what the table had (an older epoch or sequence): ignored.
    Stale,
    /// This node does not mirror that extension from that owner.
    NotWatched,
}

#[derive(Clone, Debug)]
struct Mirror {
    device: String,
    desired: DeviceState,
    version: Version,
    /// The owner was lost: the next update with the same version must still restore the truth.
    lost: bool,
    written: Option<DeviceState>,
    /// Taken by [`MirrorTable::take_pending`] and not yet confirmed: what Asterisk will show.
    in_flight: Option<DeviceState>,
    /// Opaque time stamp of the update behind `desired` (the owner's event time), 0 if none.
    stamp: u64,
    /// When `desired` last changed on this node (the caller's clock), 0 if never.
    changed: u64,
}

impl Mirror {
    /// What Asterisk shows once the write in flight (if any) lands.
    fn shown(&self) -> Option<DeviceState> {
        self.in_flight.or(self.written)
    }
}

/// One mirror as the watcher reports it (the `Mirrored` condition of BLF subscriptions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorView {
    /// The node that owns the extension.
    pub owner: String,
    /// The extension.
    pub extension: String,
    /// What the mirror shows (UNAVAILABLE while the owner is not heard from).
    pub state: DeviceState,
    /// The owner's snapshot is in force: the state is the owner's, not a stand-in.
    pub live: bool,
    /// When the state last changed here (the clock given to the table), 0 if never.
    pub changed: u64,
}

/// One write to do: `Setvar DEVICE_STATE(<device>)=<state>`, with the stamp of the update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingWrite {
    /// The custom device (`Custom:<owner>-<ext>`).
    pub device: String,
    /// Its latest desired state.
    pub state: DeviceState,
    /// The stamp given to [`MirrorTable::apply_stamped`] (0 when none).
    pub stamp: u64,
}

/// A watcher's mirrored states: per (owner, extension), the custom device state to keep equal to
/// the owner's, what was last written, and what is pending. Bursts coalesce: only the latest
/// state of an extension is ever pending.
#[derive(Clone, Debug, Default)]
pub struct MirrorTable {
    mirrors: BTreeMap<(String, String), Mirror>,
    /// Custom device → its (owner, extension) key.
    devices: BTreeMap<String, (String, String)>,
    pending: BTreeSet<(String, String)>,
    coalesced: u64,
}

impl MirrorTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets what this node mirrors (its mesh plan's sources). New mirrors start UNAVAILABLE
    /// until their owner's snapshot arrives; dropped ones are forgotten. Returns the owners
    /// to subscribe to, sorted.
    pub fn set_plan(&mut self, plan: &MeshPlan) -> Vec<String> {
        let mut next = BTreeMap::new();
        for source in &plan.sources {
            for import in &source.imports {
                let key = (source.node.clone(), import.extension.clone());
                let mirror = self.mirrors.remove(&key).unwrap_or_else(|| Mirror {
                    device: import.device.clone(),
                    desired: DeviceState::Unavailable,
                    version: Version::default(),
                    lost: true,
                    written: None,
                    in_flight: None,
                    stamp: 0,
                    changed: 0,
                });
                next.insert(key, mirror);
            }
        }
        self.mirrors = next;
        self.devices = self.mirrors.iter().map(|(k, m)| (m.device.clone(), k.clone())).collect();
        self.pending = self
            .mirrors
            .iter()
            .filter(|(_, m)| m.shown() != Some(m.desired))
            .map(|(k, _)| k.clone())
            .collect();
        plan.sources.iter().map(|s| s.node.clone()).collect()
    }

    /// Extensions mirrored from `owner` (what to subscribe with).
    pub fn interest(&self, owner: &str) -> Vec<String> {
        self.mirrors.keys().filter(|(o, _)| o == owner).map(|(_, e)| e.clone()).collect()
    }

    /// Applies one update from `owner` (snapshot entries and stream changes alike).
    pub fn apply(&mut self, owner: &str, update: &StateUpdate) -> Outcome {
        self.apply_stamped(owner, update, 0, 0)
    }

    /// [`MirrorTable::apply`], remembering `stamp` (e.g. the owner's event time) with the write
    /// it causes, for the propagation latency, and `now` as the time of a change of state.
    pub fn apply_stamped(&mut self, owner: &str, update: &StateUpdate, stamp: u64, now: u64) -> Outcome {
        let key = (owner.to_owned(), update.extension.clone());
        let Some(mirror) = self.mirrors.get_mut(&key) else { return Outcome::NotWatched };
        let newer = update.version > mirror.version || (mirror.lost && update.version >= mirror.version);
        if !newer {
            return Outcome::Stale;
        }
        mirror.version = update.version;
        mirror.lost = false;
        if mirror.desired != update.state {
            mirror.changed = now;
        }
        mirror.desired = update.state;
        mirror.stamp = stamp;
        if mirror.shown() != Some(update.state) {
            if !self.pending.insert(key) {
                self.coalesced += 1;
            }
        } else {
            self.pending.remove(&key);
        }
        Outcome::Accepted
    }

    /// The owner stopped answering (noticed at `now`): every state mirrored from it goes
    /// UNAVAILABLE (a lamp must never show idle for a server that is gone) until its next
    /// snapshot.
    pub fn owner_lost(&mut self, owner: &str, now: u64) {
        for (key, mirror) in self.mirrors.iter_mut().filter(|((o, _), _)| o == owner) {
            mirror.lost = true;
            if mirror.desired != DeviceState::Unavailable {
                mirror.changed = now;
            }
            mirror.desired = DeviceState::Unavailable;
            if mirror.shown() != Some(DeviceState::Unavailable) {
                self.pending.insert(key.clone());
            }
        }
    }

    /// Every mirror as the watcher's status reports it, sorted by owner and extension.
    pub fn views(&self) -> Vec<MirrorView> {
        self.mirrors
            .iter()
            .map(|((owner, extension), m)| MirrorView {
                owner: owner.clone(),
                extension: extension.clone(),
                state: m.desired,
                live: !m.lost,
                changed: m.changed,
            })
            .collect()
    }

    /// Accepted updates that replaced a write still waiting (bursts folded into one write).
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    /// Asterisk may have lost or changed what was written (it restarted, AMI reconnected):
    /// every mirrored state is written again.
    pub fn forget_written(&mut self) {
        for (key, mirror) in &mut self.mirrors {
            // A write still in flight stays so: it completes (or fails) and is recorded then.
            // Clearing it would let a second write of the same device race the first, and the
            // older state could land last.
            mirror.written = None;
            self.pending.insert(key.clone());
        }
    }

    /// Number of mirrored extensions.
    pub fn len(&self) -> usize {
        self.mirrors.len()
    }

    /// Mirrors nothing?
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty()
    }

    /// How many writes are waiting.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Pending keys whose device has no write in flight (never two writes for one device at
    /// once, so they cannot land out of order).
    fn ready(&self, max: usize) -> Vec<(String, String)> {
        self.pending
            .iter()
            .filter(|k| self.mirrors.get(*k).is_some_and(|m| m.in_flight.is_none()))
            .take(max)
            .cloned()
            .collect()
    }

    /// Takes up to `max` pending writes: (custom device, state), the latest state of each.
    /// A device whose previous write is not confirmed ([`MirrorTable::written`] or
    /// [`MirrorTable::retry`]) waits.
    pub fn take_pending(&mut self, max: usize) -> Vec<(String, DeviceState)> {
        let keys = self.ready(max);
        keys.into_iter()
            .filter_map(|key| {
                self.pending.remove(&key);
                self.mirrors.get_mut(&key).map(|m| {
                    m.in_flight = Some(m.desired);
                    (m.device.clone(), m.desired)
                })
            })
            .collect()
    }

    /// [`MirrorTable::take_pending`] with the stamps of the updates behind the writes.
    pub fn take_pending_stamped(&mut self, max: usize) -> Vec<PendingWrite> {
        let keys = self.ready(max);
        keys.into_iter()
            .filter_map(|key| {
                self.pending.remove(&key);
                self.mirrors.get_mut(&key).map(|m| {
                    m.in_flight = Some(m.desired);
                    PendingWrite { device: m.device.clone(), state: m.desired, stamp: m.stamp }
                })
            })
            .collect()
    }

    /// Records that `device` now holds `state` in Asterisk.
    pub fn written(&mut self, device: &str, state: DeviceState) {
        let Some(key) = self.devices.get(device) else { return };
        if let Some(m) = self.mirrors.get_mut(key) {
            m.written = Some(state);
            m.in_flight = None;
            if m.desired != state {
                self.pending.insert(key.clone());
            }
        }
    }

    /// A write failed: put it back so it is retried.
    pub fn retry(&mut self, device: &str) {
        if let Some(key) = self.devices.get(device) {
            if let Some(m) = self.mirrors.get_mut(key) {
                m.in_flight = None;
            }
            self.pending.insert(key.clone());
        }
    }

    /// The state this node should show for `device`, if it mirrors it.
    pub fn desired(&self, device: &str) -> Option<DeviceState> {
        self.devices.get(device).and_then(|k| self.mirrors.get(k)).map(|m| m.desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{MeshExport, MeshImport, MeshSource};

    fn plan() -> MeshPlan {
        MeshPlan {
            node: "office-a".into(),
            sources: vec![MeshSource {
                node: "office-b".into(),
                endpoint: None,
                imports: ["4001", "4002"]
                    .iter()
                    .map(|e| MeshImport { extension: e.to_string(), device: format!("Custom:office-b-{e}") })
                    .collect(),
            }],
            exports: vec![MeshExport {
                extension: "3001".into(),
                context: "operator-local".into(),
                watchers: vec!["office-b".into()],
            }],
        }
    }

    fn update(ext: &str, state: DeviceState, epoch: u64, seq: u64) -> StateUpdate {
        StateUpdate { extension: ext.into(), state, version: Version { epoch, seq } }
    }

    #[test]
    fn new_mirrors_start_unavailable_never_idle() {
        let mut t = MirrorTable::new();
        assert_eq!(t.set_plan(&plan()), vec!["office-b"]);
        assert_eq!(t.interest("office-b"), vec!["4001", "4002"]);
        let mut writes = t.take_pending(10);
        writes.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            writes,
            vec![
                ("Custom:office-b-4001".into(), DeviceState::Unavailable),
                ("Custom:office-b-4002".into(), DeviceState::Unavailable)
            ]
        );
    }

    #[test]
    fn stale_updates_are_ignored_and_new_epochs_win() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        assert_eq!(t.apply("office-b", &update("4001", DeviceState::InUse, 5, 10)), Outcome::Accepted);
        assert_eq!(t.apply("office-b", &update("4001", DeviceState::NotInUse, 5, 9)), Outcome::Stale);
        assert_eq!(t.apply("office-b", &update("4001", DeviceState::NotInUse, 4, 99)), Outcome::Stale);
        assert_eq!(t.desired("Custom:office-b-4001"), Some(DeviceState::InUse));
        assert_eq!(t.apply("office-b", &update("4001", DeviceState::Ringing, 6, 1)), Outcome::Accepted);
        assert_eq!(t.desired("Custom:office-b-4001"), Some(DeviceState::Ringing));
        assert_eq!(t.apply("office-c", &update("4001", DeviceState::Busy, 9, 9)), Outcome::NotWatched);
        assert_eq!(t.apply("office-b", &update("4999", DeviceState::Busy, 9, 9)), Outcome::NotWatched);
    }

    #[test]
    fn bursts_coalesce_to_the_latest_state() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        for (d, s) in t.take_pending(10) {
            t.written(&d, s);
        }
        for seq in 1..=1000u64 {
            let state = if seq % 2 == 0 { DeviceState::InUse } else { DeviceState::Ringing };
            t.apply("office-b", &update("4002", state, 1, seq));
        }
        assert_eq!(t.pending_len(), 1, "one write however long the burst");
        assert_eq!(t.take_pending(10), vec![("Custom:office-b-4002".into(), DeviceState::InUse)]);
    }

    #[test]
    fn a_lost_owner_goes_unavailable_and_its_snapshot_restores_the_truth() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        t.apply("office-b", &update("4001", DeviceState::InUse, 1, 3));
        for (device, state) in t.take_pending(10) {
            t.written(&device, state);
        }
        t.owner_lost("office-b", 0);
        let writes = t.take_pending(10);
        // 4002 never left UNAVAILABLE, so only 4001 needs a write.
        assert_eq!(writes, vec![("Custom:office-b-4001".into(), DeviceState::Unavailable)]);
        for (device, state) in writes {
            t.written(&device, state);
        }
        // Same epoch and sequence as before the loss: still restores (nothing changed meanwhile).
        assert_eq!(t.apply("office-b", &update("4001", DeviceState::InUse, 1, 3)), Outcome::Accepted);
        assert_eq!(t.take_pending(10), vec![("Custom:office-b-4001".into(), DeviceState::InUse)]);
        // But once restored, a repeat of the same version is stale.
        assert_eq!(t.apply("office-b", &update("4001", DeviceState::NotInUse, 1, 3)), Outcome::Stale);
    }

    #[test]
    fn views_say_what_each_mirror_shows_whether_it_is_live_and_when_it_changed() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        let view = |t: &MirrorTable, ext: &str| t.views().into_iter().find(|v| v.extension == ext).unwrap();
        assert!(!view(&t, "4001").live, "no snapshot yet");
        assert_eq!(view(&t, "4001").state, DeviceState::Unavailable);
        t.apply_stamped("office-b", &update("4001", DeviceState::InUse, 1, 1), 0, 10);
        t.apply_stamped("office-b", &update("4001", DeviceState::InUse, 1, 2), 0, 20);
        let v = view(&t, "4001");
        assert_eq!(
            (v.owner.as_str(), v.state, v.live, v.changed),
            ("office-b", DeviceState::InUse, true, 10)
        );
        t.owner_lost("office-b", 30);
        let v = view(&t, "4001");
        assert_eq!((v.state, v.live, v.changed), (DeviceState::Unavailable, false, 30));
        assert_eq!(view(&t, "4002").changed, 0, "never left UNAVAILABLE");
    }

    #[test]
    fn no_write_when_asterisk_already_shows_the_state() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        for (device, state) in t.take_pending(10) {
            t.written(&device, state);
        }
        t.apply("office-b", &update("4001", DeviceState::Unavailable, 1, 1));
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn exports_only_changes_of_exported_local_hints() {
        let mut e = ExportTable::new(7);
        e.set_plan(&plan());
        assert_eq!(e.observe("3002", "operator-local", ExtensionState::InUse), None, "not watched by anyone");
        assert_eq!(
            e.observe("3001", "operator-routes", ExtensionState::InUse),
            None,
            "mirrored hints never re-export"
        );
        let u = e.observe("3001", "operator-local", ExtensionState::InUse).unwrap();
        assert_eq!((u.state, u.version), (DeviceState::InUse, Version { epoch: 7, seq: 1 }));
        assert_eq!(e.observe("3001", "operator-local", ExtensionState::InUse), None, "no change, no update");
        let u = e.observe("3001", "operator-local", ExtensionState::Idle).unwrap();
        assert_eq!((u.state, u.version.seq), (DeviceState::NotInUse, 2));
        assert_eq!(e.snapshot(["3001", "3002"]), vec![u]);
    }

    #[test]
    fn coalescing_is_counted_and_stamps_follow_the_latest_update() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        for (d, s) in t.take_pending(10) {
            t.written(&d, s);
        }
        t.apply_stamped("office-b", &update("4001", DeviceState::InUse, 1, 1), 100, 0);
        t.apply_stamped("office-b", &update("4001", DeviceState::Busy, 1, 2), 200, 0);
        t.apply_stamped("office-b", &update("4001", DeviceState::Ringing, 1, 3), 300, 0);
        assert_eq!(t.coalesced(), 2);
        let w = t.take_pending_stamped(10);
        assert_eq!(
            w,
            vec![PendingWrite {
                device: "Custom:office-b-4001".into(),
                state: DeviceState::Ringing,
                stamp: 300
            }]
        );
    }

    #[test]
    fn a_change_back_while_a_write_is_in_flight_is_written_after_it() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        for (d, s) in t.take_pending(10) {
            t.written(&d, s);
        }
        // UNAVAILABLE shown; INUSE taken for writing; then back to UNAVAILABLE before it lands.
        t.apply("office-b", &update("4001", DeviceState::InUse, 1, 1));
        let w = t.take_pending(10);
        assert_eq!(w, vec![("Custom:office-b-4001".into(), DeviceState::InUse)]);
        t.apply("office-b", &update("4001", DeviceState::Unavailable, 1, 2));
        assert_eq!(t.pending_len(), 1, "the write in flight will show INUSE: UNAVAILABLE must follow");
        assert_eq!(t.take_pending(10), vec![], "not while the INUSE write is in flight");
        t.written("Custom:office-b-4001", DeviceState::InUse);
        assert_eq!(t.take_pending(10), vec![("Custom:office-b-4001".into(), DeviceState::Unavailable)]);
    }

    #[test]
    fn forget_written_rewrites_everything() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        for (d, s) in t.take_pending(10) {
            t.written(&d, s);
        }
        assert_eq!(t.pending_len(), 0);
        t.forget_written();
        assert_eq!(t.pending_len(), 2);
    }

    #[test]
    fn only_named_watchers_may_see_an_export_and_a_lost_asterisk_exports_unavailable() {
        let mut e = ExportTable::new(3);
        e.set_plan(&plan());
        assert!(e.allowed("office-b", "3001"));
        assert!(!e.allowed("office-c", "3001"));
        assert!(!e.allowed("office-b", "3002"));
        e.observe("3001", "operator-local", ExtensionState::InUse).unwrap();
        let lost = e.all_unavailable();
        assert_eq!(lost.len(), 1);
        assert_eq!((lost[0].state, lost[0].version.seq), (DeviceState::Unavailable, 2));
        assert!(e.all_unavailable().is_empty(), "already unavailable: nothing to send");
    }

    #[test]
    fn unobserved_exports_snapshot_as_unavailable() {
        let mut e = ExportTable::new(1);
        e.set_plan(&plan());
        assert_eq!(e.snapshot(["3001"])[0].state, DeviceState::Unavailable);
    }

    #[test]
    fn an_ami_reconnect_never_puts_two_writes_of_one_device_in_flight() {
        let mut t = MirrorTable::new();
        t.set_plan(&plan());
        let first = t.take_pending(10);
        assert_eq!(first.len(), 2, "the initial UNAVAILABLE writes are in flight");
        t.apply("office-b", &update("4001", DeviceState::InUse, 1, 1));
        t.forget_written(); // AMI reconnected while those writes were in flight
        assert!(t.take_pending(10).is_empty(), "no second write while the first is in flight");
        // The old write lands (late): the newer desired state is written next.
        t.written("Custom:office-b-4001", DeviceState::Unavailable);
        assert_eq!(t.take_pending(10), vec![("Custom:office-b-4001".into(), DeviceState::InUse)]);
        t.written("Custom:office-b-4002", DeviceState::Unavailable);
        assert_eq!(
            t.take_pending(10),
            vec![("Custom:office-b-4002".into(), DeviceState::Unavailable)],
            "rewritten after the reconnect"
        );
    }
}
