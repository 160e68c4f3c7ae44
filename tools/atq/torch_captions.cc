// atq captions: the English captions the image-text models train and evaluate on (assets/captions/), per class and
// split, drawn by the seeded generator as training and evaluation draw them.
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "data/captions.h"
#include "io/atomic_file.h"

namespace atq::cli {

RunFn DeclareCaptions(CLI::App& app) {
  struct Options {
    std::string dataset = "fashion_mnist";
    std::string file;
    std::string split = "train";
    int64_t per_class = 3;
    uint64_t seed = 0;
    std::string json_path;
  };
  auto options = std::make_shared<Options>();
  app.add_option("--dataset", options->dataset, "Dataset whose caption file (assets/captions/DATASET.yaml) to read")
      ->capture_default_str();
  app.add_option("--file", options->file, "A caption file of your own instead (the format of assets/captions/)");
  app.add_option("--split", options->split, "train, or held_out (the wordings evaluation uses)")
      ->check(CLI::IsMember({"train", "held_out"}))
      ->capture_default_str();
  app.add_option("--per-class", options->per_class, "Captions drawn per class (examples 0, 1, ... of the class)")
      ->check(CountFrom(0))
      ->capture_default_str();
  app.add_option("--seed", options->seed, "Seed of the caption generator")->capture_default_str();
  app.add_option("--json", options->json_path, "Write the captions and the counts as JSON here");
  return [options] {
    const std::string path = options->file.empty() ? CaptionFileFor(options->dataset) : options->file;
    const CaptionSet set = LoadCaptionSet(path);
    const CaptionSplit split = options->split == "train" ? CaptionSplit::kTrain : CaptionSplit::kHeldOut;
    const int s = static_cast<int>(split);
    const CaptionGenerator generator(set, split, options->seed);
    nlohmann::json report = {{"file", path},
                             {"split", CaptionSplitName(split)},
                             {"seed", options->seed},
                             {"templates", set.templates[s].size()},
                             {"classes", nlohmann::json::array()}};
    fmt::print("{}: {} classes, {} {} templates\n", path, set.classes(), set.templates[s].size(),
               CaptionSplitName(split));
    for (int label = 0; label < set.classes(); ++label) {
      nlohmann::json entry = {{"label", label},
                              {"name", set.class_names[static_cast<size_t>(label)]},
                              {"descriptions", set.descriptions[s][static_cast<size_t>(label)].size()},
                              {"prompts", generator.Prompts(label).size()},
                              {"captions", nlohmann::json::array()}};
      fmt::print("{} {} ({} descriptions):\n", label, set.class_names[static_cast<size_t>(label)],
                 set.descriptions[s][static_cast<size_t>(label)].size());
      for (int64_t index = 0; index < options->per_class; ++index) {
        const std::string caption = generator.Caption(label, index);
        fmt::print("  {}\n", caption);
        entry["captions"].push_back(caption);
      }
      report["classes"].push_back(entry);
    }
    if (!options->json_path.empty()) WriteFileAtomically(options->json_path, report.dump(2) + "\n");
    return 0;
  };
}

}  // namespace atq::cli
