// atq export CHECKPOINT --format ternary2|ternary1.6 --out FILE: the packed model.
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "models/packed_classifier.h"
#include "io/output_path.h"

namespace atq::cli {

RunFn DeclareExport(CLI::App& app) {
  struct Options {
    std::string checkpoint;
    std::string format = "ternary2";
    std::string out;
  };
  auto o = std::make_shared<Options>();
  app.add_option("checkpoint", o->checkpoint, "A ternary checkpoint folder from `atq train --mode ternary`")
      ->required();
  app.add_option("--format", o->format, "ternary2 (4 weights per byte) or ternary1.6 (5 per byte)")
      ->check(CLI::IsMember({"ternary2", "ternary1.6", "t2", "t1.6"}))
      ->capture_default_str();
  app.add_option("--out", o->out, "The packed file (safetensors container)")->required();
  return [o] {
    CheckOutputPath(o->out, {o->checkpoint}, "--out");
    const OutputLock lock(o->out);
    const QuantType type =
        (o->format == "ternary1.6" || o->format == "t1.6") ? QuantType::kTernary1_6 : QuantType::kTernary2;
    const LoadedClassifier loaded = LoadClassifier(o->checkpoint);
    const int64_t bytes = ExportPackedClassifier(loaded, type, o->out);
    int64_t fp32_bytes = 0;
    for (const auto& parameter : loaded.model->named_parameters()) fp32_bytes += 4 * parameter.value().numel();
    fmt::print("{}: {} bytes ({} packing), {:.2f}x smaller than the {} bytes of FP32 parameters\n", o->out, bytes,
               TypeName(type), static_cast<double>(fp32_bytes) / bytes, fp32_bytes);
    return 0;
  };
}

}  // namespace atq::cli
