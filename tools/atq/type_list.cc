// Parsing of --types lists against the format table.
#include "type_list.h"

#include "util/error.h"
#include "util/strings.h"

namespace atq::cli {

std::vector<QuantType> ParseTypeList(const std::string& list, const std::string& flag, bool quantizable_only) {
  std::vector<QuantType> types;
  for (const std::string& name : Split(list, ',')) {
    if (name.empty()) continue;
    const auto type = ParseQuantType(name);
    if (!type) throw UsageError(flag + ": unknown format '" + name + "' (see `atq formats`)");
    if (quantizable_only && Traits(*type).quantize == nullptr) throw UsageError(flag + ": " + name + " is a storage type");
    types.push_back(*type);
  }
  return types;
}

}  // namespace atq::cli
