// Command-line flags that each set one key of a settings map (a quantization recipe), declared as a table so
// that a recipe file and the flags mean the same.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "quant/recipe.h"

namespace atq::cli {

struct SettingFlag {
  const char* flag;
  const char* key;
  const char* help;
  const char* value;  // switches: the value the switch sets; nullptr for options taking a value
};

// Adds every flag of `table` to an app; Settings() gives the keys the command line set.
class SettingFlags {
 public:
  explicit SettingFlags(const std::vector<SettingFlag>& table) : table_(table) {}
  void Add(CLI::App& app);
  std::map<std::string, std::string> Settings() const;

 private:
  const std::vector<SettingFlag>& table_;
  std::vector<std::string> values_;
  std::vector<CLI::Option*> options_;
};

// The flags that describe a layer's grid (--bits, --ternary, --format, --granularity, --threshold, ...), shared by
// every command that quantizes (quantize, qat) so that they mean the same.
const std::vector<SettingFlag>& GridFlags();
// GridFlags() followed by `own`.
std::vector<SettingFlag> WithGridFlags(const std::vector<SettingFlag>& own);

// The recipe a command runs: the recipe file's settings (when given), with the flags given on the command line
// over them; a grid flag (--bits, --ternary, --format) replaces the file's grid as a whole. A bad or contradictory
// flag is a usage error (exit 2) before anything loads. `source` is set to what the recipe came from.
QuantizeRecipe RecipeWithFlags(const std::string& recipe_file, const SettingFlags& flags, std::string& source);

}  // namespace atq::cli
