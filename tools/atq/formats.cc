// atq formats: the format table as text or JSON.
#include <cstdio>
#include <iostream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "command.h"
#include "formats/quant_type.h"

namespace atq::cli {
namespace {

const char* FamilyName(TypeFamily family) {
  switch (family) {
    case TypeFamily::kFloat: return "float";
    case TypeFamily::kInteger: return "integer";
    case TypeFamily::kGgmlBlock: return "ggml-block";
    case TypeFamily::kTernary: return "ternary";
    case TypeFamily::kUniform: return "uniform";
  }
  return "?";
}

}  // namespace

RunFn DeclareFormats(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  app.add_flag("--json", *json, "Print JSON instead of a table");
  return [json] {
    if (*json) {
      nlohmann::json rows = nlohmann::json::array();
      for (const TypeTraits& t : AllTypes()) {
        rows.push_back({{"id", static_cast<uint32_t>(t.type)},
                        {"name", t.name},
                        {"family", FamilyName(t.family)},
                        {"block_size", t.block_size},
                        {"bytes_per_block", t.bytes_per_block},
                        {"bits_per_weight", t.bits_per_weight},
                        {"quantized", t.is_quantized},
                        {"description", t.description}});
      }
      std::cout << rows.dump(2) << "\n";
      return 0;
    }
    fmt::print("{:>4}  {:<6} {:<10} {:>5} {:>6} {:>7}  {}\n", "id", "name", "family", "block", "bytes", "bpw",
               "description");
    for (const TypeTraits& t : AllTypes()) {
      fmt::print("{:>4}  {:<6} {:<10} {:>5} {:>6} {:>7.4g}  {}\n", static_cast<uint32_t>(t.type), t.name,
                 FamilyName(t.family), t.block_size, t.bytes_per_block, t.bits_per_weight, t.description);
    }
    fmt::print("\natq types (t2, t1.6, u*) keep float32 scales outside the blocks: per tensor, per output channel\n"
               "or per group; their bits per weight above count codes only.\n");
    return 0;
  };
}

}  // namespace atq::cli
