//! The controller's view of the program's maps: the flow tables mapped
//! into memory (`table`), the blocklist and the holds written with a
//! generation bump, the global counters.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray},
};
use voipdetect_common::{
    BlockEntry, Control, FlowCounters, FlowKey, HoldEntry, HoldKey, SessionTag, Stat,
    flow::FAMILY_V4,
    maps::{BLOCKLIST, CONTROL, FLOWS4, FLOWS6, HOLDS, SESSIONS, STATS},
    table::{Slot4, Slot6, generation},
};

use super::{
    host::{check_privileges, random_seed},
    table::{Slot, Table},
};
use crate::{
    clock::monotonic_ns,
    controller::{Controller, FlowTable, SlotRef},
    event::PollOutput,
};

/// Global counters summed over CPUs, indexed like [`Stat`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats(pub [u64; Stat::COUNT]);

impl Stats {
    pub fn get(&self, s: Stat) -> u64 {
        self.0[s as usize]
    }
    /// Packets the program ran on: the outcome counters partition them.
    pub fn seen(&self) -> u64 {
        Stat::ALL.iter().filter(|s| s.is_outcome()).map(|s| self.get(*s)).sum()
    }
    pub fn passed(&self) -> u64 {
        self.seen() - self.get(Stat::Dropped)
    }
    /// Counter increase since `earlier`.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let mut d = Stats::default();
        for i in 0..Stat::COUNT {
            d.0[i] = self.0[i].wrapping_sub(earlier.0[i]);
        }
        d
    }
}

/// Whose stamps [`Maps::for_each_changed_flow`] compares against: the
/// stamps and the caller's words live in the slots themselves (see
/// `UserWords`), salted per tracker so that another controller's (one
/// that pinned the tables before a restart) are never taken for its own.
pub struct ChangeTracker {
    salt: u32,
}

/// A [`SlotRef`]'s index names the IPv6 table by this bit (tables have
/// at most 2^31 slots).
const V6_SLOT: u32 = 1 << 31;

/// `$body` with `$t` the table `$at` names and `$idx` its slot there, if
/// the slot is in the table (None otherwise): the tables are two types,
/// so one generic closure cannot serve both.
macro_rules! on_slot {
    ($maps:expr, $at:expr, |$t:ident, $idx:ident| $body:expr) => {{
        let at: SlotRef = $at;
        let $idx = at.idx & !V6_SLOT;
        if at.idx & V6_SLOT == 0 {
            let $t = &$maps.flows4;
            ($idx < $t.slots()).then(|| $body)
        } else {
            let $t = &$maps.flows6;
            ($idx < $t.slots()).then(|| $body)
        }
    }};
}

impl FlowTable for Maps {
    fn read(&self, at: SlotRef) -> Option<FlowCounters> {
        on_slot!(self, at, |t, idx| t.read_counters(idx, at.generation)).flatten()
    }

    fn read_into(&self, at: SlotRef, out: &mut Option<FlowCounters>) {
        if on_slot!(self, at, |t, idx| t.read_counters_into(idx, at.generation, out)) != Some(true) {
            *out = None;
        }
    }

    fn place_of(&self, key: &FlowKey) -> Option<u32> {
        if key.family == FAMILY_V4 {
            self.flows4.find(key, self.seed).map(|idx| self.flows4.place(idx))
        } else {
            self.flows6.find(key, self.seed).map(|idx| self.flows6.place(idx))
        }
    }

    fn prefetch(&self, at: SlotRef) {
        on_slot!(self, at, |t, idx| t.prefetch(idx));
    }

    fn set_place(&self, at: SlotRef, place: u32) {
        on_slot!(self, at, |t, idx| t.set_place(idx, at.generation, place));
    }
}

/// The program's maps: owned by a loaded [`super::Datapath`], or opened
/// from their pins by the `flows`, `block`, `unblock` and `status`
/// commands while a controller runs in another process.
pub struct Maps {
    pub(super) flows4: Table<Slot4>,
    pub(super) flows6: Table<Slot6>,
    /// The tables' hash seed (in `Control`, fixed when they were created).
    pub(super) seed: u64,
    blocklist: HashMap<MapData, FlowKey, BlockEntry>,
    holds: HashMap<MapData, HoldKey, HoldEntry>,
    sessions: HashMap<MapData, FlowKey, SessionTag>,
    stats: PerCpuArray<MapData, u64>,
    control: Array<MapData, Control>,
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))
}

