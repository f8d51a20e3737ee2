#include "parallel/sequence/ring_attention.h"

#include <torch/autograd.h>

#include <cmath>
#include <limits>

#include "core/util/error.h"
#include "core/util/trace.h"

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

// A causal block whose every key comes after every query adds nothing.
bool visible(bool causal, const at::Tensor& q_index, const at::Tensor& k_index) {
  return !causal || k_index.min().item<int64_t>() <= q_index.max().item<int64_t>();
}

// Weight of a partial result in the merged one: exp(lse_i - lse), 0 where no
// key was visible at all. [b, h, s] -> [b, s, h, 1] to scale outputs.
at::Tensor merge_weight(const at::Tensor& part_lse, const at::Tensor& lse) {
  auto w = (part_lse - lse).exp();
  return at::where(at::isinf(lse), at::zeros_like(w), w);
}
at::Tensor as_output_scale(const at::Tensor& w) { return w.permute({0, 2, 1}).unsqueeze(-1); }

struct RingFunction : torch::autograd::Function<RingFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                               const at::Tensor& index, const at::Tensor& document_ids, Communicator* comm, bool causal,
                               int64_t block) {
    const AttentionOptions options{AttentionKernel::blockwise, block};
    const auto documents = document_ids.numel() ? document_ids : at::Tensor();
    Block current{k, v, index, documents};
    auto out = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    auto lse = at::full({q.size(0), q.size(2), q.size(1)}, -std::numeric_limits<double>::infinity(),
                        q.options().dtype(at::kFloat));
    for (int step = 0; step < comm->size(); ++step) {
      LT_TRACE_SCOPE("ring_step");
      std::unique_ptr<Rotation> rotation;
      if (step + 1 < comm->size())
        rotation = std::make_unique<Rotation>(
            *comm, std::vector<at::Tensor>{current.k, current.v, current.index, current.documents});
      if (visible(causal, index, current.index)) {
        auto part = attention(q, current.k, current.v, block_mask(causal, index, documents, current), options);
        auto merged = at::logaddexp(lse, part.lse);
        out = out * as_output_scale(merge_weight(lse, merged)) +
              part.out.to(at::kFloat) * as_output_scale(merge_weight(part.lse, merged));
        lse = merged;
      }
      if (rotation) {
        auto next = rotation->wait();
        current = {next[0], next[1], next[2], next[3]};
      }
    }
    auto result = out.to(q.scalar_type());
    ctx->save_for_backward({q, k, v, index, document_ids, result, lse});
    ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    ctx->saved_data["causal"] = causal;
    ctx->saved_data["block"] = block;
    return {result, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &index = saved[3];
    const auto documents = saved[4].numel() ? saved[4] : at::Tensor();
    const auto &out = saved[5], &lse = saved[6];
    auto& comm = *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
    const bool causal = ctx->saved_data["causal"].toBool();
    const AttentionOptions options{AttentionKernel::blockwise, ctx->saved_data["block"].toInt()};
    const auto grad_out =
        grads[0].defined() ? grads[0].to(at::kFloat) : at::zeros(out.sizes(), out.options().dtype(at::kFloat));
    LT_CHECK(!grads[1].defined() || grads[1].eq(0).all().item<bool>(),
             "ring attention: gradients through the log-sum-exp are not supported");
    auto q_grad = at::zeros(q.sizes(), q.options().dtype(at::kFloat));
    Block current{k, v, index, documents};
    at::Tensor dk = at::zeros(k.sizes(), k.options().dtype(at::kFloat)), dv = at::zeros_like(dk);
    for (int step = 0; step < comm.size(); ++step) {
      LT_TRACE_SCOPE("ring_step_backward");
      if (visible(causal, index, current.index)) {
        at::AutoGradMode grad_mode(true);
        auto q_ = q.detach().requires_grad_(), k_ = current.k.detach().requires_grad_(),
             v_ = current.v.detach().requires_grad_();
        auto part = attention(q_, k_, v_, block_mask(causal, index, documents, current), options);
        // out = sum_i w_i out_i with w_i = exp(lse_i - lse): dL/dout_i = w_i dO,
        // dL/dlse_i = w_i * rowsum(dO * (out_i - out)).
        auto w = merge_weight(part.lse.detach(), lse);
        auto g_out = grad_out * as_output_scale(w);
        auto g_lse =
            w * (grad_out * (part.out.detach().to(at::kFloat) - out.to(at::kFloat))).sum(-1).permute({0, 2, 1});
        auto g = torch::autograd::grad({part.out, part.lse}, {q_, k_, v_}, {g_out.to(part.out.scalar_type()), g_lse});
        q_grad += g[0].to(at::kFloat);
        dk += g[1].to(at::kFloat);
        dv += g[2].to(at::kFloat);
      }
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
    return {q_grad.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), {}, {}, {}, {}, {}};
  }
};

AttentionResult ring(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const AttentionMask& mask,
                     const AttentionOptions& options, Communicator& comm) {
  const auto index = mask.has_indices() ? mask.q_index : at::arange(q.size(1), at::kLong);
  // Autograd functions take no undefined tensors: "no documents" is empty.
  const auto documents = mask.has_documents() ? mask.q_document.contiguous() : at::empty({0}, at::kLong);
  auto result = RingFunction::apply(q, k.contiguous(), v.contiguous(), index.contiguous(), documents, &comm,
                                    mask.causal, options.block);
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
