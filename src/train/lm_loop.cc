// The language-model training loop and its resume state.
#include "train/lm_loop.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "io/atomic_file.h"
#include "io/input_file.h"
#include "io/strict_json.h"
#include "report/plot.h"
#include "train/data_parallel.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"

namespace atq {
namespace {

namespace fs = std::filesystem;

torch::Tensor CrossEntropyLoss(CausalLmImpl& model, const torch::Tensor& batch) {
  const int64_t ctx = batch.size(1) - 1;
  const torch::Tensor logits = model.forward(batch.slice(1, 0, ctx));  // [B, ctx, V]
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat32),
                                              batch.slice(1, 1).reshape({-1}));
}

nlohmann::json PointJson(const LmEvalPoint& p) {
  nlohmann::json point = {{"step", p.step},
                          {"tokens", p.tokens},
                          {"train_loss", p.train_loss},
                          {"valid_loss", p.valid_loss},
                          {"valid_perplexity", std::exp(p.valid_loss)},
                          {"learning_rate", p.learning_rate},
                          {"tokens_per_second", p.tokens_per_second}};
  if (!p.extra.is_null()) point["extra"] = p.extra;
  return point;
}

LmEvalPoint PointFromJson(const nlohmann::json& j) {
  LmEvalPoint p;
  p.step = j.at("step");
  p.tokens = j.at("tokens");
  p.train_loss = j.at("train_loss");
  p.valid_loss = j.at("valid_loss");
  p.learning_rate = j.at("learning_rate");
  p.tokens_per_second = j.at("tokens_per_second");
  if (j.contains("extra")) p.extra = j.at("extra");
  return p;
}

// The resume state: OUT/resume/step-N/{weights.pt, optimizer.pt, state.json}, and OUT/resume/latest naming the
// newest complete one (written last, atomically), so a run killed while saving resumes from the previous state.
struct ResumeState {
  int64_t step = 0;
  std::string rng;  // std::mt19937_64's text form
  LmTrainResult result;
  double loss_sum = 0;  // training losses since the last evaluation (a state saved between evaluations)
  int64_t loss_steps = 0;
};

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// The model's parameters and the loop's extra ones, by name.
NamedTensors TrainedTensors(CausalLmImpl& model, const NamedTensors& extra) {
  NamedTensors tensors;
  for (const auto& parameter : model.named_parameters()) tensors.emplace_back(parameter.key(), parameter.value());
  tensors.insert(tensors.end(), extra.begin(), extra.end());
  return tensors;
}

void SaveWeights(const NamedTensors& tensors, const std::string& path) {
  torch::serialize::OutputArchive archive;
  for (const auto& [name, tensor] : tensors) archive.write(name, tensor.detach());
  archive.save_to(path);
}

void LoadWeights(const NamedTensors& tensors, const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  torch::NoGradGuard no_grad;
  for (const auto& [name, tensor] : tensors) {
    torch::Tensor stored;
    Require(archive.try_read(name, stored), "{}: no tensor {} (a resume state of another model)", path, name);
    Require(stored.sizes() == tensor.sizes(), "{}: {} has shape {}, the model's is {}", path, name,
            fmt::join(stored.sizes(), "x"), fmt::join(tensor.sizes(), "x"));
    torch::Tensor target = tensor;
    target.copy_(stored);
  }
}

void SaveResume(const fs::path& out, const NamedTensors& tensors, torch::optim::AdamW& optimizer,
                const ResumeState& state, const nlohmann::json& run_options) {
  const fs::path root = out / "resume";
  const fs::path dir = root / fmt::format("step-{}", state.step);
  fs::create_directories(dir);
  SaveWeights(tensors, (dir / "weights.pt").string());
  torch::save(optimizer, (dir / "optimizer.pt").string());
  nlohmann::json result = state.result.ToJson();
  WriteFileAtomically((dir / "state.json").string(),
                      nlohmann::json{{"step", state.step}, {"rng", state.rng}, {"options", run_options},
                                     {"result", result}, {"loss_sum", state.loss_sum},
                                     {"loss_steps", state.loss_steps}}
                              .dump(1) +
                          "\n");
  const std::string previous = fs::exists(root / "latest") ? ReadInputText((root / "latest").string()) : "";
  WriteFileAtomically((root / "latest").string(), dir.filename().string());
  if (!previous.empty() && previous != dir.filename().string()) fs::remove_all(root / previous);
}

