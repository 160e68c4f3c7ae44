// The format round-trip study over a file's weight matrices.
#include "report/roundtrip_report.h"

#include <random>

#include <fmt/format.h>

#include "util/error.h"
#include "util/progress.h"

namespace atq {
namespace {

bool IsFloatType(QuantType type) {
  const TypeTraits* traits = FindTraits(static_cast<uint32_t>(type));
  return traits != nullptr && traits->family == TypeFamily::kFloat;
}

Layout LayoutFor(QuantType type, const WeightMatrix& matrix, const RoundtripOptions& options) {
  Layout layout{type, matrix.rows, matrix.cols, options.granularity, options.group_size};
  if (Traits(type).family == TypeFamily::kGgmlBlock && matrix.cols % Traits(type).block_size != 0) {
    layout.type = options.fallback;
  }
  return layout;
}

}  // namespace

std::vector<WeightMatrix> WeightMatrices(const TensorFile& file) {
  std::vector<WeightMatrix> matrices;
  for (const TensorEntry& entry : file.tensors()) {
    const TensorInfo& info = *entry.info;
    if (info.shape.size() < 2) continue;
    if (!IsFloatType(info.type) && !(FindTraits(static_cast<uint32_t>(info.type)) &&
                                     Traits(info.type).is_quantized)) {
      continue;
    }
    if (info.layout.rows * info.layout.cols == 0) continue;
    matrices.push_back({info.name, info.layout.rows, info.layout.cols, ReadAsFloat(entry)});
  }
  return matrices;
}

std::vector<WeightMatrix> SyntheticWeightMatrices(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<WeightMatrix> matrices;
  const std::pair<int64_t, int64_t> shapes[] = {{768, 768}, {3072, 768}, {768, 3072}, {256, 100}};
  for (size_t i = 0; i < std::size(shapes); ++i) {
    WeightMatrix matrix{fmt::format("synthetic.{}", i), shapes[i].first, shapes[i].second, {}};
    matrix.values.resize(static_cast<size_t>(matrix.rows * matrix.cols));
    for (float& value : matrix.values) value = normal(rng) * (uniform(rng) < 0.001f ? 10.0f : 1.0f);
    matrices.push_back(std::move(matrix));
  }
  return matrices;
}

RoundtripStudy RunRoundtrip(std::string source, const std::vector<WeightMatrix>& matrices,
                            const RoundtripOptions& options) {
  Require(!matrices.empty(), "{}: no weight matrices (float tensors with 2 or more dimensions)", source);
  std::vector<QuantType> types = options.types;
  if (types.empty()) {
    for (const TypeTraits& row : AllTypes()) {
      if (row.quantize != nullptr && row.type != QuantType::kF64) types.push_back(row.type);
    }
  }
  RoundtripStudy study;
  study.source = std::move(source);
  study.matrices = static_cast<int64_t>(matrices.size());
  for (QuantType type : types) study.formats.push_back({type, {}, 0});
  Progress progress("roundtrip", study.matrices, "tensors");
  for (const WeightMatrix& matrix : matrices) {
    study.weights += matrix.rows * matrix.cols;
    for (FormatResult& result : study.formats) {
      const Layout layout = LayoutFor(result.type, matrix, options);
      if (layout.type != result.type) ++result.fallback_tensors;
      result.error.Add(MeasureRoundtrip(layout, matrix.values.data()));
    }
    progress.Advance(1, matrix.name);
  }
  progress.Finish();
  return study;
}

nlohmann::json RoundtripJson(const RoundtripStudy& study) {
  nlohmann::json formats = nlohmann::json::array();
  for (const FormatResult& result : study.formats) {
    const RoundtripError& e = result.error;
    formats.push_back({{"type", TypeName(result.type)},
                       {"bits_per_weight", e.BitsPerWeight()},
                       {"bytes", e.packed_bytes},
                       {"compression_vs_f32", e.packed_bytes > 0 ? 4.0 * e.weights / e.packed_bytes : 0.0},
                       {"relative_rmse", e.RelativeRmse()},
                       {"sqnr_db", std::isfinite(e.SqnrDb()) ? nlohmann::json(e.SqnrDb()) : nlohmann::json(nullptr)},
                       {"max_abs_error", e.max_abs_error},
                       {"fallback_tensors", result.fallback_tensors},
                       {"seconds", e.seconds}});
  }
  return {{"source", study.source}, {"matrices", study.matrices}, {"weights", study.weights}, {"formats", formats}};
}

std::string FormatRoundtripTable(const RoundtripStudy& study) {
  std::string out = fmt::format("{}: {} weight matrices, {} weights\n", study.source, study.matrices, study.weights);
  out += fmt::format("{:<6} {:>7} {:>12} {:>8} {:>10} {:>9} {:>11} {:>9} {:>8}\n", "type", "bpw", "bytes", "vs f32",
                     "rel. RMSE", "SQNR dB", "max |err|", "fallback", "seconds");
  for (const FormatResult& result : study.formats) {
    const RoundtripError& e = result.error;
    out += fmt::format("{:<6} {:>7.3f} {:>12} {:>7.2f}x {:>10.5f} {:>9.2f} {:>11.3g} {:>9} {:>8.2f}\n",
                       TypeName(result.type), e.BitsPerWeight(), e.packed_bytes, 4.0 * e.weights / e.packed_bytes,
                       e.RelativeRmse(), e.SqnrDb(), e.max_abs_error, result.fallback_tensors, e.seconds);
  }
  out += "bpw counts every byte stored, scales included; fallback = matrices a block type could not hold, kept as "
         "f16.\n";
  return out;
}

}  // namespace atq
