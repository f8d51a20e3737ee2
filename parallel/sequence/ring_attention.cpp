#include "parallel/sequence/ring_attention.h"

#include <torch/autograd.h>

#include <cmath>
#include <limits>

#include "core/attention/blockwise.h"
#include "core/attention/flash.h"
#include "core/util/error.h"
#include "core/util/trace.h"
#include "parallel/sequence/ring_pieces.h"

namespace lt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One K/V block as it travels: keys, values, their indices and documents.
struct Block {
  at::Tensor k, v, index, documents;
};

// The block of the previous rank, received while this one is used.
class Rotation {
 public:
  Rotation(Communicator& comm, const std::vector<at::Tensor>& outgoing)
      : comm_(comm), next_((comm.rank() + 1) % comm.size()), previous_((comm.rank() + comm.size() - 1) % comm.size()) {
    for (size_t i = 0; i < outgoing.size(); ++i) {
      if (!outgoing[i].defined()) {
        incoming_.emplace_back();
        continue;
      }
      incoming_.push_back(at::empty_like(outgoing[i]));
      works_.push_back(comm_.irecv(incoming_.back(), previous_, static_cast<int>(i)));
      works_.push_back(comm_.isend(outgoing[i], next_, static_cast<int>(i)));
    }
  }
  std::vector<at::Tensor> wait() {
    for (auto& w : works_) w.wait();
    return incoming_;
  }

 private:
  Communicator& comm_;
  int next_, previous_;
  std::vector<at::Tensor> incoming_;
  std::vector<Work> works_;
};

AttentionMask block_mask(bool causal, const at::Tensor& q_index, const at::Tensor& q_documents, const Block& b) {
  AttentionMask mask;
  mask.causal = causal;
  mask.q_index = q_index, mask.k_index = b.index;
  mask.q_document = q_documents, mask.k_document = b.documents;
  return mask;
}

// A causal block whose every key comes after every query adds nothing
// (host indices: no wait for the device).
bool visible(bool causal, const at::Tensor& q_index, const at::Tensor& k_index) {
  return !causal || k_index.min().item<int64_t>() <= q_index.max().item<int64_t>();
}

// What one ring step computes: the fused kernel over each piece of the
// block, or, where no fused kernel runs, the blockwise kernel over the whole
// block under its mask.
struct Call {
  Piece piece;
  bool masked;
};

// Everything a step's calls read besides the block.
struct Queries {
  at::Tensor q, index, documents;
  bool causal, fused;
  int64_t block;
};

// Autograd functions take no undefined tensors: "no documents" is empty.
Queries queries(const at::Tensor& q, const at::Tensor& index, const at::Tensor& document_ids, bool causal, bool fused,
                int64_t block) {
  return {q, index, document_ids.numel() ? document_ids : at::Tensor(), causal, fused, block};
}

std::vector<Call> step_calls(const Queries& in, const Block& b) {
  std::vector<Call> calls;
  if (in.fused) {
    for (const auto& piece : ring_pieces(in.index, b.index, in.causal, in.documents, b.documents))
      calls.push_back({piece, false});
  } else if (visible(in.causal, in.index, b.index)) {
    calls.push_back({{-1, 0, in.q.size(1), 0, b.k.size(1), in.causal}, true});
  }
  return calls;
}

// A piece's part of t: its batch row, if it has one, and its tokens (along `dim`).
at::Tensor cut(const at::Tensor& t, int64_t row, int64_t start, int64_t length, int64_t dim = 1) {
  return (row < 0 ? t : t.narrow(0, row, 1)).narrow(dim, start, length);
}
at::Tensor query_part(const at::Tensor& t, const Piece& p) { return cut(t, p.row, p.q_start, p.q_length); }
at::Tensor key_part(const at::Tensor& t, const Piece& p) { return cut(t, p.row, p.k_start, p.k_length); }
at::Tensor lse_part(const at::Tensor& lse, const Piece& p) { return cut(lse, p.row, p.q_start, p.q_length, 2); }

// Weight of a partial result in the merged one: exp(lse_i - lse), 0 where no
// key was visible at all. [b, h, s] -> [b, s, h, 1] to scale outputs.
at::Tensor merge_weight(const at::Tensor& part_lse, const at::Tensor& lse) {
  auto w = (part_lse - lse).exp();
  return at::where(at::isinf(lse), at::zeros_like(w), w);
}
at::Tensor as_output_scale(const at::Tensor& w) { return w.permute({0, 2, 1}).unsqueeze(-1); }

// Adds one call's output to the fp32 result of its queries.
void merge(at::Tensor& out, at::Tensor& lse, const Piece& p, const AttentionResult& part) {
  auto o = query_part(out, p), l = lse_part(lse, p);
  const auto merged = at::logaddexp(l, part.lse);
  o.copy_(o * as_output_scale(merge_weight(l, merged)) +
          part.out.to(at::kFloat) * as_output_scale(merge_weight(part.lse, merged)));
  l.copy_(merged);
}

// The kernels take the block's kv heads as they travel (grouped-query attention).
void forward_step(const Queries& in, const Block& b, at::Tensor& out, at::Tensor& lse) {
  for (const auto& [p, masked] : step_calls(in, b)) {
    auto part = masked ? blockwise_forward(in.q, b.k, b.v, block_mask(in.causal, in.index, in.documents, b), in.block)
                       : flash_attention(query_part(in.q, p), key_part(b.k, p), key_part(b.v, p), p.causal);
    merge(out, lse, p, part);
  }
}

