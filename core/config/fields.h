// Every recipe key, listed once. A visitor (the YAML reader or the printer)
// walks these lists, so a key cannot be parsed without being printed.
#pragma once
#include <string>
#include <vector>

#include "core/config/config.h"
#include "core/config/yaml_section.h"

namespace lt {

template <class T>
Check<T> at_least(T low) {
  return [low](const T& v) { return v >= low ? "" : "must be >= " + std::to_string(low); };
}
template <class T>
Check<T> in_range(T low, T high) {
  return [low, high](const T& v) {
    return v >= low && v <= high ? "" : "must be in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
  };
}
inline Check<std::string> not_empty() {
  return [](const std::string& v) { return v.empty() ? std::string("must not be empty") : std::string(); };
}

// Token ids are int32 on the way to the embedding; no layer of a model is
// wider than a million (the largest released are near 50K).
inline constexpr int64_t kMostTokenIds = (int64_t{1} << 31) - 1;
inline constexpr int64_t kMostWidth = int64_t{1} << 20;

template <class V>
void visit(V& v, MoeConfig& m) {
  v.field("experts", m.experts, in_range<int64_t>(0, 1 << 16));
  v.field("top_k", m.top_k, in_range<int64_t>(1, 1 << 16));
  v.field("every", m.every, in_range<int64_t>(1, 1 << 16));
  v.field("expert_intermediate_size", m.expert_intermediate_size, in_range<int64_t>(0, kMostWidth));
  v.field("shared_expert_intermediate_size", m.shared_expert_intermediate_size, in_range<int64_t>(0, kMostWidth));
  v.field("normalize_top_k", m.normalize_top_k);
  v.field("capacity_factor", m.capacity_factor, in_range<double>(0.0, 1024.0));
  v.field("drop_policy", m.drop_policy);
  v.field("balance", m.balance);
  v.field("balance_coef", m.balance_coef, in_range<double>(0.0, 100.0));
  v.field("z_loss_coef", m.z_loss_coef, in_range<double>(0.0, 100.0));
  v.field("dense_layers", m.dense_layers, at_least<int64_t>(0));
}

template <class V>
void visit(V& v, RopeConfig& r) {
  v.field("type", r.type);
  v.field("factor", r.factor, in_range<double>(1.0, 1e6));
  v.field("original_max_seq_len", r.original_max_seq_len, at_least<int64_t>(0));
  v.field("low_freq_factor", r.low_freq_factor, in_range<double>(1e-6, 1e6));
  v.field("high_freq_factor", r.high_freq_factor, in_range<double>(1e-6, 1e6));
  v.field("beta_fast", r.beta_fast, in_range<double>(1e-6, 1e6));
  v.field("beta_slow", r.beta_slow, in_range<double>(1e-6, 1e6));
  v.field("attention_factor", r.attention_factor, in_range<double>(0.0, 100.0));
}

template <class V>
void visit(V& v, ModelConfig& m) {
  v.field("preset", m.preset);
  v.field("family", m.family);
  v.field("vocab_size", m.vocab_size, in_range<int64_t>(1, kMostTokenIds));
  v.field("hidden_size", m.hidden_size, in_range<int64_t>(1, kMostWidth));
  v.field("intermediate_size", m.intermediate_size, in_range<int64_t>(1, kMostWidth));
  v.field("num_layers", m.num_layers, in_range<int64_t>(1, 1 << 16));
  v.field("num_heads", m.num_heads, in_range<int64_t>(1, 1 << 16));
  v.field("num_kv_heads", m.num_kv_heads, in_range<int64_t>(1, 1 << 16));
  v.field("head_dim", m.head_dim, in_range<int64_t>(0, 1 << 16));
  v.field("max_seq_len", m.max_seq_len, at_least<int64_t>(1));
  v.field("rope_theta", m.rope_theta, at_least<double>(1.0));
  v.section("rope", m.rope);
  v.field("rms_norm_eps", m.rms_norm_eps, in_range<double>(1e-12, 1e-1));
  v.field("attention_bias", m.attention_bias);
  v.field("qk_norm", m.qk_norm);
  v.field("tie_embeddings", m.tie_embeddings);
  v.field("init_std", m.init_std, in_range<double>(0.0, 1.0));
  v.field("attention", m.attention);
  v.field("attention_block", m.attention_block, in_range<int64_t>(16, 1 << 16));
  v.section("moe", m.moe);
}

template <class V>
void visit(V& v, PasskeyConfig& p) {
  v.field("min_doc_len", p.min_doc_len, at_least<int64_t>(32));
  v.field("max_doc_len", p.max_doc_len, at_least<int64_t>(32));
  v.field("digits", p.digits, in_range<int64_t>(1, 32));
  v.field("filler_sentences", p.filler_sentences, in_range<int64_t>(1, 4096));
}

template <class V>
void visit(V& v, CurriculumStage& c) {
  v.field("until_step", c.until_step, at_least<int64_t>(1));
  v.field("seq_len", c.seq_len, at_least<int64_t>(8));
}

template <class V>
void visit(V& v, MixtureEntry& e) {
  v.field("path", e.path, not_empty());
  v.field("weight", e.weight, in_range<double>(1e-9, 1e9));
}

template <class V>
void visit(V& v, LongUpsample& u) {
  v.field("min_length", u.min_length, at_least<int64_t>(0));
  v.field("share", u.share, in_range<double>(0.0, 0.99));
}

template <class V>
void visit(V& v, DataConfig& d) {
  v.field("source", d.source);
  v.field("path", d.path);
  v.list("mixture", d.mixture);
  v.section("upsample_long", d.upsample_long);
  v.field("seq_len", d.seq_len, at_least<int64_t>(8));
  v.field("packing", d.packing);
  v.field("document_mask", d.document_mask);
  v.field("reset_position_ids", d.reset_position_ids);
  v.field("eval_fraction", d.eval_fraction, in_range<double>(0.0, 0.5));
  v.section("passkey", d.passkey);
  v.list("curriculum", d.curriculum);
}

inline Check<std::string> no_fp16() {
  return [](const std::string& v) {
    return v == "fp16" || v == "float16" || v == "half"
               ? std::string(
                     "fp16 is not supported (it needs loss scaling, which longtrain does not do): use bf16, "
                     "which has fp32's range, or fp32")
               : std::string();
  };
}

template <class V>
void visit(V& v, TrainConfig& t) {
  v.field("steps", t.steps, at_least<int64_t>(1));
  v.field("global_batch_tokens", t.global_batch_tokens, at_least<int64_t>(0));
  v.field("micro_batch_size", t.micro_batch_size, at_least<int64_t>(1));
  v.field("lr", t.lr, in_range<double>(0.0, 10.0));
  v.field("min_lr", t.min_lr, in_range<double>(0.0, 10.0));
  v.field("warmup_steps", t.warmup_steps, at_least<int64_t>(0));
  v.field("schedule", t.schedule);
  v.field("decay_fraction", t.decay_fraction, in_range<double>(0.0, 1.0));
  v.field("weight_decay", t.weight_decay, in_range<double>(0.0, 10.0));
  v.field("beta1", t.beta1, in_range<double>(0.0, 0.9999999));
  v.field("beta2", t.beta2, in_range<double>(0.0, 0.9999999));
  v.field("eps", t.eps, in_range<double>(1e-30, 1.0));
  v.field("grad_clip", t.grad_clip, at_least<double>(0.0));
  v.field("max_skipped_steps", t.max_skipped_steps, in_range<int64_t>(0, 1 << 20));
  v.field("seed", t.seed, at_least<int64_t>(0));
  v.field("device", t.device);
  v.field("threads", t.threads, in_range<int64_t>(0, 1024));
  v.field("precision", t.precision, no_fp16());
}

// 'auto' or an integer in [1, most] (digits only: no sign, no suffix).
inline Check<std::string> auto_or_positive(int64_t most) {
  return [most](const std::string& v) {
    if (v == "auto") return std::string();
    const bool digits = !v.empty() && v.size() <= 18 && v.find_first_not_of("0123456789") == std::string::npos;
    return digits && std::stoll(v) >= 1 && std::stoll(v) <= most
               ? std::string()
               : "must be 'auto' or an integer in [1, " + std::to_string(most) + "]";
  };
}

template <class V>
void visit(V& v, SequenceParallelConfig& s) {
  v.field("ulysses", s.ulysses, in_range<int64_t>(1, 1 << 16));
  v.field("ring", s.ring, in_range<int64_t>(1, 1 << 16));
  v.field("zigzag", s.zigzag);
}

template <class V>
void visit(V& v, AdaptiveSpConfig& a) {
  v.field("planner", a.planner);
  v.field("group", a.group, in_range<int64_t>(0, 1 << 16));
  v.field("max_group", a.max_group, in_range<int64_t>(0, 1 << 16));
  v.field("activation_gb", a.activation_gb, in_range<double>(0, 1 << 20));
  v.field("time_limit_s", a.time_limit_s, in_range<double>(0, 3600));
  v.field("buckets", a.buckets, in_range<int64_t>(1, 64));
}

template <class V>
void visit(V& v, ParallelConfig& p) {
  v.field("dp", p.dp, auto_or_positive(1 << 24));
  v.field("tp", p.tp, in_range<int64_t>(1, 1 << 16));
  v.field("tp_sequence", p.tp_sequence);
  v.field("pp", p.pp, in_range<int64_t>(1, 1 << 16));
  v.section("sp", p.sp);
  v.section("adaptive", p.adaptive);
  v.field("ep", p.ep, in_range<int64_t>(1, 1 << 16));
  v.field("zero", p.zero, in_range<int64_t>(0, 3));
  v.field("bucket_mb", p.bucket_mb, in_range<double>(0.001, 1 << 20));
  v.field("overlap", p.overlap);
  v.field("reduce_dtype", p.reduce_dtype);
  v.field("timeout_s", p.timeout_s, in_range<double>(0.1, 1e7));
  v.field("emulate_nccl", p.emulate_nccl);
}

template <class V>
void visit(V& v, MemoryConfig& m) {
  v.field("checkpoint", m.checkpoint);
  v.field("checkpoint_every", m.checkpoint_every, in_range<int64_t>(1, 1 << 20));
  v.field("mlp_tiles", m.mlp_tiles, auto_or_positive(1 << 20));
  v.field("loss_tiles", m.loss_tiles, auto_or_positive(1 << 20));
  v.field("offload_activations", m.offload_activations);
  v.field("offload_model", m.offload_model);
  v.field("chunk_mb", m.chunk_mb, in_range<double>(0.001, 1 << 20));
  v.field("n_persist", m.n_persist, in_range<int64_t>(0, 1 << 20));
  v.field("n_buffer", m.n_buffer, in_range<int64_t>(1, 1 << 10));
  v.field("overlap_update", m.overlap_update);
  v.field("device_budget_gb", m.device_budget_gb, in_range<double>(0, 1 << 20));
  v.field("plan", m.plan);
}

template <class V>
void visit(V& v, CheckpointConfig& c) {
  v.field("dir", c.dir);
  v.field("interval", c.interval, at_least<int64_t>(0));
  v.field("resume", c.resume, not_empty());
  v.field("keep", c.keep, at_least<int64_t>(1));
  v.field("move_aside", c.move_aside);
  v.field("export_hf", c.export_hf);
}

template <class V>
void visit(V& v, InitConfig& i) {
  v.field("from_hf", i.from_hf);
}

template <class V>
void visit(V& v, LogConfig& l) {
  v.field("interval", l.interval, at_least<int64_t>(1));
  v.field("tensorboard", l.tensorboard);
}

template <class V>
void visit(V& v, EvalConfig& e) {
  v.field("sequences", e.sequences, at_least<int64_t>(0));
  v.field("at_end", e.at_end);
  v.field("interval", e.interval, at_least<int64_t>(0));
  v.field("position_buckets", e.position_buckets, in_range<int64_t>(1, 1024));
  v.field("passkey_samples", e.passkey_samples, at_least<int64_t>(0));
  v.field("passkey_lengths", e.passkey_lengths, at_least<int64_t>(64));
  v.field("passkey_depths", e.passkey_depths, in_range<int64_t>(1, 100));
}

template <class V>
void visit(V& v, ProfileConfig& p) {
  v.field("start_step", p.start_step, at_least<int64_t>(0));
  v.field("end_step", p.end_step, at_least<int64_t>(0));
  v.field("ranks", p.ranks, at_least<int64_t>(0));
}

template <class V>
void visit(V& v, Config& c) {
  v.field("run_dir", c.run_dir, not_empty());
  v.section("model", c.model);
  v.section("init", c.init);
  v.section("data", c.data);
  v.section("train", c.train);
  v.section("checkpoint", c.checkpoint);
  v.section("log", c.log);
  v.section("eval", c.eval);
  v.section("parallel", c.parallel);
  v.section("memory", c.memory);
  v.section("profile", c.profile);
}

}  // namespace lt
