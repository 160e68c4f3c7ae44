// The multiple-choice knapsack: exactly optimal against brute force when costs are whole units, never over
// budget with fractional costs, and clean errors for malformed or infeasible problems.
#include "quant/knapsack.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using Table = std::vector<std::vector<double>>;

double Sum(const Table& table, const std::vector<size_t>& choice) {
  double total = 0;
  for (size_t g = 0; g < table.size(); ++g) total += table[g][choice[g]];
  return total;
}

// The least total loss within the budget over every combination; infinity when none fits.
double BruteForceLeastLoss(const Table& costs, const Table& losses, double budget) {
  double least = std::numeric_limits<double>::infinity();
  std::vector<size_t> choice(costs.size(), 0);
  while (true) {
    if (Sum(costs, choice) <= budget) least = std::min(least, Sum(losses, choice));
    size_t g = 0;  // the next combination, like an odometer
    while (g < choice.size() && ++choice[g] == costs[g].size()) choice[g++] = 0;
    if (g == choice.size()) return least;
  }
}

// Random groups of 1..4 options: integer costs in [0, 9], losses in [0, 1).
void RandomInstance(std::mt19937& random, size_t groups, bool integer_costs, Table& costs, Table& losses) {
  std::uniform_int_distribution<int> options(1, 4), whole(0, 9);
  std::uniform_real_distribution<double> fraction(0, 1), fractional_cost(0, 9);
  costs.assign(groups, {});
  losses.assign(groups, {});
  for (size_t g = 0; g < groups; ++g) {
    for (int k = options(random); k > 0; --k) {
      costs[g].push_back(integer_costs ? whole(random) : fractional_cost(random));
      losses[g].push_back(fraction(random));
    }
  }
}

double CheapestTotal(const Table& costs) {
  double total = 0;
  for (const auto& group : costs) total += *std::min_element(group.begin(), group.end());
  return total;
}

TEST(MultipleChoiceKnapsackTest, ExactlyOptimalWhenCostsAreWholeUnits) {
  // units = budget: one unit per cost point, so rounding loses nothing and the DP must match brute force.
  std::mt19937 random(3);
  int solved = 0;
  for (int trial = 0; trial < 400; ++trial) {
    Table costs, losses;
    RandomInstance(random, 1 + trial % 6, /*integer_costs=*/true, costs, losses);
    const auto budget =
        static_cast<int64_t>(CheapestTotal(costs)) + std::uniform_int_distribution<int64_t>(0, 20)(random);
    if (budget == 0) continue;  // units must be >= 1
    const double least = BruteForceLeastLoss(costs, losses, static_cast<double>(budget));
    const std::vector<size_t> choice = SolveMultipleChoiceKnapsack(costs, losses, static_cast<double>(budget), budget);
    ASSERT_EQ(choice.size(), costs.size());
    EXPECT_LE(Sum(costs, choice), static_cast<double>(budget)) << "trial " << trial;
    EXPECT_EQ(Sum(losses, choice), least) << "trial " << trial;  // same plan, same order of additions
    ++solved;
  }
  EXPECT_GT(solved, 300);
}

TEST(MultipleChoiceKnapsackTest, NeverOverBudgetWithFractionalCosts) {
  // The 1e-9-unit rounding tolerance may let a plan exceed the budget by at most groups * 1e-9 units.
  constexpr double kRoundingSlack = 8 * 1e-9;
  std::mt19937 random(5);
  for (int trial = 0; trial < 400; ++trial) {
    Table costs, losses;
    RandomInstance(random, 1 + trial % 8, /*integer_costs=*/false, costs, losses);
    // Rounding adds under one unit per group: at most 8/64 of the budget, so 1.2x the cheapest always fits.
    const double budget = CheapestTotal(costs) * 1.2 + std::uniform_real_distribution<double>(0, 30)(random);
    const int64_t units = trial % 2 == 0 ? 64 : 4096;
    const std::vector<size_t> choice = SolveMultipleChoiceKnapsack(costs, losses, budget, units);
    EXPECT_LE(Sum(costs, choice), budget + kRoundingSlack * budget / static_cast<double>(units)) << "trial " << trial;
    // Rounding can only make the plan worse than the true optimum, never better.
    EXPECT_GE(Sum(losses, choice), BruteForceLeastLoss(costs, losses, budget) - 1e-12) << "trial " << trial;
  }
}

