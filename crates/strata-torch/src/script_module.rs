//! A loaded TorchScript module (`torch.jit.save`'s file), through `csrc/script_module.cpp`:
//! its parameters and buffers by PyTorch's dotted names, methods called on a tensor, train
//! and eval modes. tch's `CModule` lists parameters only; BatchNorm's running statistics are
//! buffers, and a federation shares them like any variable.

// The one place Strata calls C directly: tch's own FFI does not reach buffers.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::Path;

use tch::{Device, Tensor};

use crate::TorchError;

unsafe extern "C" {
    fn strata_script_free_message(message: *mut c_char);
    fn strata_script_load(path: *const c_char, error: *mut *mut c_char) -> *mut c_void;
    fn strata_script_free(module: *mut c_void);
    fn strata_script_tensors(
        module: *mut c_void,
        buffers: c_int,
        data: *mut c_void,
        visit: extern "C" fn(*mut c_void, *const c_char, *mut torch_sys::C_tensor),
        error: *mut *mut c_char,
    ) -> c_int;
    fn strata_script_has_method(module: *mut c_void, name: *const c_char) -> c_int;
    fn strata_script_call(
        module: *mut c_void,
        name: *const c_char,
        input: *const torch_sys::C_tensor,
        error: *mut *mut c_char,
    ) -> *mut torch_sys::C_tensor;
    fn strata_script_train(module: *mut c_void, on: c_int, error: *mut *mut c_char) -> c_int;
    fn strata_script_to(module: *mut c_void, device: c_int, error: *mut *mut c_char) -> c_int;
}

/// An owned `torch::jit::Module`.
#[derive(Debug)]
pub(crate) struct ScriptModule {
    raw: *mut c_void,
}

// A jit::Module is an owning handle to its object; Strata uses one from one thread at a time
// (a LocalModel is moved between threads, never shared).
unsafe impl Send for ScriptModule {}

impl Drop for ScriptModule {
    fn drop(&mut self) {
        unsafe { strata_script_free(self.raw) }
    }
}

/// Takes the message a failed call left, if any.
fn take_error(error: *mut c_char) -> Option<String> {
    if error.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned();
    unsafe { strata_script_free_message(error) };
    Some(text)
}

extern "C" fn collect(data: *mut c_void, name: *const c_char, tensor: *mut torch_sys::C_tensor) {
    let out = unsafe { &mut *data.cast::<Vec<(String, Tensor)>>() };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    out.push((name, unsafe { Tensor::from_ptr(tensor) }));
}

impl ScriptModule {
    /// Loads `path` on the CPU.
    pub(crate) fn load(path: &Path) -> Result<Self, TorchError> {
        let failed = |reason: String| TorchError::Script { path: path.display().to_string(), reason };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| failed("the path contains a NUL byte".into()))?;
        let mut error = std::ptr::null_mut();
        let raw = unsafe { strata_script_load(c_path.as_ptr(), &mut error) };
        match take_error(error) {
            Some(reason) => Err(failed(first_line(&reason))),
            None if raw.is_null() => Err(failed("libtorch returned no module".into())),
            None => Ok(Self { raw }),
        }
    }

    fn check(&self, status: c_int, error: *mut c_char, what: &str) -> Result<(), TorchError> {
        match take_error(error) {
            Some(reason) => Err(TorchError::Model(format!("the TorchScript module's {what} failed: {reason}"))),
            None if status != 0 => Err(TorchError::Model(format!("the TorchScript module's {what} failed"))),
            None => Ok(()),
        }
    }

    fn tensors(&self, buffers: bool) -> Result<Vec<(String, Tensor)>, TorchError> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut error = std::ptr::null_mut();
        let status = unsafe {
            strata_script_tensors(self.raw, c_int::from(buffers), (&raw mut out).cast(), collect, &mut error)
        };
        self.check(status, error, if buffers { "buffer listing" } else { "parameter listing" })?;
        Ok(out)
    }

    /// The parameters, sharing the module's storage, in the module's order.
    pub(crate) fn parameters(&self) -> Result<Vec<(String, Tensor)>, TorchError> {
        self.tensors(false)
    }

    /// The buffers (BatchNorm's running statistics and batch counter), sharing storage.
    pub(crate) fn buffers(&self) -> Result<Vec<(String, Tensor)>, TorchError> {
        self.tensors(true)
    }

    pub(crate) fn has_method(&self, name: &str) -> bool {
        let Ok(name) = CString::new(name) else { return false };
        unsafe { strata_script_has_method(self.raw, name.as_ptr()) == 1 }
    }

    /// Runs method `name` (`forward`, or one the module exports) on `input`.
    pub(crate) fn call(&self, name: &str, input: &Tensor) -> Result<Tensor, TorchError> {
        let c_name = CString::new(name).map_err(|_| TorchError::Model("a method name contains a NUL byte".into()))?;
        let mut error = std::ptr::null_mut();
        let out = unsafe { strata_script_call(self.raw, c_name.as_ptr(), input.as_ptr(), &mut error) };
        match take_error(error) {
            Some(reason) => Err(TorchError::Model(format!("the TorchScript module's `{name}` failed: {reason}"))),
            None if out.is_null() => {
                Err(TorchError::Model(format!("the TorchScript module's `{name}` returned nothing")))
            }
            None => Ok(unsafe { Tensor::from_ptr(out) }),
        }
    }

    /// Switches dropout and norm layers between training and evaluation behaviour.
    pub(crate) fn set_train(&self, on: bool) -> Result<(), TorchError> {
        let mut error = std::ptr::null_mut();
        let status = unsafe { strata_script_train(self.raw, c_int::from(on), &mut error) };
        self.check(status, error, "mode switch")
    }

    /// Moves every parameter and buffer to `device`.
    pub(crate) fn to_device(&self, device: Device) -> Result<(), TorchError> {
        let index = match device {
            Device::Cpu => -1,
            Device::Cuda(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
            other => {
                return Err(TorchError::Model(format!("TorchScript models run on the CPU or CUDA, not {other:?}")));
            }
        };
        let mut error = std::ptr::null_mut();
        let status = unsafe { strata_script_to(self.raw, index, &mut error) };
        self.check(status, error, "move to the device")
    }
}

/// libtorch's messages carry a C++ backtrace after the first lines; the reason is on top.
fn first_line(reason: &str) -> String {
    reason.lines().take(3).collect::<Vec<_>>().join(" ").trim().to_string()
}
