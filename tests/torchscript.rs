//! A model written in PyTorch (`scripts/byo-model/model.py`: a small CNN with BatchNorm and a
//! classifier named `classifier`), exported by the project's torch, trained by real clients
//! and a real server, and loaded back into the same Python class: what the run reported is
//! what PyTorch measures on the trained weights.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use strata_core::config::{DatasetKind, RunConfig};
use strata_core::evaluation::EvaluationConfig;
use strata_core::method::Method;
use strata_core::records::{ClientRoundRecord, RoundRecord};
use strata_core::tensor::{NamedTensor, TensorSet};
use strata_tests::{client_options, read_jsonl, start_server, synthetic_config, write_tiny_idx};

/// The classifier of SmallCnn on 10 classes: 10 × 64 weights and 10 biases.
const HEAD_VALUES: u64 = 10 * 64 + 10;

/// The project's Python (scripts/setup.sh's virtualenv, with torch and safetensors).
fn python() -> PathBuf {
    let venv = std::env::var_os("STRATA_VENV")
        .expect("STRATA_VENV is unset: run the tests through `make test` or after `source scripts/env.sh`");
    PathBuf::from(venv).join("bin/python")
}

fn byo_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/byo-model").join(name)
}

/// Runs one of the example's scripts; returns its standard output.
fn run_python(script: &str, args: &[&Path]) -> String {
    let out = Command::new(python())
        .arg("-W")
        .arg("ignore")
        .arg(byo_script(script))
        .args(args)
        .current_dir(byo_script(""))
        .output()
        .expect("run the project's python");
    assert!(out.status.success(), "{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn config(dir: &Path, method: Method) -> RunConfig {
    let mut c = synthetic_config(3, 2);
    c.method = method;
    c.data.dataset = DatasetKind::Idx;
    c.data.path = Some(dir.to_path_buf());
    c.model.name = format!("torchscript:{}", dir.join("model.pt").display());
    c.train.lr = 0.05;
    c.evaluation = EvaluationConfig::every_client();
    c
}

struct Run {
    out: tempfile::TempDir,
    states: Vec<PathBuf>,
    config: RunConfig,
}

/// Three client daemons, each keeping its personal model in a state directory.
async fn run(config: RunConfig) -> Run {
    let config = strata_torch::backend::pin_head(config).expect("the module's head is found");
    let out = tempfile::tempdir().expect("tempdir");
    let server = start_server(config.clone(), out.path()).await;
    let cache = Arc::new(strata_client::DataCache::default());
    let states: Vec<PathBuf> = (0..3).map(|i| out.path().join(format!("client-{i}"))).collect();
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let mut options = client_options(&server.url, i, &cache);
            options.state_dir = Some(states[i as usize].clone());
            tokio::spawn(strata_client::run(options, std::future::pending()))
        })
        .collect();
    server.handle.await.expect("server task").expect("run completes");
    for c in clients {
        c.await.expect("client task").expect("client ends cleanly");
    }
    Run { out, states, config }
}

/// Test samples of `clients`, as the trainer sees them, for Python (`y` as float32 labels).
fn test_samples(config: &RunConfig, clients: &[usize], file: &Path) {
    let (dataset, partition) = strata_client::DataCache::default().get(config).expect("data");
    let (mut xs, mut ys, mut shape) = (Vec::new(), Vec::new(), Vec::new());
    for &i in clients {
        let tensors = strata_torch::ClientTensors::from_share(&dataset, &partition.clients[i], tch::Device::Cpu)
            .expect("client tensors");
        shape = tensors.test_x.size();
        xs.extend(Vec::<f32>::try_from(&tensors.test_x.reshape([-1])).expect("x"));
        ys.extend(Vec::<i64>::try_from(&tensors.test_y).expect("y").into_iter().map(|y| y as f32));
    }
    shape[0] = ys.len() as i64;
    let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let set = TensorSet::new(vec![
        NamedTensor::new("x", shape, xs).expect("x"),
        NamedTensor::new("y", vec![ys.len()], ys).expect("y"),
    ])
    .expect("set");
    strata_core::safetensors::write(file, &set, &Default::default()).expect("write samples");
}

