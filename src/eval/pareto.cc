// The Pareto frontier by one sort and one sweep: O(n log n).
#include "eval/pareto.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "util/error.h"

namespace atq {

std::vector<size_t> ParetoFrontier(const std::vector<ParetoPoint>& points) {
  for (size_t i = 0; i < points.size(); ++i) {
    Require(!std::isnan(points[i].cost) && !std::isnan(points[i].quality),
            "Pareto frontier: point {} has a NaN cost or quality", i);
  }
  // Cheapest first; at equal cost the best quality first, and of exact duplicates the lowest index first, so
  // that the first point of every cost is the only one there that can be on the frontier.
  std::vector<size_t> order(points.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (points[a].cost != points[b].cost) return points[a].cost < points[b].cost;
    return points[a].quality > points[b].quality;
  });
  // A point is on the frontier exactly when its quality beats every cheaper-or-equal point before it.
  std::vector<size_t> frontier;
  for (const size_t i : order) {
    if (frontier.empty() || points[i].quality > points[frontier.back()].quality) frontier.push_back(i);
  }
  return frontier;
}

}  // namespace atq
