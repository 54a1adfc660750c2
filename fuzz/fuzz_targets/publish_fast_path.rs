//! See `tower_mqtt::__fuzz::publish_fast_path` (src/fuzz.rs) for the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tower_mqtt::__fuzz::publish_fast_path(data));
