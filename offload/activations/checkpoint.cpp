#include "offload/activations/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/autograd.h>
#include <torch/custom_class.h>

#ifdef LT_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

namespace lt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The generator states a recomputation must start from.
struct RngState {
  at::Tensor cpu;
#ifdef LT_WITH_CUDA
  at::Tensor cuda;
  int device = -1;
#endif

  static RngState capture(const at::Tensor& x) {
    RngState s;
    s.cpu = at::detail::getDefaultCPUGenerator().get_state();
#ifdef LT_WITH_CUDA
    if (x.is_cuda())
      s.device = x.get_device(), s.cuda = at::cuda::detail::getDefaultCUDAGenerator(s.device).get_state();
#endif
    return s;
  }
  void restore() const {
    at::Generator host = at::detail::getDefaultCPUGenerator();  // a handle to the global generator
    host.set_state(cpu);
#ifdef LT_WITH_CUDA
    if (device >= 0) {
      at::Generator gpu = at::cuda::detail::getDefaultCUDAGenerator(device);
      gpu.set_state(cuda);
    }
#endif
  }
};

// What the graph keeps between forward and backward.
struct SavedForRecompute : torch::CustomClassHolder {
  TensorFn f;
  RngState rng;
  std::shared_ptr<InputStash> stash;
  int64_t ticket = -1;
};

struct Checkpoint : torch::autograd::Function<Checkpoint> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x,
                            c10::intrusive_ptr<SavedForRecompute> recompute) {
    recompute->rng = RngState::capture(x);
    if (recompute->stash) recompute->ticket = recompute->stash->put(x.detach());
    else ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(recompute);
    at::NoGradGuard no_grad;
    return recompute->f(x);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto recompute = c10::static_intrusive_pointer_cast<SavedForRecompute>(ctx->saved_data["recompute"].toCapsule());
    auto input = (recompute->stash ? recompute->stash->take(recompute->ticket) : ctx->get_saved_variables()[0])
                     .detach()
                     .requires_grad_(true);
    const RngState now = RngState::capture(input);
    recompute->rng.restore();
    at::Tensor out;
    {
      torch::autograd::AutoGradMode enable(true);
      out = recompute->f(input);
    }
    now.restore();
    if (out.requires_grad()) torch::autograd::backward({out}, {grads[0]});
    auto grad = input.grad();
    return {grad.defined() ? grad : at::zeros_like(input), at::Tensor()};
  }
};

}  // namespace

at::Tensor checkpoint(TensorFn f, const at::Tensor& x, std::shared_ptr<InputStash> stash) {
  auto recompute = c10::make_intrusive<SavedForRecompute>();
  recompute->f = std::move(f);
  recompute->stash = std::move(stash);
  return Checkpoint::apply(x, recompute);
}

}  // namespace lt
