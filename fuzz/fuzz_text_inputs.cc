// libFuzzer target for the text inputs users write or download: strict JSON (config.json, tokenizer and index
// files, checkpoint descriptions) and YAML (recipes, sweeps, energy tables). The first byte picks the parser.
// Only atq::Error may come out; anything else (a crash, another exception, a sanitizer report) is a finding.
#include <cstdint>
#include <string_view>

#include "io/strict_json.h"
#include "io/yaml_file.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    if (data[0] & 1) {
      atq::ParseYaml(text, "fuzz.yaml");
    } else {
      atq::ParseStrictJson(text, "fuzz.json");
    }
  } catch (const atq::Error&) {
  }
  return 0;
}
