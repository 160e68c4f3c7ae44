// A packed model on a decoder backend (runtime/device_model.h) against the same packed model run by libtorch
// (models/llama.cc with atq's CPU kernels): every rotary family of the arch-zoo fixtures (Gemma's 1 + w norms and
// embedding scale, Gemma 2's sandwich norms, soft-capping and sliding windows, Qwen2's biases, Phi-3's split
// projections, multi-query attention) and GPT-2 (LayerNorms, learned positions, fused qkv, biases), whole windows
// and token by token through the cache. On the CPU the backend is the CPU decoder (kernels/cpu_decoder.h, itself
// checked against the scalar reference in tests/kernels/); where a GPU is visible, the model on it is checked
// against libtorch here as well (the rotary families; the CUDA decoder refuses GPT-2). Also the refusal of float
// layers.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "io/tensor_file.h"
#include "kernels/backend.h"
#include "models/lm_loader.h"
#include "runtime/device_model.h"
#include "runtime/packed_runtime.h"
#include "test_util.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"

namespace atq {
namespace {

torch::Tensor ReferenceIds(const std::string& dir) {
  const TensorFile tensors = TensorFile::Open(dir + "/reference.safetensors");
  const TensorEntry* entry = tensors.Find("input_ids");
  if (entry == nullptr) throw std::runtime_error(dir + " has no input_ids");
  return ToTorch(*entry->info, entry->data).to(torch::kInt64);
}

// Both runs quantize activations to int8 per segment, from float inputs that differ by summation order, so a
// value near a rounding boundary can land one level apart; logits then agree to a small share of their range and
// pick the same top token almost everywhere. A wrong norm, position, mask or head moves them by their whole range.
void ExpectClose(const torch::Tensor& expected, const torch::Tensor& actual, const std::string& what) {
  ASSERT_EQ(expected.sizes(), actual.sizes()) << what;
  const double largest = expected.abs().max().item<double>();
  const double worst = (expected - actual).abs().max().item<double>();
  EXPECT_LE(worst, 0.02 * largest + 1e-4) << what << ": largest logit " << largest;
  const double same = (expected.argmax(-1) == actual.argmax(-1)).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(same, 0.9) << what << ": top tokens agree at " << same * 100 << "% of positions";
  std::cout << what << ": max |difference| " << worst << " of " << largest << ", same top token " << same * 100
            << "%\n";
}

void CompareOn(Device device, const std::string& family, QuantType type) {
  ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + family);
  SetTorchThreads(0);
  torch::NoGradGuard no_grad;
  LanguageModel lm = LoadLanguageModel(dir);
  PackedRuntimeOptions options;
  options.linear_type = type;
  PackForRuntime(*lm.model, options);
  const torch::Tensor ids = ReferenceIds(dir);  // [2, 24]
  const torch::Tensor expected = lm.model->forward(ids);
  auto placed = std::make_shared<DecoderLmImpl>(lm.model, device);
  const std::string what = family + " " + std::string(TypeName(type)) + " on " + std::string(DeviceName(device));
  ExpectClose(expected, placed->forward(ids), what);
  KvCache cache;
  std::vector<torch::Tensor> steps;
  // the first row: a prompt of 5 tokens, then one token at a time
  steps.push_back(placed->forward(ids.slice(0, 0, 1).slice(1, 0, 5), &cache));
  for (int64_t t = 5; t < ids.size(1); ++t) steps.push_back(placed->forward(ids.slice(0, 0, 1).slice(1, t, t + 1), &cache));
  EXPECT_EQ(cache.length, ids.size(1));
  ExpectClose(expected.slice(0, 0, 1), torch::cat(steps, 1), what + " through the cache");
  // Generation's pass: the last position's logits of each row only.
  ExpectClose(expected.select(1, -1), placed->LastLogits(ids), what + " last position");
}

class DeviceModel : public ::testing::TestWithParam<std::string> {};

TEST_P(DeviceModel, CpuDecoderMatchesLibtorch) {
  CompareOn(Device::kCpu, GetParam(), QuantType::kQ8_0);
  CompareOn(Device::kCpu, GetParam(), QuantType::kTernary2);
}

TEST_P(DeviceModel, GpuMatchesLibtorch) {
  bool usable = false;
  for (const KernelBackend& backend : KernelBackends()) usable |= backend.device == Device::kCuda && backend.available();
  if (!usable) {
    GTEST_SKIP() << "no usable CUDA backend in this build or machine";
  }
  if (GetParam() == "gpt2") GTEST_SKIP() << "the CUDA decoder runs the rotary families, not GPT-2";
  CompareOn(Device::kCuda, GetParam(), QuantType::kQ8_0);
  CompareOn(Device::kCuda, GetParam(), QuantType::kTernary2);
}

INSTANTIATE_TEST_SUITE_P(Families, DeviceModel,
                         ::testing::Values("llama", "llama_mqa", "mistral", "qwen2", "gemma", "gemma2", "phi3", "gpt2"));

TEST(DeviceModelRefusals, FloatLayersNameTheProblem) {
  for (const std::string family : {"llama", "gpt2"}) {
    ATQ_FIXTURE_OR_SKIP(dir, "arch-zoo/" + family);
    LanguageModel model = LoadLanguageModel(dir);
    try {
      DecoderSpecOf(*model.model);
      ADD_FAILURE() << family << ": float layers accepted";
    } catch (const Error& error) {
      EXPECT_NE(std::string(error.what()).find("is not packed"), std::string::npos) << error.what();
    }
  }
}

}  // namespace
}  // namespace atq
