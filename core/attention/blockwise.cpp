#include "core/attention/blockwise.h"

#include <torch/autograd.h>

#include <cmath>
#include <limits>
#include <vector>

namespace lt {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Which (query block, key block) pairs can be skipped, need no mask, or need
// one. Decided on the host from per-block index and document ranges.
class BlockMasks {
 public:
  // mask.q_index and mask.k_index must be defined. The decisions read host
  // copies (the batch keeps its ids on the host, so no wait for the device);
  // the masks of partly visible blocks are built on `device`.
  BlockMasks(const AttentionMask& mask, int64_t block, const at::Device& device)
      : causal_(mask.causal), block_(block), q_index_(on(mask.q_index, device)), k_index_(on(mask.k_index, device)),
        q_doc_(on(mask.q_document, device)), k_doc_(on(mask.k_document, device)) {
    ranges(mask.q_index.to(at::kCPU).view({1, -1}), q_idx_min_, q_idx_max_);
    ranges(mask.k_index.to(at::kCPU).view({1, -1}), k_idx_min_, k_idx_max_);
    if (q_doc_.defined()) {
      ranges(mask.q_document.to(at::kCPU), q_doc_min_, q_doc_max_);
      ranges(mask.k_document.to(at::kCPU), k_doc_min_, k_doc_max_);
    }
  }

  int64_t block() const { return block_; }

  bool skip(int64_t i, int64_t j) const {
    if (causal_ && k_idx_min_[0][j] > q_idx_max_[0][i]) return true;
    if (!q_doc_.defined()) return false;
    for (size_t b = 0; b < q_doc_min_.size(); ++b)
      if (q_doc_max_[b][i] >= k_doc_min_[b][j] && q_doc_min_[b][i] <= k_doc_max_[b][j]) return false;
    return true;
  }

  // Bool mask [batch or 1, 1, q block, k block], or undefined when every pair is visible.
  at::Tensor visible(int64_t i, int64_t j, int64_t q_len, int64_t k_len) const {
    const bool all_causal = !causal_ || k_idx_max_[0][j] <= q_idx_min_[0][i];
    bool one_doc = true;
    if (q_doc_.defined())
      for (size_t b = 0; b < q_doc_min_.size(); ++b)
        one_doc = one_doc && q_doc_min_[b][i] == q_doc_max_[b][i] && k_doc_min_[b][j] == k_doc_max_[b][j] &&
                  q_doc_min_[b][i] == k_doc_min_[b][j];
    if (all_causal && one_doc) return {};
    at::Tensor visible;
    if (!all_causal) {
      auto qi = q_index_.narrow(0, i * block_, q_len).unsqueeze(1);
      auto kj = k_index_.narrow(0, j * block_, k_len).unsqueeze(0);
      visible = kj.le(qi).view({1, 1, q_len, k_len});
    }
    if (!one_doc) {
      auto qd = q_doc_.narrow(1, i * block_, q_len).unsqueeze(2);
      auto kd = k_doc_.narrow(1, j * block_, k_len).unsqueeze(1);
      auto same = qd.eq(kd).unsqueeze(1);
      visible = visible.defined() ? visible.logical_and(same) : same;
    }
    return visible;
  }

 private:
  // A copy from the host is queued without waiting for the device.
  static at::Tensor on(const at::Tensor& t, const at::Device& device) {
    return t.defined() ? t.to(t.options().device(device), /*non_blocking=*/true) : t;
  }

  void ranges(const at::Tensor& ids, std::vector<std::vector<int64_t>>& lo, std::vector<std::vector<int64_t>>& hi) {
    auto contiguous = ids.contiguous();
    auto a = contiguous.accessor<int64_t, 2>();
    const int64_t n = ids.size(1), blocks = (n + block_ - 1) / block_;
    lo.assign(ids.size(0), std::vector<int64_t>(blocks));
    hi.assign(ids.size(0), std::vector<int64_t>(blocks));
    for (int64_t b = 0; b < ids.size(0); ++b)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        int64_t low = a[b][blk * block_], high = low;
        for (int64_t t = blk * block_; t < std::min(n, (blk + 1) * block_); ++t) {
          low = std::min(low, a[b][t]);
          high = std::max(high, a[b][t]);
        }
        lo[b][blk] = low;
        hi[b][blk] = high;
      }
  }

  bool causal_;
  int64_t block_;
  at::Tensor q_index_, k_index_, q_doc_, k_doc_;
  std::vector<std::vector<int64_t>> q_idx_min_, q_idx_max_, k_idx_min_, k_idx_max_;
  std::vector<std::vector<int64_t>> q_doc_min_, q_doc_max_, k_doc_min_, k_doc_max_;
};