// The state a previous run left, or nothing (step 0).
ResumeState LoadResume(const fs::path& out, const NamedTensors& tensors, torch::optim::AdamW& optimizer,
                       const nlohmann::json& run_options) {
  ResumeState state;
  const fs::path root = out / "resume";
  if (!fs::exists(root / "latest")) return state;
  const fs::path dir = root / ReadInputText((root / "latest").string());
  const nlohmann::json saved = ReadStrictJsonFile((dir / "state.json").string());
  // Resuming under other settings would silently train another run; the step count and the interval may grow.
  nlohmann::json now = run_options, then = saved.at("options");
  for (nlohmann::json* j : {&now, &then}) {
    for (const char* key : {"steps", "eval_interval", "resume", "stop_after"}) j->erase(key);
  }
  Require(now == then, "{}: the resume state was written with other options ({} then, {} now); start afresh in "
          "another --out folder", dir.string(), then.dump(), now.dump());
  LoadWeights(tensors, (dir / "weights.pt").string());
  torch::load(optimizer, (dir / "optimizer.pt").string());
  state.step = saved.at("step");
  state.rng = saved.at("rng");
  state.loss_sum = saved.at("loss_sum");
  state.loss_steps = saved.at("loss_steps");
  const nlohmann::json& result = saved.at("result");
  for (const nlohmann::json& point : result.at("evals")) state.result.evals.push_back(PointFromJson(point));
  state.result.best_step = result.at("best_step");
  state.result.best_valid_loss = result.at("best_valid_loss");
  state.result.seconds = result.at("seconds");
  return state;
}

void WriteCurve(const LmTrainResult& result, const fs::path& out, const std::string& label) {
  PlotSeries series("validation perplexity", {}, {});
  for (const LmEvalPoint& point : result.evals) {
    series.x.push_back(static_cast<double>(point.tokens) / 1e6);
    series.y.push_back(std::exp(point.valid_loss));
  }
  PlotSpec spec;
  spec.title = label + ": validation perplexity";
  spec.x_label = "training tokens (millions)";
  spec.y_label = "perplexity";
  spec.series.push_back(series);
  RenderPlot(spec, (out / "validation.png").string());
}

}  // namespace

nlohmann::json LmTrainResult::ToJson() const {
  nlohmann::json points = nlohmann::json::array();
  for (const LmEvalPoint& p : evals) points.push_back(PointJson(p));
  return {{"evals", points},           {"best_step", best_step},       {"best_valid_loss", best_valid_loss},
          {"best_valid_perplexity", std::exp(best_valid_loss)},
          {"train_tokens", train_tokens}, {"valid_tokens", valid_tokens}, {"resumed_from", resumed_from},
          {"seconds", seconds}, {"workers", workers}, {"communication_seconds", communication_seconds}};
}

double WindowLoss(CausalLmImpl& model, const torch::Tensor& tokens, int64_t ctx, int64_t windows, int64_t batch_size,
                  DataParallel* parallel) {
  torch::NoGradGuard no_grad;
  model.eval();
  double loss_sum = 0;
  int64_t counted = 0;
  const torch::Device device = model.parameters().front().device();
  const int64_t stride = parallel ? parallel->world_size() : 1;
  std::vector<int64_t> mine;
  for (int64_t w = parallel ? parallel->rank() : 0; w < windows; w += stride) mine.push_back(w);
  for (size_t first = 0; first < mine.size(); first += static_cast<size_t>(batch_size)) {
    std::vector<torch::Tensor> rows;
    for (size_t i = first; i < std::min(mine.size(), first + static_cast<size_t>(batch_size)); ++i) {
      rows.push_back(tokens.slice(0, mine[i] * ctx, mine[i] * ctx + ctx + 1));
    }
    const torch::Tensor batch = torch::stack(rows).to(device);
    loss_sum += CrossEntropyLoss(model, batch).item<double>() * static_cast<double>(batch.size(0) * ctx);
    counted += batch.size(0) * ctx;
  }
  model.train();
  if (parallel) {
    const std::vector<double> sums = parallel->Sum({loss_sum, static_cast<double>(counted)});
    return sums[0] / sums[1];
  }
  return loss_sum / static_cast<double>(counted);
}

