// The one mixed-precision planner, for language models and image classifiers alike: a table of layers x candidate
// settings, each with a cost (packed bytes, energy, ...) and a sensitivity, turned into one candidate per layer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace atq {

// The candidate per layer with the least total sensitivity whose summed cost[layer][candidate] plus fixed_cost is
// at most budget: the multiple-choice knapsack of quant/knapsack.h, solved exactly over `units` cost units.
// Throws atq::Error naming the budget (and the fixed part) when nothing fits.
std::vector<size_t> PlanUnderBudget(const std::vector<std::vector<double>>& cost,
                                    const std::vector<std::vector<double>>& sensitivity, double budget,
                                    double fixed_cost = 0, int64_t units = 4096);

// Every layer gets candidate `base` except the k with the highest sensitivity at `base`, which get `high`
// (ties: the earlier layer first).
std::vector<size_t> PlanKeepTop(const std::vector<std::vector<double>>& sensitivity, size_t base, size_t high,
                                int64_t k);

}  // namespace atq