// Scores of one block pair from fp32 q and k (a bf16 product would round
// every score before the softmax), masked entries at -inf.
at::Tensor block_scores(const at::Tensor& qb, const at::Tensor& kb, double scale, const at::Tensor& visible) {
  auto s = at::matmul(qb, kb.transpose(-1, -2)).mul_(scale);
  if (visible.defined()) s.masked_fill_(visible.logical_not(), kNegInf);
  return s;
}

// Tensors here are [batch, heads, seq, head_dim].
struct Blocks {
  int64_t q_len, k_len, block;
  int64_t q_blocks() const { return (q_len + block - 1) / block; }
  int64_t k_blocks() const { return (k_len + block - 1) / block; }
  int64_t q_size(int64_t i) const { return std::min(block, q_len - i * block); }
  int64_t k_size(int64_t j) const { return std::min(block, k_len - j * block); }
};

std::pair<at::Tensor, at::Tensor> forward_blocks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 const BlockMasks& masks, double scale) {
  const Blocks blocks{q.size(2), k.size(2), masks.block()};
  auto out = at::empty(q.sizes(), q.options());
  auto lse = at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat));
  const auto qf = q.to(at::kFloat), kf = k.to(at::kFloat);
  for (int64_t i = 0; i < blocks.q_blocks(); ++i) {
    const int64_t qs = i * blocks.block, ql = blocks.q_size(i);
    auto qb = qf.narrow(2, qs, ql);
    auto m = at::full({q.size(0), q.size(1), ql}, kNegInf, lse.options());
    auto l = at::zeros_like(m);
    auto acc = at::zeros({q.size(0), q.size(1), ql, q.size(3)}, lse.options());
    for (int64_t j = 0; j < blocks.k_blocks(); ++j) {
      if (masks.skip(i, j)) continue;
      const int64_t ks = j * blocks.block, kl = blocks.k_size(j);
      auto s = block_scores(qb, kf.narrow(2, ks, kl), scale, masks.visible(i, j, ql, kl));
      auto m_new = at::maximum(m, s.amax(-1));
      auto m_safe = m_new.masked_fill(m_new.isneginf(), 0.0);  // rows with nothing visible yet
      auto p = (s - m_safe.unsqueeze(-1)).exp_();
      auto alpha = (m - m_safe).exp_();
      l = l.mul_(alpha).add_(p.sum(-1));
      acc = acc.mul_(alpha.unsqueeze(-1)).add_(at::matmul(p.to(v.scalar_type()), v.narrow(2, ks, kl)).to(at::kFloat));
      m = m_new;
    }
    auto m_safe = m.masked_fill(m.isneginf(), 0.0);
    out.narrow(2, qs, ql).copy_(acc.div_(l.masked_fill(l.eq(0), 1.0).unsqueeze(-1)));
    lse.narrow(2, qs, ql).copy_(m_safe.add_(l.log()));
  }
  return {out, lse};
}

