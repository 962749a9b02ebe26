//! Rebuild when the bpf-linker binary changes: the crate's link step depends
//! on it, and cargo cannot express that dependency itself.
fn main() {
    // Headers sit at any offset in a frame: without this the BPF backend
    // splits every load it cannot prove aligned into single bytes (an
    // IPv4/UDP parse took ~140 instructions). x86-64 and arm64 load
    // unaligned packet data natively and the verifier allows it there;
    // stack slots stay aligned (LLVM lays them out).
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
