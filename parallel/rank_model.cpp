#include "parallel/rank_model.h"

#include "core/train/loss.h"
#include "offload/activations/memory_policy.h"
#include "parallel/pipeline/stages.h"
#include "parallel/sequence/sequence_parallel.h"
#include "parallel/tensor_parallel/tensor_parallel.h"

namespace lt {

RankModel build_rank_model(const Config& config, Mesh& mesh) {
  const auto& p = config.parallel;
  Communicator& tp = mesh.group(Group::tp);
  ModelShard shard = tensor_parallel_shard(tp, p.tp_sequence);
  const int stages = mesh.layout().degrees().pp, stage = mesh.coord().pp;
  const auto layers = split_stages(config.model, config.data.seq_len, stages)[stage];
  shard.first_layer = layers.first;
  shard.num_layers = layers.count;
  shard.first_stage = stage == 0;
  shard.last_stage = stage == stages - 1;

  RankModel out;
  out.model = LlamaForCausalLM(config.model, shard);
  out.model->initialize(config.train.seed);
  if (p.sp_degree() > 1) out.model->set_attention(sequence_parallel_attention(mesh));
  apply_memory_policy(*out.model, config.memory);
  out.loss_sum = cross_entropy_sum;
  if (tp.size() > 1)
    out.loss_sum = [&tp](const at::Tensor& logits, const at::Tensor& labels) {
      return vocab_parallel_cross_entropy(logits, labels, tp);
    };
  return out;
}

}  // namespace lt
