//! Any bytes a client can send as a result stream: the first byte picks the task, the rest is
//! read as length-delimited `ResultPart` messages and goes through the server's checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let task = strata_fuzz::task(selector);
    let (parts, complete) = strata_fuzz::decode_parts(rest);
    strata_fuzz::run(&task, &parts, complete);
});
