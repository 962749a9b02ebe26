//! Empty: the program is the `voipdetect` binary target. The library target
//! exists so the userspace crate can name this package as a build dependency.
#![no_std]
