//! `BPF_MAP_LOOKUP_BATCH` (kernel 5.6+), which aya does not wrap: one
//! syscall reads thousands of hash-map entries, where `get_next_key` plus
//! `lookup` take two syscalls per entry. Kernels or map types that refuse
//! batch operations report [`BatchError::Unsupported`] and the caller falls
//! back to the per-entry walk.

use std::{
    io,
    mem::{MaybeUninit, size_of},
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// bpf(2) command numbers (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch lookups are not supported here")]
    Unsupported,
    #[error("BPF_MAP_LOOKUP_BATCH: {0}")]
    Io(#[from] io::Error),
}

/// Reads every entry of a hash map in batches of `chunk` and calls `f` on
/// each; returns how many were read.
pub fn for_each<K: Pod, V: Pod>(fd: BorrowedFd<'_>, chunk: usize, mut f: impl FnMut(&K, &V)) -> Result<usize, BatchError> {
    let chunk = chunk.max(1);
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(chunk);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(chunk);
    // SAFETY: MaybeUninit needs no initialisation; the kernel fills the
    // first `count` slots before we read them.
    unsafe {
        keys.set_len(chunk);
        values.set_len(chunk);
    }
    // Hash maps use a u32 bucket index as the batch cursor; 8 bytes covers it.
    let mut cursor = 0u64;
    let mut first = true;
    let mut total = 0;
    loop {
        let mut next = 0u64;
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const cursor as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` points at buffers of `chunk` keys and values and at
        // two u64 cursors, all alive for the call.
        let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>()) };
        let err = (r < 0).then(io::Error::last_os_error);
        let done = match err.as_ref().and_then(io::Error::raw_os_error) {
            None => false,
            Some(libc::ENOENT) => true,
            Some(libc::EINVAL | libc::ENOTSUP | libc::EOPNOTSUPP | libc::E2BIG) if first && attr.count == 0 => {
                return Err(BatchError::Unsupported);
            }
            Some(_) => return Err(BatchError::Io(err.expect("checked"))),
        };
        for i in 0..attr.count as usize {
            // SAFETY: the kernel wrote the first `count` entries.
            let (k, v) = unsafe { (keys[i].assume_init_ref(), values[i].assume_init_ref()) };
            f(k, v);
        }
        total += attr.count as usize;
        if done {
            return Ok(total);
        }
        cursor = next;
        first = false;
    }
}
