// One load and pack per weight format, then a warm-up and timed greedy generations.
#include "runtime/lm_speed.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "formats/quant_type.h"
#include "models/lm_loader.h"
#include "runtime/device_model.h"
#include "runtime/generate.h"
#include "runtime/packed_runtime.h"
#include "util/error.h"
#include "util/memory.h"

namespace atq {
namespace {

PackedRuntimeOptions VariantOptions(const std::string& variant) {
  const auto type = ParseQuantType(variant);
  Require(type.has_value(), "model speed: unknown format '{}'", variant);
  const TypeFamily family = Traits(*type).family;
  PackedRuntimeOptions options;
  options.linear_type = *type;
  options.embedding_type =
      family == TypeFamily::kTernary || *type == QuantType::kTQ1_0 || *type == QuantType::kTQ2_0 ? QuantType::kQ8_0
                                                                                                  : *type;
  return options;
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t middle = values.size() / 2;
  return values.size() % 2 == 1 ? values[middle] : 0.5 * (values[middle - 1] + values[middle]);
}

constexpr const char* kPromptText =
    "It was a bright cold day in April, and the clocks were striking thirteen. The old man walked slowly along the "
    "river, looking at the boats and thinking about the long winter that had passed. ";

}  // namespace

nlohmann::json MeasureLmSpeed(const std::string& model_path, const LmSpeedOptions& options) {
  if (options.device != Device::kCpu) BackendFor(options.device);  // why it cannot run here, before any load
  nlohmann::json rows = nlohmann::json::array();
  if (options.on_line) {
    options.on_line(fmt::format("{:<7} {:>6} {:>10} {:>12} {:>9} {:>11} {:>9}", "format", "bits", "model MB",
                                "prefill t/s", "TTFT ms", "decode t/s", "RSS MB"));
  }
  for (const std::string& variant : options.variants) {
    // "file": the model as stored, run from its mapping (packed and f16/bf16 weights in place); "torch": float32
    // through libtorch; a format: every linear layer re-quantized to it.
    LmLoadOptions load;
    load.keep_packed = variant == "file";
    LanguageModel lm = LoadLanguageModel(model_path, load);
    CausalLmImpl& model = *lm.model;
    int64_t parameters = 0;
    for (const auto& p : model.parameters()) parameters += p.numel();
    PackedRuntimeSizes sizes = RuntimeSizes(model);
    if (variant == "file") {
      if (!lm.packed.empty()) sizes = AttachPackedWeights(model, std::move(lm.packed));
    } else if (variant != "torch") {
      sizes = PackForRuntime(model, VariantOptions(variant));
    }
    std::vector<int32_t> prompt;
    // Speed does not depend on which tokens: a model without a tokenizer gets a fixed spread of ids.
    const int64_t vocab = model.config().vocab_size;
    for (int64_t i = 0; !lm.tokenizer && i < options.prompt_tokens; ++i) {
      prompt.push_back(static_cast<int32_t>((i * 7919 + 1) % vocab));
    }
    while (static_cast<int64_t>(prompt.size()) < options.prompt_tokens) {
      for (int32_t token : lm.tokenizer->Encode(kPromptText)) prompt.push_back(token);
    }
    prompt.resize(static_cast<size_t>(options.prompt_tokens));
    GenerateOptions generate;
    generate.max_tokens = options.decode_tokens;
    Require(variant != "torch" || options.device == Device::kCpu,
            "model speed: the torch variant runs on the CPU only (drop it from the formats for --device {})",
            DeviceName(options.device));
    const std::shared_ptr<CausalLmImpl> placed =
        variant == "torch" ? lm.model : ForWholePasses(lm.model, options.device, options.runtime);
    const bool on_decoder = dynamic_cast<const DecoderLmImpl*>(placed.get()) != nullptr;
    GenerateOptions warm_up = generate;
    warm_up.max_tokens = std::min<int64_t>(generate.max_tokens, 2);
    Generate(*placed, prompt, warm_up);
    std::vector<double> prefill, decode;
    GenerateResult result;
    for (int64_t run = 0; run < std::max<int64_t>(1, options.repeats); ++run) {
      result = Generate(*placed, prompt, generate);
      prefill.push_back(result.prefill_seconds);
      decode.push_back(result.decode_tokens_per_second);
    }
    result.prefill_seconds = Median(prefill);
    result.decode_tokens_per_second = Median(decode);
    const int64_t model_bytes = sizes.packed_bytes + sizes.float_bytes;
    nlohmann::json row = {{"format", variant},
                          {"device", std::string(DeviceName(options.device))},
                          {"runtime", on_decoder ? "decoder" : "libtorch"},
                          {"bits_per_weight", 8.0 * static_cast<double>(model_bytes) / static_cast<double>(parameters)},
                          {"model_bytes", model_bytes},
                          {"packed_bytes", sizes.packed_bytes},
                          {"float_bytes", sizes.float_bytes},
                          {"prompt_tokens", options.prompt_tokens},
                          {"prefill_seconds", result.prefill_seconds},
                          {"prefill_tokens_per_second", static_cast<double>(options.prompt_tokens) / result.prefill_seconds},
                          {"time_to_first_token_ms", 1e3 * result.prefill_seconds},
                          {"decode_tokens", static_cast<int64_t>(result.tokens.size()) - 1},
                          // null where the prompt filled the model's context and nothing was left to decode
                          {"decode_tokens_per_second", result.tokens.size() > 1 ? nlohmann::json(result.decode_tokens_per_second)
                                                                                : nlohmann::json(nullptr)},
                          {"repeats", prefill.size()},
                          {"prefill_seconds_range", {*std::min_element(prefill.begin(), prefill.end()),
                                                     *std::max_element(prefill.begin(), prefill.end())}},
                          {"decode_tokens_per_second_range", {*std::min_element(decode.begin(), decode.end()),
                                                              *std::max_element(decode.begin(), decode.end())}},
                          {"resident_bytes_after", ResidentBytes()},
                          {"peak_resident_bytes_so_far", PeakResidentBytes()}};
    if (options.on_line && result.tokens.size() <= 1) {
      options.on_line(fmt::format("{}: the {}-token prompt fills the model's context of {} positions; no decode figure",
                                  variant, options.prompt_tokens, UsableContext(model.config())));
    }
    if (options.on_line) {
      options.on_line(fmt::format("{:<7} {:>6.2f} {:>10.1f} {:>12.1f} {:>9.1f} {:>11.1f} {:>9.0f}", variant,
                                  row["bits_per_weight"].get<double>(), model_bytes / 1e6,
                                  row["prefill_tokens_per_second"].get<double>(), 1e3 * result.prefill_seconds,
                                  result.decode_tokens_per_second, row["resident_bytes_after"].get<int64_t>() / 1e6));
    }
    rows.push_back(row);
  }
  return {{"model", model_path}, {"results", rows}};
}

}  // namespace atq
