// Helpers shared by atq's tests: finding the reference fixtures, scratch folders, whole-file reads and writes.
#pragma once

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <gtest/gtest.h>

#include "util/error.h"

namespace atq::testutil {

// The atq::Error message `parse()` throws; fails the test when it succeeds or throws anything else.
template <typename ParseFn>
std::string ErrorMessageOf(ParseFn parse) {
  try {
    parse();
  } catch (const ::atq::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected atq::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected atq::Error, but the input parsed";
  return "";
}

// Expects the error to name `file` and contain every needle.
inline void ExpectErrorNaming(const std::string& message, const std::string& file,
                              const std::vector<std::string>& needles) {
  EXPECT_NE(message.find(file), std::string::npos) << message;
  for (const std::string& needle : needles) EXPECT_NE(message.find(needle), std::string::npos) << message;
}

// The fixtures folder: $ATQ_FIXTURES, else ATQ_SOURCE_DIR/../shared/fixtures (ATQ_SOURCE_DIR from the compile
// definition, else the environment). std::nullopt when neither exists.
inline std::optional<std::string> FixturesDir() {
  namespace fs = std::filesystem;
  std::error_code error;
  if (const char* env = std::getenv("ATQ_FIXTURES"); env != nullptr && *env != '\0') {
    if (fs::is_directory(env, error)) return std::string(env);
    return std::nullopt;  // an explicit setting that is wrong should not silently fall back
  }
  std::string source_dir;
#ifdef ATQ_SOURCE_DIR
  source_dir = ATQ_SOURCE_DIR;
#endif
  if (source_dir.empty()) {
    if (const char* env = std::getenv("ATQ_SOURCE_DIR"); env != nullptr) source_dir = env;
  }
  if (source_dir.empty()) return std::nullopt;
  const fs::path dir = fs::path(source_dir) / ".." / "shared" / "fixtures";
  if (fs::is_directory(dir, error)) return dir.lexically_normal().string();
  return std::nullopt;
}

// A file or folder under the fixtures folder, e.g. "gpt2-mini/model/model.safetensors"; std::nullopt when
// the fixtures or that entry are missing.
inline std::optional<std::string> FixturePath(const std::string& relative) {
  const std::optional<std::string> dir = FixturesDir();
  if (!dir) return std::nullopt;
  const std::filesystem::path path = std::filesystem::path(*dir) / relative;
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return std::nullopt;
  return path.string();
}

// In a TEST body: declares `std::string var` holding the fixture's path, or skips the test saying what is missing.
#define ATQ_FIXTURE_OR_SKIP(var, relative)                                                                    \
  std::string var;                                                                                            \
  do {                                                                                                        \
    const std::optional<std::string> atq_fixture_found = ::atq::testutil::FixturePath(relative);             \
    if (!atq_fixture_found) {                                                                                 \
      GTEST_SKIP() << "fixture " << (relative)                                                               \
                   << " not found (set ATQ_FIXTURES or put the fixtures at ../shared/fixtures from the repo)"; \
    }                                                                                                         \
    var = *atq_fixture_found;                                                                                 \
  } while (0)

// A fresh folder under the system temp folder, removed with everything in it when this goes out of scope.
class TempDir {
 public:
  TempDir() {
    const std::string pattern = (std::filesystem::temp_directory_path() / "atq-test-XXXXXX").string();
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (::mkdtemp(buffer.data()) == nullptr) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = buffer.data();
  }
  ~TempDir() {
    std::error_code error;
    std::filesystem::remove_all(path_, error);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name
  std::string File(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }
  // Names of the entries directly inside, sorted.
  std::vector<std::string> List() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(path_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  std::string path_;
};

inline std::vector<uint8_t> ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::string ReadFileText(const std::string& path) {
  const std::vector<uint8_t> bytes = ReadFileBytes(path);
  return std::string(bytes.begin(), bytes.end());
}

inline void WriteFileBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline void WriteFileText(const std::string& path, const std::string& text) {
  WriteFileBytes(path, std::vector<uint8_t>(text.begin(), text.end()));
}

}  // namespace atq::testutil
