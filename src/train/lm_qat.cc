// Quantization-aware training of language models through the shared loop.
#include "train/lm_qat.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include <fmt/format.h>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "models/lm_gguf_writer.h"
#include "models/lm_linear.h"
#include "models/lm_loader.h"
#include "quant/lm_calibration.h"
#include "quant/lm_gguf_export.h"
#include "quant/lm_quantizer.h"
#include "quant/packed_lm.h"
#include "train/data_parallel.h"
#include "train/distillation.h"
#include "train/lm_trainer.h"
#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

namespace fs = std::filesystem;

struct QatLayer {
  std::string name;  // module name
  LmLinearImpl* linear = nullptr;
  double target = 0;  // the sparsity target of a sparsity-rule ternary layer
  torch::Tensor initial_scales;  // with learned scales: where they started (the grid's fit)
};

std::map<std::string, LmLinearImpl*> LinearModules(CausalLmImpl& model) {
  std::map<std::string, LmLinearImpl*> linears;
  for (const auto& item : model.named_modules()) {
    if (auto* linear = dynamic_cast<LmLinearImpl*>(item.value().get())) linears[item.key()] = linear;
  }
  return linears;
}

// Puts each layer's grid into its LmLinear (quant.layers overrides, keep = full precision).
std::vector<QatLayer> ConfigureLayers(CausalLmImpl& model, const LmQatOptions& options) {
  const std::map<std::string, LmLinearImpl*> linears = LinearModules(model);
  std::vector<QatLayer> layers;
  for (const std::string& name : QuantizableLayers(model)) {
    const auto it = options.quant.layers.find(name);
    const LayerRecipe& recipe = it != options.quant.layers.end() ? it->second : options.quant.recipe;
    LmLinearImpl* linear = linears.at(name);
    if (recipe.keep) {
      linear->quant = FullPrecisionLayer();
      continue;
    }
    LayerQuantConfig config;
    try {
      // RPB is for atq's ternary grids; the others (llama.cpp's blocks, uniform bits) hold no residual.
      config = QuantizedLayer(recipe.grid, recipe.grid.kind == GridKind::kTernary ? options.rpb_fraction : 0.0);
    } catch (const Error& error) {
      Fail("{}: {}", name, error.what());
    }
    config.ste_clip = options.ste_clip;
    const int64_t cols = linear->weight.size(1);
    if (IsGgmlGrid(recipe.grid.kind)) {
      Require(cols % GgmlGridBlock(recipe.grid.kind) == 0,
              "{}: {} columns are not a multiple of {}'s block of {} weights; keep it (a recipe's keep) or choose "
              "another grid for it",
              name, cols, DescribeGrid(recipe.grid), GgmlGridBlock(recipe.grid.kind));
    }
    linear->quant = config;
    QatLayer layer{name, linear, recipe.grid.threshold_value, {}};
    layers.push_back(layer);
  }
  Require(!layers.empty(), "{}: the recipe keeps every layer in full precision; nothing to train quantization-aware",
          options.model);
  return layers;
}

// Per layer: grid, bits per weight, zero share; and the totals.
nlohmann::json LayerSummary(const std::vector<QatLayer>& layers, LmQatResult* totals) {
  torch::NoGradGuard no_grad;
  nlohmann::json rows = nlohmann::json::array();
  double bits = 0, zeros = 0;
  int64_t weights = 0, ternary_weights = 0, boosted_total = 0;
  for (const QatLayer& layer : layers) {
    const LayerQuantConfig& config = layer.linear->quant;
    const LayerQuantization q = QuantizeLayer(layer.linear->weight, config, layer.linear->learned_scale);
    const int64_t rows_count = q.packed.values.size(0), cols = q.packed.values.size(1);
    const int64_t count = rows_count * cols;
    const int64_t boosted = q.boosted.defined() ? q.boosted.sum().item<int64_t>() : 0;
    const double layer_bits = GridBitsPerWeight(config.grid, rows_count, cols) +
                              8.0 * static_cast<double>(boosted * kRpbBytesPerWeight) / static_cast<double>(count);
    nlohmann::json row = {{"name", layer.name}, {"grid", DescribeGrid(config.grid)}, {"bits_per_weight", layer_bits}};
    if (boosted > 0) row["boosted_weights"] = boosted;
    boosted_total += boosted;
    if (config.mode() == WeightMode::kTernary) {
      const double zero_share = (q.packed.codes == 1).to(torch::kFloat64).mean().item<double>();
      row["sparsity"] = zero_share;
      zeros += zero_share * static_cast<double>(count);
      ternary_weights += count;
    }
    if (layer.initial_scales.defined()) {
      // How far training moved the scales: the mean and largest |s / s0 - 1|.
      const torch::Tensor change = (layer.linear->learned_scale.detach() / layer.initial_scales - 1).abs();
      row["learned_scale_change"] = {{"mean", change.mean().item<double>()}, {"max", change.max().item<double>()}};
    }
    rows.push_back(row);
    bits += layer_bits * static_cast<double>(count);
    weights += count;
  }
  if (totals != nullptr) {
    totals->quantized_layers = static_cast<int64_t>(layers.size());
    totals->quantized_weights = weights;
    totals->bits_per_weight = weights > 0 ? bits / static_cast<double>(weights) : 0;
    totals->sparsity = ternary_weights > 0 ? zeros / static_cast<double>(ternary_weights) : 0;
    totals->boosted_weights = boosted_total;
  }
  return rows;
}