LmTrainResult RunLmTraining(CausalLmImpl& model, const torch::Tensor& train_tokens, const torch::Tensor& valid_tokens,
                            const LmLoopOptions& options, const LmLoopHooks& hooks,
                            const nlohmann::json& run_options) {
  const std::string& label = options.label;
  Require(options.ctx >= 2 && options.batch_size >= 1 && options.steps >= 1,
          "{}: ctx >= 2, batch >= 1 and steps >= 1 needed", label);
  Require(options.eval_interval >= 1, "{}: the evaluation interval must be at least 1 step", label);
  const int64_t train_count = train_tokens.numel();
  Require(train_count > options.ctx + 1, "{}: the training text has {} tokens, fewer than one window of {}", label,
          train_count, options.ctx + 1);
  int64_t eval_windows = (valid_tokens.numel() - 1) / options.ctx;
  if (options.eval_windows > 0) eval_windows = std::min(eval_windows, options.eval_windows);
  Require(eval_windows > 0, "{}: the validation text has {} tokens, fewer than one window of {}", label,
          valid_tokens.numel(), options.ctx + 1);

  std::vector<torch::Tensor> trained;
  for (const torch::Tensor& parameter : model.parameters()) {
    if (parameter.requires_grad()) trained.push_back(parameter);
  }
  for (const auto& [name, tensor] : hooks.extra_parameters) {
    Require(tensor.requires_grad(), "{}: the extra tensor {} does not require a gradient", label, name);
    trained.push_back(tensor);
  }
  const NamedTensors saved_tensors = TrainedTensors(model, hooks.extra_parameters);
  model.train();
  auto optimizer = MakeAdamW(trained, options.learning_rate, options.weight_decay, 0.9, options.beta2);
  DataParallel* parallel = options.parallel;
  const int workers = parallel ? parallel->world_size() : 1;
  const auto [first_row, end_row] = WorkerRows(options.batch_size, parallel ? parallel->rank() : 0, workers);
  const fs::path out(options.out_dir);
  const bool writes = !options.out_dir.empty() && (!parallel || parallel->writes());
  if (writes) fs::create_directories(out);

  std::mt19937_64 rng(options.seed);
  LmTrainResult result;
  int64_t first_step = 0;
  double loss_sum = 0;
  int64_t loss_steps = 0;
  if (!options.out_dir.empty() && options.resume) {  // every worker reads the state
    ResumeState state = LoadResume(out, saved_tensors, *optimizer, run_options);
    if (state.step > 0) {
      std::istringstream(state.rng) >> rng;
      first_step = state.step;
      result = state.result;
      result.resumed_from = state.step;
      loss_sum = state.loss_sum;
      loss_steps = state.loss_steps;
      LogInfo("{}: resuming at step {} of {}", label, first_step, options.steps);
    }
  }
  // Every worker starts from rank 0's weights (fresh initializations agree by seed; this makes it certain).
  if (parallel) parallel->BroadcastFromFirst(trained);
  if (writes) WriteFileAtomically((out / "training.json").string(), run_options.dump(2) + "\n");
  result.train_tokens = train_count;
  result.valid_tokens = valid_tokens.numel();
  const double seconds_before = result.seconds;
  const torch::Device device = trained.empty() ? torch::Device(torch::kCPU) : trained.front().device();
  std::uniform_int_distribution<int64_t> offset(0, train_count - options.ctx - 1);
  const int64_t tokens_per_step = options.batch_size * options.ctx;

  const int64_t last_step =
      options.stop_after > 0 ? std::min(options.steps, first_step + options.stop_after) : options.steps;
  Progress progress(label, last_step - first_step, "steps");
  const auto rng_text = [&rng] {
    std::ostringstream text;
    text << rng;
    return text.str();
  };
  auto since = std::chrono::steady_clock::now();
  for (int64_t step = first_step; step < last_step; ++step) {
    const double learning_rate = WarmupCosineLearningRate(step, options.steps, options.warmup_steps,
                                                          options.learning_rate, options.min_learning_rate);
    SetLearningRate(*optimizer, learning_rate);
    if (hooks.before_step) hooks.before_step(step);
    // Every worker draws the whole global batch (the same random stream) and keeps its rows of it.
    std::vector<torch::Tensor> rows;
    for (int64_t b = 0; b < options.batch_size; ++b) {
      const int64_t begin = offset(rng);
      if (b >= first_row && b < end_row) rows.push_back(train_tokens.slice(0, begin, begin + options.ctx + 1));
    }
    const torch::Tensor batch = torch::stack(rows).to(device);  // [B / workers, ctx + 1]
    optimizer->zero_grad();
    const torch::Tensor loss = hooks.loss ? hooks.loss(batch, step) : CrossEntropyLoss(model, batch);
    loss.backward();
    if (parallel) parallel->AverageGradients(trained);
    if (options.grad_clip > 0) torch::nn::utils::clip_grad_norm_(trained, options.grad_clip);
    optimizer->step();
    double step_loss = loss.item<double>();
    if (parallel) step_loss = parallel->Sum({step_loss})[0] / workers;
    Require(std::isfinite(step_loss), "{}: the training loss became {} at step {}; lower --learning-rate", label,
            step_loss, step + 1);
    loss_sum += step_loss;
    ++loss_steps;
    const double elapsed = progress.ElapsedSeconds();
    progress.Advance(1, fmt::format("loss {:.4f} | lr {:.2e} | {:.0f} tokens/s", step_loss, learning_rate,
                                    elapsed > 0 ? (step + 1 - first_step) * tokens_per_step / elapsed : 0.0));

    if ((step + 1) % options.eval_interval != 0 && step + 1 != options.steps) {
      if (step + 1 == last_step && writes) {  // stopped between evaluations: the state carries the running loss
        result.seconds = seconds_before + progress.ElapsedSeconds();
        SaveResume(out, saved_tensors, *optimizer, {step + 1, rng_text(), result, loss_sum, loss_steps}, run_options);
      }
      continue;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
    LmEvalPoint point;
    point.step = step + 1;
    point.tokens = point.step * tokens_per_step;
    point.train_loss = loss_sum / static_cast<double>(loss_steps);
    point.valid_loss = WindowLoss(model, valid_tokens, options.ctx, eval_windows, options.batch_size, parallel);
    point.learning_rate = learning_rate;
    point.tokens_per_second = seconds > 0 ? static_cast<double>(loss_steps * tokens_per_step) / seconds : 0;
    if (hooks.describe) point.extra = hooks.describe();
    result.evals.push_back(point);
    LogInfo("{} step {}/{}: train loss {:.4f}, valid loss {:.4f} (perplexity {:.2f}), {:.0f} tokens/s", label,
            point.step, options.steps, point.train_loss, point.valid_loss, std::exp(point.valid_loss),
            point.tokens_per_second);
    const bool best = result.best_step == 0 || point.valid_loss < result.best_valid_loss;
    if (best) {
      result.best_step = point.step;
      result.best_valid_loss = point.valid_loss;
    }
    result.seconds = seconds_before + progress.ElapsedSeconds();
    if (writes) {
      if (best && hooks.save) hooks.save((out / "best").string());
      WriteFileAtomically((out / "metrics.json").string(), result.ToJson().dump(2) + "\n");
      WriteCurve(result, out, label);
      SaveResume(out, saved_tensors, *optimizer, {point.step, rng_text(), result, 0, 0}, run_options);
    }
    loss_sum = 0;
    loss_steps = 0;
    since = std::chrono::steady_clock::now();
  }
  progress.Finish();
  result.seconds = seconds_before + progress.ElapsedSeconds();
  result.workers = workers;
  if (parallel) result.communication_seconds = parallel->communication_seconds();
  if (last_step < options.steps) {
    LogInfo("{}: stopped after step {} of {}; continue with --resume", label, last_step, options.steps);
    return result;
  }
  if (writes) {
    if (hooks.save) hooks.save(out.string());
    WriteFileAtomically((out / "metrics.json").string(), result.ToJson().dump(2) + "\n");
  }
  return result;
}

}  // namespace atq
