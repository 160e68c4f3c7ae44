// The flags of `atq ptq` that set vision recipe keys (eval/vision_experiment.h), shared with `atq sensitivity`.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

namespace atq::cli {

// What the recipe flags collected; Settings() gives the keys the command line set.
class VisionRecipeFlags {
 public:
  void Add(CLI::App& app);
  std::map<std::string, std::string> Settings() const;

 private:
  std::vector<std::string> values_;
  std::vector<CLI::Option*> options_;
};

}  // namespace atq::cli
