// atq inspect FILE|DIR: tensors, types, shapes, bytes, metadata and totals by type.
#include <iostream>
#include <memory>
#include <string>

#include "command.h"
#include "report/inspect.h"

namespace atq::cli {

RunFn DeclareInspect(CLI::App& app) {
  struct Options {
    std::string path;
    bool json = false;
    size_t max_array = 8;
  };
  auto options = std::make_shared<Options>();
  app.add_option("path", options->path, "safetensors file, model.safetensors.index.json, model folder, or GGUF")
      ->required();
  app.add_flag("--json", options->json, "Print JSON");
  app.add_option("--max-array", options->max_array, "Show at most this many elements of a metadata array")
      ->capture_default_str();
  return [options] {
    const TensorFile file = TensorFile::Open(options->path);
    if (options->json) {
      const nlohmann::json description = DescribeTensorFile(file, options->max_array);
      std::cout << description.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    } else {
      std::cout.flush();
      PrintInspection(file, options->max_array, stdout);
    }
    return 0;
  };
}

}  // namespace atq::cli