/// A flow table's array, mapped.
fn table<S: Slot>(map: aya::maps::Map, name: &str) -> anyhow::Result<Table<S>> {
    let aya::maps::Map::Array(data) = map else { anyhow::bail!("{name} is not an array") };
    let info = data.info().with_context(|| format!("{name}: map info"))?;
    anyhow::ensure!(
        info.value_size() as usize == size_of::<S>(),
        "{name}: slots of {} bytes, expected {}",
        info.value_size(),
        size_of::<S>()
    );
    let slots = info.max_entries();
    Table::map(data, slots, false).with_context(|| format!("mapping {name} ({slots} slots) into memory"))
}

/// The generation to publish after `cur`: the clock in µs when that is a
/// step forward, else `cur + 1`. Two writers (the controller and
/// `voipdetect block`) then never publish the same value for different
/// blocklists, and every change looks like a change to every flow.
fn next_generation(cur: u32, micros: u32) -> u32 {
    if micros != cur && micros.wrapping_sub(cur) < u32::MAX / 2 { micros } else { cur.wrapping_add(1) }
}

impl Maps {
    pub(super) fn from_ebpf(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let control: Array<MapData, Control> = Array::try_from(take(ebpf, CONTROL)?).context(CONTROL)?;
        Ok(Self {
            seed: control.get(&0, 0).map(|c| c.seed).context("reading the table seed")?,
            flows4: table(take(ebpf, FLOWS4)?, FLOWS4)?,
            flows6: table(take(ebpf, FLOWS6)?, FLOWS6)?,
            blocklist: HashMap::try_from(take(ebpf, BLOCKLIST)?).context(BLOCKLIST)?,
            holds: HashMap::try_from(take(ebpf, HOLDS)?).context(HOLDS)?,
            sessions: HashMap::try_from(take(ebpf, SESSIONS)?).context(SESSIONS)?,
            stats: PerCpuArray::try_from(take(ebpf, STATS)?).context(STATS)?,
            control,
        })
    }

    /// Opens the maps a running controller pinned in `dir`.
    pub fn open_pinned(dir: &Path) -> anyhow::Result<Self> {
        check_privileges()?;
        let open = |name: &str| -> anyhow::Result<aya::maps::Map> {
            let path = dir.join(name);
            let data = MapData::from_pin(&path).map_err(|e| {
                anyhow!("no voipdetect maps pinned at {} ({e}); is `voipdetect run` running with that --pin-dir?", dir.display())
            })?;
            Ok(aya::maps::Map::from_map_data(data)?)
        };
        let control: Array<MapData, Control> = Array::try_from(open(CONTROL)?).context(CONTROL)?;
        Ok(Self {
            seed: control.get(&0, 0).map(|c| c.seed).context("reading the table seed")?,
            flows4: table(open(FLOWS4)?, FLOWS4)?,
            flows6: table(open(FLOWS6)?, FLOWS6)?,
            blocklist: HashMap::try_from(open(BLOCKLIST)?).context(BLOCKLIST)?,
            holds: HashMap::try_from(open(HOLDS)?).context(HOLDS)?,
            sessions: HashMap::try_from(open(SESSIONS)?).context(SESSIONS)?,
            stats: PerCpuArray::try_from(open(STATS)?).context(STATS)?,
            control,
        })
    }

    /// Calls `f` for every tracked direction-flow, straight from the
    /// mapped tables (no system call).
    pub fn for_each_flow(&self, mut f: impl FnMut(&FlowKey, &FlowCounters)) -> anyhow::Result<usize> {
        Ok(self.flows4.for_each(|_, k, _, c| f(k, c)) + self.flows6.for_each(|_, k, _, c| f(k, c)))
    }

    /// A tracker for [`Maps::for_each_changed_flow`]: its first walk
    /// reports every flow. Only one may be in use on a table at a time
    /// (they share the slots' words).
    pub fn change_tracker(&self) -> ChangeTracker {
        ChangeTracker { salt: random_seed() as u32 }
    }

