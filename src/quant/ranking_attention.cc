// The ranking loss of attention scores and the joint clip search for queries and keys.
#include "quant/ranking_attention.h"

#include <torch/torch.h>

#include <limits>
#include <vector>

#include "util/error.h"

namespace atq {
namespace {

constexpr int kClipSteps = 8;        // clips 0.3, 0.4, ..., 1.0 of max |x|
constexpr double kLowestClip = 0.3;
constexpr int64_t kRankingImages = 16;  // of each kept batch: the pairwise loss is [B, H, T, T, T]

double MaxAbs(const std::vector<torch::Tensor>& batches) {
  double max = 0;
  for (const torch::Tensor& batch : batches) max = std::max(max, batch.abs().max().item<double>());
  return max;
}

}  // namespace

torch::Tensor AttentionRankingLoss(const torch::Tensor& reference, const torch::Tensor& quantized) {
  Require(reference.sizes() == quantized.sizes() && reference.dim() >= 2,
          "ranking loss: reference and quantized scores must have the same shape [..., T, T]");
  // order: [..., T, T, T] = sign(r_i - r_j) for every row and pair (i, j); gap: q_i - q_j.
  const torch::Tensor order = (reference.unsqueeze(-1) - reference.unsqueeze(-2)).sign();
  const torch::Tensor gap = quantized.unsqueeze(-1) - quantized.unsqueeze(-2);
  return torch::relu(-gap * order).mean();
}

void CalibrateAttentionRanking(ActivationQuantizerImpl& query, ActivationQuantizerImpl& key, int bits, double weight) {
  Require(!query.batches().empty() && query.batches().size() == key.batches().size(),
          "ranking-aware attention: the query and key quantizers must have kept the same batches ({} and {})",
          query.batches().size(), key.batches().size());
  std::vector<torch::Tensor> queries, keys;  // [b, H, T, D] each
  for (size_t b = 0; b < query.batches().size(); ++b) {
    queries.push_back(query.batches()[b].slice(0, 0, kRankingImages));
    keys.push_back(key.batches()[b].slice(0, 0, kRankingImages));
  }
  Require(bits >= 2 && bits <= 16, "activation bits must be 2..16, not {}", bits);
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> reference;  // per batch [B, H, T, T]
  double magnitude = 0;
  for (size_t b = 0; b < queries.size(); ++b) {
    reference.push_back(torch::matmul(queries[b].to(torch::kFloat32), keys[b].to(torch::kFloat32).transpose(-2, -1)));
    magnitude += reference.back().abs().mean().item<double>() / static_cast<double>(queries.size());
  }
  const double levels = static_cast<double>(MaxActivationCode(bits, /*unsigned_grid=*/false));
  const double query_max = MaxAbs(queries), key_max = MaxAbs(keys);
  double best = std::numeric_limits<double>::infinity(), best_query = query_max, best_key = key_max;
  for (int qi = 0; qi < kClipSteps; ++qi) {
    for (int ki = 0; ki < kClipSteps; ++ki) {
      const double query_clip = query_max * (kLowestClip + (1 - kLowestClip) * qi / (kClipSteps - 1));
      const double key_clip = key_max * (kLowestClip + (1 - kLowestClip) * ki / (kClipSteps - 1));
      double error = 0, norm = 0, ranking = 0;
      for (size_t b = 0; b < queries.size(); ++b) {
        const torch::Tensor scores =
            torch::matmul(FakeQuantizeActivation(queries[b].to(torch::kFloat32), query_clip / levels, bits, false),
                          FakeQuantizeActivation(keys[b].to(torch::kFloat32), key_clip / levels, bits, false).transpose(-2, -1));
        error += (scores - reference[b]).pow(2).sum().item<double>();
        norm += reference[b].pow(2).sum().item<double>();
        ranking += AttentionRankingLoss(reference[b], scores).item<double>() / static_cast<double>(queries.size());
      }
      const double objective = error / std::max(norm, 1e-30) + weight * ranking / std::max(magnitude, 1e-30);
      if (objective < best) {
        best = objective;
        best_query = query_clip;
        best_key = key_clip;
      }
    }
  }
  query.SetGrid(bits, best_query > 0 ? best_query / levels : 1.0, /*unsigned_grid=*/false);
  key.SetGrid(bits, best_key > 0 ? best_key / levels : 1.0, /*unsigned_grid=*/false);
}

}  // namespace atq
