// The Fréchet distance on known answers: zero for a set against itself, the closed form for Gaussians with
// diagonal covariances (|mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2), and symmetry.
#include "eval/frechet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "test_util.h"

namespace atq {
namespace {

TEST(FrechetDistance, KnownAnswers) {
  torch::manual_seed(1);
  const torch::Tensor a = torch::randn({400, 6}, torch::kFloat64);
  EXPECT_NEAR(FrechetDistance(a, a), 0.0, 1e-9);
  // Exact sample moments: b = a standardized then scaled by sigma and shifted by mu has covariance diag(sigma^2)
  // only if a's covariance is the identity; whiten a first so the closed form holds to round-off.
  const torch::Tensor centered = a - a.mean(0);
  const torch::Tensor cov = torch::cov(centered.t());
  const torch::Tensor white = centered.matmul(torch::linalg_inv(torch::linalg_cholesky(cov)).t());
  const torch::Tensor sigma1 = torch::tensor({1.0, 2.0, 0.5, 1.0, 3.0, 1.0}, torch::kFloat64);
  const torch::Tensor sigma2 = torch::tensor({2.0, 2.0, 1.0, 0.25, 1.0, 1.0}, torch::kFloat64);
  const torch::Tensor mu = torch::tensor({1.0, 0.0, -2.0, 0.0, 0.5, 0.0}, torch::kFloat64);
  const torch::Tensor x = white * sigma1, y = white * sigma2 + mu;
  const double expected = mu.pow(2).sum().item<double>() + (sigma1 - sigma2).pow(2).sum().item<double>();
  EXPECT_NEAR(FrechetDistance(x, y), expected, 1e-8);
  EXPECT_NEAR(FrechetDistance(y, x), expected, 1e-8);
  EXPECT_NE(testutil::ErrorMessageOf([&] { FrechetDistance(x, y.slice(1, 0, 3)); }).find("Fréchet"),
            std::string::npos);
}

}  // namespace
}  // namespace atq
