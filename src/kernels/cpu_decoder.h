// The decoder of kernels/decoder.h on the CPU, for speed: the linear layers through atq's packed kernels (MatMul:
// int8 activations, threaded over output rows), the float parts vectorised (kernels/float_ops.h), the attention
// threaded over query positions and heads; the key/value cache, the rotary tables and the work buffers grow with
// the context in use (in steps, up to the capacity) and stay, so a decode step allocates nothing and no libtorch
// operator runs. Q8_0 and Q4_0 matrices are regrouped 8 rows at a time when the decoder is made (kernels/
// interleaved.h), as llama.cpp repacks them: a copy of their bytes in memory of its own, for faster products.
// tests/kernels/cpu_decoder_test.cc checks it against the scalar reference decoder.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/decoder.h"
#include "util/thread_pool.h"

namespace atq {

// Throws atq::Error for an inconsistent spec (CheckDecoderSpec) or a capacity below 1.
std::unique_ptr<DecoderRunner> MakeCpuDecoder(const DecoderSpec& spec, int64_t capacity,
                                              ThreadPool& pool = KernelThreadPool());

}  // namespace atq
