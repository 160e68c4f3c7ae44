// atq roundtrip FILE: every weight matrix through every format; bits per weight, size and error.
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "io/atomic_file.h"
#include "report/roundtrip_report.h"
#include "type_list.h"
#include "util/error.h"

namespace atq::cli {
RunFn DeclareRoundtrip(CLI::App& app) {
  struct Options {
    std::string path;
    bool synthetic = false;
    std::string types;
    std::string granularity = "channel";
    int64_t group_size = 128;
    std::string json_path;
  };
  auto options = std::make_shared<Options>();
  app.add_option("path", options->path, "safetensors file or folder, or GGUF");
  app.add_flag("--synthetic", options->synthetic, "Use seeded synthetic weights instead of a file");
  app.add_option("--types", options->types, "Comma-separated formats (default: every quantizable format)");
  app.add_option("--granularity", options->granularity, "Scales of atq's own formats: tensor, channel or group")
      ->check(CLI::IsMember({"tensor", "channel", "group"}))
      ->capture_default_str();
  app.add_option("--group-size", options->group_size, "Weights per scale group for --granularity group")
      ->check(CountFrom(1))
      ->capture_default_str();
  app.add_option("--json", options->json_path, "Also write the results as JSON to this file");
  return [options] {
    if (options->path.empty() == !options->synthetic) throw UsageError("give a file or --synthetic (one of them)");
    RoundtripOptions study_options;
    study_options.types = ParseTypeList(options->types, "--types", true);
    study_options.granularity = options->granularity == "tensor"  ? Granularity::kTensor
                                : options->granularity == "group" ? Granularity::kGroup
                                                                  : Granularity::kChannel;
    study_options.group_size = options->group_size;
    RoundtripStudy study;
    if (options->synthetic) {
      study = RunRoundtrip("synthetic weights (seed 1)", SyntheticWeightMatrices(1), study_options);
    } else {
      const TensorFile file = TensorFile::Open(options->path);
      study = RunRoundtrip(options->path, WeightMatrices(file), study_options);
    }
    std::cout << FormatRoundtripTable(study);
    if (!options->json_path.empty()) WriteFileAtomically(options->json_path, RoundtripJson(study).dump(2) + "\n");
    return 0;
  };
}

}  // namespace atq::cli
