// The Pareto frontier of (cost, quality) points: the configurations no other one beats on both at once, e.g.
// energy or size against accuracy across quantization settings.
#pragma once

#include <cstddef>
#include <vector>

namespace atq {

// Lower cost and higher quality are better.
struct ParetoPoint {
  double cost;
  double quality;
};

// Indices of the non-dominated points, by increasing cost. A point is dominated when another has cost <= and
// quality >= with at least one strict; of exact duplicates only the first (lowest index) is kept. Throws
// atq::Error when a cost or quality is NaN.
std::vector<size_t> ParetoFrontier(const std::vector<ParetoPoint>& points);

}  // namespace atq
