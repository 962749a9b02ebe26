//! Rebuild when the bpf-linker binary changes: the crate's link step depends
//! on it, and cargo cannot express that dependency itself.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
