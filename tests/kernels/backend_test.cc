// The kernel backend table: the CPU row runs every type the kernels run, PackedMatMul on it is MatMul, and a device
// without a backend in this build is a clear error.
#include "kernels/backend.h"

#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "formats/quant_type.h"
#include "kernels/matmul.h"
#include "test_util.h"

namespace atq {
namespace {

// Every float type and every quantized type with one scale per code segment: atq's own, and the ggml blocks
// whose row declares integer codes. ggml blocks with minimums or sub-block scales (Q4_1, Q5_1, k-quants) are
// dequantized by loaders instead.
TEST(KernelBackendTest, CpuRowRunsEveryQuantizedTypeOfTheTable) {
  const KernelBackend& cpu = BackendFor(Device::kCpu);
  EXPECT_EQ(cpu.name, "cpu");
  EXPECT_FALSE(cpu.target().empty());
  for (const TypeTraits& traits : AllTypes()) {
    bool runs = traits.family == TypeFamily::kTernary || traits.family == TypeFamily::kUniform;
    runs |= traits.family == TypeFamily::kGgmlBlock && traits.block_codes.decode != nullptr;
    runs |= traits.type == QuantType::kF32 || traits.type == QuantType::kF16 || traits.type == QuantType::kBF16;
    EXPECT_EQ(cpu.supports(traits.type), runs) << traits.name;
  }
}

TEST(KernelBackendTest, PackedMatMulOnTheCpuIsMatMul) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  const Layout layout{QuantType::kTernary2, 7, 70, Granularity::kChannel, 0};
  std::vector<float> w(7 * 70), x(3 * 70);
  for (float& v : w) v = normal(rng);
  for (float& v : x) v = normal(rng);
  const std::vector<uint8_t> bytes = Quantize(layout, w.data());
  std::vector<float> direct(3 * 7), dispatched(3 * 7);
  MatMul({layout, bytes.data()}, x.data(), 3, direct.data());
  PackedMatMul(Device::kCpu, {layout, bytes.data()}, x.data(), 3, dispatched.data());
  EXPECT_EQ(direct, dispatched);
}

TEST(KernelBackendTest, ADeviceWithoutABackendNamesWhatIsBuilt) {
  // Without CUDA in the build the error names the device and the backends there are; with it but no GPU here, it
  // says why the backend is not usable.
  bool usable = false;
  for (const KernelBackend& backend : KernelBackends()) usable |= backend.device == Device::kCuda && backend.available();
  if (usable) GTEST_SKIP() << "a CUDA device is visible here";
  const std::string message = testutil::ErrorMessageOf([] { BackendFor(Device::kCuda); });
  EXPECT_NE(message.find("cuda"), std::string::npos) << message;
  EXPECT_TRUE(message.find("cpu") != std::string::npos || message.find("not usable") != std::string::npos) << message;
}

}  // namespace
}  // namespace atq
