// Shared language-model options.
#include "torch_lm_options.h"

#include "models/lm_family.h"

#include "command.h"

#include <torch/torch.h>

#include "kernels/matmul.h"
#include "kernels/backend.h"
#include "runtime/device_model.h"
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
  app.add_option("--device", o.device,
                 "cpu or cuda (perplexity, generate and logits run a packed model of a rotary family on atq's CUDA "
                 "decoder; a float model, or other commands, need a CUDA build of libtorch)")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
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

void AddLmRuntimeOption(CLI::App& app, LmCliOptions& o) {
  o.whole_passes = true;
  app.add_option("--runtime", o.runtime, kRuntimeHelp)->check(CLI::IsMember({"auto", "decoder", "libtorch"}))
      ->capture_default_str();
}

namespace {

// Whether this build has atq's CUDA backend and it sees a GPU.
bool AtqCudaUsable() {
  for (const KernelBackend& backend : KernelBackends()) {
    if (backend.device == Device::kCuda && backend.available()) return true;
  }
  return false;
}

}  // namespace

LanguageModel LoadLmFromCli(const LmCliOptions& o) {
  SetTorchThreads(o.threads);
  LmLoadOptions load;
  load.tokenizer = o.tokenizer;
  // A packed model on atq's CUDA decoder: loaded packed on the CPU, then placed; a float model falls through to
  // libtorch's CUDA device below.
  const bool decoder = o.device == "cuda" && o.whole_passes && !o.dequantize && !o.deferred && o.dtype == "f32" &&
                       (AtqCudaUsable() || !torch::cuda::is_available());
  if (decoder) {
    BackendFor(Device::kCuda);  // an atq::Error saying why when atq's CUDA backend cannot run here
    LmCliOptions on_cpu = o;
    on_cpu.device = "cpu";
    LanguageModel lm = LoadLmFromCli(on_cpu);
    if (lm.model->packed_embedding != nullptr || !torch::cuda::is_available()) {
      lm.model = PlaceOnDevice(lm.model, Device::kCuda);
      return lm;
    }
  }
  if (o.device == "cuda") {
    Require(torch::cuda::is_available(), "--device cuda: this libtorch sees no CUDA device{}",
            o.whole_passes ? "" : " (atq's own CUDA decoder runs perplexity, generate and logits only)");
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
    if (o.whole_passes) lm.model = ForWholePasses(lm.model, Device::kCpu, *ParseCpuRuntime(o.runtime));
  } else if (o.whole_passes && o.runtime == "decoder") {
    Fail("--runtime decoder: {} has no packed weights to run (quantize it, or drop --dequantize)", o.model);
  }
  const LmConfig& c = lm.model->config();
  LogInfo("model: {} ({}), {} layers, hidden {}, {} heads / {} KV heads, vocab {}, {:.2f} M parameters", o.model,
          FamilyOf(c).model_type, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.vocab_size,
          c.ParameterCount() / 1e6);
  return lm;
}

void AddLmLoopFlags(CLI::App& app, LmLoopOptions& loop) {
  app.add_option("--ctx", loop.ctx, "Tokens per training window")->check(CLI::Range(int64_t{2}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--batch-size", loop.batch_size, "Windows per step")->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  app.add_option("--steps", loop.steps, "Optimizer steps")->check(CLI::Range(int64_t{1}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--warmup", loop.warmup_steps, "Linear warm-up steps")->check(CLI::Range(int64_t{0}, int64_t{1} << 40))
      ->capture_default_str();
  app.add_option("--learning-rate", loop.learning_rate, "Peak learning rate")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--min-learning-rate", loop.min_learning_rate, "Learning rate at the end of the cosine")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--weight-decay", loop.weight_decay, "AdamW decay on weight matrices")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--grad-clip", loop.grad_clip, "Max gradient norm (0: none)")->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--eval-interval", loop.eval_interval, "Steps between validations, best-model checks and resume states")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--eval-windows", loop.eval_windows, "Validation windows (0: the whole validation text)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--seed", loop.seed, "Seed for weights and batches")->capture_default_str();
  app.add_option("--stop-after", loop.stop_after, "Stop after this many steps, leaving a resume state (0: run to the end)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  app.add_flag("--resume", loop.resume, "Continue the run whose resume state is in --out (exactly: weights, optimizer, "
                                        "schedule, data position, random state)");
}

}  // namespace atq::cli
