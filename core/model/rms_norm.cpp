#include "core/model/rms_norm.h"

namespace lt {

RMSNormImpl::RMSNormImpl(int64_t dim, double eps, std::shared_ptr<ComputeWeights> compute)
    : eps_(eps), compute_(std::move(compute)) {
  weight = register_parameter("weight", at::ones({dim}));
}

at::Tensor RMSNormImpl::forward(const at::Tensor& x) {
  auto xf = x.to(at::kFloat);
  auto normed = xf * at::rsqrt(xf.pow(2).mean(-1, true) + eps_);
  return compute_weight(compute_, weight) * normed.to(x.scalar_type());
}

}  // namespace lt
