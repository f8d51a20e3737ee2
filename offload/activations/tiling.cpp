#include "offload/activations/tiling.h"

#include <torch/autograd.h>

#include <algorithm>

#include "core/util/trace.h"

namespace lt {
namespace {

// Where each tile starts, and its length.
std::vector<std::pair<int64_t, int64_t>> spans(int64_t length, int64_t tiles) {
  const int64_t size = (length + tiles - 1) / tiles;
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t start = 0; start < length; start += size) out.emplace_back(start, std::min(size, length - start));
  return out;
}

}  // namespace

at::Tensor tiled(const TensorFn& f, const at::Tensor& x, int64_t tiles, int64_t dim) {
  if (tiles <= 1) return f(x);
  std::vector<at::Tensor> outs;
  for (const auto& [start, size] : spans(x.size(dim), tiles)) outs.push_back(checkpoint(f, x.narrow(dim, start, size)));
  return at::cat(outs, dim);
}

namespace {

// bf16 weight gradients accumulate inside the products (each rounds once)
// for this many tiles, then fold into an fp32 sum: few roundings, and no
// conversion pass per tile.
constexpr int64_t kTilesPerFold = 4;

class TiledLinearLoss : public torch::autograd::Function<TiledLinearLoss> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            const at::Tensor& labels, const TokenLoss& loss, int64_t tiles) {
    at::AutoGradMode grad_mode(true);
    const auto w = weight.detach();
    auto dx = at::empty_like(x);
    at::Tensor total, dw, folded;
    int64_t in_dw = 0;
    for (const auto& [start, size] : spans(x.size(1), tiles)) {
      LT_TRACE_SCOPE("loss");
      auto rows = x.detach().narrow(1, start, size).reshape({-1, x.size(-1)});
      auto logits = at::mm(rows, w.t()).requires_grad_();
      auto value = loss(logits.view({x.size(0), size, -1}), labels.narrow(1, start, size));
      auto g = torch::autograd::grad({value}, {logits})[0];
      dx.narrow(1, start, size).copy_(at::mm(g, w).view({x.size(0), size, -1}));
      if (in_dw == 0) dw = at::mm(g.t(), rows);
      else dw.addmm_(g.t(), rows);
      if (++in_dw == kTilesPerFold && w.scalar_type() != at::kFloat) {
        folded = folded.defined() ? folded.add_(dw) : dw.to(at::kFloat);
        in_dw = 0;
      }
      total = total.defined() ? total + value.detach() : value.detach();
    }
    if (folded.defined()) dw = in_dw > 0 ? folded.add_(dw) : folded;
    ctx->saved_data["dx"] = dx;
    ctx->saved_data["dw"] = dw;
    ctx->saved_data["dtype"] = static_cast<int64_t>(weight.scalar_type());
    return total;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto& g = grads[0];
    const auto dtype = static_cast<at::ScalarType>(ctx->saved_data["dtype"].toInt());
    return {ctx->saved_data["dx"].toTensor() * g, (ctx->saved_data["dw"].toTensor() * g).to(dtype), {}, {}, {}};
  }
};

}  // namespace

at::Tensor tiled_linear_loss(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& labels,
                             const TokenLoss& loss, int64_t tiles) {
  if (at::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad()))
    return TiledLinearLoss::apply(x, weight, labels, loss, tiles);
  at::Tensor total;
  for (const auto& [start, size] : spans(x.size(1), tiles)) {
    auto value = loss(at::linear(x.narrow(1, start, size), weight), labels.narrow(1, start, size));
    total = total.defined() ? total + value : value;
  }
  return total;
}

int64_t tile_count(const std::string& setting, int64_t length, int64_t width) {
  const int64_t tiles = setting == "auto" ? (length + width - 1) / std::max<int64_t>(1, width) : std::stoll(setting);
  return std::clamp<int64_t>(tiles, 1, std::max<int64_t>(1, length));
}

}  // namespace lt
