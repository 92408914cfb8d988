//! Data as people keep it, through a real server and real clients: a CSV table whose rows have
//! owners (sites), split so that each site's rows stay on one client, and NumPy arrays.

use std::fmt::Write as _;

use strata_core::config::{DatasetKind, RunConfig};
use strata_core::partition_spec::PartitionSpec;
use strata_core::records::ClientRoundRecord;
use strata_tests::synthetic_config;

/// Runs `config` with three client daemons; returns the per-client rows.
async fn run(config: RunConfig) -> Vec<ClientRoundRecord> {
    let (rows, outcome) = strata_tests::run_three_clients(config).await;
    assert_eq!(outcome.rounds.iter().filter(|r| r.aggregated).count(), 2, "both rounds aggregated");
    rows
}

/// Rows of three sites of different sizes; the class is the sign pattern of two features.
fn hospital_table() -> (String, [usize; 3]) {
    let sizes = [120, 90, 60];
    let mut text = String::from("site,age,pressure,noise,outcome\n");
    for (site, &n) in ["north", "south", "west"].iter().zip(&sizes) {
        for i in 0..n {
            let (a, b) = (((i * 37) % 100) as f32 / 50.0 - 1.0, ((i * 61) % 100) as f32 / 50.0 - 1.0);
            let outcome = if a > 0.0 {
                "sick"
            } else if b > 0.0 {
                "well"
            } else {
                "unknown"
            };
            writeln!(text, "{site},{a},{b},{},{outcome}", (i % 7) as f32 / 7.0).expect("write");
        }
    }
    (text, sizes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_trains_with_each_owners_rows_on_one_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (table, sizes) = hospital_table();
    let path = dir.path().join("patients.csv");
    std::fs::write(&path, table).expect("write the table");
    let mut config = synthetic_config(3, 2);
    config.data.dataset = DatasetKind::Csv;
    config.data.path = Some(path);
    config.data.label_column = Some("outcome".into());
    config.data.group_column = Some("site".into());
    config.data.split = PartitionSpec::Natural;
    let rows = run(config).await;
    // Owners are dealt in sorted order: north, south, west to clients 0, 1, 2.
    for (client, &n) in sizes.iter().enumerate() {
        let row = rows.iter().find(|r| r.client == client as u32 && r.trained).expect("the client trained");
        assert_eq!(row.train_samples + row.test_samples, n as u64, "client {client} holds its site's rows");
        assert_eq!(row.train_samples, (0.75 * n as f64).floor() as u64);
    }
    let last = rows.iter().filter(|r| r.round == 1).filter_map(|r| r.accuracy_trained).fold(0.0, f64::max);
    assert!(last > 0.5, "three separable classes are learned: {last}");
}

/// A `.npy` file as NumPy writes it (version 1.0, little-endian).
fn npy(descr: &str, shape: &str, values: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (11 + header.len()) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(values);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn numpy_arrays_train_like_any_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 600;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in 0..n {
        let class = (i % 4) as i64;
        for d in 0..8 {
            let v = if d == class as usize { 2.0f32 } else { ((i * 13 + d * 7) % 10) as f32 / 10.0 };
            x.extend(v.to_le_bytes());
        }
        y.extend(class.to_le_bytes());
    }
    std::fs::write(dir.path().join("x_train.npy"), npy("<f4", &format!("({n}, 8)"), &x)).expect("write");
    std::fs::write(dir.path().join("y_train.npy"), npy("<i8", &format!("({n},)"), &y)).expect("write");
    let mut config = synthetic_config(3, 2);
    config.data.dataset = DatasetKind::Numpy;
    config.data.path = Some(dir.path().to_path_buf());
    let rows = run(config).await;
    let held: u64 = rows.iter().filter(|r| r.round == 0).map(|r| r.train_samples + r.test_samples).sum();
    assert_eq!(held, n as u64, "every sample is on one client");
    let best = rows.iter().filter_map(|r| r.accuracy_trained).fold(0.0, f64::max);
    assert!(best > 0.6, "four separable classes are learned: {best}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_folders_train_like_any_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three classes told apart by where the bright band is; JPEG and PNG mixed.
    for (c, class) in ["left", "middle", "right"].iter().enumerate() {
        let folder = dir.path().join("train").join(class);
        std::fs::create_dir_all(&folder).expect("mkdir");
        for i in 0..60u32 {
            let image = image::GrayImage::from_fn(12, 12, |x, y| {
                let band = x / 4 == c as u32;
                image::Luma([if band { 220 } else { ((x * 7 + y * 3 + i) % 60) as u8 }])
            });
            let name = if i % 2 == 0 { format!("{i}.png") } else { format!("{i}.jpg") };
            image.save(folder.join(name)).expect("save");
        }
    }
    let mut config = synthetic_config(3, 2);
    config.data.dataset = DatasetKind::Images;
    config.data.path = Some(dir.path().to_path_buf());
    let rows = run(config).await;
    let held: u64 = rows.iter().filter(|r| r.round == 0).map(|r| r.train_samples + r.test_samples).sum();
    assert_eq!(held, 180, "every image is on one client");
    let best = rows.iter().filter_map(|r| r.accuracy_trained).fold(0.0, f64::max);
    assert!(best > 0.6, "three bands are learned: {best}");
}

/// LEAF's layout: users own their samples; the natural split deals whole users to clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaf_users_stay_whole_on_the_natural_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("train")).expect("mkdir");
    let sizes = [40usize, 30, 50, 20];
    let mut user_data = serde_json::Map::new();
    for (u, &n) in sizes.iter().enumerate() {
        let x: Vec<Vec<f32>> = (0..n)
            .map(|i| (0..6).map(|d| if d == i % 3 { 2.0 } else { ((i + d * u) % 5) as f32 / 5.0 }).collect())
            .collect();
        let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
        user_data.insert(format!("writer{u}"), serde_json::json!({ "x": x, "y": y }));
    }
    let users: Vec<String> = (0..sizes.len()).map(|u| format!("writer{u}")).collect();
    let file = serde_json::json!({ "users": users, "num_samples": sizes, "user_data": user_data });
    std::fs::write(dir.path().join("train/all_data_0.json"), file.to_string()).expect("write");
    let mut config = synthetic_config(3, 2);
    config.data.dataset = DatasetKind::Leaf;
    config.data.path = Some(dir.path().to_path_buf());
    config.data.split = PartitionSpec::Natural;
    let rows = run(config).await;
    // Users in sorted order: writer0 and writer3 on client 0, writer1 on 1, writer2 on 2.
    for (client, n) in [(0u32, 60u64), (1, 30), (2, 50)] {
        let row = rows.iter().find(|r| r.client == client && r.round == 0).expect("row");
        assert_eq!(row.train_samples + row.test_samples, n, "client {client} holds its writers' samples");
    }
}