std::vector<at::Tensor> backward_blocks(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                                        const at::Tensor& dlse, const BlockMasks& masks, double scale) {
  const Blocks blocks{q.size(2), k.size(2), masks.block()};
  auto f32 = q.options().dtype(at::kFloat);
  auto dq = at::zeros(q.sizes(), f32), dk = at::zeros(k.sizes(), f32), dv = at::zeros(v.sizes(), f32);
  auto dof = dout.to(at::kFloat);
  // d lse / d s = softmax, so a gradient on lse shifts the row term D.
  auto rows = (dof * out.to(at::kFloat)).sum(-1);
  if (dlse.defined()) rows = rows - dlse.to(at::kFloat);
  auto lse_safe = lse.masked_fill(lse.isneginf(), 0.0);
  const auto qf = q.to(at::kFloat), kf = k.to(at::kFloat), vf = v.to(at::kFloat);
  for (int64_t i = 0; i < blocks.q_blocks(); ++i) {
    const int64_t qs = i * blocks.block, ql = blocks.q_size(i);
    auto qb = qf.narrow(2, qs, ql), dob = dof.narrow(2, qs, ql);
    auto lse_b = lse_safe.narrow(2, qs, ql).unsqueeze(-1), rows_b = rows.narrow(2, qs, ql).unsqueeze(-1);
    auto dq_b = dq.narrow(2, qs, ql);
    for (int64_t j = 0; j < blocks.k_blocks(); ++j) {
      if (masks.skip(i, j)) continue;
      const int64_t ks = j * blocks.block, kl = blocks.k_size(j);
      auto kb = kf.narrow(2, ks, kl), vb = vf.narrow(2, ks, kl);
      auto p = block_scores(qb, kb, scale, masks.visible(i, j, ql, kl)).sub_(lse_b).exp_();
      dv.narrow(2, ks, kl).add_(at::matmul(p.transpose(-1, -2), dob));
      auto ds = p.mul_(at::matmul(dob, vb.transpose(-1, -2)).sub_(rows_b));
      dq_b.add_(at::matmul(ds, kb), scale);
      dk.narrow(2, ks, kl).add_(at::matmul(ds.transpose(-1, -2), qb), scale);
    }
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

// K or V of fewer heads as the queries' heads (query head h reads kv head
// h / group), and the gradient back: each kv head's group summed.
at::Tensor repeat_kv(const at::Tensor& x, int64_t heads) {
  const int64_t group = heads / x.size(2);
  return group == 1 ? x : x.repeat_interleave(group, 2);
}
at::Tensor sum_groups(const at::Tensor& grad, int64_t kv_heads) {
  const int64_t group = grad.size(2) / kv_heads;
  if (group == 1) return grad;
  return grad.reshape({grad.size(0), grad.size(1), kv_heads, group, grad.size(3)}).sum(3);
}

// The loops run on [batch, heads, seq, head_dim], as the kernels.
at::Tensor kv(const at::Tensor& t, const at::Tensor& q) { return heads_first(repeat_kv(t, q.size(2))); }

double scale_of(const at::Tensor& q) { return 1.0 / std::sqrt(static_cast<double>(q.size(-1))); }

// Without indices the queries and keys are 0..seq-1, on the host.
AttentionMask with_indices(const AttentionMask& mask, const at::Tensor& q, const at::Tensor& k) {
  AttentionMask full = mask;
  if (!mask.has_indices()) {
    full.q_index = at::arange(q.size(1), at::kLong);
    full.k_index = at::arange(k.size(1), at::kLong);
  }
  return full;
}

class BlockwiseFunction : public torch::autograd::Function<BlockwiseFunction> {
 public:
  // q, k, v: [batch, seq, heads, head_dim]
  // The mask travels as a plain argument: autograd tracks only q, k and v.
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, at::Tensor q, at::Tensor k,
                                                at::Tensor v, const AttentionMask& mask, int64_t block) {
    auto result = blockwise_forward(q, k, v, mask, block);
    ctx->save_for_backward({q, k, v, result.out, result.lse});
    ctx->saved_data["q_index"] = mask.q_index;
    ctx->saved_data["k_index"] = mask.k_index;
    ctx->saved_data["q_doc"] = mask.q_document;
    ctx->saved_data["k_doc"] = mask.k_document;
    ctx->saved_data["causal"] = mask.causal;
    ctx->saved_data["block"] = block;
    return {result.out, result.lse};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    auto& data = ctx->saved_data;
    AttentionMask mask{data["causal"].toBool(),    data["q_doc"].toTensor(),   data["k_doc"].toTensor(),
                       data["q_index"].toTensor(), data["k_index"].toTensor(), nullptr};
    auto dout = grads[0].defined() ? grads[0] : at::zeros_like(out);
    auto d = blockwise_backward(q, k, v, out, lse, dout, grads[1], mask, data["block"].toInt());
    return {d[0], d[1], d[2], {}, {}};
  }
};

}  // namespace

AttentionResult blockwise_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                  const AttentionMask& mask, int64_t block) {
  const BlockMasks masks(with_indices(mask, q, k), block, q.device());
  auto [out, lse] = forward_blocks(heads_first(q), kv(k, q), kv(v, q), masks, scale_of(q));
  return {heads_first(out), lse};
}

std::array<at::Tensor, 3> blockwise_backward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout,
                                             const at::Tensor& dlse, const AttentionMask& mask, int64_t block) {
  const BlockMasks masks(with_indices(mask, q, k), block, q.device());
  auto d = backward_blocks(heads_first(q), kv(k, q), kv(v, q), heads_first(out), lse, heads_first(dout), dlse, masks,
                           scale_of(q));
  return {heads_first(d[0]), sum_groups(heads_first(d[1]), k.size(2)), sum_groups(heads_first(d[2]), v.size(2))};
}

AttentionResult blockwise_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                    const AttentionMask& mask, int64_t block) {
  auto result = BlockwiseFunction::apply(q, k, v, mask, block);
  return {result[0], result[1]};
}

}  // namespace lt
