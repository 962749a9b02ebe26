//! Loading the XDP program, attaching it, and the controller's view of its
//! maps. Every attachment is undone when the [`Datapath`] is dropped, so an
//! error anywhere in the controller cannot leave a program behind.

use std::{
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use log::{info, warn};
use voipdetect_common::{
    BlockEntry, Control, FlowCounters, FlowKey, Stat,
    maps::{BLOCKLIST, CONTROL, DEFAULT_BLOCK_ENTRIES, DEFAULT_FLOW_ENTRIES, FLOWS, PROGRAM, STATS},
};

/// The XDP object built by build.rs from `voipdetect-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/voipdetect"));

/// aya-log's level variable in the program; levels per `aya_log_common::Level`.
const LOG_LEVEL_GLOBAL: &str = "AYA_LOG_LEVEL";
const LOG_LEVEL_OFF: u8 = 0;
const LOG_LEVEL_DEBUG: u8 = 4;

/// How to load the program.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Capacity of the per-direction flow LRU.
    pub flow_entries: u32,
    /// Capacity of the blocklist.
    pub block_entries: u32,
    /// Let the program's debug lines (new flow, block start) through.
    pub kernel_debug_log: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { flow_entries: DEFAULT_FLOW_ENTRIES, block_entries: DEFAULT_BLOCK_ENTRIES, kernel_debug_log: false }
    }
}

/// How a program ended up attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

struct Attachment {
    iface: String,
    ifindex: u32,
    mode: AttachMode,
    link: XdpLinkId,
}

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

/// The loaded program and its maps.
pub struct Datapath {
    // Field order matters: attachments go first on drop (see Drop).
    attachments: Vec<Attachment>,
    flows: HashMap<MapData, FlowKey, FlowCounters>,
    blocklist: HashMap<MapData, FlowKey, BlockEntry>,
    stats: PerCpuArray<MapData, u64>,
    control: Array<MapData, Control>,
    block_gen: u32,
    /// Whether batch lookups work on this kernel (cleared on the first refusal).
    batch_ok: std::cell::Cell<bool>,
    ebpf: Ebpf,
}

/// Entries per `BPF_MAP_LOOKUP_BATCH` call.
const BATCH_CHUNK: usize = 4096;

/// The index of a network interface in this network namespace.
pub fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let name = CString::new(iface).map_err(|_| anyhow!("invalid interface name {iface:?}"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("unknown interface {iface:?}: no such network interface in this network namespace");
    }
    Ok(index)
}

/// Name of interface `index`, for reports.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

const PRIVILEGE_HINT: &str =
    "missing privileges: loading and attaching XDP programs needs root (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN)";

/// Capability bits (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities up front: the kernel answers a missing
/// one with EPERM or EACCES, which it also uses for a verifier rejection,
/// so the error code alone cannot tell the two apart.
pub fn check_privileges() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| anyhow!("no CapEff in /proc/self/status"))?;
    let has = |cap: u32| eff & (1 << cap) != 0;
    if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) || !has(CAP_NET_ADMIN) {
        bail!(PRIVILEGE_HINT);
    }
    Ok(())
}

