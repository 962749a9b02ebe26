//! [`Bytes`] over an XDP frame: the one bounds check every header read in
//! the program goes through.

use aya_ebpf::programs::XdpContext;
use voipdetect_common::parse::Bytes;

pub struct Frame {
    start: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self { start: ctx.data(), end: ctx.data_end() }
    }
}

impl Bytes for Frame {
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // Hide how `off` was computed: otherwise LLVM may reassociate
        // `start + (a - 1)` into `(start - 1) + a`, and the verifier rejects
        // any packet pointer whose constant part is negative.
        let p = self.start + core::hint::black_box(off);
        if p + N > self.end {
            return None;
        }
        // SAFETY: [p, p + N) lies inside the frame (checked above, in the
        // form the verifier tracks); [u8; N] has alignment 1.
        Some(unsafe { *(p as *const [u8; N]) })
    }
}
