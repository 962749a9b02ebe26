//! Loading the XDP program, attaching it, and the controller's view of its
//! maps. Every attachment is undone when the [`Datapath`] is dropped, so an
//! error anywhere in the controller cannot leave a program behind.

use std::{
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray},
    programs::{
        ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
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
    /// Pin the maps and links here, and re-adopt what a previous run left
    /// pinned there. `None`: nothing outlives the process.
    pub pin_dir: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { flow_entries: DEFAULT_FLOW_ENTRIES, block_entries: DEFAULT_BLOCK_ENTRIES, kernel_debug_log: false, pin_dir: None }
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
    /// Where the link is pinned, if it is.
    pin: Option<PathBuf>,
    /// Taken over from an earlier run's pin rather than attached anew.
    adopted: bool,
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

/// The program's maps: owned by a loaded [`Datapath`], or opened from their
/// pins by the `flows`, `block`, `unblock` and `status` commands while a
/// controller runs in another process.
pub struct Maps {
    flows: HashMap<MapData, FlowKey, FlowCounters>,
    blocklist: HashMap<MapData, FlowKey, BlockEntry>,
    stats: PerCpuArray<MapData, u64>,
    control: Array<MapData, Control>,
    /// Whether batch lookups work on this kernel (cleared on the first refusal).
    batch_ok: std::cell::Cell<bool>,
}

/// The loaded program and its maps.
pub struct Datapath {
    // Field order matters: attachments go first on drop (see Drop).
    attachments: Vec<Attachment>,
    maps: Maps,
    pin_dir: Option<PathBuf>,
    /// Leave links and pins in place when dropped (`run --keep-attached`
    /// after a clean start); otherwise every drop detaches and unpins.
    keep_on_drop: bool,
    /// Whether the maps came from an earlier run's pins.
    adopted_maps: bool,
    ebpf: Ebpf,
}

impl std::ops::Deref for Datapath {
    type Target = Maps;
    fn deref(&self) -> &Maps {
        &self.maps
    }
}

impl std::ops::DerefMut for Datapath {
    fn deref_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }
}

/// File name of the pin of the link on `iface`.
pub fn link_pin_name(iface: &str) -> String {
    format!("link-{iface}")
}

/// bpffs's magic number (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn on_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a zeroed statfs is a valid out-buffer; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Makes sure `dir` can hold pins: mounts the BPF filesystem on
/// /sys/fs/bpf when it is not there yet (as bpftool and Cilium do), and
/// refuses a directory on any other filesystem.
fn ensure_bpffs(dir: &Path) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/bpf");
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    if on_bpffs(existing) {
        return Ok(());
    }
    if dir.starts_with(root) && existing.starts_with("/sys") {
        let (src, target, fstype) = (c"bpf", CString::new("/sys/fs/bpf")?, c"bpf");
        // SAFETY: NUL-terminated strings; a plain mount of a pseudo filesystem.
        let r = unsafe { libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, c"mode=0700".as_ptr().cast()) };
        if r != 0 {
            return Err(std::io::Error::last_os_error()).context("mounting the BPF filesystem on /sys/fs/bpf");
        }
        info!("mounted the BPF filesystem on /sys/fs/bpf");
        return Ok(());
    }
    bail!("pin directory {} is not on a BPF filesystem (mount -t bpf bpf DIR)", dir.display())
}

/// Makes a pinned object readable and writable by root only.
fn restrict(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).with_context(|| format!("chmod 0600 {}", path.display()))
}

/// The XDP program attached to an interface, if any: (id, name), from
/// `ip -details -json link show`.
fn attached_xdp(iface: &str) -> Option<(u64, String)> {
    let out = std::process::Command::new("ip").args(["-details", "-json", "link", "show", "dev", iface]).output().ok()?;
    xdp_prog(&String::from_utf8_lossy(&out.stdout))
}

