//! Nothing: the reference programs are the `bench-progs` binary. This
//! library exists so the lab crate can name the package as a build
//! dependency and be rebuilt when the programs change.
#![no_std]
