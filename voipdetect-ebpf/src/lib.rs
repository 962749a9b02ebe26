//! Pieces shared by the XDP programs of this crate: the production program
//! (`voipdetect` binary target) and the benchmark programs (`bench-progs`).
#![no_std]

pub mod frame;

/// For the BPF target only (the host build of this library, a build
/// dependency of the controller, has std's). Unreachable in a verified
/// program: the verifier rejects any path that could get here.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
