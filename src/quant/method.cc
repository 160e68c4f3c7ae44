// The method table and its lookups.
#include "quant/method.h"

#include <fmt/format.h>

#include "util/error.h"

namespace atq {

const std::vector<QuantMethodRow>& QuantMethods() {
  static const std::vector<QuantMethodRow> methods = {RtnMethod(), AtqMethod(), GptqMethod()};
  return methods;
}

std::string QuantMethodNames() {
  std::vector<std::string_view> names;
  for (const QuantMethodRow& row : QuantMethods()) names.push_back(row.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

const QuantMethodRow& FindQuantMethod(std::string_view name) {
  for (const QuantMethodRow& row : QuantMethods()) {
    if (row.name == name) return row;
  }
  Fail("method '{}' is not one of {}", name, QuantMethodNames());
}

void ValidateMethod(std::string_view method, const WeightGrid& grid, bool calibrated, const std::string& where) {
  const QuantMethodRow* row = nullptr;
  try {
    row = &FindQuantMethod(method);
  } catch (const Error& error) {
    Fail("{}: {}", where, error.what());
  }
  Require(row->accepts(grid), "{}: {} does not round to {} ({})", where, row->name, DescribeGrid(grid),
          row->description);
  Require(!row->needs_hessian || calibrated, "{}: {} needs calibration data (samples > 0 and a text)", where,
          row->name);
}

const QuantMethodRow& MethodForGrid(std::string_view method, const WeightGrid& grid) {
  const QuantMethodRow& row = FindQuantMethod(method);
  return row.accepts(grid) ? row : FindQuantMethod(row.fallback);
}

}  // namespace atq
