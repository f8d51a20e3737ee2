// LibTorch's fused flash-attention kernels (CPU, and CUDA for bf16/fp16).
// They return the log-sum-exp and have their own backward.
#pragma once
#include "core/attention/attention.h"

namespace lt {

// True when the fused kernel exists for this device and dtype.
bool flash_available(const at::Tensor& q);

// Plain causal (or full) attention. q, k, v: [batch, seq, heads, head_dim], equal heads.
AttentionResult flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal);

// Packed documents: one fused call per contiguous document segment ("varlen").
AttentionResult flash_attention_by_document(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& documents, bool causal);

}  // namespace lt
