// A progress display for long work (layers, epochs, tokens): done/total, rate, ETA and a status text.
// Redraws one line on a terminal, prints occasional plain lines otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace atq {

class Progress {
 public:
  // `what` names the unit counted ("layers", "tokens"); total <= 0 means unknown.
  Progress(std::string label, int64_t total, std::string unit);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Adds `amount` done units; `status` is shown after the counters (e.g. "loss 0.41").
  void Advance(int64_t amount = 1, const std::string& status = "");
  void Finish(const std::string& status = "");

  double ElapsedSeconds() const;
  int64_t done() const { return done_; }

 private:
  void Draw(bool final_line);

  std::string label_;
  int64_t total_;
  std::string unit_;
  int64_t done_ = 0;
  std::string status_;
  bool finished_ = false;
  bool interactive_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// "1h02m", "3m05s", "12.3s".
std::string FormatDuration(double seconds);

// A training loop's line for logs: "epoch 2/5: 40/235 batches | loss 3.8617 | 437s | ETA 1430s", the ETA from
// the mean time per step so far (`step` 0-based, of `total_steps`).
std::string TrainingProgressLine(int64_t epoch, int64_t epochs, int64_t batch, int64_t batches, double mean_loss,
                                 double seconds, int64_t step, int64_t total_steps);

}  // namespace atq
