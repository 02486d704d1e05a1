//! Fuzz target `idx`: see `entry::idx_files`.
#![no_main]

#[path = "../entry.rs"]
#[allow(dead_code)]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::idx_files(data));
