// A packed language model placed on a decoder backend (kernels/decoder.h: atq's CPU decoder or the GPU) behind the
// CausalLm interface, so that perplexity, generation and the speed benchmark run it unchanged.
//
// DecoderSpecOf reads a loaded model of any family (the rotary decoders of models/llama.h and GPT-2) whose linear
// layers and token embedding run packed (a packed checkpoint or GGUF loaded with keep_packed, or PackForRuntime) into the backends'
// plain description; DecoderLm then answers forward(ids, cache) from the backend: logits come back as a CPU
// float32 tensor, and the backend's own key/value cache follows cache->length (a cache at length 0 starts over).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/backend.h"
#include "kernels/decoder.h"
#include "models/causal_lm.h"

namespace atq {

// The model's decoder description; its weight pointers point into `model`'s packed weights, which must stay alive
// and attached while the spec is used. Throws atq::Error naming the first thing a decoder backend cannot run: a
// linear layer or embedding still in float ("quantize it first"), residual-precision weights.
DecoderSpec DecoderSpecOf(CausalLmImpl& model);

class DecoderLmImpl : public CausalLmImpl {
 public:
  // `capacity`: positions the backend's cache holds (0: the model's usable context, at most 8192).
  DecoderLmImpl(std::shared_ptr<CausalLmImpl> source, Device device, int64_t capacity = 0);
  // ids [B, T]: with a cache, B = 1 and the tokens continue the cached ones; without, each row runs from position
  // 0. Returns [B, T, vocab] float32 on the CPU.
  torch::Tensor forward(const torch::Tensor& ids, KvCache* cache = nullptr) override;
  torch::Tensor LastLogits(const torch::Tensor& ids, KvCache* cache = nullptr) override;  // [B, vocab]
  // The staged pass is for calibration and training, which run on libtorch: atq::Error here.
  torch::Tensor Embed(const torch::Tensor& ids) override;
  torch::Tensor ForwardBlock(size_t layer, const torch::Tensor& x) override;
  torch::Tensor Head(const torch::Tensor& x) override;
  std::shared_ptr<torch::nn::Module> Block(size_t layer) override;
  const DecoderRunner& runner() const { return *runner_; }

 private:
  [[noreturn]] void Unstaged() const;
  torch::Tensor Run(const torch::Tensor& ids, KvCache* cache, bool all_logits);
  std::shared_ptr<CausalLmImpl> source_;  // owns the packed weights the backend reads (and the float norms)
  std::unique_ptr<DecoderRunner> runner_;
  std::vector<float> logits_;  // the backend's output, reused
};

// The model as a DecoderLm on `device`'s decoder backend (logged with its description). Throws atq::Error as
// DecoderSpecOf does for a model the decoders cannot run.
std::shared_ptr<CausalLmImpl> PlaceOnDevice(std::shared_ptr<CausalLmImpl> model, Device device);

// Why the decoder backends cannot run `model` (DecoderSpecOf's error), or "" when they can.
std::string DecoderRefusal(CausalLmImpl& model);

// What runs a packed model's whole forward passes (perplexity, generation, logits, the speed benchmark) on the
// CPU: atq's CPU decoder where the model fits it, else libtorch (kAuto); the decoder or an error (kDecoder);
// libtorch with atq's kernels for the packed linear layers (kLibtorch).
enum class CpuRuntime { kAuto, kDecoder, kLibtorch };
std::string_view CpuRuntimeName(CpuRuntime runtime);  // "auto", "decoder", "libtorch"
std::optional<CpuRuntime> ParseCpuRuntime(std::string_view name);

// The model that runs whole passes on `device`: on the CPU under `runtime`, the model placed on the CPU decoder
// or (kLibtorch, or kAuto for a model the decoder cannot run: layers left in float, RPB) the model itself, with
// a log line saying which and why; on other devices, placed on their decoder. Throws atq::Error for kDecoder (or a
// GPU) and a model the decoder cannot run.
std::shared_ptr<CausalLmImpl> ForWholePasses(std::shared_ptr<CausalLmImpl> model, Device device, CpuRuntime runtime);

}  // namespace atq
