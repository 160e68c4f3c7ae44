// atq qat MODEL --out DIR [grid flags | --recipe FILE] [--teacher PATH|none] ...: quantization-aware training of a
// language model (train/lm_qat.h), written as atq's packed checkpoint (and a GGUF) of the trained weights.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command.h"
#include "io/output_path.h"
#include "models/lm_gguf_writer.h"
#include "torch_setting_flags.h"
#include "torch/tensor_bridge.h"
#include "torch_lm_options.h"
#include "torch_workers.h"
#include "train/lm_qat.h"
#include "util/error.h"
#include "util/paths.h"
#include "torch/caching_allocator.h"

namespace atq::cli {

RunFn DeclareQat(CLI::App& app) {
  struct Options {
    LmQatOptions qat;
    std::string recipe_file;
    std::string float_type = "f32";
    std::string gguf_type;
    std::string gguf_embeddings = "f32";
    std::string ramp = "linear";
    int threads = 0;
    Workers workers;
    SettingFlags flags{GridFlags()};
  };
  auto o = std::make_shared<Options>();
  const std::string data = ProjectDataDir();
  o->qat.train_texts = {data + "/corpus/train.txt"};
  o->qat.valid_text = data + "/corpus/valid.txt";
  LmLoopOptions& loop = o->qat.loop;
  loop.ctx = 256;
  loop.batch_size = 8;
  loop.steps = 1000;
  loop.warmup_steps = 50;
  loop.learning_rate = 2e-4;
  loop.min_learning_rate = 2e-5;
  loop.weight_decay = 0;
  loop.eval_interval = 100;
  loop.eval_windows = 32;
  app.add_option("model", o->qat.model, "Start: a Hugging Face folder, a GGUF, or an `atq quantize` output (read "
                                        "dequantized: a PTQ result as initialization)")
      ->required();
  app.add_option("--out", loop.out_dir, "Output folder: packed checkpoints OUT (last step) and OUT/best, metrics.json, "
                                        "validation.png, qat_report.json, resume/")
      ->required();
  app.add_option("--tokenizer", o->qat.tokenizer, "Tokenizer overriding the model's own");
  app.add_option("--recipe", o->recipe_file, "YAML recipe (grid and per-layer overrides, as atq quantize reads); flags "
                                             "given here override it");
  o->flags.Add(app);
  app.add_option("--teacher", o->qat.teacher, "Full-precision teacher for distillation (default: the starting "
                                              "checkpoint; none: next-token loss only)");
  app.add_option("--temperature", o->qat.temperature, "Distillation temperature T")->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--distill-alpha", o->qat.distill_alpha, "Weight of the teacher's KL term (1 - alpha on the "
                                                          "next-token loss)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  app.add_option("--hidden-weight", o->qat.hidden_weight, "Weight of the per-block hidden-state loss (0: none)")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  app.add_option("--ramp-steps", o->qat.ramp_steps, "Progressive sparsity: steps from 0 to the sparsity target "
                                                    "(--threshold sparsity; 0: the target from the start)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40))->capture_default_str();
  app.add_option("--ramp", o->ramp, "Shape of the sparsity ramp")->check(CLI::IsMember({"linear", "cubic"}))
      ->capture_default_str();
  app.add_option("--ste-clip", o->qat.ste_clip, "Ternary straight-through estimator: gradients pass while |w| <= "
                                                "this x max(scale, threshold), or point back toward zero")
      ->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--learn-scales", o->qat.learn_scales, "Train each quantized layer's scales from the grid's fit "
                                                      "(LSQ; ternary and symmetric uniform grids)");
  app.add_option("--rpb-fraction", o->qat.rpb_fraction, "Residual precision boosting: share of each ternary layer's "
                                                        "weights kept at float16 (a sparse residual, 6 bytes each)")
      ->check(CLI::Range(0.0, 0.49))->capture_default_str();
  app.add_option("--train", o->qat.train_texts, "Training text files (default: the corpus train split)")
      ->capture_default_str();
  app.add_option("--valid", o->qat.valid_text, "Validation text")->capture_default_str();
  AddLmLoopFlags(app, loop);
  app.add_option("--float-type", o->float_type, "Storage of the unquantized tensors in the packed checkpoints")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}))->capture_default_str();
  app.add_option("--gguf", o->qat.gguf_path, "Also write the best model as a llama.cpp GGUF here");
  app.add_option("--gguf-type", o->gguf_type, "GGUF type of the quantized layers (default: per layer, the closest "
                                              "to its grid; tq2_0/tq1_0/q4_0/q8_0 grids exactly)");
  app.add_option("--gguf-embeddings", o->gguf_embeddings, "GGUF type of the token embedding (and an untied head)")
      ->capture_default_str();
  app.add_option("--threads", o->threads, "CPU threads (0: every core)")->check(ThreadCount())->capture_default_str();
  AddWorkerFlags(app, o->workers);
  return [o] {
    UseCachingCpuAllocator();  // a step's large tensors reuse freed blocks instead of fresh pages
    LmQatOptions& qat = o->qat;
    std::vector<std::string> inputs = {qat.model, qat.tokenizer, qat.teacher, qat.valid_text, o->recipe_file};
    inputs.insert(inputs.end(), qat.train_texts.begin(), qat.train_texts.end());
    CheckOutputPath(qat.loop.out_dir, inputs, "--out");
    if (!qat.gguf_path.empty()) CheckOutputPath(qat.gguf_path, inputs, "--gguf");
    std::string source;
    QuantizeRecipe recipe = RecipeWithFlags(o->recipe_file, o->flags, source);
    // Ternary unless a grid is named: QAT's reason to exist.
    if (!recipe.settings.count("bits") && !recipe.settings.count("ternary") && !recipe.settings.count("format")) {
      recipe.settings["ternary"] = "true";
    }
    qat.quant = BuildQuantizeOptions(recipe, source);
    qat.ramp = o->ramp == "cubic" ? SparsityRamp::kCubic : SparsityRamp::kLinear;
    const auto type_of = [](const std::string& name, const char* flag) {
      const auto type = ParseQuantType(name);
      if (!type) throw UsageError(fmt::format("{} {}: not a format of `atq formats`", flag, name));
      return *type;
    };
    qat.float_type = type_of(o->float_type, "--float-type");
    if (!o->gguf_type.empty()) qat.gguf_type = type_of(o->gguf_type, "--gguf-type");
    qat.gguf_embeddings = type_of(o->gguf_embeddings, "--gguf-embeddings");
    if (const std::optional<int> status = StartWorkers(o->workers, o->threads)) return *status;
    std::optional<OutputLock> lock;  // one writer: rank 0
    if (!o->workers.parallel || o->workers.parallel->writes()) lock.emplace(qat.loop.out_dir);
    qat.loop.parallel = o->workers.parallel.get();
    SetTorchThreads(o->threads);
    const LmQatResult result = TrainQuantizationAware(qat);
    if (o->workers.parallel && !o->workers.parallel->writes()) return 0;
    const LmTrainResult& training = result.training;
    if (training.evals.empty() || training.evals.back().step < qat.loop.steps) return 0;  // stopped: --resume
    fmt::print("{} layers at {:.3f} bits per weight, sparsity {:.1f}%{}; validation perplexity: fake-quantized "
               "start {:.2f}, best {:.2f} at step {}{}\n",
               result.quantized_layers, result.bits_per_weight, 100 * result.sparsity,
               result.boosted_weights > 0 ? fmt::format(", {} weights kept by RPB", result.boosted_weights) : "",
               std::exp(result.start_valid_loss), std::exp(training.best_valid_loss), training.best_step,
               result.teacher_valid_loss >= 0 ? fmt::format(", teacher {:.2f}", std::exp(result.teacher_valid_loss))
                                              : "");
    fmt::print("packed checkpoints: {} (last), {}/best; report {}/qat_report.json{}\n", qat.loop.out_dir,
               qat.loop.out_dir, qat.loop.out_dir, qat.gguf_path.empty() ? "" : "; GGUF " + qat.gguf_path);
    return 0;
  };
}

}  // namespace atq::cli
