// `atq roundtrip`: every weight matrix of a file through every chosen format; bits per weight, size, error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/roundtrip.h"
#include "io/tensor_file.h"

namespace atq {

struct RoundtripOptions {
  std::vector<QuantType> types;                     // empty: every type the table can quantize to
  Granularity granularity = Granularity::kChannel;  // for atq's own types
  int64_t group_size = 128;
  QuantType fallback = QuantType::kF16;  // for matrices a block type cannot hold (row not a multiple of its block)
};

// A weight matrix to measure (its float values in layout order).
struct WeightMatrix {
  std::string name;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> values;
};

struct FormatResult {
  QuantType type;
  RoundtripError error;          // every matrix, fallbacks included
  int64_t fallback_tensors = 0;  // matrices stored as options.fallback instead
};

struct RoundtripStudy {
  std::string source;
  int64_t matrices = 0;
  int64_t weights = 0;
  std::vector<FormatResult> formats;
};

// The weight matrices of a file: float tensors with two or more dimensions (biases and norms are left out).
std::vector<WeightMatrix> WeightMatrices(const TensorFile& file);
// Seeded stand-in weights for a machine without any checkpoint: Gaussian rows with 0.1% outliers at 10x.
std::vector<WeightMatrix> SyntheticWeightMatrices(uint64_t seed);

RoundtripStudy RunRoundtrip(std::string source, const std::vector<WeightMatrix>& matrices,
                            const RoundtripOptions& options);

nlohmann::json RoundtripJson(const RoundtripStudy& study);
std::string FormatRoundtripTable(const RoundtripStudy& study);

}  // namespace atq
