// The multiple-choice knapsack by dynamic programming over whole cost units.
#include "quant/knapsack.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "util/error.h"

namespace atq {
namespace {

// An option's cost in whole units of `unit`, rounded up; units + 1 when it cannot fit the budget alone.
int64_t CostInUnits(double cost, double unit, int64_t units) {
  if (cost == 0) return 0;
  if (unit == 0) return units + 1;  // a zero budget: only free options fit
  // The tolerance keeps a cost that is a whole number of units, give or take floating-point error, at that number.
  const double exact = cost / unit - 1e-9;
  if (exact > static_cast<double>(units)) return units + 1;  // also keeps the cast below in range
  return static_cast<int64_t>(std::ceil(exact));
}

void CheckInput(const std::vector<std::vector<double>>& costs, const std::vector<std::vector<double>>& losses,
                double budget, int64_t units) {
  Require(!costs.empty(), "multiple-choice knapsack: no groups to choose for");
  Require(costs.size() == losses.size(), "multiple-choice knapsack: {} groups of costs but {} groups of losses",
          costs.size(), losses.size());
  for (size_t g = 0; g < costs.size(); ++g) {
    Require(!costs[g].empty(), "multiple-choice knapsack: group {} has no options", g);
    Require(costs[g].size() == losses[g].size(), "multiple-choice knapsack: group {} has {} costs but {} losses", g,
            costs[g].size(), losses[g].size());
    for (size_t k = 0; k < costs[g].size(); ++k) {
      Require(std::isfinite(costs[g][k]) && costs[g][k] >= 0,
              "multiple-choice knapsack: group {} option {} has cost {}; costs must be finite and >= 0", g, k,
              costs[g][k]);
      Require(std::isfinite(losses[g][k]),
              "multiple-choice knapsack: group {} option {} has loss {}; losses must be finite", g, k, losses[g][k]);
    }
  }
  Require(std::isfinite(budget) && budget >= 0, "multiple-choice knapsack: the budget {} is not finite and >= 0",
          budget);
  Require(units >= 1, "multiple-choice knapsack: the budget needs at least 1 cost unit, not {}", units);
}

}  // namespace

std::vector<size_t> SolveMultipleChoiceKnapsack(const std::vector<std::vector<double>>& costs,
                                                const std::vector<std::vector<double>>& losses, double budget,
                                                int64_t units) {
  CheckInput(costs, losses, budget, units);
  const double unit = budget / static_cast<double>(units);
  std::vector<std::vector<int64_t>> unit_costs(costs.size());
  for (size_t g = 0; g < costs.size(); ++g) {
    for (const double cost : costs[g]) unit_costs[g].push_back(CostInUnits(cost, unit, units));
  }
  const double infinity = std::numeric_limits<double>::infinity();
  const auto states = static_cast<size_t>(units) + 1;
  // best[c]: the least total loss of the groups so far at exactly c units; pick[g][c]: the option of group g in
  // that plan, to walk the plan back from the end.
  std::vector<double> best(states, infinity);
  best[0] = 0;
  std::vector<std::vector<size_t>> pick(costs.size(), std::vector<size_t>(states));
  for (size_t g = 0; g < costs.size(); ++g) {
    std::vector<double> next(states, infinity);
    for (int64_t c = 0; c <= units; ++c) {
      if (best[c] == infinity) continue;
      for (size_t k = 0; k < costs[g].size(); ++k) {
        const int64_t reached = c + unit_costs[g][k];
        if (reached > units) continue;
        const double total = best[c] + losses[g][k];
        if (total < next[reached]) {
          next[reached] = total;
          pick[g][reached] = k;
        }
      }
    }
    best = std::move(next);
  }
  const auto end = std::min_element(best.begin(), best.end());
  if (*end == infinity) {
    double cheapest = 0;
    for (const std::vector<double>& group : costs) cheapest += *std::min_element(group.begin(), group.end());
    Fail("multiple-choice knapsack: no choice fits the budget of {}: the cheapest options cost {} together (each "
         "rounded up to whole 1/{}ths of the budget)",
         budget, cheapest, units);
  }
  std::vector<size_t> choice(costs.size());
  auto c = static_cast<int64_t>(end - best.begin());
  for (size_t g = costs.size(); g-- > 0;) {
    choice[g] = pick[g][c];
    c -= unit_costs[g][choice[g]];
  }
  return choice;
}

}  // namespace atq