    /// Calls `f` for the direction-flows with packets (or drops) since the
    /// previous call with `tracker`, with the caller's word for the slot
    /// (see `FlowTable`; a slot's new flow finds its predecessor's) and
    /// the word of a changed flow a little further on, if any (to fetch
    /// ahead what the caller will read for it): a poll's work follows what
    /// changed, and reading an unchanged slot costs a compare. Returns
    /// (flows tracked, flows changed).
    pub fn for_each_changed_flow(
        &self,
        tracker: &mut ChangeTracker,
        mut f: impl FnMut(SlotRef, &FlowKey, &FlowCounters, &mut u32, Option<u32>),
    ) -> (usize, usize) {
        let at = |idx, tag| SlotRef { idx, generation: generation(tag) };
        let (n4, c4) = self.flows4.for_each_changed(tracker.salt, |idx, k, tag, c, word, soon| f(at(idx, tag), k, c, word, soon));
        let (n6, c6) = self.flows6.for_each_changed(tracker.salt, |idx, k, tag, c, word, soon| f(at(idx | V6_SLOT, tag), k, c, word, soon));
        (n4 + n6, c4 + c6)
    }

    /// One controller poll ending at `now`, as the live driver makes it
    /// (and the benchmarks measure it): the flows that changed since
    /// `tracker`'s last walk listed to `ctl` (fetching ahead the
    /// conversations of flows a little further on), then the poll finished
    /// on these tables. Returns (flows tracked, the poll's output).
    pub fn poll(&self, tracker: &mut ChangeTracker, ctl: &mut Controller, now: u64) -> (usize, PollOutput) {
        let (flows, _) = self.for_each_changed_flow(tracker, |at, k, c, word, soon| {
            if let Some(w) = soon {
                ctl.prefetch(w);
            }
            ctl.observe(at, k, c, word, self);
        });
        (flows, ctl.finish_poll(now, self))
    }

    /// Retires a flow (the controller forgets idle flows), unless its slot
    /// took another flow meanwhile.
    pub fn remove_flow(&mut self, key: &FlowKey) {
        if key.family == FAMILY_V4 {
            if let Some(idx) = self.flows4.find(key, self.seed)
                && let Some(s) = self.flows4.read(idx)
            {
                self.flows4.retire(idx, s.tag);
            }
        } else if let Some(idx) = self.flows6.find(key, self.seed)
            && let Some(s) = self.flows6.read(idx)
        {
            self.flows6.retire(idx, s.tag);
        }
    }

    /// Sets a flow's media flag: whether its packets read the precise clock
    /// and have their headers checked.
    pub fn set_media(&mut self, key: &FlowKey, media: bool) {
        let m = u8::from(media);
        if key.family == FAMILY_V4 {
            if let Some(idx) = self.flows4.find(key, self.seed)
                && let Some(s) = self.flows4.read(idx)
            {
                self.flows4.set_media(idx, s.tag, m);
            }
        } else if let Some(idx) = self.flows6.find(key, self.seed)
            && let Some(s) = self.flows6.read(idx)
        {
            self.flows6.set_media(idx, s.tag, m);
        }
    }

    /// Sets the hash seed of freshly created tables (before any packet).
    pub(super) fn init_seed(&mut self, seed: u64) -> anyhow::Result<()> {
        let mut c = self.control.get(&0, 0).context("reading the control word")?;
        c.seed = seed;
        self.control.set(0, c, 0).context("writing the table seed")?;
        self.seed = seed;
        Ok(())
    }

    /// Slots of the two tables (IPv4, IPv6).
    pub fn flow_slots(&self) -> (u32, u32) {
        (self.flows4.slots(), self.flows6.slots())
    }

    /// Lists `keys` until `expires_ns` (CLOCK_MONOTONIC), then publishes the
    /// change with one generation bump.
    pub fn block(&mut self, keys: &[FlowKey], entry: BlockEntry) -> anyhow::Result<()> {
        for k in keys {
            self.blocklist.insert(k, entry, 0).context("writing the blocklist")?;
        }
        self.publish()
    }

    /// Whether any of `keys` is on the blocklist (expired or not).
    pub fn listed(&self, keys: &[FlowKey]) -> anyhow::Result<bool> {
        for k in keys {
            match self.blocklist.get(k, 0) {
                Ok(_) => return Ok(true),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading the blocklist"),
            }
        }
        Ok(false)
    }