/// PyTorch's accuracy of `state` (a safetensors file) on `samples`.
fn python_accuracy(state: &Path, samples: &Path) -> f64 {
    let out = run_python("evaluate.py", &[state, samples]);
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("evaluate.py prints JSON");
    json["accuracy"].as_f64().expect("accuracy")
}

fn uploads(rows: &[ClientRoundRecord]) -> Vec<u64> {
    rows.iter().filter(|r| r.trained).map(|r| r.bytes_up).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pytorch_model_trains_federated_and_loads_back_into_pytorch() {
    let data = tempfile::tempdir().expect("tempdir");
    write_tiny_idx(data.path(), 300, 100);
    run_python("export.py", &[&data.path().join("model.pt")]);

    // FedAvg: the global model the server wrote, measured by PyTorch on every client's test
    // split, is the accuracy the last round reported.
    let fedavg = run(config(data.path(), Method::FedAvg)).await;
    assert_eq!(fedavg.config.model.head.as_deref(), Some("classifier.*"), "the classifier was found");
    let samples = fedavg.out.path().join("test.safetensors");
    test_samples(&fedavg.config, &[0, 1, 2], &samples);
    let rounds: Vec<RoundRecord> = read_jsonl(&fedavg.out.path().join("rounds.jsonl"));
    let reported = rounds.last().and_then(|r| r.global_accuracy).expect("the last round measured the global model");
    let measured = python_accuracy(&fedavg.out.path().join("model.safetensors"), &samples);
    eprintln!("fedavg: PyTorch measures {measured}, the run reported {reported}");
    assert!((measured - reported).abs() <= 1e-6, "PyTorch measures {measured}, the run reported {reported}");
    assert!(reported > 0.2, "the model learned something: {reported}");
    let fedavg_rows: Vec<ClientRoundRecord> = read_jsonl(&fedavg.out.path().join("metrics.jsonl"));

    // Personalized methods: client 0's personal model, as its daemon saved it, measured on
    // its own test split, is the accuracy it reported last.
    for method in [Method::FedPer, Method::FedBn, Method::FedCac] {
        let mut settings = config(data.path(), method);
        if method == Method::FedPer {
            // The head named by the user, as `[model] head = "classifier.*"` does.
            settings.model.head = Some("classifier.*".into());
        }
        let run = run(settings).await;
        let samples = run.out.path().join("client-0-test.safetensors");
        test_samples(&run.config, &[0], &samples);
        let rows: Vec<ClientRoundRecord> = read_jsonl(&run.out.path().join("metrics.jsonl"));
        let reported = rows.iter().filter(|r| r.client == 0).filter_map(|r| r.accuracy).next_back().expect("accuracy");
        let measured = python_accuracy(&run.states[0].join("personal.safetensors"), &samples);
        eprintln!("{method}: PyTorch measures {measured}, the run reported {reported}");
        assert!(
            (measured - reported).abs() <= 1e-6,
            "{method}: PyTorch measures {measured}, the run reported {reported}"
        );

        if method == Method::FedBn {
            // FedBN keeps the two BatchNorm layers home (found by their running statistics, the
            // names say nothing): weight, bias, running mean and variance, and the batch count.
            let norm_values = (4 * 8 + 1) + (4 * 16 + 1);
            for (avg, bn) in uploads(&fedavg_rows).iter().zip(uploads(&rows)) {
                let saved = avg - bn;
                assert!((4 * norm_values..=4 * norm_values + 400).contains(&saved), "FedBN sent {bn}, FedAvg {avg}");
            }
        }
        if method == Method::FedPer {
            // FedPer keeps `classifier.*` home: each upload is FedAvg's less the head's values
            // (and the two tensors' names and shapes in the header).
            for (avg, per) in uploads(&fedavg_rows).iter().zip(uploads(&rows)) {
                let saved = avg - per;
                eprintln!("fedper uploads {per} bytes, fedavg {avg}");
                assert!(
                    (4 * HEAD_VALUES..=4 * HEAD_VALUES + 96).contains(&saved),
                    "FedPer sent {per} bytes, FedAvg {avg}: {saved} fewer, the head is {} bytes",
                    4 * HEAD_VALUES
                );
            }
        }
    }
}

/// Saves a TorchScript module defined by `body` (Python, `torch` and `nn` in scope, a class `M`).
/// From a file: scripting reads the class's source.
fn export_inline(path: &Path, body: &str) {
    let code = format!(
        "import torch\nfrom torch import nn\nimport sys\n{body}\ntorch.manual_seed(0)\ntorch.jit.script(M()).save(sys.argv[1])\n"
    );
    let script = path.with_extension("py");
    std::fs::write(&script, code).expect("write the module's source");
    let out = Command::new(python()).args(["-W", "ignore"]).arg(&script).arg(path).output().expect("python");
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Each wrong input names the file and what is wrong with it.
#[test]
fn modules_that_cannot_be_trained_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_idx(dir.path(), 40, 10);
    let build = |file: &str, edit: &dyn Fn(&mut RunConfig)| {
        let mut c = config(dir.path(), Method::FedAvg);
        c.model.name = format!("torchscript:{}", dir.path().join(file).display());
        edit(&mut c);
        let shape = strata_data::describe(&c.data).expect("shape");
        strata_torch::LocalModel::build(&c.model, &shape, tch::Device::Cpu, 0).map(|_| ()).unwrap_err().to_string()
    };
    let expect = |err: String, words: &[&str]| {
        for w in words {
            assert!(err.contains(w), "`{w}` missing from: {err}");
        }
    };

    std::fs::write(dir.path().join("garbage.pt"), b"not a module").expect("write");
    expect(build("garbage.pt", &|_| {}), &["garbage.pt", "TorchScript module"]);
    expect(build("missing.pt", &|_| {}), &["missing.pt"]);

    run_python("export.py", &[&dir.path().join("seven.pt"), Path::new("--classes"), Path::new("7")]);
    expect(build("seven.pt", &|_| {}), &["seven.pt", "no linear layer with 10 outputs"]);

    run_python("export.py", &[&dir.path().join("model.pt")]);
    expect(build("model.pt", &|c| c.model.head = Some("fc.*".into())), &["fc.*", "matches none", "classifier.bias"]);
    expect(build("model.pt", &|c| c.model.head = Some("trunk.0.*".into())), &["one linear layer", "trunk.0.weight"]);
    expect(
        build("model.pt", &|c| c.model.feature_norm = strata_core::config::FeatureNorm::LayerNorm),
        &["layer-norm", "registered model"],
    );

    export_inline(
        &dir.path().join("summed.pt"),
        "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(784, 10)\n    def forward(self, x):\n        return self.fc(x.flatten(1)).sum(1)",
    );
    expect(build("summed.pt", &|_| {}), &["summed.pt", "`forward` maps a batch of 2 samples", "[2]"]);

    export_inline(
        &dir.path().join("liar.pt"),
        "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(784, 10)\n    @torch.jit.export\n    def features(self, x):\n        return x.flatten(1) * 2\n    def forward(self, x):\n        return self.fc(x.flatten(1))",
    );
    expect(build("liar.pt", &|_| {}), &["liar.pt", "is not `fc(features(x))`"]);

    export_inline(
        &dir.path().join("double.pt"),
        "class M(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(784, 10).double()\n    def forward(self, x):\n        return self.fc(x.flatten(1).double())",
    );
    expect(build("double.pt", &|_| {}), &["double.pt", "fc.weight", "Double", ".float()"]);
}
