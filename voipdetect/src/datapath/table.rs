//! The flow tables as the controller sees them: the program's
//! `BPF_F_MMAPABLE` arrays mapped into this process, read at memory speed
//! without a system call, and written only through compare-and-swap of a
//! slot's tag (see `voipdetect_common::table`).
//!
//! The kernel writes the slots while they are read here: a slot is copied
//! out between two reads of its tag, and skipped if the tag moved (the slot
//! took another flow meanwhile). Counters of one slot may be a packet apart
//! from each other; the controller works on their differences anyway.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use voipdetect_common::{
    FlowCounters, FlowKey,
    features::cas64,
    table::{
        BUSY, EMPTY, LIVE, PROBES, Slot4, Slot6, TOMB, UserWords, flow_key4, flow_key6, generation, hash, key4, key6, slot_index, state,
        tag,
    },
};

/// What the table code needs of a slot type.
pub trait Slot: Copy + Default {
    /// Byte offsets of the tag, the counters, the counters' media flag and
    /// the controller's words.
    const TAG_AT: usize;
    const COUNTERS_AT: usize;
    const MEDIA_AT: usize;
    const USER_AT: usize;
    type Words: Copy + PartialEq;
    fn words(k: &FlowKey) -> Self::Words;
    fn key_words(&self) -> Self::Words;
    fn set_key(&mut self, w: Self::Words);
    fn key(&self) -> FlowKey;
    fn hash(w: &Self::Words, seed: u64) -> u64;
    fn tag_mut(&mut self) -> &mut u64;
    fn tag(&self) -> u64;
    fn counters(&self) -> &FlowCounters;
    fn counters_mut(&mut self) -> &mut FlowCounters;
}

macro_rules! slot_impl {
    ($slot:ty, $words:ty, $to_words:ident, $from_words:ident) => {
        impl Slot for $slot {
            const TAG_AT: usize = std::mem::offset_of!($slot, tag);
            const COUNTERS_AT: usize = std::mem::offset_of!($slot, c);
            const MEDIA_AT: usize = std::mem::offset_of!($slot, c) + std::mem::offset_of!(FlowCounters, media);
            const USER_AT: usize = std::mem::offset_of!($slot, user);
            type Words = $words;
            fn words(k: &FlowKey) -> $words {
                $to_words(k)
            }
            fn key_words(&self) -> $words {
                self.key
            }
            fn set_key(&mut self, w: $words) {
                self.key = w;
            }
            fn key(&self) -> FlowKey {
                $from_words(&self.key)
            }
            fn hash(w: &$words, seed: u64) -> u64 {
                hash(w, seed)
            }
            fn tag_mut(&mut self) -> &mut u64 {
                &mut self.tag
            }
            fn tag(&self) -> u64 {
                self.tag
            }
            fn counters(&self) -> &FlowCounters {
                &self.c
            }
            fn counters_mut(&mut self) -> &mut FlowCounters {
                &mut self.c
            }
        }
    };
}
slot_impl!(Slot4, [u64; 2], key4, flow_key4);
slot_impl!(Slot6, [u64; 5], key6, flow_key6);

/// One flow table, mapped.
pub struct Table<S: Slot> {
    base: NonNull<S>,
    slots: u32,
    len: usize,
    /// The map's file descriptor stays open as long as the mapping.
    _map: aya::maps::MapData,
}

// SAFETY: the mapping is plain shared memory; every access goes through
// volatile reads or atomic compare-and-swap, which are fine from any thread.
unsafe impl<S: Slot> Send for Table<S> {}

impl<S: Slot> Drop for Table<S> {
    fn drop(&mut self) {
        // SAFETY: the range was mapped in `map` and nothing refers to it now.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl<S: Slot> Table<S> {
    /// Maps the array `map` of `slots` slots (read-write unless `read_only`).
    pub fn map(map: aya::maps::MapData, slots: u32, read_only: bool) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = (slots as usize * size_of::<S>()).div_ceil(page) * page;
        let prot = if read_only { libc::PROT_READ } else { libc::PROT_READ | libc::PROT_WRITE };
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // that the map is mmap-able and `len` fits.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<S>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { base, slots, len, _map: map })
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The map's file descriptor (for fdinfo).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self._map.fd().as_fd().as_raw_fd()
    }

    fn ptr(&self, idx: u32) -> *mut S {
        debug_assert!(idx < self.slots);
        // SAFETY: idx < slots, inside the mapping.
        unsafe { self.base.as_ptr().add(idx as usize) }
    }

