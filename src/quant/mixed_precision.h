// Mixed precision for language models: how much each linear layer suffers at each candidate grid (its
// sensitivity), and which grid each layer gets, either so that the total sensitivity is smallest under an
// average-bits budget (an exact multiple-choice knapsack by dynamic programming) or by keeping the k most
// sensitive layers at a higher precision.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/tokenizer.h"
#include "models/causal_lm.h"
#include "grid/weight_grid.h"
#include "quant/lm_options.h"

namespace atq {

enum class SensitivityScore {
  kOutput,  // ||(W - Q) X||^2 / ||W X||^2 on calibration inputs: every layer's own relative output error
  kFisher,  // sum_i F_i ||(w_i - q_i) X||^2 / n: each output channel's error on calibration inputs weighted by
            // F_i, the mean over windows of the summed squared gradient of the next-token loss at that output
            // (an empirical Fisher on outputs): a second-order estimate of how much the loss rises that keeps
            // the correlations GPTQ builds between a row's errors, and is comparable across layers
};

// "ternary", "4", "3/g64", "ternary/base3/channel", "8/channel/asym": a grid from the base grid with the kind
// or bits replaced and optional /g<N>, /channel, /tensor, /sym, /asym, /base3. Throws atq::Error naming the item.
WeightGrid ParseCandidateGrid(const std::string& item, const WeightGrid& base);
std::vector<WeightGrid> ParseCandidateGrids(const std::string& list, const WeightGrid& base);  // comma-separated

struct LayerSensitivity {
  std::string name;                  // module name
  int64_t weights = 0;
  std::vector<int64_t> bytes;        // packed bytes at each candidate
  std::vector<double> sensitivity;   // at each candidate
};

// Sensitivities of one model by the settings they were measured under (SensitivityKey).
struct SensitivityCache {
  std::map<std::string, std::vector<LayerSensitivity>> entries;
};

// Every setting of `options` the sensitivities depend on (candidates, score, method, base grid, GPTQ and
// calibration settings), as text; budgets, keep-top and per-layer overrides are not among them.
std::string SensitivityKey(const LmQuantizeOptions& options);

// Quantizes every linear layer of the full-precision model to every candidate (with the recipe's method; ATQ
// applies to ternary candidates only, uniform ones then use GPTQ or RTN) on full-precision calibration inputs
// and scores the result. Leaves the model unchanged.
std::vector<LayerSensitivity> MeasureSensitivity(CausalLmImpl& model, const Tokenizer& tokenizer,
                                                 const LmQuantizeOptions& options,
                                                 const std::vector<WeightGrid>& candidates, SensitivityScore score);

// Chooses each layer's grid among options.mixed_candidates by sensitivity (measured, or reused from
// options.sensitivity_cache), writes them into options.layers (a layer's own override wins) and returns the plan
// as JSON. Throws atq::Error for settings that do not make a plan.
nlohmann::json PlanMixedPrecision(CausalLmImpl& model, const Tokenizer& tokenizer, LmQuantizeOptions& options);

// The candidate index of each layer minimizing the summed sensitivity with sum(bytes) <= budget_bits / 8 *
// sum(weights). Exact: costs are counted in units of 1/4096 of the budget, each rounded up, so the plan never
// exceeds the budget. Throws atq::Error when even the cheapest candidates exceed it.
std::vector<size_t> AllocateBits(const std::vector<LayerSensitivity>& layers, double budget_bits);

// Every layer gets `base` except the k with the highest sensitivity at `base`, which get `high`.
std::vector<size_t> KeepMostSensitive(const std::vector<LayerSensitivity>& layers, size_t base, size_t high, int64_t k);

// The plan as JSON: candidates, each layer's sensitivities and choice, and the average bits.
nlohmann::json MixedPlanJson(const std::vector<LayerSensitivity>& layers, const std::vector<WeightGrid>& candidates,
                             const std::vector<size_t>& choice);

}  // namespace atq
