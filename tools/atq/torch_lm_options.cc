// Shared language-model options.
#include "torch_lm_options.h"

#include "models/lm_family.h"

#include "command.h"

#include <torch/torch.h>

#include "kernels/matmul.h"
#include "runtime/packed_runtime.h"
#include "torch/tensor_bridge.h"
#include "util/error.h"
#include "util/log.h"

namespace atq::cli {

void AddLmOptions(CLI::App& app, LmCliOptions& o) {
  app.add_option("model", o.model,
                 "A Hugging Face folder (config.json + safetensors), a llama2.c .bin, or a GGUF file")
      ->required();
  app.add_option("--tokenizer", o.tokenizer,
                 "Tokenizer: folder with encoder.json + vocab.bpe, a SentencePiece .model, a llama2.c tokenizer "
                 ".bin, or a .gguf (default: the model's own, else GPT-2's from the set-up's data)");
  app.add_option("--device", o.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--dtype", o.dtype, "Weights and activations: f32, f16 or bf16 (f16/bf16 where the device has them)")
      ->check(CLI::IsMember({"f32", "f16", "bf16"}))
      ->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: every core)")->check(ThreadCount())->capture_default_str();
  app.add_flag("--allow-nonfinite", o.allow_nonfinite,
               "Load weights holding NaN or infinity instead of refusing the file (to inspect a broken checkpoint)");
  app.add_flag("--dequantize", o.dequantize,
               "Run a quantized checkpoint's weights as float copies (libtorch) instead of packed through atq's "
               "kernels (the kernels also quantize activations to int8 per segment)");
}

LanguageModel LoadLmFromCli(const LmCliOptions& o) {
  SetTorchThreads(o.threads);
  LmLoadOptions load;
  load.tokenizer = o.tokenizer;
  if (o.device == "cuda") {
    Require(torch::cuda::is_available(), "--device cuda: this libtorch sees no CUDA device");
    load.device = torch::kCUDA;
  }
  load.dtype = o.dtype == "f16" ? torch::kFloat16 : o.dtype == "bf16" ? torch::kBFloat16 : torch::kFloat32;
  if (load.dtype == torch::kFloat16 && load.device.is_cpu()) {
    throw UsageError("--dtype f16 needs --device cuda (libtorch's CPU matrix products have no float16); use f32 or "
                     "bf16 on CPU");
  }
  load.allow_nonfinite = o.allow_nonfinite;
  load.deferred = o.deferred;
  load.keep_packed = !o.dequantize && !o.deferred && load.device.is_cpu() && load.dtype == torch::kFloat32;
  LanguageModel lm = LoadLanguageModel(o.model, load);
  if (!lm.packed.empty()) {
    const size_t layers = lm.packed.size();
    const PackedRuntimeSizes sizes = AttachPackedWeights(*lm.model, std::move(lm.packed));
    LogInfo("packed runtime: {} quantized weights ({:.1f} MB) run through atq's kernels ({}); {:.1f} MB in float",
            layers, sizes.packed_bytes / 1e6, KernelTargetName(), sizes.float_bytes / 1e6);
  }
  const LmConfig& c = lm.model->config();
  LogInfo("model: {} ({}), {} layers, hidden {}, {} heads / {} KV heads, vocab {}, {:.2f} M parameters", o.model,
          FamilyOf(c).model_type, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size,
          c.ParameterCount() / 1e6);
  return lm;
}

}  // namespace atq::cli
