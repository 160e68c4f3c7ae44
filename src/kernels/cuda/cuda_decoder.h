// The decoder of kernels/decoder.h on a CUDA GPU: the packed weights, norms and biases copied into one device
// allocation, the key/value cache in another, one stream; the packed products through the CUDA backend
// (cuda_backend.h) and the float parts through decoder_kernels.h. Token embeddings are looked up on the host (one
// row per token) and copied over; logits come back to the host.
//
// Compiled only in builds with CUDA; MakeDecoderRunner(Device::kCuda, ...) is the way in.
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/decoder.h"

namespace atq::cuda {

// Throws atq::Error when no GPU is visible, a weight's format has no CUDA kernel, or the device is out of memory.
std::unique_ptr<DecoderRunner> MakeCudaDecoder(const DecoderSpec& spec, int64_t capacity);

}  // namespace atq::cuda
