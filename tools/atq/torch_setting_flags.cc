// SettingFlags: one CLI11 option or switch per table row.
#include "torch_setting_flags.h"

#include "util/error.h"

namespace atq::cli {

void SettingFlags::Add(CLI::App& app) {
  values_.resize(table_.size());
  for (size_t i = 0; i < table_.size(); ++i) {
    const SettingFlag& flag = table_[i];
    options_.push_back(flag.value ? app.add_flag(flag.flag, flag.help) : app.add_option(flag.flag, values_[i], flag.help));
  }
}

std::map<std::string, std::string> SettingFlags::Settings() const {
  std::map<std::string, std::string> settings;
  for (size_t i = 0; i < table_.size(); ++i) {
    if (options_[i]->count() > 0) settings[table_[i].key] = table_[i].value ? table_[i].value : values_[i];
  }
  return settings;
}

const std::vector<SettingFlag>& GridFlags() {
  static const std::vector<SettingFlag> flags = {
      {"--bits", "bits", "Uniform grid of B bits, 2..8 (default 4)", nullptr},
      {"--ternary", "ternary", "Ternary grid {-1, 0, +1} instead of uniform bits", "true"},
      {"--format", "format",
       "llama.cpp's q4_0, q8_0, tq2_0 or tq1_0 block grid instead of --bits (GGUF holds the weights exactly)", nullptr},
      {"--asym", "symmetric", "Asymmetric uniform grid (integer zero point per scale group)", "false"},
      {"--granularity", "granularity", "Scales per tensor, channel (output row) or group (default channel)", nullptr},
      {"--group-size", "group_size", "Weights per scale group along a row (sets --granularity group)", nullptr},
      {"--threshold", "threshold", "Ternary threshold rule: ratio (x mean|w|), sparsity (share of zeros) or magnitude; "
       "tq2_0/tq1_0 default to llama.cpp's absmax (scale max|w|, zero below half of it) and take the others too "
       "(scale the mean kept |w|, still exact in the GGUF)", nullptr},
      {"--threshold-value", "threshold_value", "The rule's value (default ratio 0.7)", nullptr},
      {"--base3", "base3", "Pack ternary codes 5 per byte (t1.6) instead of 4 (t2)", "true"},
  };
  return flags;
}

std::vector<SettingFlag> WithGridFlags(const std::vector<SettingFlag>& own) {
  std::vector<SettingFlag> flags = GridFlags();
  flags.insert(flags.end(), own.begin(), own.end());
  return flags;
}

QuantizeRecipe RecipeWithFlags(const std::string& recipe_file, const SettingFlags& flags, std::string& source) {
  QuantizeRecipe recipe;
  source = "command line";
  if (!recipe_file.empty()) {
    recipe = ReadRecipeFile(recipe_file);
    source = recipe_file;
  }
  QuantizeRecipe flags_only;
  for (const auto& [key, value] : flags.Settings()) flags_only.settings[key] = value;
  try {
    BuildQuantizeOptions(flags_only, "command line");
  } catch (const UsageError&) {
    throw;
  } catch (const Error& error) {
    throw UsageError(error.what());
  }
  // A grid flag replaces the recipe's grid as a whole (--ternary over a recipe's bits: 4 is an override, not a
  // contradiction).
  if (flags_only.settings.count("bits") || flags_only.settings.count("ternary") || flags_only.settings.count("format")) {
    for (const char* key : {"bits", "ternary", "format"}) recipe.settings.erase(key);
  }
  for (const auto& [key, value] : flags.Settings()) recipe.settings[key] = value;
  return recipe;
}

}  // namespace atq::cli
