// Budgeted and top-k mixed-precision plans.
#include "quant/planner.h"

#include <algorithm>
#include <numeric>

#include "quant/knapsack.h"
#include "util/error.h"

namespace atq {

std::vector<size_t> PlanUnderBudget(const std::vector<std::vector<double>>& cost,
                                    const std::vector<std::vector<double>>& sensitivity, double budget,
                                    double fixed_cost, int64_t units) {
  Require(!cost.empty(), "mixed precision: no layers to plan");
  try {
    return SolveMultipleChoiceKnapsack(cost, sensitivity, budget - fixed_cost, units);
  } catch (const Error& error) {
    Fail("mixed precision: the budget {:.6g} does not fit ({:.6g} of it is fixed): {}", budget, fixed_cost,
         error.what());
  }
}

std::vector<size_t> PlanKeepTop(const std::vector<std::vector<double>>& sensitivity, size_t base, size_t high,
                                int64_t k) {
  std::vector<size_t> order(sensitivity.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return sensitivity[a][base] > sensitivity[b][base]; });
  std::vector<size_t> choice(sensitivity.size(), base);
  for (int64_t i = 0; i < k && i < static_cast<int64_t>(order.size()); ++i) choice[order[i]] = high;
  return choice;
}

}  // namespace atq