    /// Slot `idx`'s tag, an aligned u64 inside the mapping.
    fn tag_ptr(&self, idx: u32) -> *mut u64 {
        // SAFETY: TAG_AT is the tag's offset inside the slot.
        unsafe { self.ptr(idx).cast::<u8>().add(S::TAG_AT).cast::<u64>() }
    }

    fn tag_now(&self, idx: u32) -> u64 {
        // SAFETY: an aligned u64 inside the mapping; the kernel may be
        // writing it, hence volatile (see the module docs).
        unsafe { std::ptr::read_volatile(self.tag_ptr(idx)) }
    }

    /// The latest packet time of the flow in slot `idx` as it is now (no
    /// consistency with the rest of the slot).
    fn last_seen_now(&self, idx: u32) -> u64 {
        const AT: usize = std::mem::offset_of!(FlowCounters, last_seen_ns);
        // SAFETY: an aligned u64 inside the slot's counters in the mapping;
        // the kernel may be writing it, hence volatile.
        unsafe { std::ptr::read_volatile(self.ptr(idx).cast::<u8>().add(S::COUNTERS_AT + AT).cast::<u64>()) }
    }

    /// A consistent copy of slot `idx` if it holds a flow: the tag read
    /// before and after the copy must agree.
    pub fn read(&self, idx: u32) -> Option<S> {
        let before = self.tag_now(idx);
        if state(before) != LIVE {
            return None;
        }
        // SAFETY: `ptr` points into the mapping; a volatile copy of plain
        // data the kernel may be writing (see the module docs).
        let copy = unsafe { volatile_words(self.ptr(idx)) };
        let after = self.tag_now(idx);
        (before == after && copy.tag() == before).then_some(copy)
    }

    /// Slot `idx`'s tag, if the slot still holds the flow of generation
    /// `generation_was`.
    fn holding(&self, idx: u32, generation_was: u32) -> Option<u64> {
        let t = self.tag_now(idx);
        (state(t) == LIVE && generation(t) == generation_was).then_some(t)
    }

    /// A consistent copy of slot `idx`'s counters if it still holds the
    /// flow of generation `generation_was` (the counters alone: the
    /// controller reads them for every conversation it judges).
    pub fn read_counters(&self, idx: u32, generation_was: u32) -> Option<FlowCounters> {
        let mut out = None;
        self.read_counters_into(idx, generation_was, &mut out).then_some(out).flatten()
    }

    /// [`Table::read_counters`] into `out`, in place when it holds
    /// counters already; whether it did (`out` is left unspecified if not).
    pub fn read_counters_into(&self, idx: u32, generation_was: u32, out: &mut Option<FlowCounters>) -> bool {
        let Some(before) = self.holding(idx, generation_was) else { return false };
        let to = out.get_or_insert_with(FlowCounters::default);
        // SAFETY: the counters inside the slot in the mapping, 8-byte
        // aligned (COUNTERS_AT is), copied as in `read`; `to` is a whole
        // FlowCounters, plain data of whole words.
        unsafe { volatile_copy(self.ptr(idx).cast::<u8>().add(S::COUNTERS_AT).cast::<FlowCounters>(), to) };
        self.tag_now(idx) == before
    }

    /// Calls `f` with every flow in the table: its slot index, key, tag and
    /// counters.
    pub fn for_each(&self, mut f: impl FnMut(u32, &FlowKey, u64, &FlowCounters)) -> usize {
        let mut n = 0;
        for idx in 0..self.slots {
            if let Some(s) = self.read(idx) {
                f(idx, &s.key(), s.tag(), s.counters());
                n += 1;
            }
        }
        n
    }

    /// Slot `idx`'s controller words (see `UserWords`), aligned inside the
    /// mapping.
    fn user_ptr(&self, idx: u32) -> *mut UserWords {
        // SAFETY: USER_AT is the words' offset inside the slot.
        unsafe { self.ptr(idx).cast::<u8>().add(S::USER_AT).cast::<UserWords>() }
    }

    /// Asks the CPU to bring slot `idx` into its cache.
    pub fn prefetch(&self, idx: u32) {
        crate::prefetch::prefetch(self.ptr(idx).cast_const());
    }

    /// The controller's place word of slot `idx` (see `UserWords`).
    pub fn place(&self, idx: u32) -> u32 {
        // SAFETY: an aligned u32 of the slot's controller words in the
        // mapping, written only by this process.
        unsafe { std::ptr::read_volatile(&raw const (*self.user_ptr(idx)).place) }
    }

