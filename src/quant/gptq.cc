// GPTQ's column loop with lazy block updates, dampening and act-order, on torch tensors (CPU or CUDA).
#include "quant/gptq.h"

#include <torch/torch.h>

#include "io/tensor_info.h"
#include "util/error.h"

namespace atq {
namespace {

// Upper Cholesky factor U of H^-1 (H^-1 = U^T U) after adding damp * mean(diag H) to the diagonal; raises damp
// tenfold while H or H^-1 is not positive definite.
torch::Tensor InverseCholesky(const torch::Tensor& hessian, const GptqOptions& options, GptqResult& result) {
  const double mean_diagonal = hessian.diagonal().mean().item<double>();
  double damp = options.damp;
  for (int attempt = 0; attempt <= options.max_damp_raises; ++attempt, damp *= 10) {
    const torch::Tensor damped = hessian + torch::eye(hessian.size(0), hessian.options()) * (damp * mean_diagonal);
    auto [lower, info] = torch::linalg_cholesky_ex(damped);
    if (info.item<int64_t>() == 0) {
      auto [inverse_lower, inverse_info] = torch::linalg_cholesky_ex(torch::cholesky_inverse(lower));
      if (inverse_info.item<int64_t>() == 0) {
        result.damp = damp;
        result.damp_raises = attempt;
        return inverse_lower.t().contiguous();
      }
    }
  }
  Fail("GPTQ: the Hessian stays indefinite with dampening up to {} of its mean diagonal ({} raises); the "
       "calibration inputs may be degenerate",
       damp / 10, options.max_damp_raises);
}

}  // namespace

HessianAccumulator::HessianAccumulator(int64_t features, torch::Device device)
    : hessian_(torch::zeros({features, features}, torch::TensorOptions().dtype(torch::kFloat32).device(device))) {}

void HessianAccumulator::Add(const torch::Tensor& inputs) {
  const torch::Tensor x = inputs.reshape({-1, inputs.size(-1)}).to(hessian_.device(), torch::kFloat32);
  const int64_t count = x.size(0);
  if (count == 0) return;
  // H_n = (2/n) sum x x^T, updated as a running mean so no sum grows with the sample count.
  hessian_.mul_(static_cast<double>(samples_) / static_cast<double>(samples_ + count));
  samples_ += count;
  const double alpha = 2.0 / static_cast<double>(samples_);
  const int64_t features = hessian_.size(0);
  for (int64_t a = 0; a < features; a += kTile) {
    const torch::Tensor xa = x.slice(1, a, std::min(features, a + kTile));
    for (int64_t b = a; b < features; b += kTile) {
      const int64_t b_end = std::min(features, b + kTile);
      hessian_.slice(0, a, a + xa.size(1)).slice(1, b, b_end).addmm_(xa.t(), x.slice(1, b, b_end), 1, alpha);
    }
  }
  mirrored_ = false;
}

const torch::Tensor& HessianAccumulator::hessian() const {
  if (!mirrored_) {
    torch::NoGradGuard no_grad;
    const int64_t features = hessian_.size(0);
    for (int64_t a = 0; a < features; a += kTile) {
      for (int64_t b = a + kTile; b < features; b += kTile) {
        const int64_t a_end = std::min(features, a + kTile), b_end = std::min(features, b + kTile);
        hessian_.slice(0, b, b_end).slice(1, a, a_end).copy_(hessian_.slice(0, a, a_end).slice(1, b, b_end).t());
      }
    }
    mirrored_ = true;
  }
  return hessian_;
}

GptqResult Gptq(const torch::Tensor& weight, const torch::Tensor& hessian, const WeightGrid& grid,
                const GptqOptions& options) {
  ValidateGrid(grid);
  Require(weight.dim() == 2 && hessian.dim() == 2 && hessian.size(0) == weight.size(1) &&
              hessian.size(1) == weight.size(1),
          "GPTQ needs a [rows, cols] weight and a [cols, cols] Hessian, got {} and {}",
          ShapeString(weight.sizes().vec()), ShapeString(hessian.sizes().vec()));
  Require(options.block_size > 0, "GPTQ block size must be positive, not {}", options.block_size);
  torch::NoGradGuard no_grad;
  const int64_t cols = weight.size(1);
  torch::Tensor w = weight.to(torch::kFloat32).clone();
  torch::Tensor h = hessian.to(w.device(), torch::kFloat32).clone();

  // Inputs that never fire carry no information: their weights are dropped to 0 and H gets a unit diagonal.
  const torch::Tensor dead = h.diagonal() == 0;
  h.diagonal().masked_fill_(dead, 1);
  w.index_put_({torch::indexing::Slice(), dead}, 0);

  const bool grouped = grid.granularity == Granularity::kGroup;
  const bool static_groups = grouped && (options.static_groups || options.act_order);
  const auto spans = ScaleSpans(grid, cols);
  std::vector<GridParams> span_params(spans.size());
  if (!grouped) {
    span_params[0] = FitGrid(grid, w, grid.granularity == Granularity::kTensor);
  } else if (static_groups) {
    for (size_t s = 0; s < spans.size(); ++s) span_params[s] = FitGrid(grid, w.slice(1, spans[s].first, spans[s].second));
  }

  torch::Tensor order;  // position -> original column
  if (options.act_order) {
    order = torch::argsort(h.diagonal(), /*dim=*/0, /*descending=*/true);
    w = w.index_select(1, order);
    h = h.index_select(0, order).index_select(1, order);
  }
  std::vector<int64_t> original(static_cast<size_t>(cols));
  if (options.act_order) {
    const torch::Tensor order_cpu = order.to(torch::kCPU);
    for (int64_t c = 0; c < cols; ++c) original[c] = order_cpu[c].item<int64_t>();
  } else {
    for (int64_t c = 0; c < cols; ++c) original[c] = c;
  }

  GptqResult result;
  const torch::Tensor hinv = InverseCholesky(h, options, result);  // upper factor of H^-1
  torch::Tensor codes = torch::zeros_like(w);
  for (int64_t begin = 0; begin < cols; begin += options.block_size) {
    const int64_t end = std::min(cols, begin + options.block_size), count = end - begin;
    // The block transposed, [count, rows], updated as columns are rounded: a column is then one contiguous row,
    // where in [rows, count] each of its weights sat on a cache line of its own (the column loop took most of
    // GPTQ's time on a 4096 x 8192 weight that way).
    torch::Tensor block = w.slice(1, begin, end).t().contiguous();
    torch::Tensor block_codes = torch::empty_like(block);
    torch::Tensor block_errors = torch::empty_like(block);
    const torch::Tensor hinv_block = hinv.slice(0, begin, end).slice(1, begin, end);
    for (int64_t i = 0; i < count; ++i) {
      const int64_t column = original[begin + i];
      const size_t span = grouped ? static_cast<size_t>(column / grid.group_size) : 0;
      if (grouped && !static_groups && column == spans[span].first) {
        // The group's parameters from its current (error-compensated) weights: the part in this block as
        // updated so far, the rest as the earlier blocks left it.
        const int64_t group_end = spans[span].second;
        torch::Tensor current = block.slice(0, i, std::min(count, i + (group_end - column))).t();
        if (begin + i + (group_end - column) > end) current = torch::cat({current, w.slice(1, end, begin + i + (group_end - column))}, 1);
        span_params[span] = FitGrid(grid, current);
      }
      const torch::Tensor column_weights = block[i].unsqueeze(1);  // [rows, 1]
      const torch::Tensor column_codes = RoundToCodes(grid, column_weights, span_params[span]);
      const torch::Tensor quantized = CodesToValues(grid, column_codes, span_params[span]);
      block_codes[i].copy_(column_codes.squeeze(1));
      const torch::Tensor error = ((column_weights - quantized) / hinv_block[i][i]).squeeze(1);  // [rows]
      block_errors[i].copy_(error);
      // The later columns of the block absorb the error: block[j] -= hinv[i][j] * error, one rank-1 update.
      if (i + 1 < count) block.slice(0, i + 1).addr_(hinv_block[i].slice(0, i + 1), error, /*beta=*/1, /*alpha=*/-1);
    }
    codes.slice(1, begin, end).copy_(block_codes.t());
    // Lazy batch update: the block's errors reach the later columns in one matrix product, in place.
    if (end < cols) w.slice(1, end).addmm_(block_errors.t(), hinv.slice(0, begin, end).slice(1, end), 1, -1);
  }
  if (options.act_order) codes = codes.index_select(1, torch::argsort(order));
  result.weight = AssembleQuantized(grid, codes, span_params);
  return result;
}

}  // namespace atq