impl Datapath {
    /// Loads the program and creates its maps; attaches nothing yet.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        if opts.flow_entries == 0 || opts.block_entries == 0 {
            bail!("map sizes must be at least 1");
        }
        check_privileges()?;
        let level = if opts.kernel_debug_log { LOG_LEVEL_DEBUG } else { LOG_LEVEL_OFF };
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(FLOWS, opts.flow_entries)
            .map_max_entries(BLOCKLIST, opts.block_entries)
            .override_global(LOG_LEVEL_GLOBAL, &level, true)
            .load(OBJECT)
            .context("loading the XDP object")?;
        if opts.kernel_debug_log {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(logger) => spawn_log_reader(logger),
                Err(e) => warn!("kernel debug log unavailable: {e}"),
            }
        }
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| anyhow!("program {PROGRAM} missing from the object"))?
            .try_into()
            .context("program type")?;
        program.load().context("verifying the XDP program")?;
        let flows = HashMap::try_from(take(&mut ebpf, FLOWS)?).context(FLOWS)?;
        let blocklist = HashMap::try_from(take(&mut ebpf, BLOCKLIST)?).context(BLOCKLIST)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, STATS)?).context(STATS)?;
        let control = Array::try_from(take(&mut ebpf, CONTROL)?).context(CONTROL)?;
        Ok(Self {
            attachments: Vec::new(),
            flows,
            blocklist,
            stats,
            control,
            block_gen: 0,
            batch_ok: std::cell::Cell::new(true),
            ebpf,
        })
    }

    fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(PROGRAM).ok_or_else(|| anyhow!("program {PROGRAM} missing"))?.try_into()?)
    }

    /// Attaches to `iface` in native (driver) mode, falling back to generic
    /// mode when the driver has no XDP support.
    pub fn attach(&mut self, iface: &str) -> anyhow::Result<AttachMode> {
        let ifindex = ifindex(iface)?;
        if self.attachments.iter().any(|a| a.ifindex == ifindex) {
            bail!("interface {iface} named twice");
        }
        let program = self.program()?;
        let (link, mode) = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Native),
            Err(native) => {
                match program.attach_to_if_index(ifindex, XdpMode::Skb) {
                    Ok(link) => {
                        warn!("{iface}: native XDP unavailable ({native}); attached in generic mode, which is slower");
                        (link, AttachMode::Generic)
                    }
                    Err(generic) => {
                        return Err(anyhow!(
                            "attaching XDP to {iface} failed: native mode: {native}; generic mode: {generic}"
                        ));
                    }
                }
            }
        };
        info!("attached to {iface} (ifindex {ifindex}, {} mode)", mode.as_str());
        self.attachments.push(Attachment { iface: iface.to_owned(), ifindex, mode, link });
        Ok(mode)
    }

    /// Interfaces attached, with their mode.
    pub fn attached(&self) -> impl Iterator<Item = (&str, u32, AttachMode)> {
        self.attachments.iter().map(|a| (a.iface.as_str(), a.ifindex, a.mode))
    }

    /// Detaches from every interface.
    pub fn detach_all(&mut self) {
        let links: Vec<_> = self.attachments.drain(..).collect();
        if links.is_empty() {
            return;
        }
        if let Some(Ok(program)) = self.ebpf.program_mut(PROGRAM).map(<&mut Xdp>::try_from) {
            for a in links {
                match program.detach(a.link) {
                    Ok(()) => info!("detached from {}", a.iface),
                    Err(e) => warn!("detaching from {}: {e}", a.iface),
                }
            }
        }
    }

    /// Calls `f` for every tracked direction-flow: in batches where the
    /// kernel supports it, else entry by entry.
    pub fn for_each_flow(&self, mut f: impl FnMut(&FlowKey, &FlowCounters)) -> anyhow::Result<usize> {
        if self.batch_ok.get() {
            match crate::batch::for_each(self.flows.map().fd().as_fd(), BATCH_CHUNK, &mut f) {
                Ok(n) => return Ok(n),
                Err(crate::batch::BatchError::Unsupported) => {
                    warn!("BPF_MAP_LOOKUP_BATCH unsupported: reading the flow map entry by entry");
                    self.batch_ok.set(false);
                }
                Err(e) => return Err(e).context("reading the flow map"),
            }
        }
        self.for_each_flow_by_key(f)
    }

    /// Calls `f` for every tracked direction-flow, one `get_next_key` and
    /// one lookup per entry (the fallback, and the benchmark's reference).
    pub fn for_each_flow_by_key(&self, mut f: impl FnMut(&FlowKey, &FlowCounters)) -> anyhow::Result<usize> {
        let mut n = 0;
        for item in self.flows.iter() {
            match item {
                Ok((k, v)) => {
                    f(&k, &v);
                    n += 1;
                }
                // Evicted between get_next_key and lookup: skip it.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).context("reading the flow map"),
            }
        }
        Ok(n)
    }

    /// One flow's counters, if tracked.
    pub fn flow(&self, key: &FlowKey) -> Option<FlowCounters> {
        self.flows.get(key, 0).ok()
    }

    /// Writes a flow entry from userspace (benchmarks fill the map this way).
    pub fn insert_flow(&mut self, key: &FlowKey, c: &FlowCounters) -> anyhow::Result<()> {
        self.flows.insert(key, c, 0).context("writing the flow map")
    }

    /// The flow map's kernel memory as `/proc/self/fdinfo` reports it, and
    /// its capacity.
    pub fn flow_map_memory(&self) -> anyhow::Result<(u64, u32)> {
        let fd = self.flows.map().fd().as_fd().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).context("reading fdinfo")?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let memlock = field("memlock:").ok_or_else(|| anyhow!("no memlock in fdinfo"))?;
        let max = field("max_entries:").ok_or_else(|| anyhow!("no max_entries in fdinfo"))?;
        Ok((memlock, max as u32))
    }

    /// Forgets a flow (the controller evicts idle flows).
    pub fn remove_flow(&mut self, key: &FlowKey) {
        let _ = self.flows.remove(key);
    }

    /// Lists `keys` until `expires_ns` (CLOCK_MONOTONIC), then publishes the
    /// change with one generation bump.
    pub fn block(&mut self, keys: &[FlowKey], entry: BlockEntry) -> anyhow::Result<()> {
        for k in keys {
            self.blocklist.insert(k, entry, 0).context("writing the blocklist")?;
        }
        self.publish()
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

    /// Bumps the generation so flows re-read the blocklist. Must follow the
    /// blocklist write (see `Control::block_gen`).
    fn publish(&mut self) -> anyhow::Result<()> {
        self.block_gen = self.block_gen.wrapping_add(1);
        self.control
            .set(0, Control { block_gen: self.block_gen, _pad: 0 }, 0)
            .context("publishing the blocklist generation")
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

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN` and
    /// returns its XDP action.
    pub fn test_run(&mut self, frame: &[u8]) -> anyhow::Result<u32> {
        Ok(self.test_run_repeat(frame, 1)?.0)
    }

    /// Runs the program `repeat` times on `frame`; returns the action and the
    /// kernel's mean time per run.
    pub fn test_run_repeat(&mut self, frame: &[u8], repeat: u32) -> anyhow::Result<(u32, Duration)> {
        let program = self.program()?;
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
        let r = program.test_run(opts).map_err(|e: ProgramError| anyhow::Error::new(e).context("BPF_PROG_TEST_RUN"))?;
        Ok((r.return_value, r.duration))
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the object"))
}

/// Forwards the program's aya-log lines to the `log` crate.
fn spawn_log_reader(mut logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let spawned = std::thread::Builder::new().name("kernel-log".into()).spawn(move || {
        loop {
            logger.flush();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    if let Err(e) = spawned {
        warn!("kernel debug log reader: {e}");
    }
}
