#include "eval/frechet.h"

#include <torch/torch.h>

#include "io/tensor_info.h"
#include "util/error.h"

namespace atq {
namespace {

// The symmetric PSD square root of a symmetric matrix (eigenvalues below 0 from round-off count as 0).
torch::Tensor SymmetricSqrt(const torch::Tensor& m) {
  const auto [values, vectors] = torch::linalg_eigh(0.5 * (m + m.t()), "L");
  return vectors.matmul(torch::diag(values.clamp_min(0).sqrt())).matmul(vectors.t());
}

}  // namespace

double FrechetDistance(const torch::Tensor& a, const torch::Tensor& b) {
  Require(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1) && a.size(0) >= 2 && b.size(0) >= 2,
          "Fréchet distance: feature sets [N, D] and [M, D] with N, M >= 2 expected, got {} and {}",
          ShapeString(a.sizes().vec()), ShapeString(b.sizes().vec()));
  const torch::Tensor x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  const torch::Tensor mu1 = x.mean(0), mu2 = y.mean(0);
  const torch::Tensor s1 = torch::cov(x.t()), s2 = torch::cov(y.t());  // unbiased, as the reference code's np.cov
  const torch::Tensor root1 = SymmetricSqrt(s1);
  const double cross = torch::linalg_eigvalsh(root1.matmul(s2).matmul(root1), "L").clamp_min(0).sqrt().sum().item<double>();
  return (mu1 - mu2).pow(2).sum().item<double>() + (s1.trace() + s2.trace()).item<double>() - 2 * cross;
}

}  // namespace atq
