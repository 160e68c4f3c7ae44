// The Fréchet distance between two sets of feature vectors, each summarized as a Gaussian (Heusel et al. 2017,
// the "FID" when the features are Inception's; here those of the ResNet-18 fixture's penultimate layer):
//   d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)
// The matrix square root is taken of the symmetric form S1^1/2 S2 S1^1/2 by eigendecomposition in float64
// (negative round-off eigenvalues clipped to 0), which has the same trace as (S1 S2)^1/2 without its instability.
#pragma once

#include <torch/types.h>

namespace atq {

// a [N, D], b [M, D] (N, M >= 2): d^2 as above (the customary "FID" value, not its square root).
double FrechetDistance(const torch::Tensor& a, const torch::Tensor& b);

}  // namespace atq
