// --types lists: comma-separated names from the format table.
#pragma once

#include <string>
#include <vector>

#include "formats/quant_type.h"

namespace atq::cli {

// Throws UsageError naming `flag` for an unknown name or (quantizable_only) a storage-only type.
std::vector<QuantType> ParseTypeList(const std::string& list, const std::string& flag, bool quantizable_only);

}  // namespace atq::cli
