// Typed values from settings text (recipe files, sweep files), with errors that say where the text came from.
#pragma once

#include <cstdint>
#include <string>

namespace atq {

// Each throws atq::Error "WHERE: 'VALUE' is not ..." unless the whole text is one value of the type.
int64_t ParseInt(const std::string& value, const std::string& where);
double ParseDouble(const std::string& value, const std::string& where);
bool ParseBool(const std::string& value, const std::string& where);  // true/yes/on/1, false/no/off/0
// A byte count: a whole number with an optional decimal unit (B, KB, MB, GB, TB: powers of 1000, as
// transformers' max_shard_size counts) or binary one (KiB, MiB, GiB), e.g. "5GB", "200MB", "4096".
int64_t ParseByteSize(const std::string& value, const std::string& where);

}  // namespace atq
