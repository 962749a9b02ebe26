//! The XDP program's code, shared by its entry point (the `voipdetect`
//! binary target) and the benchmarks' reference programs
//! (`voipdetect-bench-ebpf`, a crate of its own so the product build makes
//! exactly one object).
#![no_std]

pub mod frame;

// The program's own pieces, for the BPF target only (the host build of
// this library, a build dependency of the controller, needs none).
#[cfg(target_arch = "bpf")]
pub mod clock;
#[cfg(target_arch = "bpf")]
pub mod fastpath;
#[cfg(target_arch = "bpf")]
pub mod maps;
#[cfg(target_arch = "bpf")]
pub mod table;

/// For the BPF target only (the host build of this library, a build
/// dependency of the controller, has std's). Unreachable in a verified
/// program: the verifier rejects any path that could get here.
#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
