// atq synth (--like NAME | --config FILE) --out DIR: a checkpoint shaped exactly like a real model, with seeded
// random weights of realistic scale, written shard by shard.
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "io/output_path.h"
#include "models/lm_synth.h"
#include "util/error.h"
#include "util/parse.h"

namespace atq::cli {

RunFn DeclareSynth(CLI::App& app) {
  struct Options {
    SynthOptions synth;
    std::string dtype = "bf16", shard_size;
  };
  auto o = std::make_shared<Options>();
  std::string presets;
  for (const SynthPreset& preset : LmSynthPresets()) presets += fmt::format("{}{}", presets.empty() ? "" : ", ", preset.name);
  app.add_option("--like", o->synth.like, "The model to copy the shape of: " + presets);
  app.add_option("--config", o->synth.config, "Or a config.json of any rotary family");
  app.add_option("--out", o->synth.out, "Folder to write")->required();
  app.add_option("--dtype", o->dtype, "bf16, f16 or f32")->capture_default_str();
  app.add_option("--shard-size", o->shard_size, "Largest shard, e.g. 5GB or 200MB (default: the model's own)");
  app.add_option("--layers", o->synth.layers, "Fewer layers than the model has, same shapes (default: all)");
  app.add_option("--seed", o->synth.seed, "Seed of the weights")->capture_default_str();
  app.add_option("--tokenizer", o->synth.tokenizer,
                 "Tokenizer folder to copy in (default: the preset's vocabulary from the set-up's data, if there)");
  return [o] {
    const auto dtype = ParseQuantType(o->dtype);
    if (!dtype) throw UsageError(fmt::format("--dtype {}: not a format of `atq formats`", o->dtype));
    o->synth.dtype = *dtype;
    if (!o->shard_size.empty()) o->synth.shard_bytes = ParseByteSize(o->shard_size, "--shard-size");
    CheckOutputPath(o->synth.out, {o->synth.config, o->synth.tokenizer}, "--out");
    const SynthReport report = SynthesizeCheckpoint(o->synth);
    fmt::print("{}: {} tensors, {:.3f} B parameters, {:.2f} GB in {} file(s), {:.1f} s\n", o->synth.out, report.tensors,
               static_cast<double>(report.parameters) / 1e9, static_cast<double>(report.bytes) / 1e9,
               report.files.size(), report.seconds);
    return 0;
  };
}

}  // namespace atq::cli