// Each call's gradients from the merged out and lse, added to dq and to the
// block's dk and dv.
void backward_step(const Queries& in, const Block& b, const at::Tensor& out, const at::Tensor& lse,
                   const at::Tensor& dout, at::Tensor& dq, at::Tensor& dk, at::Tensor& dv) {
  for (const auto& [p, masked] : step_calls(in, b)) {
    auto d = masked ? blockwise_backward(in.q, b.k, b.v, out, lse, dout, {},
                                         block_mask(in.causal, in.index, in.documents, b), in.block)
                    : flash_attention_backward(query_part(dout, p), query_part(in.q, p), key_part(b.k, p),
                                               key_part(b.v, p), query_part(out, p), lse_part(lse, p), p.causal);
    query_part(dq, p).add_(d[0].to(at::kFloat));
    key_part(dk, p).add_(d[1].to(at::kFloat));
    key_part(dv, p).add_(d[2].to(at::kFloat));
  }
}

struct RingFunction : torch::autograd::Function<RingFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& index, const at::Tensor& document_ids, Communicator* comm, bool causal,
                               bool fused, int64_t block) {
    const auto in = queries(q, index, document_ids, causal, fused, block);
    Block current{k, v, index, in.documents};
    auto out = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    auto lse = at::full({q.size(0), q.size(2), q.size(1)}, -std::numeric_limits<double>::infinity(),
                        q.options().dtype(at::kFloat));
    for (int step = 0; step < comm->size(); ++step) {
      LT_TRACE_SCOPE("ring_step");
      std::unique_ptr<Rotation> rotation;
      if (step + 1 < comm->size())
        rotation = std::make_unique<Rotation>(
            *comm, std::vector<at::Tensor>{current.k, current.v, current.index, current.documents});
      forward_step(in, current, out, lse);
      if (rotation) {
        auto next = rotation->wait();
        current = {next[0], next[1], next[2], next[3]};
      }
    }
    auto result = out.to(q.scalar_type());
    ctx->save_for_backward({q, k, v, index, document_ids, result, lse});
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["fused"] = fused;
    ctx->saved_data["block"] = block;
    // An unused log-sum-exp gets no gradient (no zeros to check on the device).
    ctx->set_materialize_grads(false);
    return {result, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &index = saved[3];
    const auto &out = saved[5], &lse = saved[6];
    auto& comm = *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    const auto in = queries(q, index, saved[4], ctx->saved_data["causal"].toBool(), ctx->saved_data["fused"].toBool(),
                            ctx->saved_data["block"].toInt());
    LT_CHECK(!grads[1].defined(), "ring attention: gradients through the log-sum-exp are not supported");
    const auto dout = grads[0].defined() ? grads[0] : at::zeros_like(out);
    auto dq = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    Block current{k, v, index, in.documents};
    at::Tensor dk = at::zeros(k.sizes(), k.options().dtype(at::kFloat)), dv = at::zeros_like(dk);
    for (int step = 0; step < comm.size(); ++step) {
      LT_TRACE_SCOPE("ring_step_backward");
      backward_step(in, current, out, lse, dout, dq, dk, dv);
      // The block moves on with its gradients; after the last step only the
      // gradients make the final hop home.
      const bool last = step + 1 == comm.size();
      std::vector<at::Tensor> outgoing =
          last ? std::vector<at::Tensor>{dk, dv}
               : std::vector<at::Tensor>{current.k, current.v, current.index, current.documents, dk, dv};
      if (comm.size() == 1) break;
      auto next = Rotation(comm, outgoing).wait();
      if (last) {
        dk = next[0], dv = next[1];
      } else {
        current = {next[0], next[1], next[2], next[3]};
        dk = next[4], dv = next[5];
      }
    }
    return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), {}, {}, {}, {}, {}, {}};
  }
};

AttentionResult ring(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     const AttentionOptions& options, Communicator& comm) {
  // The indices decide on the host, and travel there (through MPI).
  const auto index = mask.has_indices() ? mask.q_index.to(at::kCPU) : at::arange(q.size(1), at::kLong);
  const auto documents = mask.has_documents() ? mask.q_document.contiguous() : at::empty({0}, at::kLong);
  const bool fused = options.kernel != AttentionKernel::blockwise && flash_available(q);
  auto result = RingFunction::apply(q, k.contiguous(), v.contiguous(), index.contiguous(), documents, &comm,
                                    mask.causal, fused, options.block);
  return {result[0], result[1]};
}

}  // namespace

AttentionFn ring_attention(Communicator& comm) {
  return [&comm](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                 const AttentionOptions& options) { return ring(q, k, v, mask, options, comm); };
}

int64_t ring_forward_bytes(int64_t batch, int64_t local_seq, int64_t kv_heads, int64_t head_dim, int ranks,
                           int64_t element_size, bool documents) {
  const int64_t block = 2 * batch * local_seq * kv_heads * head_dim * element_size + local_seq * 8 +
                        (documents ? batch * local_seq * 8 : 0);
  return (ranks - 1) * block;
}

}  // namespace lt
