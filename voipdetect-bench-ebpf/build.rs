//! Rebuild when the bpf-linker binary changes: the crate's link step depends
//! on it, and cargo cannot express that dependency itself.
fn main() {
    // As the product's program is linked (see voipdetect-ebpf/build.rs):
    // the stages measure its code as it runs.
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
