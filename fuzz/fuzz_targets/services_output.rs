#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_drivers::fuzzing::services_output(data));
