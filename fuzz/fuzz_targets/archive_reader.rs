//! Fuzzes the archive reader: any byte string must give a manifest or an error, never a panic.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ava_packaging::scan(Path::new("fuzz.tar"), Cursor::new(data), None, &mut |_, _, r| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(r, &mut sink);
        Ok(())
    });
});
