#include "parallel/sequence/ulysses_attention.h"

#include "core/util/error.h"
#include "parallel/comm/autograd_collectives.h"

namespace lt {
namespace {

int64_t kv_heads_sent(int64_t kv_heads, int ranks) { return kv_heads % ranks == 0 ? kv_heads : ranks; }

// The gathered mask of the sequence part this group shares (no gradients).
AttentionMask gather_mask(const AttentionMask& mask, Communicator& comm, int64_t local_seq) {
  at::NoGradGuard no_grad;
  AttentionMask out;
  out.causal = mask.causal;
  if (mask.has_documents()) out.q_document = out.k_document = all_gather(mask.q_document, comm, 1);
  auto index = mask.has_indices() ? mask.q_index : at::arange(comm.rank() * local_seq, (comm.rank() + 1) * local_seq,
                                                              at::TensorOptions(at::kLong));
  index = all_gather(index.cpu(), comm, 0);
  // A whole sequence in order needs no indices: the fused kernels then apply.
  if (!index.equal(at::arange(index.size(0), at::kLong))) out.q_index = out.k_index = index;
  return out;
}

AttentionResult ulysses(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                        const AttentionOptions& options, Communicator& comm, const AttentionFn& inner) {
  const int U = comm.size();
  const int64_t b = q.size(0), s = q.size(1), heads = q.size(2), d = q.size(3);
  check(heads % U == 0, "Ulysses: " + std::to_string(heads) + " heads do not split over " + std::to_string(U) + " ranks");
  auto kk = k, vv = v;
  if (k.size(2) % U != 0) {
    check(U % k.size(2) == 0, "Ulysses: " + std::to_string(k.size(2)) + " kv heads and " + std::to_string(U) +
                                  " ranks must divide one another");
    kk = k.repeat_interleave(U / k.size(2), 2);
    vv = v.repeat_interleave(U / k.size(2), 2);
  }
  const int64_t kv = kk.size(2);
  // One all-to-all: per destination rank, its q heads, then k, then v.
  auto per_rank = [&](const at::Tensor& t) { return t.reshape({b, s, U, t.size(2) / U, d}); };
  auto fused = at::cat({per_rank(q), per_rank(kk), per_rank(vv)}, 3).reshape({b, s, -1, d});
  auto gathered = all_to_all(fused, comm, 2, 1);  // [b, U*s, (heads + 2 kv) / U, d]
  auto parts = gathered.split({heads / U, kv / U, kv / U}, 2);
  auto result = inner(parts[0], parts[1], parts[2], gather_mask(mask, comm, s), options);
  return {all_to_all(result.out, comm, 1, 2), at::Tensor()};
}

}  // namespace

AttentionFn ulysses_attention(Communicator& comm, AttentionFn inner) {
  return [&comm, inner = std::move(inner)](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const AttentionMask& mask, const AttentionOptions& options) {
    return ulysses(q, k, v, mask, options, comm, inner);
  };
}

int64_t ulysses_forward_bytes(int64_t batch, int64_t local_seq, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int ranks, int64_t element_size) {
  const int64_t kv = kv_heads_sent(kv_heads, ranks);
  const int64_t qkv = batch * local_seq * (heads + 2 * kv) * head_dim, out = batch * local_seq * heads * head_dim;
  return (qkv + out) / ranks * (ranks - 1) * element_size;
}

}  // namespace lt