TEST(MultipleChoiceKnapsackTest, AmpleBudgetTakesTheLeastLossOfEveryGroup) {
  const Table costs = {{1, 2, 4}, {8, 1}, {3}};
  const Table losses = {{0.9, 0.5, 0.1}, {0.0, 0.3}, {0.2}};
  EXPECT_EQ(SolveMultipleChoiceKnapsack(costs, losses, 100), (std::vector<size_t>{2, 0, 0}));
  // A budget of 6: {4, 1, 3} costs 8 > 6; {2, 1, 3} = 6 with loss 0.5 + 0.3 + 0.2; {1, 1, 3} = 5 is worse.
  EXPECT_EQ(SolveMultipleChoiceKnapsack(costs, losses, 6, 6), (std::vector<size_t>{1, 1, 0}));
}

TEST(MultipleChoiceKnapsackTest, ZeroBudgetAllowsOnlyFreeOptions) {
  EXPECT_EQ(SolveMultipleChoiceKnapsack({{1, 0}, {0}}, {{0, 1}, {0}}, 0), (std::vector<size_t>{1, 0}));
  EXPECT_THROW(SolveMultipleChoiceKnapsack({{1}}, {{0}}, 0), Error);
}

TEST(MultipleChoiceKnapsackTest, InfeasibleBudgetSaysSo) {
  const std::string message = ErrorMessageOf([] { SolveMultipleChoiceKnapsack({{3, 5}, {4}}, {{0, 0}, {0}}, 6.5); });
  EXPECT_NE(message.find("budget of 6.5"), std::string::npos) << message;
  EXPECT_NE(message.find("cost 7"), std::string::npos) << message;
}

TEST(MultipleChoiceKnapsackTest, RejectsMalformedInput) {
  const auto message = [](const Table& costs, const Table& losses, double budget = 10, int64_t units = 16) {
    return ErrorMessageOf([&] { SolveMultipleChoiceKnapsack(costs, losses, budget, units); });
  };
  const double nan = std::nan("");
  const double infinity = std::numeric_limits<double>::infinity();
  EXPECT_NE(message({}, {}).find("no groups"), std::string::npos);
  EXPECT_NE(message({{1}}, {{1}, {2}}).find("1 groups of costs but 2 groups of losses"), std::string::npos);
  EXPECT_NE(message({{1}, {}}, {{1}, {}}).find("group 1 has no options"), std::string::npos);
  EXPECT_NE(message({{1, 2}}, {{1}}).find("group 0 has 2 costs but 1 losses"), std::string::npos);
  EXPECT_NE(message({{1, -2}}, {{1, 1}}).find("group 0 option 1 has cost -2"), std::string::npos);
  EXPECT_NE(message({{nan}}, {{1}}).find("has cost nan"), std::string::npos);
  EXPECT_NE(message({{infinity}}, {{1}}).find("has cost inf"), std::string::npos);
  EXPECT_NE(message({{1}}, {{nan}}).find("has loss nan"), std::string::npos);
  EXPECT_NE(message({{1}}, {{1}}, -1).find("budget -1"), std::string::npos);
  EXPECT_NE(message({{1}}, {{1}}, infinity).find("budget inf"), std::string::npos);
  EXPECT_NE(message({{1}}, {{1}}, 10, 0).find("at least 1 cost unit"), std::string::npos);
}

}  // namespace
}  // namespace atq
