// A fixed set of worker threads that split a range of work items between them (output rows of a kernel).
// The calling thread takes a share too, so a pool of N threads runs N - 1 workers.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace atq {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1 (1: everything runs on the caller)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls body(begin, end, thread) on `threads()` contiguous slices of [0, count) whose bounds are multiples of
  // `grain` (the last may be short), and returns when all are done. Not reentrant: one ParallelFor at a time.
  void ParallelFor(int64_t count, int64_t grain, const std::function<void(int64_t, int64_t, int)>& body);

 private:
  void WorkerLoop(int index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable start_, finished_;
  const std::function<void(int64_t, int64_t, int)>* body_ = nullptr;
  int64_t count_ = 0, grain_ = 1;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stopping_ = false;
};

// The pool kernels use when the caller passes none: sized by SetKernelThreads (default: hardware threads).
ThreadPool& KernelThreadPool();
void SetKernelThreads(int threads);

}  // namespace atq
