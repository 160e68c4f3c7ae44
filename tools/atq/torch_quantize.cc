// atq quantize MODEL --out DIR [--method rtn|atq|gptq] [--bits B | --ternary] [--group-size G] ... [--recipe FILE]:
// post-training quantization of a language model's linear layers, written as atq's packed checkpoint with a
// per-layer report (JSON and a table).
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "command.h"
#include "io/atomic_file.h"
#include "models/lm_gguf_writer.h"
#include "quant/lm_gguf_export.h"
#include "quant/packed_lm.h"
#include "quant/recipe.h"
#include "torch_setting_flags.h"
#include "torch_lm_options.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/parse.h"
#include "io/output_path.h"

namespace atq::cli {
namespace {

// Every packed checkpoint folder holds it: the mark that atq wrote the folder and may replace it whole.
constexpr const char* kReportName = "quantize_report.json";

const std::vector<SettingFlag>& RecipeFlags() {
  static const std::vector<SettingFlag> flags = WithGridFlags({
      {"--method", "method", "rtn (round to nearest), atq (adaptive ternary) or gptq (default gptq)", nullptr},
      {"--calib", "calib", "Calibration text (default: data/corpus/train.txt)", nullptr},
      {"--nsamples", "nsamples", "Calibration windows (default 128; 0: none, RTN and rule-based ATQ only)", nullptr},
      {"--seqlen", "seqlen", "Tokens per calibration window (default 512)", nullptr},
      {"--seed", "seed", "Seed for choosing the calibration windows (default 0)", nullptr},
      {"--batch-size", "batch_size", "Calibration windows per forward pass (default 8)", nullptr},
      {"--damp", "damp", "GPTQ dampening, a fraction of the Hessian's mean diagonal (default 0.01)", nullptr},
      {"--block-size", "block_size", "GPTQ lazy-update block in columns (default 128)", nullptr},
      {"--act-order", "act_order", "GPTQ: quantize columns in order of decreasing Hessian diagonal", "true"},
      {"--static-groups", "static_groups", "GPTQ: fit group scales on the original weights first", "true"},
      {"--true-sequential", "true_sequential", "Quantize each block's layers in forward order on quantized inputs", "true"},
      {"--no-atq-calibrate", "atq_calibrate", "ATQ: thresholds from the grid's rule, not from calibration", "false"},
      {"--embeddings", "embeddings", "Format for the token embedding (e.g. q8_0; default f32 = unquantized)", nullptr},
      {"--head", "head", "Format for an untied output head (default f32 = unquantized)", nullptr},
      {"--mixed-candidates", "mixed_candidates",
       "Mixed precision: grids each layer may get, e.g. ternary,3,4,8 or ternary/base3/channel,4/g128,8/channel", nullptr},
      {"--mixed-budget", "mixed_budget", "Mixed precision: average bits per weight (scales included) to fit", nullptr},
      {"--mixed-keep-top", "mixed_keep_top",
       "Mixed precision: the K most sensitive layers get the last candidate, the rest the first", nullptr},
      {"--sensitivity", "sensitivity", "Mixed precision score: fisher (gradient-weighted, default) or output", nullptr},
      {"--fisher-samples", "fisher_samples", "Mixed precision: calibration windows the Fisher score's gradients use (16)",
       nullptr},
  });
  return flags;
}

void PrintLayerTable(const LmQuantizeResult& result) {
  fmt::print("{:<40} {:>6} {:>6} {:>6} {:>8} {:>10} {:>10} {:>7}\n", "layer", "type", "bpw", "thr", "zeros",
             "w err", "out err", "s");
  for (const LayerReport& layer : result.layers) {
    fmt::print("{:<40} {:>6} {:>6.3f} {:>6} {:>7.1f}% {:>10.3e} {:>10} {:>7.2f}\n", layer.name, layer.type,
               layer.bits_per_weight, layer.threshold_ratio >= 0 ? fmt::format("{:.2f}", layer.threshold_ratio) : "-",
               100 * layer.sparsity, layer.weight_error,
               layer.output_error >= 0 ? fmt::format("{:.3e}", layer.output_error) : "-", layer.seconds);
  }
}

}  // namespace

RunFn DeclareQuantize(CLI::App& app) {
  struct Options {
    LmCliOptions lm;
    std::string out;
    std::string recipe_file;
    std::string float_type = "f16";
    std::string gguf_path;
    std::string gguf_type;
    std::string gguf_embeddings = "q8_0";
    std::string shard_size = "5GB";
    SettingFlags flags{RecipeFlags()};
  };
  auto o = std::make_shared<Options>();
  AddLmOptions(app, o->lm);
  app.add_option("--out", o->out, "Output folder: the packed checkpoint (config.json, model.safetensors, tokenizer), "
                                  "quantize_report.json")
      ->required();
  app.add_option("--recipe", o->recipe_file, "YAML recipe with the same settings (and per-layer overrides); flags "
                                             "given here override it");
  app.add_option("--float-type", o->float_type, "Storage of the tensors left unquantized: f16, bf16 or f32")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}))
      ->capture_default_str();
  app.add_option("--gguf", o->gguf_path, "Also write a llama.cpp GGUF file here");
  app.add_option("--shard-size", o->shard_size, "Weight files past this size are sharded with an index (e.g. 2GB)")
      ->capture_default_str();
  app.add_option("--gguf-type", o->gguf_type,
                 "GGUF type of the quantized layers: q8_0, q4_0, tq2_0 or tq1_0 (default: per layer, the closest to "
                 "its grid: tq2_0 ternary, tq1_0 ternary base3, q4_0 up to 4 bits, q8_0 above)");
  app.add_option("--gguf-embeddings", o->gguf_embeddings, "GGUF type of the token embedding (and an untied head)")
      ->capture_default_str();
  o->flags.Add(app);
  return [o] {
    // Before any work: the outputs may not overwrite an input, must be writable, and are locked for this run.
    const std::vector<std::string> inputs = {o->lm.model, o->lm.tokenizer, o->recipe_file};
    CheckOutputPath(o->out, inputs, "--out");
    StagedFolder::CheckReplaceable(o->out, kReportName, "--out");
    if (!o->gguf_path.empty()) CheckOutputPath(o->gguf_path, inputs, "--gguf");
    const OutputLock lock(o->out);
    std::string source;
    const QuantizeRecipe recipe = RecipeWithFlags(o->recipe_file, o->flags, source);
    LmQuantizeOptions options = BuildQuantizeOptions(recipe, source);
    const auto type_of = [](const std::string& name, const char* flag) {
      const auto type = ParseQuantType(name);
      if (!type) throw UsageError(fmt::format("{} {}: not a format of `atq formats`", flag, name));
      return *type;
    };
    const std::optional<QuantType> gguf_type =
        o->gguf_type.empty() ? std::nullopt : std::optional<QuantType>(type_of(o->gguf_type, "--gguf-type"));
    const QuantType gguf_embeddings = type_of(o->gguf_embeddings, "--gguf-embeddings");
    const int64_t shard_bytes = ParseByteSize(o->shard_size, "--shard-size");

    // The model is read a block at a time and both outputs are written as each block is done: memory holds one
    // block, not the model (a llama2.c file is small and read whole).
    LmCliOptions load = o->lm;
    load.deferred = true;
    LanguageModel lm = LoadLmFromCli(load);
    Require(lm.tokenizer != nullptr, "{}: no tokenizer found for this model; give one with --tokenizer", o->lm.model);
    CausalLmImpl& model = *lm.model;
    if (!o->gguf_path.empty()) CheckGgufWritable(model.config(), o->gguf_path);
    // Every layer's grid is known before the outputs write their headers: mixed precision chooses them first.
    const nlohmann::json mixed_plan = ResolveMixedPrecision(model, *lm.tokenizer, options, lm.weights.get());

    PackedLmOptions pack;
    pack.float_type = *ParseQuantType(o->float_type);
    namespace fs = std::filesystem;
    pack.tokenizer_dir = fs::is_directory(lm.tokenizer_source) ? lm.tokenizer_source : "";
    pack.recipe = RecipeJson(recipe);
    pack.max_shard_bytes = static_cast<uint64_t>(shard_bytes);
    // The folder is written whole: into a staging folder, put in place at the end (never a mix of two runs).
    StagedFolder staged(o->out, kReportName);
    PackedLmWriter packed_writer(model.config(), PackedLmPlan(model, PlannedLayouts(model, options)), staged.path(),
                                 pack);
    std::unique_ptr<LmGgufStream> gguf;
    if (!o->gguf_path.empty()) {
      Require(!pack.tokenizer_dir.empty(), "--gguf needs the model's vocabulary from a tokenizer folder (tokenizer.json, "
                                           "or encoder.json + vocab.bpe / vocab.json + merges.txt); this model's "
                                           "tokenizer came from {}",
              lm.tokenizer_source);
      gguf = std::make_unique<LmGgufStream>(model.config(), ParameterShapeGroups(model), pack.tokenizer_dir,
                                            QuantizedGgufOptions(model, options, gguf_type, gguf_embeddings),
                                            o->gguf_path);
    }
    LmQuantizeStream stream;
    stream.weights = lm.weights.get();
    stream.write = [&](const std::vector<LmTensorData>& group) {
      packed_writer.Write(group);
      if (gguf) gguf->Write(group);
    };
    LmQuantizeResult result = QuantizeLanguageModel(model, *lm.tokenizer, options, &stream);
    result.mixed_plan = mixed_plan;
    PrintLayerTable(result);
    const PackedLmSizes sizes = packed_writer.Commit();

    nlohmann::json report = result.ToJson();
    report["model"] = lm.Describe();
    report["recipe"] = pack.recipe;
    report["peak_resident_bytes"] = PeakResidentBytes();
    report["output"] = {{"dir", o->out},
                        {"file_bytes", sizes.file_bytes},
                        {"files", sizes.files},
                        {"packed_bytes", sizes.packed_bytes},
                        {"float_bytes", sizes.float_bytes},
                        {"float_type", o->float_type}};
    fmt::print("{} layers, {:.3f} bits per weight; weights {:.2f} MB in {} file(s) (packed {:.2f} MB, {} {:.2f} MB); "
               "calibration {} tokens; {:.1f} s\n",
               result.layers.size(), report["bits_per_weight"].get<double>(), sizes.file_bytes / 1e6, sizes.files,
               sizes.packed_bytes / 1e6, o->float_type, sizes.float_bytes / 1e6, result.calibration_tokens,
               result.total_seconds);
    if (gguf) {
      const LmGgufExport exported(gguf->Commit());
      for (const LmGgufTensorReport& tensor : exported.report.tensors) {
        if (!tensor.fallback_reason.empty()) fmt::print("gguf: {}: {}\n", tensor.gguf_name, tensor.fallback_reason);
      }
      report["gguf"] = exported.ToJson();
      report["gguf"]["path"] = o->gguf_path;
      fmt::print("gguf: {} ({:.2f} MB); largest re-quantization error of a layer vs atq's weights {:.3e}\n",
                 o->gguf_path, exported.report.file_bytes / 1e6, exported.max_requantization_error);
    }
    WriteFileAtomically((fs::path(staged.path()) / kReportName).string(), report.dump(2) + "\n");
    staged.Commit();
    fmt::print("packed checkpoint: {}\nreport: {}\n", o->out, (fs::path(o->out) / kReportName).string());
    return 0;
  };
}

}  // namespace atq::cli
