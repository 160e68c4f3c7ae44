// Assembling, packing and round-to-nearest quantization of weight matrices.
#include "grid/quantized_weight.h"

#include <algorithm>

#include <cstring>

#include <fmt/ranges.h>
#include <torch/torch.h>

#include "formats/atq_packed.h"
#include "formats/ggml_blocks.h"
#include "formats/half.h"
#include "util/error.h"

namespace atq {

std::vector<std::pair<int64_t, int64_t>> ScaleSpans(const WeightGrid& grid, int64_t cols) {
  if (grid.granularity != Granularity::kGroup) return {{0, cols}};
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (int64_t begin = 0; begin < cols; begin += grid.group_size) {
    spans.emplace_back(begin, std::min(cols, begin + grid.group_size));
  }
  return spans;
}

QuantizedWeight AssembleQuantized(const WeightGrid& grid, const torch::Tensor& codes,
                                  const std::vector<GridParams>& span_params) {
  const auto spans = ScaleSpans(grid, codes.size(1));
  Require(spans.size() == span_params.size(), "{} spans need {} parameter sets, got {}", DescribeGrid(grid),
          spans.size(), span_params.size());
  QuantizedWeight out;
  out.layout = GridLayout(grid, codes.size(0), codes.size(1));
  out.codes = codes;
  std::vector<torch::Tensor> scales, zeros, thresholds, values;
  for (size_t s = 0; s < spans.size(); ++s) {
    const auto [begin, end] = spans[s];
    scales.push_back(span_params[s].scale);
    if (span_params[s].zero.defined()) zeros.push_back(span_params[s].zero);
    if (span_params[s].threshold.defined()) thresholds.push_back(span_params[s].threshold);
    values.push_back(CodesToValues(grid, codes.slice(1, begin, end), span_params[s]));
  }
  out.scales = torch::cat(scales, 1);
  if (!zeros.empty()) out.zeros = torch::cat(zeros, 1);
  if (thresholds.size() == spans.size()) out.thresholds = torch::cat(thresholds, 1);
  out.values = torch::cat(values, 1);
  return out;
}

namespace {

// Q8_0/Q4_0 blocks built from the codes and float16 scales themselves: GPTQ may leave a block without the code
// its scale was fitted to, and llama.cpp's quantizer would then pick a different scale from the values.
std::vector<uint8_t> PackGgmlBlocks(const QuantizedWeight& weight) {
  const Layout& layout = weight.layout;
  const torch::Tensor codes = weight.codes.to(torch::kCPU).to(torch::kInt32).contiguous();
  const torch::Tensor scales = weight.scales.to(torch::kCPU, torch::kFloat32).contiguous();
  const int32_t* code = codes.data_ptr<int32_t>();
  const float* scale = scales.data_ptr<float>();
  const int64_t blocks = layout.rows * layout.cols / kQK8_0;  // both formats: 32 weights per block
  std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
  for (int64_t b = 0; b < blocks; ++b) {
    const int32_t* c = code + b * kQK8_0;
    if (layout.type == QuantType::kQ8_0) {
      BlockQ8_0 block;
      block.d = F32ToF16(scale[b]);
      for (int64_t j = 0; j < kQK8_0; ++j) block.qs[j] = static_cast<int8_t>(c[j] - 128);
      std::memcpy(bytes.data() + b * sizeof(block), &block, sizeof(block));
    } else {
      BlockQ4_0 block;
      block.d = F32ToF16(scale[b]);
      for (int64_t j = 0; j < kQK4_0 / 2; ++j) block.qs[j] = static_cast<uint8_t>(c[j] | (c[j + kQK4_0 / 2] << 4));
      std::memcpy(bytes.data() + b * sizeof(block), &block, sizeof(block));
    }
  }
  return bytes;
}

}  // namespace

std::vector<uint8_t> PackQuantized(const QuantizedWeight& weight) {
  const Layout& layout = weight.layout;
  if (layout.type == QuantType::kQ8_0 || layout.type == QuantType::kQ4_0) return PackGgmlBlocks(weight);
  if (layout.type == QuantType::kTQ2_0 || layout.type == QuantType::kTQ1_0) {
    // The values are d t with d a float16 and every block that has a nonzero trit holding one at +-d, so
    // llama.cpp's quantizer finds d again as the block's max |value| and rounds each value back to its trit.
    const torch::Tensor values = weight.values.to(torch::kCPU, torch::kFloat32).contiguous();
    std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
    Traits(layout.type).quantize(layout, values.data_ptr<float>(), bytes.data());
    return bytes;
  }
  AtqCodes codes;
  const torch::Tensor flat_codes = weight.codes.to(torch::kCPU).to(torch::kUInt8).contiguous();
  codes.codes.assign(flat_codes.data_ptr<uint8_t>(), flat_codes.data_ptr<uint8_t>() + flat_codes.numel());
  const auto per_group = [&](const torch::Tensor& tensor) {  // [rows, groups] -> the format's scale groups
    const torch::Tensor kept = layout.granularity == Granularity::kTensor ? tensor.slice(0, 0, 1) : tensor;
    return kept.to(torch::kCPU).contiguous();
  };
  const torch::Tensor scales = per_group(weight.scales).to(torch::kFloat32);
  codes.scales.assign(scales.data_ptr<float>(), scales.data_ptr<float>() + scales.numel());
  if (weight.zeros.defined()) {
    const torch::Tensor zeros = per_group(weight.zeros).to(torch::kUInt8);
    codes.zero_points.assign(zeros.data_ptr<uint8_t>(), zeros.data_ptr<uint8_t>() + zeros.numel());
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(PackedBytes(layout)));
  PackAtq(layout, codes, bytes.data());
  return bytes;
}

QuantizedWeight QuantizeRtn(const torch::Tensor& weight, const WeightGrid& grid) {
  ValidateGrid(grid);
  Require(weight.dim() == 2, "RTN quantizes 2-D weights, got {} dims", weight.dim());
  const torch::Tensor w = weight.to(torch::kFloat32);
  const int64_t rows = w.size(0), cols = w.size(1);
  if (grid.granularity == Granularity::kGroup && cols % grid.group_size == 0 && cols > grid.group_size) {
    // Whole groups as rows ([rows * groups, group]): every fit is per row, so one pass over the matrix gives what
    // one pass per group would (QAT refits every layer at every step; tq2_0's 256-weight groups made it 16% slower).
    const int64_t groups = cols / grid.group_size;
    const torch::Tensor flat = w.reshape({rows * groups, grid.group_size});
    const GridParams params = FitGrid(grid, flat, /*whole_tensor=*/false);
    const torch::Tensor codes = RoundToCodes(grid, flat, params);
    QuantizedWeight out;
    out.layout = GridLayout(grid, rows, cols);
    out.codes = codes.reshape({rows, cols});
    out.values = CodesToValues(grid, codes, params).reshape({rows, cols});
    out.scales = params.scale.reshape({rows, groups});
    if (params.zero.defined()) out.zeros = params.zero.reshape({rows, groups});
    if (params.threshold.defined()) out.thresholds = params.threshold.reshape({rows, groups});
    return out;
  }
  std::vector<GridParams> params;
  std::vector<torch::Tensor> codes;
  for (const auto& [begin, end] : ScaleSpans(grid, cols)) {
    const torch::Tensor span = w.slice(1, begin, end);
    params.push_back(FitGrid(grid, span, grid.granularity == Granularity::kTensor));
    codes.push_back(RoundToCodes(grid, span, params.back()));
  }
  return AssembleQuantized(grid, torch::cat(codes, 1), params);
}

bool ScalesCanBeLearned(const WeightGrid& grid) {
  return grid.kind == GridKind::kTernary || grid.kind == GridKind::kTQ2_0 ||
         (grid.kind == GridKind::kUniform && grid.symmetric);
}

QuantizedWeight QuantizeWithScales(const torch::Tensor& weight, const WeightGrid& grid, const torch::Tensor& scales) {
  ValidateGrid(grid);
  Require(ScalesCanBeLearned(grid), "{} cannot take learned scales (ternary and symmetric uniform grids can)",
          DescribeGrid(grid));
  Require(weight.dim() == 2, "quantization with given scales needs a 2-D weight, got {} dims", weight.dim());
  const torch::Tensor w = weight.to(torch::kFloat32);
  const auto spans = ScaleSpans(grid, w.size(1));
  const int64_t rows = w.size(0);
  Require(scales.dim() == 2 && scales.size(0) == rows && scales.size(1) == static_cast<int64_t>(spans.size()),
          "{} scales for a {}x{} weight under {}: need {}x{}", fmt::join(scales.sizes(), "x"), rows, w.size(1),
          DescribeGrid(grid), rows, spans.size());
  torch::Tensor stored = StoredScale(grid, scales.detach());
  if (grid.granularity == Granularity::kTensor) stored = stored.slice(0, 0, 1).expand({rows, 1}).contiguous();
  Require(torch::isfinite(stored).all().item<bool>() && (stored > 0).all().item<bool>(),
          "learned scales must be finite and positive as stored (float{}); got {} to {}", IsGgmlGrid(grid.kind) ? 16 : 32,
          stored.min().item<float>(), stored.max().item<float>());
  std::vector<GridParams> params;
  std::vector<torch::Tensor> codes;
  for (size_t s = 0; s < spans.size(); ++s) {
    const auto [begin, end] = spans[s];
    const torch::Tensor span = w.slice(1, begin, end);
    GridParams fitted = FitGrid(grid, span, grid.granularity == Granularity::kTensor);
    fitted.scale = stored.slice(1, static_cast<int64_t>(s), static_cast<int64_t>(s) + 1);
    codes.push_back(RoundToCodes(grid, span, fitted));  // ternary: by threshold or the fit's 1 / max|w|
    params.push_back(fitted);
  }
  return AssembleQuantized(grid, torch::cat(codes, 1), params);
}

torch::Tensor ExpandSpans(const WeightGrid& grid, const torch::Tensor& per_span, int64_t cols) {
  if (grid.granularity != Granularity::kGroup) return per_span.expand({per_span.size(0), cols}).contiguous();
  if (cols % grid.group_size == 0) {  // equal groups: a broadcast, no index tensor
    const int64_t groups = cols / grid.group_size;
    return per_span.reshape({per_span.size(0), groups, 1})
        .expand({per_span.size(0), groups, grid.group_size})
        .reshape({per_span.size(0), cols});
  }
  const auto spans = ScaleSpans(grid, cols);
  std::vector<int64_t> widths;
  for (const auto& [begin, end] : spans) widths.push_back(end - begin);
  return per_span.repeat_interleave(torch::tensor(widths, torch::kInt64).to(per_span.device()), /*dim=*/1);
}

void RefitTernaryScales(QuantizedWeight& quantized, const WeightGrid& grid, const torch::Tensor& weight,
                        const torch::Tensor& exclude) {
  Require(grid.kind == GridKind::kTernary, "only ternary grids refit their scales for fixed codes, not {}",
          DescribeGrid(grid));
  const torch::Tensor w = weight.to(torch::kFloat32);
  torch::Tensor used = quantized.codes != 1;  // stored code 1 is the trit 0
  if (exclude.defined()) used = used & exclude.logical_not();
  const torch::Tensor magnitude = w.abs().to(torch::kFloat64) * used.to(torch::kFloat64);
  std::vector<torch::Tensor> scales;
  for (const auto& [begin, end] : ScaleSpans(grid, w.size(1))) {
    const bool whole = grid.granularity == Granularity::kTensor;
    torch::Tensor sum = magnitude.slice(1, begin, end).sum(1, /*keepdim=*/true);
    torch::Tensor count = used.slice(1, begin, end).to(torch::kFloat64).sum(1, /*keepdim=*/true);
    if (whole) {
      sum = sum.sum(0, /*keepdim=*/true).expand({w.size(0), 1});
      count = count.sum(0, /*keepdim=*/true).expand({w.size(0), 1});
    }
    scales.push_back(torch::where(count > 0, sum / count.clamp_min(1), torch::zeros_like(count)).to(torch::kFloat32));
  }
  quantized.scales = torch::cat(scales, 1).contiguous();
  quantized.values = ExpandSpans(grid, quantized.scales, w.size(1)) * (quantized.codes - 1);
}

double RelativeOutputError(const torch::Tensor& weight, const torch::Tensor& quantized, const torch::Tensor& hessian) {
  const torch::Tensor h = hessian.defined() ? hessian.to(torch::kFloat64) : torch::Tensor();
  // In float64, a few rows at a time: a 14336 x 4096 layer costs a chunk of memory, not five float64 copies of it.
  const bool rows = weight.dim() == 2;
  const int64_t count = rows ? weight.size(0) : 1;
  const int64_t step = rows ? std::max<int64_t>(1, (int64_t{1} << 20) / std::max<int64_t>(1, weight.size(1))) : 1;
  double error = 0, signal = 0;
  for (int64_t first = 0; first < count; first += step) {
    const int64_t n = std::min(step, count - first);
    const torch::Tensor w = (rows ? weight.narrow(0, first, n) : weight).to(torch::kFloat64);
    const torch::Tensor d = w - (rows ? quantized.narrow(0, first, n) : quantized).to(torch::kFloat64);
    if (!h.defined()) {
      error += d.pow(2).sum().item<double>();
      signal += w.pow(2).sum().item<double>();
    } else {
      error += (torch::matmul(d, h) * d).sum().item<double>();
      signal += (torch::matmul(w, h) * w).sum().item<double>();
    }
  }
  if (!h.defined()) return error / std::max(signal, 1e-300);
  return signal > 0 ? error / signal : 0.0;
}

}  // namespace atq
