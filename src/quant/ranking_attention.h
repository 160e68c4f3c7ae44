// Ranking-aware quantization of attention inputs (after Liu et al., "Post-Training Quantization for Vision
// Transformer", 2021): the clips of the queries and keys are chosen so that quantized attention scores keep
// the order the float scores have within each query's row, not only their values.
#pragma once

#include <torch/types.h>

#include "models/activation_quant.h"

namespace atq {

// Mean over all pairs (i, j) of keys in the same query row of relu(-(q_i - q_j) * sign(r_i - r_j)), with r the
// reference (float) scores and q the quantized ones, both [..., T_query, T_key]: zero when every pair keeps
// its order (ties in q included), growing with how far misordered pairs are pushed apart.
torch::Tensor AttentionRankingLoss(const torch::Tensor& reference, const torch::Tensor& quantized);

// Sets both quantizers to `bits` with the clips (each 0.3 .. 1.0 of its observed max |x|) that minimize
//   ||S_q - S||^2 / ||S||^2 + weight * AttentionRankingLoss(S, S_q) / mean |S|
// over the first 16 images of each batch both kept (Observe with keep_batches > 0), S = Q K^T per head, S_q the same from
// the quantized Q and K. Throws atq::Error when either kept no batches or their counts differ.
void CalibrateAttentionRanking(ActivationQuantizerImpl& query, ActivationQuantizerImpl& key, int bits, double weight);

}  // namespace atq
