// The multiple-choice knapsack behind budgeted mixed precision: one option per group (a grid per layer) with
// the least total loss whose total cost fits a budget.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace atq {

// The option index of each group minimizing sum(losses[g][choice[g]]) subject to sum(costs[g][choice[g]]) <=
// budget, by dynamic programming over the budget split into `units` equal cost units. Each option's cost is
// rounded up to whole units (less 1e-9 of a unit, so that floating-point error in a cost that is exactly a whole
// number of units does not push it one unit up), so the plan never exceeds the budget (but for groups * 1e-9
// units at most), and it is exactly optimal for the rounded costs: exactly optimal outright when every cost is a
// whole number of units (budget / units). Ties in loss go to the plan with the fewest rounded cost units.
// Time O(options * units), memory O(groups * units).
// Throws atq::Error for no groups, a group without options, costs and losses of different shapes, a negative or
// non-finite cost, a non-finite loss or budget, a negative budget, units < 1, or when no choice fits the budget.
std::vector<size_t> SolveMultipleChoiceKnapsack(const std::vector<std::vector<double>>& costs,
                                                const std::vector<std::vector<double>>& losses, double budget,
                                                int64_t units = 4096);

}  // namespace atq
