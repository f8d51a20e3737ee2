#include "offload/activations/tiling.h"

#include <algorithm>

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

at::Tensor tiled_sum(const TileFn& f, const at::Tensor& x, int64_t tiles, int64_t dim) {
  if (tiles <= 1) return f(x, 0);
  at::Tensor total;
  for (const auto& [start, size] : spans(x.size(dim), tiles)) {
    auto part = checkpoint([f, start = start](const at::Tensor& tile) { return f(tile, start); }, x.narrow(dim, start, size));
    total = total.defined() ? total + part : part;
  }
  return total;
}

int64_t tile_count(const std::string& setting, int64_t length, int64_t width) {
  const int64_t tiles = setting == "auto" ? (length + width - 1) / std::max<int64_t>(1, width) : std::stoll(setting);
  return std::clamp<int64_t>(tiles, 1, std::max<int64_t>(1, length));
}

}  // namespace lt
