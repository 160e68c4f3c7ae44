// ParseInt, ParseDouble, ParseBool.
#include "util/parse.h"

#include <charconv>
#include <exception>

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

}  // namespace atq
