// Progress display: one redrawn line on a terminal, a plain line at most every few seconds elsewhere.
#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "util/log.h"

namespace atq {
namespace {
// A non-terminal gets a line at most this often, so CI logs stay readable.
constexpr double kPlainIntervalSeconds = 5.0;
constexpr double kTerminalIntervalSeconds = 0.1;
}  // namespace

std::string FormatDuration(double seconds) {
  if (seconds < 0) seconds = 0;
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const int64_t whole = static_cast<int64_t>(seconds + 0.5);
  if (whole < 3600) return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}h{:02}m", whole / 3600, (whole % 3600) / 60);
}

Progress::Progress(std::string label, int64_t total, std::string unit)
    : label_(std::move(label)),
      total_(total),
      unit_(std::move(unit)),
      interactive_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

Progress::~Progress() {
  if (!finished_ && done_ > 0) Finish();
}

double Progress::ElapsedSeconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Advance(int64_t amount, const std::string& status) {
  done_ += amount;
  if (!status.empty()) status_ = status;
  const auto now = std::chrono::steady_clock::now();
  const double since_draw = std::chrono::duration<double>(now - last_draw_).count();
  if (since_draw >= (interactive_ ? kTerminalIntervalSeconds : kPlainIntervalSeconds)) {
    last_draw_ = now;
    Draw(false);
  }
}

void Progress::Finish(const std::string& status) {
  if (finished_) return;
  if (!status.empty()) status_ = status;
  finished_ = true;
  Draw(true);
}

void Progress::Draw(bool final_line) {
  if (GetLogLevel() < LogLevel::kInfo) return;
  const double elapsed = ElapsedSeconds();
  const double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  std::string line = total_ > 0 ? fmt::format("{}: {}/{} {}", label_, done_, total_, unit_)
                                : fmt::format("{}: {} {}", label_, done_, unit_);
  line += fmt::format(" | {:.1f} {}/s | {}", rate, unit_, FormatDuration(elapsed));
  if (!final_line && total_ > 0 && rate > 0 && done_ < total_) {
    line += fmt::format(" | ETA {}", FormatDuration((total_ - done_) / rate));
  }
  if (!status_.empty()) line += " | " + status_;
  if (interactive_) {
    std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), final_line ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
  std::fflush(stderr);
}

std::string TrainingProgressLine(int64_t epoch, int64_t epochs, int64_t batch, int64_t batches, double mean_loss,
                                 double seconds, int64_t step, int64_t total_steps) {
  const double eta = seconds / static_cast<double>(step + 1) * static_cast<double>(total_steps - step - 1);
  return fmt::format("epoch {}/{}: {}/{} batches | loss {:.4f} | {:.0f}s | ETA {:.0f}s", epoch, epochs, batch, batches,
                     mean_loss, seconds, eta);
}

}  // namespace atq