// The packed checkpoint of the model as it trains: each quantized layer's codes and scales exactly as its fake
// quantizer uses them.
void SavePacked(CausalLmImpl& model, const std::vector<QatLayer>& layers, const std::string& dir,
                const PackedLmOptions& pack) {
  torch::NoGradGuard no_grad;
  std::map<std::string, PackedWeights> packed;
  for (const QatLayer& layer : layers) {
    const LayerQuantization q = QuantizeLayer(layer.linear->weight, layer.linear->quant, layer.linear->learned_scale);
    PackedWeights& weights = packed[layer.name + ".weight"] = {q.packed.layout, PackQuantized(q.packed), nullptr, 0};
    if (q.boosted.defined() && q.boosted.any().item<bool>()) {
      // The boosted weights as the forward pass used them: `effective` holds them rounded to float16.
      const torch::Tensor index = q.boosted.reshape({-1}).nonzero().reshape({-1}).contiguous();
      const torch::Tensor value = q.effective.reshape({-1}).index_select(0, index).to(torch::kFloat32).contiguous();
      SetBoosted(weights, std::vector<int64_t>(index.data_ptr<int64_t>(), index.data_ptr<int64_t>() + index.numel()),
                 std::vector<float>(value.data_ptr<float>(), value.data_ptr<float>() + value.numel()), layer.name);
    }
  }
  SavePackedLm(model, packed, dir, pack);
}

torch::Tensor Concatenated(const Tokenizer& tokenizer, const std::vector<std::string>& paths) {
  std::vector<torch::Tensor> parts;
  for (const std::string& path : paths) parts.push_back(TokenTensor(tokenizer, path));
  return torch::cat(parts);
}

nlohmann::json OptionsJson(const LmQatOptions& o, const nlohmann::json& recipe) {
  const LmLoopOptions& l = o.loop;
  return {{"model", o.model},
          {"teacher", o.teacher.empty() ? o.model : o.teacher},
          {"recipe", recipe},
          {"ramp_steps", o.ramp_steps},
          {"ramp", o.ramp == SparsityRamp::kCubic ? "cubic" : "linear"},
          {"ste_clip", o.ste_clip},
          {"learn_scales", o.learn_scales},
          {"rpb_fraction", o.rpb_fraction},
          {"temperature", o.temperature},
          {"distill_alpha", o.distill_alpha},
          {"hidden_weight", o.hidden_weight},
          {"train_texts", o.train_texts},
          {"valid_text", o.valid_text},
          {"ctx", l.ctx},
          {"batch_size", l.batch_size},
          {"steps", l.steps},
          {"warmup_steps", l.warmup_steps},
          {"learning_rate", l.learning_rate},
          {"min_learning_rate", l.min_learning_rate},
          {"weight_decay", l.weight_decay},
          {"beta2", l.beta2},
          {"grad_clip", l.grad_clip},
          {"eval_interval", l.eval_interval},
          {"eval_windows", l.eval_windows},
          {"seed", l.seed}};
}

// Hidden states after every block and the logits, by the staged forward pass.
std::pair<std::vector<torch::Tensor>, torch::Tensor> StagedForward(CausalLmImpl& model, const torch::Tensor& ids) {
  std::vector<torch::Tensor> hidden;
  torch::Tensor x = model.Embed(ids);
  for (int64_t layer = 0; layer < model.config().num_layers; ++layer) {
    x = model.ForwardBlock(static_cast<size_t>(layer), x);
    hidden.push_back(x);
  }
  return {hidden, model.Head(x)};
}

}  // namespace

nlohmann::json LmQatResult::ToJson() const {
  nlohmann::json j = {{"training", training.ToJson()},
                      {"start_valid_loss", start_valid_loss},
                      {"start_valid_perplexity", std::exp(start_valid_loss)},
                      {"quantized_layers", quantized_layers},
                      {"quantized_weights", quantized_weights},
                      {"bits_per_weight", bits_per_weight},
                      {"sparsity", sparsity},
                      {"boosted_weights", boosted_weights},
                      {"layers", layers}};
  if (teacher_valid_loss >= 0) {
    j["teacher_valid_loss"] = teacher_valid_loss;
    j["teacher_valid_perplexity"] = std::exp(teacher_valid_loss);
    j["best_over_teacher_perplexity"] = std::exp(training.best_valid_loss - teacher_valid_loss);
  }
  if (!gguf.is_null()) j["gguf"] = gguf;
  return j;
}

