//! Fuzz target `predict_request`: see `entry::predict_request`.
#![no_main]

#[path = "../entry.rs"]
#[allow(dead_code)]
mod entry;

libfuzzer_sys::fuzz_target!(|data: &[u8]| entry::predict_request(data));
