#include "parallel/sequence/ring_attention.h"

#include <torch/autograd.h>

#include "core/attention/flash.h"
#include "core/util/error.h"
#include "core/util/trace.h"
#include "parallel/sequence/ring_step.h"

namespace lt {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The block of the previous rank, received while this one is used. Each
// rank sends to the next and receives from the previous: one exchange, so
// that over NCCL every rank's send and receive progress together (issued
// apart, each rank's receive would wait on a send queued behind its peer's).
class Rotation {
 public:
  Rotation(Communicator& comm, const std::vector<at::Tensor>& outgoing) {
    const int next = (comm.rank() + 1) % comm.size(), previous = (comm.rank() + comm.size() - 1) % comm.size();
    std::vector<Message> sends, receives;
    for (size_t i = 0; i < outgoing.size(); ++i) {
      if (!outgoing[i].defined()) {
        incoming_.emplace_back();
        continue;
      }
      incoming_.push_back(at::empty_like(outgoing[i]));
      receives.push_back({incoming_.back(), previous, static_cast<int>(i)});
      sends.push_back({outgoing[i], next, static_cast<int>(i)});
    }
    work_ = comm.exchange(sends, receives);
  }
  std::vector<at::Tensor> wait() {
    work_.wait();
    return incoming_;
  }

 private:
  std::vector<at::Tensor> incoming_;
  Work work_;
};

// Autograd functions take no undefined tensors: "no documents" is empty.
RingQueries queries(const at::Tensor& q, const at::Tensor& index, const at::Tensor& document_ids, bool causal,
                    bool fused, int64_t block) {
  return {q, index, document_ids.numel() ? document_ids : at::Tensor(), causal, fused, block};
}

struct RingFunction : torch::autograd::Function<RingFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& index, const at::Tensor& document_ids, Communicator* comm, bool causal,
                               bool fused, int64_t block) {
    const auto in = queries(q, index, document_ids, causal, fused, block);
    RingBlock current{k, v, index, in.documents};
    auto merged = ring_merge_start(q);
    for (int step = 0; step < comm->size(); ++step) {
      LT_TRACE_SCOPE("ring_step");
      std::unique_ptr<Rotation> rotation;
      if (step + 1 < comm->size())
        rotation = std::make_unique<Rotation>(
            *comm, std::vector<at::Tensor>{current.k, current.v, current.index, current.documents});
      ring_forward_step(in, current, merged);
      if (rotation) {
        auto next = rotation->wait();
        current = {next[0], next[1], next[2], next[3]};
      }
    }
    auto [result, lse] = ring_result(merged, q);
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
    RingBlock current{k, v, index, in.documents};
    at::Tensor dk = at::zeros(k.sizes(), k.options().dtype(at::kFloat)), dv = at::zeros_like(dk);
    for (int step = 0; step < comm.size(); ++step) {
      LT_TRACE_SCOPE("ring_step_backward");
      ring_backward_step(in, current, out, lse, dout, dq, dk, dv);
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