    /// Sets slot `idx`'s place word if the slot still holds a flow of
    /// generation `generation_was`.
    pub fn set_place(&self, idx: u32, generation_was: u32, place: u32) {
        if self.holding(idx, generation_was).is_some() {
            // SAFETY: as in `place`.
            unsafe { std::ptr::write_volatile(&raw mut (*self.user_ptr(idx)).place, place) };
        }
    }

    /// Like [`Table::for_each`], but calls `f` only for the flows whose
    /// latest packet is not the one this walk's caller saw last time, with
    /// the caller's word for the slot (`place`, which `f` may change) and
    /// the word of a changed slot a little further on, if there is one
    /// (for the caller to fetch what it will need for that one).
    /// Both are kept in the slot's controller words: the stamp is the
    /// latest packet time folded to 32 bits and salted with `salt`, one
    /// per process, so the stamps a previous controller left in a table it
    /// pinned never pass for this one's. (Two packet times that fold to
    /// the same stamp would hide one change for one poll: a chance of one
    /// in 2^31 per changed flow, which the flow's next packet undoes.)
    /// Returns (flows, changed).
    pub fn for_each_changed(
        &self,
        salt: u32,
        mut f: impl FnMut(u32, &FlowKey, u64, &FlowCounters, &mut u32, Option<u32>),
    ) -> (usize, usize) {
        /// Slots ahead (about half of them hold flows at the working load).
        const AHEAD: u32 = 16;
        let (mut n, mut changed) = (0, 0);
        for idx in 0..self.slots {
            let mut words = match self.listing(idx, salt) {
                Listing::Free => continue,
                Listing::Unchanged => {
                    n += 1;
                    continue;
                }
                Listing::Changed(words) => words,
            };
            let Some(s) = self.read(idx) else { continue };
            n += 1;
            let now = stamp(s.counters().last_seen_ns, salt);
            if words.stamp != now {
                changed += 1;
                words.stamp = now;
                let soon = match idx.checked_add(AHEAD).filter(|&i| i < self.slots).map(|i| self.listing(i, salt)) {
                    Some(Listing::Changed(w)) => Some(w.place),
                    _ => None,
                };
                f(idx, &s.key(), s.tag(), s.counters(), &mut words.place, soon);
                // SAFETY: as in `listing`.
                unsafe { std::ptr::write_volatile(self.user_ptr(idx), words) };
            }
        }
        (n, changed)
    }

    /// What slot `idx` holds for a walk stamping with `salt`, read from
    /// three words: an unchanged flow costs those, not a copy of its slot
    /// (at a million flows with few changing, the copies were most of a
    /// poll).
    fn listing(&self, idx: u32, salt: u32) -> Listing {
        if state(self.tag_now(idx)) != LIVE {
            return Listing::Free;
        }
        // SAFETY: an aligned struct of two u32 in the mapping, written
        // only by this process (the program never touches it).
        let words = unsafe { std::ptr::read_volatile(self.user_ptr(idx)) };
        if words.stamp == stamp(self.last_seen_now(idx), salt) { Listing::Unchanged } else { Listing::Changed(words) }
    }

    /// The slot index of `key`'s flow, if it has one.
    pub fn find(&self, key: &FlowKey, seed: u64) -> Option<u32> {
        let w = S::words(key);
        let h = S::hash(&w, seed);
        for probe in 0..PROBES {
            let idx = slot_index(h, probe, self.slots - 1);
            match state(self.tag_now(idx)) {
                EMPTY => return None,
                LIVE if self.read(idx).is_some_and(|s| s.key_words() == w) => return Some(idx),
                _ => {}
            }
        }
        None
    }

    /// Retires the flow in slot `idx` if its tag is still `seen`: a slot
    /// that took another flow since it was read is left alone.
    pub fn retire(&self, idx: u32, seen: u64) -> bool {
        // SAFETY: an aligned u64 inside the mapping, changed atomically.
        let t = unsafe { &mut *self.tag_ptr(idx) };
        state(seen) == LIVE && cas64(t, seen, tag(TOMB, generation(seen)))
    }

