// atq generate MODEL --prompt TEXT --max-tokens N --temperature T --top-p P --seed S: streams the continuation,
// then the speed (time to first token, decode tokens/s).
#include <cstdio>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "io/atomic_file.h"
#include "runtime/generate.h"
#include "torch_lm_options.h"
#include "util/error.h"
#include "util/memory.h"

namespace atq::cli {

RunFn DeclareGenerate(CLI::App& app) {
  struct Options {
    LmCliOptions lm;
    std::string prompt;
    GenerateOptions generate;
    bool no_bos = false;
    std::string json_path;
  };
  auto o = std::make_shared<Options>();
  AddLmOptions(app, o->lm);
  AddLmRuntimeOption(app, o->lm);
  app.add_option("--prompt", o->prompt, "Text to continue (empty: start from BOS)");
  app.add_option("--max-tokens", o->generate.max_tokens, "New tokens at most")->check(CountFrom(0))->capture_default_str();
  app.add_option("--temperature", o->generate.temperature, "0 for greedy")->capture_default_str();
  app.add_option("--top-p", o->generate.top_p, "Nucleus sampling mass")->capture_default_str();
  app.add_option("--seed", o->generate.seed, "Sampling seed")->capture_default_str();
  app.add_flag("--no-bos", o->no_bos, "Do not put BOS before a non-empty prompt (GPT-2 style models never get one)");
  app.add_option("--json", o->json_path, "Write prompt ids, generated ids, text and speed as JSON here");
  return [o] {
    const LanguageModel lm = LoadLmFromCli(o->lm);
    Require(lm.tokenizer != nullptr, "{}: no tokenizer found for this model; give one with --tokenizer", o->lm.model);
    const Tokenizer& tokenizer = *lm.tokenizer;
    std::vector<int32_t> prompt;
    // Llama-family vocabularies (BOS distinct from EOS) expect BOS first, as llama.cpp and run.c do; GPT-2's
    // single <|endoftext|> only opens an empty prompt.
    const bool separate_bos = tokenizer.bos_id() >= 0 && tokenizer.bos_id() != tokenizer.eos_id();
    if (tokenizer.bos_id() >= 0 && (o->prompt.empty() || (separate_bos && !o->no_bos))) {
      prompt.push_back(tokenizer.bos_id());
    }
    for (int32_t id : tokenizer.Encode(o->prompt)) prompt.push_back(id);
    Require(!prompt.empty(), "an empty prompt needs a BOS token, and this vocabulary has none");
    GenerateOptions options = o->generate;
    for (int32_t stop : {tokenizer.eos_id(), tokenizer.bos_id()}) {
      if (stop >= 0) options.stop_tokens.push_back(stop);
    }
    std::fwrite(o->prompt.data(), 1, o->prompt.size(), stdout);
    int32_t previous = prompt.back();
    const GenerateResult result = Generate(*lm.model, prompt, options, [&](int32_t token) {
      const std::string piece = tokenizer.DecodeToken(token, previous);
      previous = token;
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::fputc('\n', stdout);
    std::fflush(stdout);
    std::fprintf(stderr, "%zu tokens (%s); time to first token %.3f s; decode %.1f tokens/s; peak resident %.1f MB\n",
                 result.tokens.size(), result.stop_reason.c_str(), result.prefill_seconds,
                 result.decode_tokens_per_second, PeakResidentBytes() / 1e6);
    if (!o->json_path.empty()) {
      const nlohmann::json json = {{"model", lm.Describe()},
                                   {"prompt", o->prompt},
                                   {"prompt_ids", prompt},
                                   {"generated_ids", result.tokens},
                                   {"text", tokenizer.Decode(result.tokens)},
                                   {"stop_reason", result.stop_reason},
                                   {"temperature", options.temperature},
                                   {"top_p", options.top_p},
                                   {"seed", options.seed},
                                   {"time_to_first_token_seconds", result.prefill_seconds},
                                   {"decode_tokens_per_second", result.decode_tokens_per_second},
                                   {"peak_resident_bytes", PeakResidentBytes()}};
      // Generated text may hold partial UTF-8 sequences; JSON gets U+FFFD there.
      WriteFileAtomically(o->json_path, json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }
    return 0;
  };
}

}  // namespace atq::cli
