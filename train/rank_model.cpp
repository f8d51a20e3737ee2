#include "train/rank_model.h"

#include "core/model/loss.h"
#include "parallel/comm/autograd_collectives.h"
#include "offload/activations/memory_policy.h"
#include "parallel/pipeline/stages.h"
#include "parallel/sequence/sequence_parallel.h"
#include "parallel/tensor_parallel/tensor_parallel.h"

namespace lt {

namespace {

// Each ep rank holds 1/ep of the experts; rows travel to them and back by
// uneven all-to-all over the ep group.
void expert_parallel(ModelShard& shard, Communicator& ep) {
  shard.ep_rank = ep.rank();
  shard.ep_size = ep.size();
  if (ep.size() == 1) return;
  shard.exchange_counts = [&ep](const std::vector<int64_t>& counts) {
    const auto arrived = ep.all_to_all(at::tensor(counts, at::kLong));
    return std::vector<int64_t>(arrived.data_ptr<int64_t>(), arrived.data_ptr<int64_t>() + arrived.numel());
  };
  shard.exchange = [&ep](const at::Tensor& x, const std::vector<int64_t>& send, const std::vector<int64_t>& recv) {
    return all_to_all(x, ep, send, recv);
  };
}

}  // namespace

RankModel build_rank_model(const Config& config, Mesh& mesh, at::Device device, const LayerFetch& fetch) {
  const auto& p = config.parallel;
  Communicator& tp = mesh.group(Group::tp);
  ModelShard shard = tensor_parallel_shard(tp, p.tp_sequence);
  const int stages = mesh.layout().degrees().pp, stage = mesh.coord().pp;
  const auto layers = split_stages(config.model, config.data.seq_len, stages)[stage];
  shard.first_layer = layers.first;
  shard.num_layers = layers.count;
  shard.first_stage = stage == 0;
  shard.last_stage = stage == stages - 1;
  if (config.model.moe.enabled()) {
    // Routing counts are summed over the ranks sharing a sequence (a
    // micro-batch's or a sequence's balance) or over every rank holding a
    // part of the global batch.
    auto sum_over = [&mesh](Group group) { return [&comm = mesh.group(group)](at::Tensor& t) { comm.all_reduce(t); }; };
    shard.moe = std::make_shared<MoeBalance>(config.model, sum_over(Group::sp), sum_over(Group::dp_sp));
    expert_parallel(shard, mesh.group(Group::ep));
  }

  if (config.train.bf16()) shard.compute = std::make_shared<ComputeWeights>(at::kBFloat16);

  RankModel out;
  out.model = LlamaForCausalLM(config.model, shard);
  out.model->initialize(config.train.seed);
  out.model->to(device);
  if (p.sp_degree() > 1) out.model->set_attention(sequence_parallel_attention(mesh));
  out.fetch = fetch;
  apply_memory_policy(*out.model, config.memory, out.fetch);
  out.loss_sum = [](const at::Tensor& logits, const at::Tensor& labels) { return cross_entropy_sum(logits, labels); };
  if (tp.size() > 1)
    out.loss_sum = [&tp](const at::Tensor& logits, const at::Tensor& labels) {
      return vocab_parallel_cross_entropy(logits, labels, tp);
    };
  return out;
}

}  // namespace lt
