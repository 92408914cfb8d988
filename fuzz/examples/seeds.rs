//! Writes a seed corpus for `result_bytes`: one valid stream per task and slice size, as the
//! target reads them (a task byte, then length-delimited `ResultPart` messages).
//!
//! `cargo run --example seeds -- DIR` (scripts/fuzz.sh does it when DIR is empty).

fn main() {
    let dir = std::env::args().nth(1).expect("usage: seeds DIR");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let values: Vec<u32> = (0..64).map(|i: u32| (i as f32 * 0.37 - 3.0).to_bits()).collect();
    for selector in 0..5u8 {
        let task = strata_fuzz::task(selector);
        for chunk in [4, 16, 1024] {
            let parts = strata_fuzz::valid_stream(&task, &values, chunk);
            assert!(strata_fuzz::run(&task, &parts, true).is_some(), "seed for task {selector} is accepted");
            let mut bytes = vec![selector];
            bytes.extend(strata_fuzz::encode_parts(&parts));
            std::fs::write(format!("{dir}/task{selector}-chunk{chunk}"), bytes).expect("write a seed");
        }
    }
}
