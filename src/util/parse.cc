// ParseInt, ParseDouble, ParseBool.
#include "util/parse.h"

#include <charconv>
#include <cstdint>
#include <exception>
#include <utility>

#include "util/error.h"

namespace atq {

int64_t ParseInt(const std::string& value, const std::string& where) {
  int64_t out = 0;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), out);
  Require(error == std::errc() && end == value.data() + value.size(), "{}: '{}' is not an integer", where, value);
  return out;
}

double ParseDouble(const std::string& value, const std::string& where) {
  size_t used = 0;
  double out = 0;
  try {
    out = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  Require(used == value.size() && !value.empty(), "{}: '{}' is not a number", where, value);
  return out;
}

bool ParseBool(const std::string& value, const std::string& where) {
  if (value == "true" || value == "yes" || value == "on" || value == "1") return true;
  if (value == "false" || value == "no" || value == "off" || value == "0") return false;
  Fail("{}: '{}' is not true or false", where, value);
}

int64_t ParseByteSize(const std::string& value, const std::string& where) {
  static const std::pair<const char*, int64_t> kUnits[] = {
      {"KiB", int64_t{1} << 10}, {"MiB", int64_t{1} << 20}, {"GiB", int64_t{1} << 30}, {"TB", 1'000'000'000'000},
      {"GB", 1'000'000'000},     {"MB", 1'000'000},         {"KB", 1'000},           {"B", 1}};
  for (const auto& [unit, factor] : kUnits) {
    const std::string suffix(unit);
    if (value.size() > suffix.size() && value.compare(value.size() - suffix.size(), suffix.size(), suffix) == 0) {
      const int64_t count = ParseInt(value.substr(0, value.size() - suffix.size()), where);
      Require(count > 0 && count <= INT64_MAX / factor, "{}: '{}' is not a positive size that fits 64 bits", where, value);
      return count * factor;
    }
  }
  const int64_t count = ParseInt(value, where);
  Require(count > 0, "{}: '{}' is not a positive size", where, value);
  return count;
}

}  // namespace atq
