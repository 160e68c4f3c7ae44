// atq perplexity MODEL --text FILE --ctx N [--stride S] [--protocol P]: perplexity, mean NLL, tokens scored,
// tokens/s, as a line and as JSON.
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "eval/perplexity.h"
#include "io/atomic_file.h"
#include "torch_lm_options.h"
#include "util/error.h"
#include "util/memory.h"
#include "torch/caching_allocator.h"

namespace atq::cli {

RunFn DeclarePerplexity(CLI::App& app) {
  struct Options {
    LmCliOptions lm;
    std::string text;
    std::string protocol;
    int64_t ctx = 512;
    int64_t stride = 0;
    int64_t batch = 4;
    int64_t max_windows = 0;
    std::string json_path;
  };
  auto o = std::make_shared<Options>();
  AddLmOptions(app, o->lm);
  AddLmRuntimeOption(app, o->lm);
  app.add_option("--text", o->text, "The text file to score (UTF-8, tokenized whole)")->required();
  app.add_option("--ctx", o->ctx, "Window length in tokens")->check(CountFrom(1))->capture_default_str();
  app.add_option("--stride", o->stride, "Sliding windows start every S tokens (implies --protocol sliding)")->check(CountFrom(1));
  app.add_option("--protocol", o->protocol,
                 "chunked (non-overlapping windows, tokens 1..ctx-1 scored), sliding (every token once, with up to "
                 "ctx-1 tokens of context), or llama.cpp (BOS first in each chunk where the vocabulary adds BOS, second half scored); default "
                 "chunked, or sliding when --stride is given")
      ->check(CLI::IsMember({"chunked", "sliding", "llama.cpp"}));
  app.add_option("--batch", o->batch, "Windows per forward pass")->check(CountFrom(1))->capture_default_str();
  app.add_option("--max-windows", o->max_windows, "Score only the first N windows (0: all)")->check(CountFrom(0))->capture_default_str();
  app.add_option("--json", o->json_path, "Write the result as JSON here");
  return [o] {
    UseCachingCpuAllocator();  // a step's large tensors reuse freed blocks instead of fresh pages
    PerplexityOptions options;
    options.protocol = ParsePerplexityProtocol(o->protocol.empty() ? (o->stride > 0 ? "sliding" : "chunked") : o->protocol);
    if (o->stride > 0 && options.protocol != PerplexityProtocol::kSliding) {
      throw UsageError("--stride only applies to --protocol sliding");
    }
    options.ctx = o->ctx;
    options.stride = o->stride;
    options.batch = o->batch;
    options.max_windows = o->max_windows;
    const LanguageModel lm = LoadLmFromCli(o->lm);
    Require(lm.tokenizer != nullptr, "{}: no tokenizer found for this model; give one with --tokenizer", o->lm.model);
    const std::vector<int32_t> tokens = EncodeFile(*lm.tokenizer, o->text);
    // BOS where the vocabulary adds it (llama.cpp's add_bos: the file's flag, else the vocabulary kind's default).
    const int32_t bos = lm.tokenizer->add_bos() ? lm.tokenizer->bos_id() : -1;
    const PerplexityResult result = MeasurePerplexity(*lm.model, tokens, options, bos);
    fmt::print("perplexity {:.4f}  mean NLL {:.6f}  scored {} tokens in {} windows  ({} protocol, ctx {})  "
               "{:.0f} tokens/s  peak resident {:.1f} MB\n",
               result.perplexity, result.mean_nll, result.scored_tokens, result.windows,
               PerplexityProtocolName(options.protocol), options.ctx, result.tokens_per_second,
               PeakResidentBytes() / 1e6);
    if (!o->json_path.empty()) {
      nlohmann::json json = result.ToJson(options);
      json["model"] = lm.Describe();
      json["text"] = o->text;
      json["device"] = o->lm.device;
      json["dtype"] = o->lm.dtype;
      json["peak_resident_bytes"] = PeakResidentBytes();
      WriteFileAtomically(o->json_path, json.dump(2) + "\n");
      fmt::print("results: {}\n", o->json_path);
    }
    return 0;
  };
}

}  // namespace atq::cli
