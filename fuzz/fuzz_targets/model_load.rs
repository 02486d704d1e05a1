//! Fuzz target `model_load`: see `entry::model_load`.
#![no_main]

#[path = "../entry.rs"]
#[allow(dead_code)]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::model_load(data));
