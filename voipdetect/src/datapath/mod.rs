//! Loading the XDP program, attaching it, detaching it. Every attachment
//! is undone when the [`Datapath`] is dropped, so an error anywhere in the
//! controller cannot leave a program behind.
//!
//! Split the way aya splits its maps: [`maps`] (the controller's view of
//! the maps), [`table`] (the flow tables mapped into memory), [`host`]
//! (interfaces, capabilities, the BPF filesystem), [`pins`] (pin names),
//! and, behind the `test-run` feature for the test tiers and benchmarks,
//! `testrun`.

pub mod host;
pub mod maps;
pub mod pins;
pub mod table;
#[cfg(feature = "test-run")]
mod testrun;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use log::{info, warn};
use voipdetect_common::{
    maps::{
        BLOCKLIST, DEFAULT_BLOCK_ENTRIES, DEFAULT_FLOW_ENTRIES, DEFAULT_TICK_NS, FLOWS4, FLOWS4_MASK, FLOWS6, FLOWS6_MASK, PROGRAM,
        TICK_NS, V6_SHARE,
    },
    table::capacity,
};

use self::{
    host::{attached_xdp, ensure_bpffs, restrict},
    pins::{MAP_NAMES, link_pin, pinned_links},
};
pub use self::{
    host::{check_privileges, ifindex, ifname, private_mount_namespace, random_seed, xdp_prog},
    maps::{ChangeTracker, Maps, Stats},
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
    /// Slots of the IPv4 flow table (rounded up to a power of two; the
    /// IPv6 table gets a quarter as many). Tables re-adopted from pins keep
    /// the size they were created with.
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
    link: XdpLinkId,
    /// Where the link is pinned, if it is.
    pin: Option<PathBuf>,
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

impl Datapath {
    /// Loads the program and creates its maps (or re-adopts pinned ones);
    /// attaches nothing yet.
    pub fn load(opts: &LoadOptions) -> anyhow::Result<Self> {
        if opts.flow_entries == 0 || opts.block_entries == 0 {
            bail!("map sizes must be at least 1");
        }
        check_privileges()?;
        let level = if opts.kernel_debug_log { LOG_LEVEL_DEBUG } else { LOG_LEVEL_OFF };
        // Pinned tables keep their size: the program's masks must match it.
        let pinned_slots = |name: &str| -> Option<u32> {
            let path = opts.pin_dir.as_ref()?.join(name);
            aya::maps::MapData::from_pin(path).ok()?.info().ok().map(|i| i.max_entries())
        };
        let slots4 = pinned_slots(FLOWS4).unwrap_or_else(|| capacity(opts.flow_entries));
        let slots6 = pinned_slots(FLOWS6).unwrap_or_else(|| capacity(opts.flow_entries / V6_SHARE));
        let (mask4, mask6) = (slots4 - 1, slots6 - 1);
        let tick = kernel_tick_ns();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(FLOWS4, slots4)
            .map_max_entries(FLOWS6, slots6)
            .map_max_entries(BLOCKLIST, opts.block_entries)
            .override_global(LOG_LEVEL_GLOBAL, &level, true)
            .override_global(FLOWS4_MASK, &mask4, true)
            .override_global(FLOWS6_MASK, &mask6, true)
            .override_global(TICK_NS, &tick, true);
        if std::env::var_os("VOIPDETECT_VERIFIER_LOG").is_some() {
            // The verifier's every step, for whoever changes the program.
            loader.verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
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
        let mut maps = Maps::from_ebpf(&mut ebpf)?;
        if adopted_maps {
            info!("re-adopted the maps pinned in {}", opts.pin_dir.as_deref().unwrap_or(Path::new("")).display());
        } else {
            // New tables: a secret seed before the first packet (nothing is
            // attached yet).
            maps.init_seed(random_seed())?;
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
        let pin = self.pin_dir.as_ref().map(|d| link_pin(d, iface));
        if let Some(pin) = pin.as_ref().filter(|p| p.exists()) {
            let link = PinnedLink::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(link)).context("pinned link is not an XDP link")?;
            let link = self.program()?.attach_to_link(link).context("replacing the program of the pinned link")?;
            info!("attached to {iface} (ifindex {ifindex}, re-adopted the link pinned at {})", pin.display());
            self.attachments.push(Attachment { iface: iface.to_owned(), ifindex, link, pin: Some(pin.clone()) });
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
        self.attachments.push(Attachment { iface: iface.to_owned(), ifindex, link, pin: pinned });
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
        if pinned_links(dir).is_ok_and(|l| !l.is_empty()) {
            // Another interface's link (of an earlier run) still uses them.
            return;
        }
        for name in MAP_NAMES {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(dir);
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

/// 64 random bits from the kernel.
/// The kernel's tick: the resolution of CLOCK_MONOTONIC_COARSE, which
/// advances once a tick (the program turns jiffies into time with it).
fn kernel_tick_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer.
    let ok = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0;
    let ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    if ok && (1_000_000..=10_000_000).contains(&ns) { ns } else { DEFAULT_TICK_NS }
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
