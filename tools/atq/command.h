// The atq command table: each subcommand lives in its own file, declares its options once with CLI11 and
// returns the function that runs it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace atq::cli {

// Runs a parsed command; returns the process exit status (0 success, 1 failure).
using RunFn = std::function<int()>;

struct Command {
  const char* name;
  const char* help;
  RunFn (*declare)(CLI::App& app);  // adds the command's options to `app`, returns its runner
  bool float_math = false;          // runs libtorch's matrix products (OpenBLAS): main checks its kernels first
};

const std::vector<Command>& AllCommands();

// --threads N: 0 (every core) up to MaxThreads(); more is a usage error instead of a pool that cannot start.
int MaxThreads();  // 8 x the machine's cores: room for oversubscription experiments, far below thread limits
CLI::Validator ThreadCount();
// Whole numbers >= `minimum` (counts: 0 or 1), with a plain message ("-5 is not a whole number >= 0").
CLI::Validator CountFrom(int64_t minimum);
// A finite number in [low, high] (NaN and infinity refused by name).
CLI::Validator FiniteIn(double low, double high);

// `option` takes one of the names of `choices` and stores its value (an enum or bool); --help shows
// "{name,...}=default" and a wrong name gets "--flag: 'x' is not one of {name,...}", where CLI11's
// CheckedTransformer shows its internal mapping ("ENUM:value in {name->0,...} OR {0,...}").
template <class T>
CLI::Option* Choices(CLI::Option* option, const std::map<std::string, T>& choices) {
  std::string names;
  for (const auto& choice : choices) names += (names.empty() ? "" : ",") + choice.first;
  names = "{" + names + "}";
  CLI::Validator name_to_value(
      [choices, names](std::string& input) -> std::string {
        const auto found = choices.find(input);
        if (found == choices.end()) return "'" + input + "' is not one of " + names;
        input = std::to_string(static_cast<long long>(found->second));  // as CLI11 parses an enum or a bool
        return {};
      },
      "");
  return option->transform(name_to_value)->type_name(names);
}

RunFn DeclareVersion(CLI::App& app);
RunFn DeclareFormats(CLI::App& app);
RunFn DeclareBench(CLI::App& app);
RunFn DeclareInspect(CLI::App& app);
RunFn DeclareRoundtrip(CLI::App& app);
RunFn DeclareCorpus(CLI::App& app);
RunFn DeclareTokenize(CLI::App& app);
#ifdef ATQ_WITH_TORCH
RunFn DeclareTrain(CLI::App& app);
RunFn DeclareEvaluate(CLI::App& app);
RunFn DeclareExport(CLI::App& app);
RunFn DeclareGenerate(CLI::App& app);
RunFn DeclareLogits(CLI::App& app);
RunFn DeclarePerplexity(CLI::App& app);
RunFn DeclareTrainLm(CLI::App& app);
RunFn DeclareQat(CLI::App& app);
RunFn DeclareQuantize(CLI::App& app);
RunFn DeclareConvert(CLI::App& app);
RunFn DeclareSynth(CLI::App& app);
RunFn DeclareSweep(CLI::App& app);
RunFn DeclarePtq(CLI::App& app);
RunFn DeclareSensitivity(CLI::App& app);
RunFn DeclarePareto(CLI::App& app);
RunFn DeclareCaptions(CLI::App& app);
RunFn DeclareTrainImageText(CLI::App& app);
RunFn DeclareEvalImageText(CLI::App& app);
RunFn DeclareTrainDiffusion(CLI::App& app);
RunFn DeclareGenerateImage(CLI::App& app);
RunFn DeclareEvalDiffusion(CLI::App& app);
#endif

}  // namespace atq::cli
