// libtorch's intra-op threads, and atq's kernels on them. This file alone is compiled with -fopenmp (CMakeLists.txt):
// at::parallel_for is a header template that runs its body serially unless the file instantiating it is built with
// OpenMP, which is how every atq kernel called under SetTorchThreads ran on one thread (measured: a packed
// gpt2-mini prefill took the same time on 1 and 2 threads, user time equal to wall time).
#include <dlfcn.h>

#include <algorithm>
#include <functional>
#include <thread>

#include <ATen/Parallel.h>

#include "torch/tensor_bridge.h"
#include "util/thread_pool.h"

#ifndef _OPENMP
#error "torch_threads.cc must be compiled with OpenMP, or at::parallel_for runs serially"
#endif

namespace atq {

void SetTorchThreads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  // atq's packed kernels run on libtorch's own threads: a second pool would compete with its spinning OpenMP team.
  // ThreadPool promises slices whose bounds are multiples of the grain (kernels work in blocks of rows), while
  // at::parallel_for cuts its range evenly: so it is given units of one grain each.
  SetKernelBackend(
      [](int64_t count, int64_t grain, const std::function<void(int64_t, int64_t, int)>& body) {
        const int64_t units = (count + grain - 1) / grain;
        at::parallel_for(0, units, 1, [&](int64_t first, int64_t last) {
          body(first * grain, std::min(count, last * grain), at::get_thread_num());
        });
      },
      threads);
  // libtorch's matrix products go to libblas.so.3; when that is OpenBLAS it keeps its own thread pool, sized to
  // every core, whose idle threads spin against torch's. Same count for both.
  using SetBlasThreads = void (*)(int);
  if (const auto set_blas_threads = reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    set_blas_threads(threads);
  }
}

}  // namespace atq