LmQatResult TrainQuantizationAware(const LmQatOptions& options) {
  Require(!options.loop.out_dir.empty(), "qat: an output folder is needed");
  Require(options.temperature > 0 && std::isfinite(options.temperature), "qat: temperature {} must be > 0",
          options.temperature);
  Require(options.distill_alpha >= 0 && options.distill_alpha <= 1, "qat: distillation weight {} is outside [0, 1]",
          options.distill_alpha);
  Require(options.hidden_weight >= 0 && std::isfinite(options.hidden_weight), "qat: hidden-state weight {} must be >= 0",
          options.hidden_weight);
  Require(!options.train_texts.empty(), "qat: no training text");
  Require(options.rpb_fraction >= 0 && options.rpb_fraction < 0.5, "qat: RPB fraction {} is outside [0, 0.5)",
          options.rpb_fraction);
  Require(options.rpb_fraction == 0 || options.gguf_path.empty(),
          "qat: a GGUF cannot hold the weights RPB keeps exactly; drop --gguf or --rpb-fraction");
  LmLoadOptions load;
  load.tokenizer = options.tokenizer;
  LanguageModel student = LoadLanguageModel(options.model, load);
  Require(student.tokenizer != nullptr, "{}: no tokenizer found for this model; give one with --tokenizer",
          options.model);
  CausalLmImpl& model = *student.model;
  for (torch::Tensor& parameter : model.parameters()) parameter.requires_grad_(true);

  LanguageModel teacher;
  if (options.teacher != "none") {
    teacher = LoadLanguageModel(options.teacher.empty() ? options.model : options.teacher, load);
    Require(teacher.model->config().vocab_size == model.config().vocab_size,
            "{}: the teacher's vocabulary has {} tokens, the student's {}", teacher.path,
            teacher.model->config().vocab_size, model.config().vocab_size);
    Require(options.hidden_weight == 0 || (teacher.model->config().num_layers == model.config().num_layers &&
                                           teacher.model->config().hidden_size == model.config().hidden_size),
            "{}: a hidden-state loss needs a teacher of the student's depth and width", teacher.path);
    for (torch::Tensor& parameter : teacher.model->parameters()) parameter.requires_grad_(false);
    teacher.model->eval();
  }

  LmQuantizeOptions quant = options.quant;
  nlohmann::json mixed_plan;
  if (!quant.mixed_candidates.empty()) mixed_plan = ResolveMixedPrecision(model, *student.tokenizer, quant);
  LmQatOptions configured = options;
  configured.quant = quant;
  std::vector<QatLayer> layers = ConfigureLayers(model, configured);

  const torch::Tensor train_tokens = Concatenated(*student.tokenizer, options.train_texts);
  const torch::Tensor valid_tokens = TokenTensor(*student.tokenizer, options.valid_text);
  int64_t eval_windows = (valid_tokens.numel() - 1) / options.loop.ctx;
  if (options.loop.eval_windows > 0) eval_windows = std::min(eval_windows, options.loop.eval_windows);
  Require(eval_windows > 0, "{}: {} tokens, fewer than one validation window of {}", options.valid_text,
          valid_tokens.numel(), options.loop.ctx + 1);

  LmQatResult result;
  const auto schedule = [&](int64_t step) {
    for (const QatLayer& layer : layers) {
      if (!FollowsSparsitySchedule(layer.linear->quant)) continue;
      const int ramp = static_cast<int>(std::min<int64_t>(options.ramp_steps, std::numeric_limits<int>::max()));
      layer.linear->quant.grid.threshold_value =
          ScheduledSparsity(layer.target, static_cast<double>(step), ramp, options.ramp);
    }
  };
  schedule(0);
  LmLoopHooks hooks;
  if (options.learn_scales) {
    // From the grid's fit at the first step's thresholds; trained by the loop beside the weights.
    for (QatLayer& layer : layers) {
      LmLinearImpl& linear = *layer.linear;
      Require(ScalesCanBeLearned(linear.quant.grid), "{}: learned scales need a ternary or symmetric uniform grid, "
              "not {}; drop --learn-scales or choose another grid for it", layer.name, DescribeGrid(linear.quant.grid));
      layer.initial_scales = LearnedScales(linear.weight, linear.quant);
      linear.learned_scale = layer.initial_scales.clone().requires_grad_(true);
      hooks.extra_parameters.emplace_back(layer.name + ".weight_scale", linear.learned_scale);
    }
  }
  if (teacher.model) {
    result.teacher_valid_loss =
        WindowLoss(*teacher.model, valid_tokens, options.loop.ctx, eval_windows, options.loop.batch_size,
                   options.loop.parallel);
  }
  result.start_valid_loss =
      WindowLoss(model, valid_tokens, options.loop.ctx, eval_windows, options.loop.batch_size, options.loop.parallel);
  LmQatResult start_totals;
  LayerSummary(layers, &start_totals);
  LogInfo("qat {}: {} layers quantization-aware ({:.3f} bits per weight); start: fake-quantized perplexity {:.2f}{}",
          options.model, layers.size(), start_totals.bits_per_weight, std::exp(result.start_valid_loss),
          teacher.model ? fmt::format(", teacher {:.2f}", std::exp(result.teacher_valid_loss)) : "");

  PackedLmOptions pack;
  pack.float_type = options.float_type;
  pack.tokenizer_dir = fs::is_directory(student.tokenizer_source) ? student.tokenizer_source : "";
  pack.recipe = OptionsJson(options, mixed_plan);

  hooks.before_step = schedule;
  hooks.loss = [&](const torch::Tensor& batch, int64_t /*step*/) {
    const int64_t ctx = batch.size(1) - 1;
    const torch::Tensor ids = batch.slice(1, 0, ctx);
    const torch::Tensor targets = batch.slice(1, 1).reshape({-1});
    std::vector<torch::Tensor> hidden;
    torch::Tensor logits;
    if (options.hidden_weight > 0) {
      std::tie(hidden, logits) = StagedForward(model, ids);
    } else {
      logits = model.forward(ids);
    }
    logits = logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, targets);
    if (!teacher.model) return loss;
    std::vector<torch::Tensor> teacher_hidden;
    torch::Tensor teacher_logits;
    {
      torch::NoGradGuard no_grad;
      if (options.hidden_weight > 0) {
        std::tie(teacher_hidden, teacher_logits) = StagedForward(*teacher.model, ids);
      } else {
        teacher_logits = teacher.model->forward(ids);
      }
      teacher_logits = teacher_logits.reshape({-1, teacher_logits.size(-1)}).to(torch::kFloat32);
    }
    const double t = options.temperature;
    loss = options.distill_alpha * t * t * SoftTargetKl(logits, teacher_logits, t) + (1 - options.distill_alpha) * loss;
    if (options.hidden_weight > 0) {
      torch::Tensor hidden_loss = torch::zeros({}, logits.options());
      for (size_t i = 0; i < hidden.size(); ++i) {
        hidden_loss = hidden_loss + (hidden[i] - teacher_hidden[i]).pow(2).sum() / teacher_hidden[i].pow(2).sum();
      }
      loss = loss + options.hidden_weight * hidden_loss / static_cast<double>(hidden.size());
    }
    return loss;
  };
  hooks.save = [&](const std::string& dir) { SavePacked(model, layers, dir, pack); };
  hooks.describe = [&] {
    LmQatResult totals;
    LayerSummary(layers, &totals);
    return nlohmann::json{{"sparsity", totals.sparsity}, {"bits_per_weight", totals.bits_per_weight}};
  };
  LmLoopOptions loop = options.loop;
  loop.label = "qat";
  const nlohmann::json run_options = OptionsJson(options, mixed_plan);
  result.training = RunLmTraining(model, train_tokens, valid_tokens, loop, hooks, run_options);
  result.layers = LayerSummary(layers, &result);
  const fs::path out(options.loop.out_dir);
  if (result.training.evals.empty() || result.training.evals.back().step < options.loop.steps) return result;
  if (options.loop.parallel && !options.loop.parallel->writes()) return result;  // rank 0 writes

  if (!options.gguf_path.empty()) {
    // The best model as llama.cpp reads it: the packed checkpoint read back (its values exactly the fake-quantized
    // weights) and written in the GGUF type of each layer's grid; tq2_0/tq1_0 and q8_0/q4_0 grids are exact.
    Require(!pack.tokenizer_dir.empty(), "--gguf needs the model's vocabulary from a tokenizer folder; this model's "
                                         "tokenizer came from {}", student.tokenizer_source);
    LanguageModel best = LoadLanguageModel((out / "best").string(), load);
    const LmGgufOptions gguf = QuantizedGgufOptions(*best.model, quant, options.gguf_type, options.gguf_embeddings);
    result.gguf = LmGgufExport(WriteLmGguf(*best.model, pack.tokenizer_dir, gguf, options.gguf_path)).ToJson();
  }
  WriteFileAtomically((out / "qat_report.json").string(), result.ToJson().dump(2) + "\n");
  return result;
}

}  // namespace atq
