// Assembling, packing and round-to-nearest quantization of weight matrices.
#include "quant/quantized_weight.h"

#include <torch/torch.h>

#include "formats/atq_packed.h"
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
  std::vector<torch::Tensor> scales, zeros, values;
  for (size_t s = 0; s < spans.size(); ++s) {
    const auto [begin, end] = spans[s];
    scales.push_back(span_params[s].scale);
    if (span_params[s].zero.defined()) zeros.push_back(span_params[s].zero);
    values.push_back(CodesToValues(grid, codes.slice(1, begin, end), span_params[s]));
  }
  out.scales = torch::cat(scales, 1);
  if (!zeros.empty()) out.zeros = torch::cat(zeros, 1);
  out.values = torch::cat(values, 1);
  return out;
}

std::vector<uint8_t> PackQuantized(const QuantizedWeight& weight) {
  const Layout& layout = weight.layout;
  if (Traits(layout.type).family == TypeFamily::kGgmlBlock) {
    // llama.cpp's quantizer re-derives each block's scale from the values, which sit exactly on its grid, so
    // the blocks dequantize to `values` again (tested).
    const torch::Tensor values = weight.values.to(torch::kCPU, torch::kFloat32).contiguous();
    return Quantize(layout, values.data_ptr<float>());
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
  std::vector<GridParams> params;
  std::vector<torch::Tensor> codes;
  for (const auto& [begin, end] : ScaleSpans(grid, w.size(1))) {
    const torch::Tensor span = w.slice(1, begin, end);
    params.push_back(FitGrid(grid, span, grid.granularity == Granularity::kTensor));
    codes.push_back(RoundToCodes(grid, span, params.back()));
  }
  return AssembleQuantized(grid, torch::cat(codes, 1), params);
}

double RelativeOutputError(const torch::Tensor& weight, const torch::Tensor& quantized, const torch::Tensor& hessian) {
  const torch::Tensor w = weight.to(torch::kFloat64);
  const torch::Tensor d = w - quantized.to(torch::kFloat64);
  if (!hessian.defined()) return (d.pow(2).sum() / w.pow(2).sum().clamp_min(1e-300)).item<double>();
  const torch::Tensor h = hessian.to(torch::kFloat64);
  const double error = (torch::matmul(d, h) * d).sum().item<double>();
  const double signal = (torch::matmul(w, h) * w).sum().item<double>();
  return signal > 0 ? error / signal : 0.0;
}

}  // namespace atq
