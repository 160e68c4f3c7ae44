// The table of post-training quantization methods: one row per method, each in its own file under
// src/quant/methods/. A row says what the method needs from calibration, which grids it takes, how it validates a
// layer's recipe, and its quantize call; every caller (the language-model quantizer, sensitivity measurement, the
// recipe parser) goes through the table. Adding a method (AWQ, say) is one file and one row in method.cc.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

#include "grid/quantized_weight.h"
#include "grid/weight_grid.h"
#include "quant/gptq.h"

namespace atq {

// Method settings shared across layers (from the recipe's top level).
struct MethodOptions {
  bool atq_calibrate = true;      // atq: thresholds chosen on calibration data (else the grid's rule)
  std::vector<double> atq_ratios;  // candidates for that choice (empty: DefaultTernaryRatios())
  GptqOptions gptq;
};

// One weight to quantize: [rows, cols] float32, its input Hessian H = 2 X X^T / n (undefined without
// calibration), the grid, and the layer's name for messages.
struct MethodInput {
  const torch::Tensor& weight;
  const torch::Tensor& hessian;
  const WeightGrid& grid;
  const MethodOptions& options;
  const std::string& name;
};

struct MethodResult {
  QuantizedWeight weight;
  double threshold_ratio = -1;  // ternary thresholds chosen on calibration data: mean ratio to mean |w|
  double damp = -1;             // GPTQ's dampening after any raises
};

struct QuantMethodRow {
  std::string_view name;         // what recipes and --method say
  std::string_view description;  // for help texts
  bool needs_hessian;            // cannot run without calibration inputs
  // Grids the method rounds to; for others (mixed precision may hand it any candidate) `fallback` is used.
  bool (*accepts)(const WeightGrid& grid);
  std::string_view fallback;
  MethodResult (*quantize)(const MethodInput& input);
};

// Every method, in the order help texts list them.
const std::vector<QuantMethodRow>& QuantMethods();
// Throws atq::Error listing the known names.
const QuantMethodRow& FindQuantMethod(std::string_view name);
// "rtn, atq, gptq".
std::string QuantMethodNames();

// Throws atq::Error starting with `where` when the method does not take the grid or needs calibration that
// is not there.
void ValidateMethod(std::string_view method, const WeightGrid& grid, bool calibrated, const std::string& where);

// The method a layer with this grid really gets: the method itself, or its fallback for grids it does not take.
const QuantMethodRow& MethodForGrid(std::string_view method, const WeightGrid& grid);

// The rows, each defined in its own file of src/quant/methods/.
QuantMethodRow RtnMethod();
QuantMethodRow AtqMethod();
QuantMethodRow GptqMethod();

}  // namespace atq
