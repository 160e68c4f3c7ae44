// Typed values from settings text (recipe files, sweep files), with errors that say where the text came from.
#pragma once

#include <cstdint>
#include <string>

namespace atq {

// Each throws atq::Error "WHERE: 'VALUE' is not ..." unless the whole text is one value of the type.
int64_t ParseInt(const std::string& value, const std::string& where);
double ParseDouble(const std::string& value, const std::string& where);
bool ParseBool(const std::string& value, const std::string& where);  // true/yes/on/1, false/no/off/0

}  // namespace atq
