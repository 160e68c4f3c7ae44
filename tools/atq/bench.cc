// atq bench: the packed kernels' speed against memory bandwidth and float32 (table, JSON, plot).
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include <unistd.h>

#include <fmt/format.h>

#include "bench/kernel_bench.h"
#include "command.h"
#include "io/atomic_file.h"
#include "kernels/packed_matrix.h"
#include "report/plot.h"
#include "type_list.h"
#include "util/error.h"
#include "util/parse.h"
#include "util/strings.h"
#ifdef ATQ_WITH_TORCH
#include "eval/classifier_speed.h"
#include "torch/caching_allocator.h"
#include "eval/torch_matmul_baseline.h"
#include "models/classifiers.h"
#include "runtime/lm_speed.h"
#include "torch_lm_options.h"
#include "torch/tensor_bridge.h"
#endif

namespace atq::cli {
namespace {

// The large shapes (Llama-7B's attention and MLP) and llama-mini's layers (the fixture LLMs).
constexpr const char* kDefaultShapes =
    "4096x4096,11008x4096,4096x11008,512x512,1536x512,512x1536,50257x512";
constexpr const char* kDefaultTypes = "f32,f16,q8_0,q4_0,tq2_0,tq1_0,t2,t1.6,u4s,u8s";

// A positive integer from the command line; UsageError (exit 2) otherwise.
int64_t PositiveFlagValue(const std::string& text, const std::string& where) {
  int64_t value = 0;
  try {
    value = ParseInt(text, where);
  } catch (const Error& error) {
    throw UsageError(error.what());
  }
  if (value <= 0) throw UsageError(where + ": '" + text + "' is not positive");
  return value;
}

std::vector<MatrixShape> ParseShapes(const std::string& list) {
  std::vector<MatrixShape> shapes;
  for (const std::string& item : Split(list, ',')) {
    if (item.empty()) continue;
    const std::vector<std::string> parts = Split(item, 'x');
    if (parts.size() != 2) throw UsageError("--shapes: '" + item + "' is not ROWSxCOLS (e.g. 4096x11008)");
    shapes.push_back({PositiveFlagValue(parts[0], "--shapes"), PositiveFlagValue(parts[1], "--shapes"), item});
  }
  return shapes;
}

template <typename T>
std::vector<T> ParsePositiveList(const std::string& list, const std::string& flag) {
  std::vector<T> values;
  for (const std::string& item : Split(list, ',')) values.push_back(static_cast<T>(PositiveFlagValue(item, flag)));
  if (values.empty()) throw UsageError(flag + " is empty");
  return values;
}

// Batch-1 G weights/s against bits per weight, one series per thread count, on the largest shape.
void PlotKernels(const nlohmann::json& report, const std::string& path) {
  const nlohmann::json& results = report["results"];
  std::string largest;
  double largest_size = 0;
  for (const auto& row : results) {
    const double size = row["rows"].get<double>() * row["cols"].get<double>();
    if (size > largest_size) largest_size = size, largest = row["shape"];
  }
  PlotSpec spec;
  spec.title = fmt::format("matrix-vector (batch 1) on {}, {}: weights per second against bits per weight", largest,
                           report["target"].get<std::string>());
  spec.x_label = "bits per weight (scales included)";
  spec.y_label = "G weights / s";
  std::map<std::pair<int64_t, int>, PlotSeries> series;
  for (const auto& row : results) {
    if (row["shape"] != largest || row["batch"] != 1) continue;
    const auto key = std::make_pair(row["batch"].get<int64_t>(), row["threads"].get<int>());
    PlotSeries& s = series[key];
    s.title = fmt::format("batch {}, {} thread(s)", key.first, key.second);
    s.points_only = true;
    s.x.push_back(row["bits_per_weight"]);
    s.y.push_back(row["gweights_per_second"]);
    s.labels.push_back(row["type"]);
  }
  for (auto& [key, s] : series) spec.series.push_back(s);
  RenderPlot(spec, path);
}

// Decode tokens/s against bits per weight, one point per format.
void PlotModel(const nlohmann::json& report, const std::string& path) {
  PlotSpec spec;
  spec.title = "decode and prefill speed by weight format: " + report["model"].get<std::string>();
  spec.x_label = "bits per weight (whole model)";
  spec.y_label = "tokens / s (prefill divided by 10)";
  PlotSeries decode("decode", {}, {}, true), prefill("prefill / 10", {}, {}, true);
  for (const auto& row : report["results"]) {
    if (!row["decode_tokens_per_second"].is_null()) {  // null: the prompt filled the context
      decode.x.push_back(row["bits_per_weight"]);
      decode.y.push_back(row["decode_tokens_per_second"]);
      decode.labels.push_back(row["format"]);
    }
    prefill.x.push_back(row["bits_per_weight"]);
    prefill.y.push_back(row["prefill_tokens_per_second"].get<double>() / 10.0);
  }
  spec.series = {decode, prefill};
  spec.log_x = true;
  RenderPlot(spec, path);
}

struct BenchOptions {
  std::string shapes = kDefaultShapes;
  std::string types = kDefaultTypes;
  std::string batches = "1,64";
  std::string threads;
  double min_seconds = 0.3;
  int64_t bandwidth_mib = 1024;
  std::string json_path, plot_path;
  std::string model, model_types = "torch,f32,f16,q8_0,q4_0,tq2_0,tq1_0,t2";
  int64_t prompt_tokens = 64, decode_tokens = 64;
  int model_threads = 0;
  int64_t model_repeats = 3;
  std::string device = "cpu";
  std::string runtime = "auto";
  std::string classifier;
  int64_t image_size = 28;
};
#ifdef ATQ_WITH_TORCH
// Images/s per batch size: libtorch float32 and each packed format, one bar each.
void PlotClassifier(const nlohmann::json& reports, const std::string& path) {
  PlotSpec spec;
  spec.title = fmt::format("{} on {} thread(s): packed kernels against libtorch float32",
                           reports[0]["model"].get<std::string>(), reports[0]["threads"].get<int>());
  spec.y_label = "images / s";
  for (const auto& row : reports[0]["results"]) spec.categories.push_back(fmt::format("batch {}", row["batch"].get<int64_t>()));
  PlotSeries floats("libtorch f32", {}, {});
  for (const auto& row : reports[0]["results"]) floats.y.push_back(row["libtorch_f32_images_per_second"]);
  spec.series.push_back(floats);
  for (const auto& report : reports) {
    PlotSeries packed("packed " + report.value("format", std::string("file")), {}, {});
    for (const auto& row : report["results"]) packed.y.push_back(row["packed_images_per_second"]);
    spec.series.push_back(packed);
  }
  RenderPlot(spec, path);
}

// --classifier: a packed file, or an architecture written with random ternary weights to a temporary file.
int RunClassifierBench(const BenchOptions& options, bool batch_given) {
  const std::vector<int> threads =
      options.threads.empty() ? std::vector<int>{0} : ParsePositiveList<int>(options.threads, "--threads");
  if (threads.size() != 1) throw UsageError("--classifier takes one --threads count");
  SetTorchThreads(threads[0]);
  UseCachingCpuAllocator();  // both runtimes' activations reuse freed blocks instead of fresh pages
  ClassifierSpeedOptions speed;
  speed.batches = ParsePositiveList<int64_t>(batch_given ? options.batches : "1,256", "--batch");
  speed.min_seconds = options.min_seconds;
  speed.on_line = [](const std::string& line) { std::cout << line << std::endl; };
  const bool is_arch = std::find(ClassifierNames().begin(), ClassifierNames().end(), options.classifier) !=
                       ClassifierNames().end();
  nlohmann::json report = nlohmann::json::array();
  if (!is_arch) {
    report.push_back(MeasureClassifierSpeed(options.classifier, speed));
  } else {
    const std::vector<QuantType> types =
        options.types == kDefaultTypes ? std::vector<QuantType>{QuantType::kTernary2}
                                       : ParseTypeList(options.types, "--types", true);
    const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                      fmt::format("atq-bench-{}-{}", options.classifier, ::getpid());
    std::filesystem::create_directories(dir);
    try {
      for (QuantType type : types) {
        const std::string path = (dir / (std::string(TypeName(type)) + ".safetensors")).string();
        WriteRandomTernaryClassifier(options.classifier, options.image_size, type, path);
        std::cout << fmt::format("{}: random ternary weights packed as {}", options.classifier, TypeName(type))
                  << std::endl;
        report.push_back(MeasureClassifierSpeed(path, speed));
        report.back()["format"] = std::string(TypeName(type));
        report.back()["file"] = "random weights";
      }
    } catch (...) {
      std::filesystem::remove_all(dir);
      throw;
    }
    std::filesystem::remove_all(dir);
  }
  if (!options.json_path.empty()) WriteFileAtomically(options.json_path, report.dump(2) + "\n");
  if (!options.plot_path.empty()) PlotClassifier(report, options.plot_path);
  return 0;
}
#endif

}  // namespace

RunFn DeclareBench(CLI::App& app) {

  auto options = std::make_shared<BenchOptions>();
  app.add_option("--shapes", options->shapes, "Weight shapes ROWSxCOLS, comma-separated")->capture_default_str();
  app.add_option("--types", options->types, "Formats to run (see `atq formats`)")->capture_default_str();
  CLI::Option* batch_option =
      app.add_option("--batch", options->batches, "Activation rows per product (1: decode; with --classifier: images per pass, default 1,256)")
          ->capture_default_str();
  app.add_option("--threads", options->threads, "Thread counts, comma-separated (default: 1 and every core)");
  app.add_option("--min-seconds", options->min_seconds, "Time per measurement")->capture_default_str();
  app.add_option("--bandwidth-mib", options->bandwidth_mib, "Buffer of the memory read-bandwidth loop (MiB)")
      ->check(CountFrom(1))
      ->capture_default_str();
  app.add_option("--json", options->json_path, "Write the results as JSON to this file");
  app.add_option("--plot", options->plot_path, "Draw weights/s (or tokens/s with --model) against bits per weight, or images/s by batch with --classifier (PNG)");
#ifdef ATQ_WITH_TORCH
  app.add_option("--model", options->model,
                 "Model level instead: a language model (Hugging Face folder, GGUF, llama2.c) run in each format");
  app.add_option("--model-types", options->model_types,
                 "Formats of the model-level run (torch: float32 through libtorch, as loaded; file: as stored, run from the "
                 "mapped file: packed, f16 and bf16 weights in place; a format: every linear layer re-quantized to it)")->capture_default_str();
  app.add_option("--prompt-tokens", options->prompt_tokens, "Prompt length (prefill)")
      ->check(CountFrom(1))
      ->capture_default_str();
  app.add_option("--decode-tokens", options->decode_tokens, "Tokens generated (decode)")
      ->check(CountFrom(1))
      ->capture_default_str();
  app.add_option("--model-repeats", options->model_repeats,
                 "Timed generations per format after a warm-up; the figures are their medians")
      ->check(CountFrom(1))
      ->capture_default_str();
  app.add_option("--model-threads", options->model_threads, "Threads of the model-level run (0: every core)")
      ->capture_default_str();
  app.add_option("--device", options->device,
                 "Where the model-level run goes: cpu, or cuda (atq's CUDA decoder; packed formats only)")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  app.add_option("--runtime", options->runtime, kRuntimeHelp)
      ->check(CLI::IsMember({"auto", "decoder", "libtorch"}))
      ->capture_default_str();
  app.add_option("--classifier", options->classifier,
                 "Classifier level instead: images/s of a packed classifier (a file from `atq export`, or an "
                 "architecture name for seeded random ternary weights) through the packed kernels against libtorch "
                 "float32, on --threads (one count) and --types t2|t1.6 (default t2)");
  app.add_option("--image-size", options->image_size, "With --classifier ARCH: square image side")
      ->check(CLI::Range(8, 1024))
      ->capture_default_str();
#endif
  return [options, batch_option] {
#ifdef ATQ_WITH_TORCH
    if (!options->classifier.empty()) return RunClassifierBench(*options, batch_option->count() > 0);
    if (!options->model.empty()) {
      SetTorchThreads(options->model_threads);
      LmSpeedOptions speed;
      speed.variants = Split(options->model_types, ',');
      for (const std::string& name : speed.variants) {
        if (name != "torch" && name != "file") ParseTypeList(name, "--model-types", true);
      }
      speed.prompt_tokens = options->prompt_tokens;
      speed.decode_tokens = options->decode_tokens;
      speed.repeats = options->model_repeats;
      speed.device = options->device == "cuda" ? Device::kCuda : Device::kCpu;
      speed.runtime = *ParseCpuRuntime(options->runtime);
      speed.on_line = [](const std::string& line) { std::cout << line << std::endl; };
      const nlohmann::json report = MeasureLmSpeed(options->model, speed);
      if (!options->json_path.empty()) WriteFileAtomically(options->json_path, report.dump(2) + "\n");
      if (!options->plot_path.empty()) PlotModel(report, options->plot_path);
      return 0;
    }
#endif
    KernelBenchOptions bench;
    bench.shapes = ParseShapes(options->shapes);
    bench.types = ParseTypeList(options->types, "--types", true);
    for (QuantType type : bench.types) KernelSegment({type, 1, 1, Granularity::kChannel, 0});  // no kernel: error
    bench.batches = ParsePositiveList<int64_t>(options->batches, "--batch");
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    bench.threads = options->threads.empty() ? (cores > 1 ? std::vector<int>{1, cores} : std::vector<int>{1})
                                             : ParsePositiveList<int>(options->threads, "--threads");
    for (int threads : bench.threads) {
      if (threads > MaxThreads()) {
        throw UsageError(fmt::format("--threads {} is more than {} (8 x this machine's cores)", threads, MaxThreads()));
      }
    }
    bench.min_seconds = options->min_seconds;
    bench.bandwidth_bytes = options->bandwidth_mib << 20;
    bench.on_line = [](const std::string& line) { std::cout << line << std::endl; };
#ifdef ATQ_WITH_TORCH
    const double min_seconds = options->min_seconds;
    bench.baselines.push_back({"torch_f32", [min_seconds](int64_t rows, int64_t cols, int64_t batch, int threads) {
                                 return TorchMatMulSeconds(rows, cols, batch, threads, min_seconds);
                               }});
#endif
    const nlohmann::json report = RunKernelBench(bench);
    if (!options->json_path.empty()) WriteFileAtomically(options->json_path, report.dump(2) + "\n");
    if (!options->plot_path.empty()) PlotKernels(report, options->plot_path);
    return 0;
  };
}

}  // namespace atq::cli