    /// Files `key`'s flow with counters `c` from userspace, as the program
    /// would on its first packet (the benchmarks fill tables this way).
    /// Returns the slot, or None when all its probes are taken.
    pub fn insert(&self, key: &FlowKey, c: &FlowCounters, seed: u64) -> Option<u32> {
        let w = S::words(key);
        let h = S::hash(&w, seed);
        for probe in 0..PROBES {
            let idx = slot_index(h, probe, self.slots - 1);
            let seen = self.tag_now(idx);
            // SAFETY: as in `retire`.
            let t = unsafe { &mut *self.tag_ptr(idx) };
            if (state(seen) == EMPTY || state(seen) == TOMB) && cas64(t, seen, tag(BUSY, generation(seen).wrapping_add(1))) {
                let mut s = S::default();
                s.set_key(w);
                *s.counters_mut() = *c;
                *s.tag_mut() = tag(LIVE, generation(seen).wrapping_add(1));
                // SAFETY: this process owns the slot while it is BUSY; the
                // key and counters go in first, the LIVE tag last.
                unsafe {
                    let p = self.ptr(idx);
                    let live = s.tag();
                    *s.tag_mut() = tag(BUSY, generation(live));
                    std::ptr::write_volatile(p, s);
                    std::ptr::write_volatile(self.tag_ptr(idx), live);
                }
                return Some(idx);
            }
        }
        None
    }

    /// Rewrites slot `idx`'s counters through `f` (benchmarks and tests
    /// only: a packet the kernel counts meanwhile is lost). Whether the
    /// slot held a flow.
    pub fn update(&self, idx: u32, f: impl FnOnce(&mut FlowCounters)) -> bool {
        let Some(mut s) = self.read(idx) else { return false };
        f(s.counters_mut());
        // SAFETY: the counters' bytes inside the mapping; the tag is left as read.
        unsafe {
            let c = self.ptr(idx).cast::<u8>().add(S::COUNTERS_AT).cast::<FlowCounters>();
            std::ptr::write_volatile(c, *s.counters());
        }
        true
    }

    /// Sets slot `idx`'s media flag if the slot still holds the flow with
    /// tag `seen`: the kernel reads it on the flow's next packet. (A flow
    /// that takes the slot just after the check starts at worst one packet
    /// off its own flag.)
    pub fn set_media(&self, idx: u32, seen: u64, media: u8) {
        if self.tag_now(idx) == seen {
            // SAFETY: a single byte store into the mapping at the flag's offset.
            unsafe { std::ptr::write_volatile(self.ptr(idx).cast::<u8>().add(S::MEDIA_AT), media) };
        }
    }

    /// Kernel memory per slot, as mapped.
    pub fn bytes_per_slot() -> usize {
        size_of::<S>()
    }
}

/// A slot as a change walk sees it (see [`Table::for_each_changed`]).
enum Listing {
    /// No flow.
    Free,
    /// A flow whose latest packet is the one last stamped.
    Unchanged,
    /// A flow with news, and the slot's controller words as they are.
    Changed(UserWords),
}

/// A packet time as a change stamp (see [`Table::for_each_changed`]):
/// never 0, which is what a slot nobody stamped holds.
fn stamp(last_seen_ns: u64, salt: u32) -> u32 {
    ((last_seen_ns ^ last_seen_ns >> 32) as u32 ^ salt) | 1
}

/// A volatile copy of a slot, a word at a time: a volatile read of the
/// whole struct is split into many small loads.
///
/// # Safety
/// `src` is valid for reads and 8-byte aligned; `S` is plain data whose
/// size is a multiple of 8 (every slot type is).
#[inline(always)]
unsafe fn volatile_words<S: Copy>(src: *const S) -> S {
    let mut out = std::mem::MaybeUninit::<S>::uninit();
    // SAFETY: the caller's contract; `out` is S's room.
    unsafe { volatile_copy(src, out.as_mut_ptr()) };
    // SAFETY: every word written; plain data (the caller's contract).
    unsafe { out.assume_init() }
}

/// [`volatile_words`] into `to`.
///
/// # Safety
/// As for [`volatile_words`], and `to` is valid for writes and aligned.
#[inline(always)]
unsafe fn volatile_copy<S: Copy>(src: *const S, to: *mut S) {
    const { assert!(size_of::<S>().is_multiple_of(8) && align_of::<S>() >= 8) };
    let (from, to) = (src.cast::<u64>(), to.cast::<u64>());
    for i in 0..size_of::<S>() / 8 {
        // SAFETY: inside both (the caller's contract).
        unsafe { to.add(i).write(std::ptr::read_volatile(from.add(i))) };
    }
}
