//! Pieces shared by the production XDP program (the `voipdetect` binary
//! target) and the benchmarks' reference programs (`voipdetect-bench-ebpf`,
//! a crate of its own so the product build makes exactly one object).
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