    /// Removes `keys` from the blocklist.
    pub fn unblock(&mut self, keys: &[FlowKey]) -> anyhow::Result<()> {
        for k in keys {
            match self.blocklist.remove(k) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("removing from the blocklist"),
            }
        }
        self.publish()
    }

    /// The blocklist as the kernel sees it.
    pub fn blocklist(&self) -> anyhow::Result<Vec<(FlowKey, BlockEntry)>> {
        let mut out = Vec::new();
        for item in self.blocklist.iter() {
            match item {
                Ok(kv) => out.push(kv),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading the blocklist"),
            }
        }
        Ok(out)
    }

    /// Holds `key` until `entry.expires_ns`: new flows that match it are
    /// dropped from their first packet.
    pub fn hold(&mut self, key: &HoldKey, entry: HoldEntry) -> anyhow::Result<()> {
        self.holds.insert(key, entry, 0).context("writing the hold map")?;
        self.publish()
    }

    /// Ends the hold `key`; the flows it caught pass from their next packet.
    pub fn unhold(&mut self, key: &HoldKey) -> anyhow::Result<()> {
        match self.holds.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("removing a hold"),
        }
        self.publish()
    }

    /// Tags both directions of `key`'s conversation with its session. A
    /// full map only costs `voipdetect flows` the column: not an error.
    pub fn tag(&mut self, key: &FlowKey, tag: SessionTag) {
        for k in [*key, key.reversed()] {
            if let Err(e) = self.sessions.insert(k, tag, 0) {
                log::debug!("session tag not written: {e}");
            }
        }
    }

    /// Removes the session tags of `key`'s conversation.
    pub fn untag(&mut self, key: &FlowKey) {
        for k in [*key, key.reversed()] {
            let _ = self.sessions.remove(&k);
        }
    }

    /// The session tags, by direction.
    pub fn sessions(&self) -> anyhow::Result<std::collections::HashMap<FlowKey, SessionTag>> {
        let mut out = std::collections::HashMap::new();
        for item in self.sessions.iter() {
            match item {
                Ok((k, v)) => {
                    out.insert(k, v);
                }
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading the session tags"),
            }
        }
        Ok(out)
    }

    /// The holds as the kernel sees them.
    pub fn holds(&self) -> anyhow::Result<Vec<(HoldKey, HoldEntry)>> {
        let mut out = Vec::new();
        for item in self.holds.iter() {
            match item {
                Ok(kv) => out.push(kv),
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading the hold map"),
            }
        }
        Ok(out)
    }

    /// Bumps the generation so flows re-read the blocklist (and the holds
    /// that caught them), with the number of holds, so that new flows look
    /// holds up only while there are any. Must follow the map write (see
    /// `Control`).
    fn publish(&mut self) -> anyhow::Result<()> {
        let cur = self.control.get(&0, 0).map(|c| c.block_gen).unwrap_or(0);
        let next = next_generation(cur, (monotonic_ns() / 1_000) as u32);
        let holds = self.holds.keys().filter(Result::is_ok).count() as u32;
        self.control.set(0, Control { block_gen: next, holds, seed: self.seed }, 0).context("publishing the blocklist generation")
    }

    /// Global counters summed over CPUs.
    pub fn stats(&self) -> anyhow::Result<Stats> {
        let mut s = Stats::default();
        for (i, slot) in s.0.iter_mut().enumerate() {
            let values = self.stats.get(&(i as u32), 0).context("reading counters")?;
            *slot = values.iter().sum();
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_partition_the_packets_and_differences_wrap() {
        let mut s = Stats::default();
        s.0[Stat::Tracked as usize] = 10;
        s.0[Stat::Dropped as usize] = 3;
        s.0[Stat::NotIp as usize] = 2;
        // Events are counted next to an outcome, not as packets.
        s.0[Stat::NewFlow as usize] = 4;
        assert_eq!((s.seen(), s.passed()), (15, 12));
        let mut later = s.clone();
        later.0[Stat::Tracked as usize] = 1;
        later.0[Stat::Dropped as usize] = 5;
        let d = later.since(&s);
        assert_eq!(d.get(Stat::Tracked), 1u64.wrapping_sub(10));
        assert_eq!(d.get(Stat::Dropped), 2);
        assert_eq!(d.get(Stat::NotIp), 0);
    }

    #[test]
    fn every_published_generation_differs_from_the_last() {
        // The clock moved on: publish it.
        assert_eq!(next_generation(100, 5_000), 5_000);
        // The clock stands still or another writer got there first: step.
        assert_eq!(next_generation(5_000, 5_000), 5_001);
        assert_eq!(next_generation(5_001, 5_000), 5_002);
        // Wrapping forward is still forward.
        assert_eq!(next_generation(u32::MAX - 1, 3), 3);
        assert_eq!(next_generation(u32::MAX, u32::MAX), 0);
    }
}
