#include "tests/support/layout_evaluation.h"
#include "train/trainer.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <tuple>

#include "core/data/document_source.h"
#include "core/data/packer.h"
#include "train/evaluate.h"
#include "train/layout_scorer.h"
#include "train/rank_model.h"
#include "tests/support/reference.h"

namespace lt::testing {

void expect_layout_evaluation_equals_one_rank(Config c) {
  const int64_t odd = c.data.seq_len + 36;  // a length the sequence split pads
  c.eval.sequences = 5, c.eval.passkey_samples = 7, c.eval.passkey_depths = 2;
  c.eval.passkey_lengths = {c.data.seq_len, odd};
  Mesh mesh(Layout(resolve_degrees(c, world_size())), MPI_COMM_WORLD, 120, device_transport(c));
  mesh.enable_device(at::kCPU);
  RankModel job = build_rank_model(c, mesh);
  LlamaForCausalLM whole(c.model);
  whole->initialize(c.train.seed);
  const Scorer layout = layout_scorer(*job.model, mesh, c.parallel, at::kCPU, at::kFloat);
  const Scorer alone = whole_model_scorer(*whole, at::kCPU);

  auto source = make_document_source(c.data, c.model.vocab_size, c.train.seed, Split::Eval);
  Packer packer(*source, c.data);
  const Batch batch = packer.next(2, odd);
  const TokenScores got = layout(batch), want = alone(batch);
  EXPECT_LT(relative_error(got.loss, want.loss), 1e-5);
  // Where the two best logits lie within rounding, either is right.
  at::NoGradGuard no_grad;
  const auto best = std::get<0>(whole->forward(model_input(batch)).topk(2, -1));
  const auto decisive = (best.select(-1, 0) - best.select(-1, 1)).gt(1e-4);
  EXPECT_TRUE(got.predicted.eq(want.predicted).logical_or(decisive.logical_not()).all().item<bool>());
  EXPECT_GT(decisive.to(at::kFloat).mean().item<float>(), 0.9);

  const EvalReport shared = evaluate(layout, c, replica_share(mesh)), one = evaluate(alone, c);
  ASSERT_TRUE(shared.loss && one.loss);
  EXPECT_EQ(shared.loss->tokens, one.loss->tokens);
  EXPECT_NEAR(shared.loss->loss, one.loss->loss, 1e-5 * one.loss->loss);
  for (size_t b = 0; b < one.loss->by_position.size(); ++b) {
    const double x = shared.loss->by_position[b], y = one.loss->by_position[b];
    EXPECT_TRUE(std::isnan(y) ? std::isnan(x) : std::abs(x - y) <= 1e-5 * y) << b << ": " << x << " vs " << y;
  }
  ASSERT_EQ(shared.passkey.size(), one.passkey.size());
  for (size_t i = 0; i < one.passkey.size(); ++i) {
    EXPECT_EQ(shared.passkey[i].samples, one.passkey[i].samples);
    const double digits = one.passkey[i].samples * c.data.passkey.digits;
    EXPECT_LE(std::abs(shared.passkey[i].digit_accuracy - one.passkey[i].digit_accuracy) * digits, 1.0 + 1e-9)
        << "more than one digit differs at " << one.passkey[i].length << " tokens";
  }
}

}  // namespace lt::testing
