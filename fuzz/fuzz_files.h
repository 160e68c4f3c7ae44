// Shared by the fuzz targets whose readers take paths: the input written to a file, and a finding reported.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace atq::fuzz {

// Prints "TARGET: WHAT" and aborts, so libFuzzer keeps the input as a finding.
[[noreturn]] inline void Die(const char* target, const char* what) {
  std::fprintf(stderr, "%s: %s\n", target, what);
  std::abort();
}

// False when the file cannot be written (the input is then skipped, not a finding).
inline bool WriteFile(const std::string& path, std::string_view bytes) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) return false;
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), file) == bytes.size();
  return std::fclose(file) == 0 && written;
}

}  // namespace atq::fuzz
