//! Helpers shared by the root-only test tiers.

/// Panics with a clear message unless running as root: these tests load
/// XDP programs and create network namespaces, and must never pass by
/// silently skipping.
pub fn require_root() {
    if let Err(e) = voipdetect_lab::require_root("this test") {
        panic!("{e:#}");
    }
}

/// The voipdetect binary the lab runs (`cargo xtask test` sets `VOIPDETECT_BIN`).
pub fn binary() -> std::path::PathBuf {
    voipdetect_lab::voipdetect_binary().expect("voipdetect binary (cargo xtask test sets VOIPDETECT_BIN)")
}
