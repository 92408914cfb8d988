//! Choosing the device and the number of CPU threads libtorch uses.

use std::sync::Once;

use tch::{Cuda, Device};

use crate::TorchError;

/// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
///
/// `auto` is CUDA device 0 when CUDA is available, the CPU otherwise. Asking for CUDA
/// where there is none, or for an index past the device count, is an error.
pub fn parse_device(s: &str) -> Result<Device, TorchError> {
    let spec = s.trim().to_ascii_lowercase();
    let err = |reason: String| Err(TorchError::Device { spec: s.to_string(), reason });
    let index = match spec.as_str() {
        "auto" => return Ok(if Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => return err("expected auto, cpu, cuda or cuda:N".into()),
        },
    };
    if !Cuda::is_available() {
        return err("CUDA is not available (no GPU, no driver, or a CPU-only libtorch); use cpu or auto".into());
    }
    let count = Cuda::device_count().max(0) as usize;
    if index >= count {
        return err(format!("there are {count} CUDA device(s), so the index must be below {count}"));
    }
    Ok(Device::Cuda(index))
}

static INTEROP: Once = Once::new();

/// Sets the number of threads libtorch uses for intra-op parallelism (and, once per
/// process, for inter-op parallelism).
///
/// `at::set_num_threads` is, in OpenMP builds of libtorch (the official wheels), a
/// per-thread setting: a thread that did not call it runs with the default (every core).
/// Call this on each thread that runs training or evaluation, e.g. at the start of a
/// `spawn_blocking` closure, not only on the main thread.
///
/// The inter-op pool size can be set only once per process and only before that pool is
/// first used; later calls leave it alone, and a refusal from libtorch is ignored.
pub fn set_threads(n: usize) {
    let n = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
    tch::set_num_threads(n);
    INTEROP.call_once(|| {
        // libtorch throws (and tch panics) when the pool is already in use: that is not
        // worth failing a run for, so the panic is contained here.
        let _ = std::panic::catch_unwind(|| tch::set_num_interop_threads(n));
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_parse_and_bad_specs_are_refused() {
        assert_eq!(parse_device("cpu").expect("cpu"), Device::Cpu);
        assert_eq!(parse_device(" CPU ").expect("cpu"), Device::Cpu);
        let auto = parse_device("auto").expect("auto");
        assert_eq!(auto == Device::Cpu, !Cuda::is_available());
        let err = parse_device("tpu").expect_err("tpu").to_string();
        assert!(err.contains("expected auto, cpu, cuda"), "{err}");
        assert!(parse_device("cuda:x").is_err());
        assert!(parse_device("cuda:999").is_err());
        if !Cuda::is_available() {
            let err = parse_device("cuda").expect_err("no cuda").to_string();
            assert!(err.contains("not available"), "{err}");
        }
    }
}
