#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_drivers::fuzzing::nlb_output(data));
