// The Pareto frontier on hand-made sets (ties, duplicates, one point, none) and against the definition checked
// pair by pair on random sets.
#include "eval/pareto.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "util/error.h"

namespace atq {
namespace {

// The definition, pair by pair: O(n^2).
std::vector<size_t> BruteForceFrontier(const std::vector<ParetoPoint>& points) {
  std::vector<size_t> frontier;
  for (size_t i = 0; i < points.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < points.size() && !dominated; ++j) {
      const bool no_worse = points[j].cost <= points[i].cost && points[j].quality >= points[i].quality;
      const bool better = points[j].cost < points[i].cost || points[j].quality > points[i].quality;
      const bool earlier_duplicate =
          j < i && points[j].cost == points[i].cost && points[j].quality == points[i].quality;
      dominated = (no_worse && better) || earlier_duplicate;
    }
    if (!dominated) frontier.push_back(i);
  }
  std::sort(frontier.begin(), frontier.end(), [&](size_t a, size_t b) { return points[a].cost < points[b].cost; });
  return frontier;
}

TEST(ParetoFrontierTest, HandMadeSet) {
  //           0          1          2           3          4          5
  const std::vector<ParetoPoint> points = {{4, 0.9}, {1, 0.5}, {2, 0.5}, {3, 0.95}, {2, 0.7}, {5, 0.95}};
  // 2 loses to 1 (cheaper, as good) and to 4; 5 loses to 3 (cheaper, as good); 0 loses to 3 (cheaper, better).
  EXPECT_EQ(ParetoFrontier(points), (std::vector<size_t>{1, 4, 3}));
}

TEST(ParetoFrontierTest, TiesAndDuplicates) {
  // Same cost: only the best quality survives. Same quality: only the cheapest. Exact duplicates: the first.
  EXPECT_EQ(ParetoFrontier({{1, 0.2}, {1, 0.8}, {1, 0.5}}), (std::vector<size_t>{1}));
  EXPECT_EQ(ParetoFrontier({{3, 0.5}, {1, 0.5}, {2, 0.5}}), (std::vector<size_t>{1}));
  EXPECT_EQ(ParetoFrontier({{2, 0.9}, {1, 0.1}, {2, 0.9}, {1, 0.1}}), (std::vector<size_t>{1, 0}));
}

TEST(ParetoFrontierTest, SinglePointAndEmpty) {
  EXPECT_EQ(ParetoFrontier({{7, -1}}), (std::vector<size_t>{0}));
  EXPECT_TRUE(ParetoFrontier({}).empty());
}

TEST(ParetoFrontierTest, AllOnTheFrontierWhenQualityRisesWithCost) {
  EXPECT_EQ(ParetoFrontier({{3, 0.3}, {1, 0.1}, {4, 0.4}, {2, 0.2}}), (std::vector<size_t>{1, 3, 0, 2}));
}

TEST(ParetoFrontierTest, InfiniteValuesAreOrderedAndNanIsRejected) {
  const double infinity = std::numeric_limits<double>::infinity();
  EXPECT_EQ(ParetoFrontier({{infinity, 1}, {1, 0}, {2, -infinity}}), (std::vector<size_t>{1, 0}));
  EXPECT_THROW(ParetoFrontier({{1, 0}, {std::nan(""), 1}}), Error);
  EXPECT_THROW(ParetoFrontier({{1, std::nan("")}}), Error);
}

TEST(ParetoFrontierTest, MatchesTheDefinitionOnRandomSets) {
  std::mt19937 random(11);
  for (int trial = 0; trial < 300; ++trial) {
    // Few distinct values, so that ties in cost, in quality and exact duplicates are common.
    std::uniform_int_distribution<int> size(0, 40), value(0, trial % 2 == 0 ? 5 : 1000);
    std::vector<ParetoPoint> points(static_cast<size_t>(size(random)));
    for (ParetoPoint& point : points) point = {static_cast<double>(value(random)), value(random) / 7.0};
    EXPECT_EQ(ParetoFrontier(points), BruteForceFrontier(points)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace atq
