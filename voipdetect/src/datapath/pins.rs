//! Where the program's maps and links are pinned, and what the pins are
//! called, in one place for the loader, the operator commands and the lab.

use std::path::{Path, PathBuf};

use voipdetect_common::maps::{BLOCKLIST, CONTROL, FLOWS4, FLOWS6, HOLDS, SESSIONS, STATS};

/// Where the BPF filesystem is mounted (and mounted by us when it is not).
pub const BPF_FS_ROOT: &str = "/sys/fs/bpf";

/// Where pinned maps and links live unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/voipdetect";

/// Every map the controller pins, by its name in the object.
pub const MAP_NAMES: [&str; 7] = [FLOWS4, FLOWS6, BLOCKLIST, HOLDS, SESSIONS, STATS, CONTROL];

/// Pins of interface links are called `link-<iface>`.
const LINK_PREFIX: &str = "link-";

/// The pin of the link on `iface` in `dir`.
pub fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{LINK_PREFIX}{iface}"))
}

/// The interface a pin's file name is the link of, if it is a link's.
pub fn link_pin_iface(file_name: &str) -> Option<&str> {
    file_name.strip_prefix(LINK_PREFIX).filter(|i| !i.is_empty())
}

/// Interfaces with a pinned link in `dir`, sorted.
pub fn pinned_links(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| link_pin_iface(&e.file_name().to_string_lossy()).map(str::to_owned))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pins_name_their_interface() {
        let p = link_pin(Path::new(DEFAULT_PIN_DIR), "eth1");
        assert_eq!(p, Path::new("/sys/fs/bpf/voipdetect/link-eth1"));
        assert_eq!(link_pin_iface("link-eth1"), Some("eth1"));
        assert_eq!(link_pin_iface(FLOWS4), None);
        assert_eq!(link_pin_iface("link-"), None);
        assert!(Path::new(DEFAULT_PIN_DIR).starts_with(BPF_FS_ROOT));
    }

    #[test]
    fn pinned_links_lists_only_links() {
        let dir = std::env::temp_dir().join(format!("vd-pins-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["link-g1", FLOWS4, "link-g0", STATS] {
            std::fs::write(dir.join(f), b"").unwrap();
        }
        assert_eq!(pinned_links(&dir).unwrap(), ["g0", "g1"]);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(pinned_links(&dir).is_err());
    }
}
