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
  out.spans = mask.spans;  // of the whole sequences, which this group gathers when it is the only split
  auto index = mask.has_indices()
                   ? mask.q_index
                   : at::arange(comm.rank() * local_seq, (comm.rank() + 1) * local_seq, at::TensorOptions(at::kLong));
  index = all_gather(index.to(at::kCPU), comm, 0);  // host (the batch keeps it there): no wait for the device
  // A whole sequence in order needs no indices: the fused kernels then apply.
  if (!index.equal(at::arange(index.size(0), at::kLong))) out.q_index = out.k_index = index;
  return out;
}

// Every layer of a forward attends under the same mask: gather it once. The
// cache holds the mask's own tensors, so a later forward's new tensors can
// never be mistaken for them.
class GatheredMasks {
 public:
  explicit GatheredMasks(Communicator& comm) : comm_(comm) {}
  const AttentionMask& get(const AttentionMask& mask, int64_t local_seq) {
    const bool same = valid_ && mask.causal == key_.causal && local_seq == local_seq_ &&
                      mask.q_index.is_same(key_.q_index) && mask.q_document.is_same(key_.q_document);
    if (!same) {
      gathered_ = gather_mask(mask, comm_, local_seq);
      key_ = mask, local_seq_ = local_seq, valid_ = true;
    }
    return gathered_;
  }

 private:
  Communicator& comm_;
  AttentionMask key_, gathered_;
  int64_t local_seq_ = 0;
  bool valid_ = false;
};

// Heads that split evenly, with kv heads that split or replicate evenly:
// one fused all-to-all of equal chunks.
AttentionResult even_heads(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const AttentionMask& gathered_mask, const AttentionOptions& options, Communicator& comm,
                           const AttentionFn& inner) {
  const int U = comm.size();
  const int64_t b = q.size(0), s = q.size(1), heads = q.size(2), d = q.size(3);
  auto kk = k, vv = v;
  if (k.size(2) % U != 0) {
    kk = k.repeat_interleave(U / k.size(2), 2);
    vv = v.repeat_interleave(U / k.size(2), 2);
  }
  const int64_t kv = kk.size(2);
  // Per destination rank, its q heads, then k, then v.
  auto per_rank = [&](const at::Tensor& t) { return t.reshape({b, s, U, t.size(2) / U, d}); };
  auto fused = at::cat({per_rank(q), per_rank(kk), per_rank(vv)}, 3).reshape({b, s, -1, d});
  auto gathered = all_to_all(fused, comm, 2, 1);  // [b, U*s, (heads + 2 kv) / U, d]
  auto parts = gathered.split({heads / U, kv / U, kv / U}, 2);
  auto result = inner(parts[0], parts[1], parts[2], gathered_mask, options);
  return {all_to_all(result.out, comm, 1, 2), at::Tensor()};
}

// Any other head count: rank r takes heads [start_r, start_r + h_r), the
// first heads % U ranks one more; kv heads are replicated to one per query
// head so each rank's share is self-contained. Uneven all-to-alls, flat.
AttentionResult uneven_heads(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                             const AttentionMask& gathered_mask, const AttentionOptions& options, Communicator& comm,
                             const AttentionFn& inner) {
  const int U = comm.size(), me = comm.rank();
  const int64_t b = q.size(0), s = q.size(1), heads = q.size(2), d = q.size(3);
  std::vector<int64_t> count(U), start(U);
  for (int r = 0; r < U; ++r) {
    count[r] = heads / U + (r < heads % U ? 1 : 0);
    start[r] = r == 0 ? 0 : start[r - 1] + count[r - 1];
  }
  const auto kk = k.repeat_interleave(heads / k.size(2), 2), vv = v.repeat_interleave(heads / k.size(2), 2);
  std::vector<at::Tensor> outgoing;
  std::vector<int64_t> send(U), recv(U, b * s * 3 * count[me] * d);
  for (int r = 0; r < U; ++r) {
    auto slice = [&](const at::Tensor& t) { return t.narrow(2, start[r], count[r]); };
    outgoing.push_back(at::cat({slice(q), slice(kk), slice(vv)}, 2).reshape({-1}));
    send[r] = outgoing.back().numel();
  }
  auto received = all_to_all(at::cat(outgoing), comm, send, recv);
  // [U, b, s, 3h, d] -> [b, U*s, 3h, d]: the sequence parts in rank order.
  auto gathered = received.view({U, b, s, 3 * count[me], d}).permute({1, 0, 2, 3, 4}).reshape({b, U * s, -1, d});
  auto parts = gathered.split(count[me], 2);
  auto out = inner(parts[0], parts[1], parts[2], gathered_mask, options).out;
  // Back: my heads of every rank's tokens to that rank.
  auto back = out.view({b, U, s, count[me], d}).permute({1, 0, 2, 3, 4}).reshape({-1});
  std::vector<int64_t> back_recv(U);
  for (int r = 0; r < U; ++r) back_recv[r] = b * s * count[r] * d;
  auto mine = all_to_all(back, comm, std::vector<int64_t>(U, b * s * count[me] * d), back_recv);
  std::vector<at::Tensor> pieces;
  for (const auto& piece : mine.split(back_recv)) pieces.push_back(piece.view({b, s, -1, d}));
  return {at::cat(pieces, 2), at::Tensor()};
}

// `gathered_mask`: the mask of the whole sequence part the group shares.
AttentionResult ulysses(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const AttentionMask& gathered_mask, const AttentionOptions& options, Communicator& comm,
                        const AttentionFn& inner) {
  const int U = comm.size();
  const int64_t heads = q.size(2), kv = k.size(2);
  LT_CHECK(heads >= U, "Ulysses: " + std::to_string(heads) + " heads cannot cover " + std::to_string(U) + " ranks");
  const bool even = heads % U == 0 && (kv % U == 0 || U % kv == 0);
  return even ? even_heads(q, k, v, gathered_mask, options, comm, inner)
              : uneven_heads(q, k, v, gathered_mask, options, comm, inner);
}

}  // namespace

AttentionFn ulysses_attention(Communicator& comm, AttentionFn inner) {
  // Shared by the copies every layer holds.
  auto masks = std::make_shared<GatheredMasks>(comm);
  return [&comm, masks, inner = std::move(inner)](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  const AttentionMask& mask, const AttentionOptions& options) {
    return ulysses(q, k, v, masks->get(mask, q.size(1)), options, comm, inner);
  };
}

int64_t ulysses_forward_bytes(int64_t batch, int64_t local_seq, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int ranks, int64_t element_size) {
  LT_CHECK(heads % ranks == 0 && (kv_heads % ranks == 0 || ranks % kv_heads == 0),
           "ulysses_forward_bytes: the theory here is for heads that split evenly");
  const int64_t kv = kv_heads_sent(kv_heads, ranks);
  const int64_t qkv = batch * local_seq * (heads + 2 * kv) * head_dim, out = batch * local_seq * heads * head_dim;
  return (qkv + out) / ranks * (ranks - 1) * element_size;
}

}  // namespace lt
