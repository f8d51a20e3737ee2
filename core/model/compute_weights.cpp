#include "core/model/compute_weights.h"

#include <torch/autograd.h>

namespace lt {
namespace {

// Forward hands out the cached copy; backward casts the copy's gradient to
// the master's dtype, so the master accumulates in fp32.
class CastToCompute : public torch::autograd::Function<CastToCompute> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& master,
                                                const at::Tensor& copy) {
    ctx->saved_data["dtype"] = static_cast<int64_t>(master.scalar_type());
    return {copy.alias()};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {grads[0].to(dtype), {}};
  }
};

}  // namespace

at::Tensor ComputeWeights::operator()(const at::Tensor& param) {
  if (param.scalar_type() == dtype_) return param;
  at::Tensor copy;
  if (auto found = copies_.find(param.unsafeGetTensorImpl()); found != copies_.end()) {
    copy = found->second;
  } else {
    at::NoGradGuard no_grad;
    copy = param.detach().to(dtype_);
    copies_.emplace(param.unsafeGetTensorImpl(), copy);
  }
  if (!param.requires_grad() || !at::GradMode::is_enabled()) return copy;
  return CastToCompute::apply(param, copy)[0];
}

}  // namespace lt
