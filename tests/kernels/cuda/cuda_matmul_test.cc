// The CUDA kernels against the scalar CPU reference (MatMulReference) on the same packed bytes: every format the
// backend runs, odd shapes and tails (rows not a multiple of the warps per block, columns not a multiple of a
// piece, groups whose last one is short), every batch width the dispatch distinguishes. Skipped with a message
// where no CUDA device is visible (CI compiles this; the GPU check runs it).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "formats/quant_type.h"
#include "kernels/backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/matmul.h"
#include "util/error.h"

namespace atq {
namespace {

#define ATQ_REQUIRE_CUDA() \
  if (!cuda::Available()) GTEST_SKIP() << "no CUDA device visible: " << cuda::DeviceSummary()

struct Case {
  QuantType type;
  Granularity granularity;
  int64_t group_size;
  int64_t rows, cols;
};

std::string Name(const Case& c) {
  Layout layout{c.type, c.rows, c.cols, c.granularity, c.group_size};
  return std::string(TypeName(c.type)) + "/" + GranularityString(layout) + " " + std::to_string(c.rows) + "x" +
         std::to_string(c.cols);
}

// Weights with a few outlier columns (as real layers have) and activations with an outlier, from a seeded engine.
std::vector<float> Random(std::mt19937& rng, int64_t count, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = normal(rng);
  for (int64_t i = 0; i < count; i += 97) values[static_cast<size_t>(i)] *= 8.0f;
  return values;
}

// GPU result, reference result and the per-output bound of float rounding (a relative 2e-6 of sum |w x|: one
// wrongly decoded weight among a few thousand moves an output by far more).
void CheckAgainstReference(const Case& c, int64_t n, cuda::KernelChoice choice, std::mt19937& rng) {
  const Layout layout{c.type, c.rows, c.cols, c.granularity, c.group_size};
  const std::vector<float> w = Random(rng, c.rows * c.cols, 0.02f);
  const std::vector<float> x = Random(rng, n * c.cols, 1.0f);
  const std::vector<uint8_t> bytes = Quantize(layout, w.data());
  const PackedMatrix host{layout, bytes.data()};
  std::vector<float> expected(static_cast<size_t>(n * c.rows));
  MatMulReference(host, x.data(), n, expected.data());

  cuda::Stream stream;
  cuda::DeviceBuffer device_w(bytes.size()), device_x(x.size() * 4), device_y(expected.size() * 4);
  cuda::CopyToDevice(device_w.get(), bytes.data(), bytes.size(), stream);
  cuda::CopyToDevice(device_x.get(), x.data(), x.size() * 4, stream);
  std::vector<float> poison(expected.size(), std::numeric_limits<float>::quiet_NaN());
  cuda::CopyToDevice(device_y.get(), poison.data(), poison.size() * 4, stream);
  cuda::MatMul(stream, {layout, device_w.get()}, reinterpret_cast<const float*>(device_x.get()), n,
               reinterpret_cast<float*>(device_y.get()), choice);
  std::vector<float> got(expected.size());
  cuda::CopyToHost(got.data(), device_y.get(), got.size() * 4, stream);

  std::vector<float> row(static_cast<size_t>(c.cols));
  int failures = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    DequantizeRow(host, r, row.data());
    for (int64_t i = 0; i < n; ++i) {
      double magnitude = 0.0;
      for (int64_t j = 0; j < c.cols; ++j) magnitude += std::fabs(row[j] * x[i * c.cols + j]);
      const float e = expected[i * c.rows + r], g = got[i * c.rows + r];
      const double bound = 2e-6 * magnitude + 1e-30;
      if (!(std::fabs(static_cast<double>(g) - e) <= bound) && failures++ < 5) {
        ADD_FAILURE() << Name(c) << (choice == cuda::KernelChoice::kDp4a ? " dp4a" : " mma") << " n=" << n
                      << " row " << r << " column " << i << ": cuda " << g
                      << ", reference " << e << " (bound " << bound << ")";
      }
    }
  }
}

std::vector<Case> Cases() {
  std::vector<Case> cases;
  const QuantType atq[] = {QuantType::kTernary2, QuantType::kUniform4Sym, QuantType::kUniform4Asym};
  for (QuantType type : atq) {
    for (int64_t cols : {1, 31, 33, 100, 1000, 4097}) {
      cases.push_back({type, Granularity::kChannel, 0, 37, cols});
      cases.push_back({type, Granularity::kTensor, 0, 5, cols});
      if (cols >= 64) cases.push_back({type, Granularity::kGroup, 64, 9, cols});
      if (cols >= 64 && type != QuantType::kTernary2) cases.push_back({type, Granularity::kGroup, 32, 4, cols});
      if (cols >= 128) cases.push_back({type, Granularity::kGroup, 128, 3, cols});
    }
    cases.push_back({type, Granularity::kChannel, 0, 2, 70000});  // rows past 65536 columns: segments of 256
  }
  const QuantType ggml[] = {QuantType::kQ8_0, QuantType::kQ4_0, QuantType::kTQ2_0, QuantType::kTQ1_0};
  for (QuantType type : ggml) {
    const int64_t block = Traits(type).block_size;
    for (int64_t blocks : {1, 3, 8, 61, 300}) cases.push_back({type, Granularity::kChannel, 0, 7, blocks * block});
    cases.push_back({type, Granularity::kChannel, 0, 130, 16 * block});
  }
  return cases;
}

TEST(CudaMatMul, AgreesWithTheScalarReferenceOnEveryFormatShapeAndBatch) {
  ATQ_REQUIRE_CUDA();
  std::mt19937 rng(11);
  // ATQ_CUDA_TEST_QUICK (under compute-sanitizer, which is slow): three batch widths, no 70000-column rows.
  const bool quick = std::getenv("ATQ_CUDA_TEST_QUICK") != nullptr;
  const std::vector<int64_t> widths = quick ? std::vector<int64_t>{1, 3, 17}
                                            : std::vector<int64_t>{1, 2, 3, 5, 8, 9, 16, 17, 64};
  for (const Case& c : Cases()) {
    for (int64_t n : widths) {
      if (c.cols > 10000 && (n > 3 || quick)) continue;
      SCOPED_TRACE(Name(c) + " n=" + std::to_string(n));
      for (cuda::KernelChoice choice : {cuda::KernelChoice::kTensorCores, cuda::KernelChoice::kDp4a}) {
        CheckAgainstReference(c, n, choice, rng);
      }
      if (HasFailure()) return;
    }
  }
}

TEST(CudaMatMul, TheBackendTableRunsIt) {
  ATQ_REQUIRE_CUDA();
  const KernelBackend& backend = BackendFor(Device::kCuda);
  EXPECT_EQ(backend.name, "cuda");
  EXPECT_TRUE(backend.supports(QuantType::kTQ2_0));
  EXPECT_FALSE(backend.supports(QuantType::kQ4_K));
  EXPECT_NE(backend.target().find("sm_"), std::string::npos) << backend.target();
}

TEST(CudaMatMul, ANonFiniteActivationMakesItsOutputsNaN) {
  ATQ_REQUIRE_CUDA();
  std::mt19937 rng(5);
  const Layout layout{QuantType::kQ8_0, 4, 64, Granularity::kChannel, 0};
  const std::vector<float> w = Random(rng, 4 * 64, 0.02f);
  std::vector<float> x = Random(rng, 2 * 64, 1.0f);
  x[64 + 40] = std::numeric_limits<float>::infinity();  // second row, second block
  const std::vector<uint8_t> bytes = Quantize(layout, w.data());
  cuda::Stream stream;
  cuda::DeviceBuffer device_w(bytes.size()), device_x(x.size() * 4), device_y(8 * 4);
  cuda::CopyToDevice(device_w.get(), bytes.data(), bytes.size(), stream);
  cuda::CopyToDevice(device_x.get(), x.data(), x.size() * 4, stream);
  cuda::MatMul(stream, {layout, device_w.get()}, reinterpret_cast<const float*>(device_x.get()), 2,
               reinterpret_cast<float*>(device_y.get()));  // (the default kernel)
  std::vector<float> y(8);
  cuda::CopyToHost(y.data(), device_y.get(), 32, stream);
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(std::isfinite(y[r])) << r;
    EXPECT_TRUE(std::isnan(y[4 + r])) << r;
  }
}

// Layouts the kernels cannot take are refused before anything runs (no device needed).
TEST(CudaMatMul, RefusesWhatItCannotRun) {
  EXPECT_THROW(cuda::CheckLayout({QuantType::kTernary2, 4, 100, Granularity::kGroup, 48}), Error);
  EXPECT_THROW(cuda::CheckLayout({QuantType::kTernary2, 4, 100, Granularity::kGroup, 32}), Error);  // t2: 64
  EXPECT_NO_THROW(cuda::CheckLayout({QuantType::kUniform4Sym, 4, 100, Granularity::kGroup, 32}));
  EXPECT_THROW(cuda::CheckLayout({QuantType::kQ4_K, 4, 256, Granularity::kChannel, 0}), Error);
  EXPECT_THROW(cuda::CheckLayout({QuantType::kF16, 4, 256, Granularity::kChannel, 0}), Error);
  EXPECT_NO_THROW(cuda::CheckLayout({QuantType::kTernary2, 4, 100, Granularity::kGroup, 64}));
  EXPECT_NO_THROW(cuda::CheckLayout({QuantType::kTernary2, 4, 100, Granularity::kChannel, 0}));
}

}  // namespace
}  // namespace atq
