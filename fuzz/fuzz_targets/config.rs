//! Fuzzes configuration parsing and validation: any text is either a config
//! or a list of problems, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = switchyard::config::from_toml(text, Path::new("fuzz.toml"), Path::new("/nonexistent"), &|_| None);
    }
});
