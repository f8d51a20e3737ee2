#include "train/layout_scorer.h"

#include "parallel/sequence/sequence_parallel.h"
#include "parallel/tensor_parallel/tensor_parallel.h"

namespace lt {
namespace {

// This stage's output for `batch` (this rank's columns): the previous
// stage's hidden states come in, this one's go on; the last returns logits.
at::Tensor stage_output(LlamaForCausalLMImpl& model, Communicator& pp, const Batch& batch,
                        const at::TensorOptions& activations) {
  const auto& shard = model.shard();
  at::Tensor hidden;
  if (!shard.first_stage) {
    const int64_t tokens = batch.tokens.size(1) / (shard.tp_sequence ? shard.tp_size : 1);
    hidden = at::empty({batch.size(), tokens, model.config().hidden_size}, activations);
    pp.recv(hidden, pp.rank() - 1);
  }
  auto out = model.forward(model_input(batch), hidden);
  if (!shard.last_stage) pp.send(out.contiguous(), pp.rank() + 1);
  return out;
}

}  // namespace

Scorer layout_scorer(LlamaForCausalLMImpl& model, Mesh& mesh, const ParallelConfig& parallel, const at::Device& device,
                     at::ScalarType activations) {
  return [&model, &mesh, parallel, device,
          options = at::TensorOptions().device(device).dtype(activations)](const Batch& whole) {
    at::NoGradGuard no_grad;
    const int64_t rows = whole.size(), length = whole.tokens.size(1);
    const auto part = sequence_part(whole, parallel, mesh);
    const int64_t padded = part.length;
    const auto& columns = part.columns;
    const Batch batch = part.batch.to(device);
    Communicator &tp = mesh.group(Group::tp), &pp = mesh.group(Group::pp);
    const auto out = stage_output(model, pp, batch, options);
    // Each last-stage rank fills its columns; the sums over the sequence's
    // ranks and the stages give every rank the whole.
    auto loss = at::zeros({rows, padded}, at::kFloat), predicted = at::zeros({rows, padded}, at::kLong);
    if (model.shard().last_stage) {
      const auto scores = token_scores(out, batch.labels, tp.size() > 1 ? vocab_split(tp, out.size(-1)) : VocabSplit{});
      loss.index_copy_(1, columns, scores.loss.to(at::kCPU));
      predicted.index_copy_(1, columns, scores.predicted.to(at::kCPU));
    }
    for (Communicator* group : {&mesh.group(Group::sp), &pp}) {
      if (group->size() == 1) continue;
      group->all_reduce(loss);
      group->all_reduce(predicted);
    }
    return TokenScores{loss.narrow(1, 0, length), predicted.narrow(1, 0, length)};
  };
}

EvalShare replica_share(Mesh& mesh, bool gathers) {
  auto& dp = mesh.group(Group::dp);
  return {dp.rank(), dp.size(), [&dp](at::Tensor& t) { dp.all_reduce(t); },
          gathers || mesh.group(Group::ep).size() > 1};
}

}  // namespace lt
