// Command-line flags that each set one key of a settings map (a quantization recipe), declared as a table so
// that a recipe file and the flags mean the same.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

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

}  // namespace atq::cli
