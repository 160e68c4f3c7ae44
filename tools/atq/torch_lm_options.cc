// Shared language-model options.
#include "torch_lm_options.h"

#include <torch/torch.h>

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
  app.add_option("--threads", o.threads, "CPU threads (0: every core)")->capture_default_str();
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
  LanguageModel lm = LoadLanguageModel(o.model, load);
  const LmConfig& c = lm.model->config();
  LogInfo("model: {} ({}), {} layers, hidden {}, {} heads / {} KV heads, vocab {}, {:.2f} M parameters", o.model,
          LmArchName(c.arch), c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size,
          c.ParameterCount() / 1e6);
  return lm;
}

}  // namespace atq::cli
