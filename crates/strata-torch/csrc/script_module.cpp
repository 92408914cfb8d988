// Strata's handle on a TorchScript module: what tch's CModule does not expose (buffers,
// whether a method exists, the module's device), with every libtorch exception turned into
// a message the caller frees with strata_script_free_message.
#include <torch/script.h>

#include <cstdlib>
#include <cstring>
#include <string>

namespace {

char *copy_message(const std::string &text) {
  char *out = static_cast<char *>(std::malloc(text.size() + 1));
  if (out != nullptr) std::memcpy(out, text.c_str(), text.size() + 1);
  return out;
}

torch::jit::Module *as_module(void *module) { return static_cast<torch::jit::Module *>(module); }

// tch's device numbering: -1 the CPU, n >= 0 CUDA device n.
c10::Device device_of(int device) {
  return device < 0 ? c10::Device(c10::kCPU) : c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(device));
}

}  // namespace

#define STRATA_GUARD(error, failed, body)                \
  try {                                                  \
    body                                                 \
  } catch (const std::exception &e) {                    \
    *(error) = copy_message(e.what());                   \
    return failed;                                       \
  }

extern "C" {

void strata_script_free_message(char *message) { std::free(message); }

void *strata_script_load(const char *path, char **error) {
  STRATA_GUARD(error, nullptr, return new torch::jit::Module(torch::jit::load(std::string(path), c10::Device(c10::kCPU)));)
}

void strata_script_free(void *module) { delete as_module(module); }

// Calls visit(data, name, tensor) for each parameter (buffers == 0) or buffer (buffers == 1)
// of the module and its submodules, with PyTorch's dotted names; tensor is a new handle
// (tch's C_tensor) sharing the module's storage.
int strata_script_tensors(void *module, int buffers, void *data,
                          void (*visit)(void *, const char *, torch::Tensor *), char **error) {
  STRATA_GUARD(error, -1, {
    if (buffers != 0) {
      for (const auto &b : as_module(module)->named_buffers(true)) visit(data, b.name.c_str(), new torch::Tensor(b.value));
    } else {
      for (const auto &p : as_module(module)->named_parameters(true)) visit(data, p.name.c_str(), new torch::Tensor(p.value));
    }
    return 0;
  })
}

int strata_script_has_method(void *module, const char *name) {
  try {
    return as_module(module)->find_method(std::string(name)).has_value() ? 1 : 0;
  } catch (const std::exception &) {
    return 0;
  }
}

// Runs method `name` on one tensor; the result must be a tensor.
torch::Tensor *strata_script_call(void *module, const char *name, const torch::Tensor *input, char **error) {
  STRATA_GUARD(error, nullptr, {
    auto out = as_module(module)->get_method(std::string(name))({*input});
    if (!out.isTensor()) {
      *error = copy_message("`" + std::string(name) + "` returned " + out.tagKind() + ", not a tensor");
      return nullptr;
    }
    return new torch::Tensor(out.toTensor());
  })
}

int strata_script_train(void *module, int on, char **error) {
  STRATA_GUARD(error, -1, {
    as_module(module)->train(on != 0);
    return 0;
  })
}

int strata_script_to(void *module, int device, char **error) {
  STRATA_GUARD(error, -1, {
    as_module(module)->to(device_of(device));
    return 0;
  })
}

}  // extern "C"