/// The XDP program (id, name) in the output of `ip -details -json link
/// show dev IF`: one program under `prog`, several under `attached`.
pub fn xdp_prog(ip_json: &str) -> Option<(u64, String)> {
    let v: serde_json::Value = serde_json::from_str(ip_json).ok()?;
    let xdp = &v.get(0)?["xdp"];
    let prog = if xdp["prog"].is_object() { &xdp["prog"] } else { &xdp["attached"][0]["prog"] };
    Some((prog["id"].as_u64()?, prog["name"].as_str().unwrap_or("").to_owned()))
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

const MAP_NAMES: [&str; 4] = [FLOWS, BLOCKLIST, STATS, CONTROL];

impl Maps {
    fn from_ebpf(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            flows: HashMap::try_from(take(ebpf, FLOWS)?).context(FLOWS)?,
            blocklist: HashMap::try_from(take(ebpf, BLOCKLIST)?).context(BLOCKLIST)?,
            stats: PerCpuArray::try_from(take(ebpf, STATS)?).context(STATS)?,
            control: Array::try_from(take(ebpf, CONTROL)?).context(CONTROL)?,
            batch_ok: std::cell::Cell::new(true),
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
        Ok(Self {
            flows: HashMap::try_from(open(FLOWS)?).context(FLOWS)?,
            blocklist: HashMap::try_from(open(BLOCKLIST)?).context(BLOCKLIST)?,
            stats: PerCpuArray::try_from(open(STATS)?).context(STATS)?,
            control: Array::try_from(open(CONTROL)?).context(CONTROL)?,
            batch_ok: std::cell::Cell::new(true),
        })
    }
}

impl Maps {
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
        let field = |name: &str| info.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<u64>().ok());
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

    /// Bumps the generation so flows re-read the blocklist. Must follow the
    /// blocklist write (see `Control::block_gen`).
    fn publish(&mut self) -> anyhow::Result<()> {
        // Read, then move on to a value no writer has used: the controller
        // and `voipdetect block` may both write, and a flow must see every
        // change as a change.
        let cur = self.control.get(&0, 0).map(|c| c.block_gen).unwrap_or(0);
        let micros = (crate::run::monotonic_ns() / 1_000) as u32;
        let next = if micros != cur && micros.wrapping_sub(cur) < u32::MAX / 2 { micros } else { cur.wrapping_add(1) };
        self.control.set(0, Control { block_gen: next, _pad: 0 }, 0).context("publishing the blocklist generation")
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

impl Datapath {
    /// Loads the program and creates its maps (or re-adopts pinned ones);
    /// attaches nothing yet.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        if opts.flow_entries == 0 || opts.block_entries == 0 {
            bail!("map sizes must be at least 1");
        }
        check_privileges()?;
        let level = if opts.kernel_debug_log { LOG_LEVEL_DEBUG } else { LOG_LEVEL_OFF };
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(FLOWS, opts.flow_entries).map_max_entries(BLOCKLIST, opts.block_entries).override_global(
            LOG_LEVEL_GLOBAL,
            &level,
            true,
        );
        let mut adopted_maps = false;
        let paths: Vec<(&str, PathBuf)> = opts.pin_dir.iter().flat_map(|d| MAP_NAMES.iter().map(move |n| (*n, d.join(n)))).collect();
        if let Some(dir) = &opts.pin_dir {
            ensure_bpffs(dir)?;
            std::fs::create_dir_all(dir).with_context(|| format!("creating the pin directory {}", dir.display()))?;
            {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("chmod 0700 {}", dir.display()))?;
            }
            adopted_maps = paths.iter().all(|(_, p)| p.exists());
            for (name, path) in &paths {
                loader.map_pin_path(name, path.as_path());
            }
        }
        let mut ebpf = loader.load(OBJECT).context("loading the XDP object")?;
        for (_, path) in &paths {
            restrict(path)?;
        }
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
        let maps = Maps::from_ebpf(&mut ebpf)?;
        if adopted_maps {
            info!("re-adopted the maps pinned in {}", opts.pin_dir.as_deref().unwrap_or(Path::new("")).display());
        }
        Ok(Self { attachments: Vec::new(), maps, pin_dir: opts.pin_dir.clone(), keep_on_drop: false, adopted_maps, ebpf })
    }

    /// Whether the maps (and with them the blocklist) came from an earlier run.
    pub fn adopted_maps(&self) -> bool {
        self.adopted_maps
    }

    /// From now on, dropping this leaves the program attached and pinned.
    pub fn keep_on_drop(&mut self, keep: bool) {
        self.keep_on_drop = keep;
    }

    fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(PROGRAM).ok_or_else(|| anyhow!("program {PROGRAM} missing"))?.try_into()?)
    }

    /// Attaches to `iface` in native (driver) mode, falling back to generic
    /// mode when the driver has no XDP support. With a pin directory, the
    /// link is pinned, and a link an earlier run pinned for `iface` is taken
    /// over (its program atomically replaced) instead of attaching twice.
    pub fn attach(&mut self, iface: &str) -> anyhow::Result<AttachMode> {
        let ifindex = ifindex(iface)?;
        if self.attachments.iter().any(|a| a.ifindex == ifindex) {
            bail!("interface {iface} named twice");
        }
        let pin = self.pin_dir.as_ref().map(|d| d.join(link_pin_name(iface)));
        if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
            let link = PinnedLink::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(link)).context("pinned link is not an XDP link")?;
            let link = self.program()?.attach_to_link(link).context("replacing the program of the pinned link")?;
            info!("attached to {iface} (ifindex {ifindex}, re-adopted the link pinned at {})", pin.display());
            self.attachments.push(Attachment {
                iface: iface.to_owned(),
                ifindex,
                mode: AttachMode::Native,
                link,
                pin: Some(pin.clone()),
                adopted: true,
            });
            return Ok(AttachMode::Native);
        }
        if let Some((id, name)) = attached_xdp(iface) {
            let whose = if name == PROGRAM { "another voipdetect" } else { "another program" };
            bail!(
                "interface {iface} already has an XDP program attached ({whose}: {name:?}, id {id}); \
                 stop it first, or run with the --pin-dir it was started with to take it over"
            );
        }
        let program = self.program()?;
        let (link, mode) = match program.attach_to_if_index(ifindex, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Native),
            Err(native) => match program.attach_to_if_index(ifindex, XdpMode::Skb) {
                Ok(link) => {
                    warn!("{iface}: native XDP unavailable ({native}); attached in generic mode, which is slower");
                    (link, AttachMode::Generic)
                }
                Err(generic) => {
                    return Err(anyhow!("attaching XDP to {iface} failed: native mode: {native}; generic mode: {generic}"));
                }
            },
        };
        let (mut link, mut pinned) = (link, None);
        if let Some(path) = pin {
            match self.pin_link(link, &path) {
                Ok(id) => (link, pinned) = (id, Some(path)),
                Err(e) => {
                    // The link went with the failed attempt: attach again, unpinned.
                    warn!("{iface}: link not pinned ({e:#}); it will not outlive the controller");
                    let mode = if mode == AttachMode::Native { XdpMode::Driver } else { XdpMode::Skb };
                    link = self.program()?.attach_to_if_index(ifindex, mode)?;
                }
            }
        }
        info!("attached to {iface} (ifindex {ifindex}, {} mode)", mode.as_str());
        self.attachments.push(Attachment { iface: iface.to_owned(), ifindex, mode, link, pin: pinned, adopted: false });
        Ok(mode)
    }

    /// Pins a link the program owns; the program keeps owning it, under the
    /// returned id.
    fn pin_link(&mut self, link: XdpLinkId, path: &Path) -> anyhow::Result<XdpLinkId> {
        let program = self.program()?;
        let owned = program.take_link(link)?;
        let fd = FdLink::try_from(owned).map_err(|e| anyhow!("only bpf_link attachments can be pinned ({e})"))?;
        let pinned = fd.pin(path).with_context(|| format!("pinning {}", path.display()))?;
        restrict(path)?;
        let again = XdpLink::try_from(FdLink::from(pinned)).context("pinned link")?;
        // Same program: the update is a no-op that hands ownership back.
        Ok(self.program()?.attach_to_link(again)?)
    }

    /// Interfaces attached, with their mode.
    pub fn attached(&self) -> impl Iterator<Item = (&str, u32, AttachMode)> {
        self.attachments.iter().map(|a| (a.iface.as_str(), a.ifindex, a.mode))
    }

    /// Detaches from every interface and removes every pin.
    pub fn detach_all(&mut self) {
        let links: Vec<_> = self.attachments.drain(..).collect();
        for a in &links {
            if let Some(pin) = &a.pin {
                let _ = std::fs::remove_file(pin);
            }
        }
        if let Some(Ok(program)) = self.ebpf.program_mut(PROGRAM).map(<&mut Xdp>::try_from) {
            for a in links {
                match program.detach(a.link) {
                    Ok(()) => info!("detached from {}", a.iface),
                    Err(e) => warn!("detaching from {}: {e}", a.iface),
                }
            }
        }
        self.unpin_maps();
    }

    /// Removes the map pins (and the pin directory when nothing else is in it).
    fn unpin_maps(&mut self) {
        let Some(dir) = &self.pin_dir else { return };
        let links_left = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().starts_with("link-")))
            .unwrap_or(false);
        if links_left {
            // Another interface's link (of an earlier run) still uses them.
            return;
        }
        for name in MAP_NAMES {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(dir);
    }

    /// Interfaces whose links this run took over from an earlier one.
    pub fn adopted_interfaces(&self) -> Vec<&str> {
        self.attachments.iter().filter(|a| a.adopted).map(|a| a.iface.as_str()).collect()
    }

    /// Instructions the kernel's verifier walked to accept the program (its
    /// limit is 1 000 000); None on kernels older than 5.16.
    pub fn verified_instructions(&mut self) -> anyhow::Result<Option<u32>> {
        let info = self.program()?.info().context("reading the program's info")?;
        Ok(info.verified_instruction_count())
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
        if self.keep_on_drop {
            info!("leaving the program attached and pinned in {:?}", self.pin_dir);
            return;
        }
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
