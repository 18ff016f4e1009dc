#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ebb_lb::fuzzing::control_request(data));
