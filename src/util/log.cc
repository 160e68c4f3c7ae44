// Leveled logging: the level is read once from ATQ_LOG_LEVEL, and the CLI may override it.
#include "util/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "util/error.h"

namespace atq {
namespace {

LogLevel LevelFromEnvironment() {
  const char* value = std::getenv("ATQ_LOG_LEVEL");
  if (value == nullptr || *value == '\0') return LogLevel::kInfo;
  try {
    return ParseLogLevel(value);
  } catch (const Error&) {
    std::fprintf(stderr, "warning: ignoring ATQ_LOG_LEVEL=%s (use error, warn, info or debug)\n", value);
    return LogLevel::kInfo;
  }
}

std::atomic<int>& CurrentLevel() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnvironment())};
  return level;
}

}  // namespace

LogLevel GetLogLevel() { return static_cast<LogLevel>(CurrentLevel().load()); }

void SetLogLevel(LogLevel level) { CurrentLevel().store(static_cast<int>(level)); }

LogLevel ParseLogLevel(std::string_view text) {
  if (text == "error" || text == "0") return LogLevel::kError;
  if (text == "warn" || text == "warning" || text == "1") return LogLevel::kWarn;
  if (text == "info" || text == "2") return LogLevel::kInfo;
  if (text == "debug" || text == "3") return LogLevel::kDebug;
  throw Error(fmt::format("unknown log level '{}' (use error, warn, info or debug)", text));
}

void LogMessage(LogLevel level, std::string_view message) {
  static constexpr const char* kPrefix[] = {"error: ", "warning: ", "", "debug: "};
  const std::string line = fmt::format("{}{}\n", kPrefix[static_cast<int>(level)], message);
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace atq
