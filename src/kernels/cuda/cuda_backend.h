// The CUDA backend of the packed kernels (a row of kernels/backend.h's table): device memory, a stream per model,
// and the packed matrix product on the GPU for t2, u4s/u4a (atq int4), q8_0, q4_0, tq2_0 and tq1_0, reading the
// same packed bytes as the CPU kernels (no repacking) with int8 activations quantized per segment on the device,
// as the CPU kernels quantize them. Its results agree with MatMulReference within float rounding of the
// per-segment sums (the integer sums are exact in both).
//
// This header needs no CUDA headers; it is compiled only when the build has CUDA (ATQ_WITH_CUDA).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/packed_matrix.h"

namespace atq::cuda {

// A CUDA device is visible (the build has CUDA and the driver reports at least one device).
bool Available();
// "NVIDIA H200, sm_90, 132 SMs, 139.8 GiB", or why there is none.
std::string DeviceSummary();
bool Supports(QuantType type);
// Throws atq::Error for a layout the CUDA kernels do not take: a format they do not run, or scale groups that are
// neither a multiple of 32 weights nor whole rows.
void CheckLayout(const Layout& layout);

// Device memory from one cudaMalloc, freed with the object; sizes rounded up so that kernels may read whole 16-byte
// words past the last byte.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  uint8_t* get() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A CUDA stream and the scratch memory of the activations quantized on it: one per model.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  void* handle() const { return handle_; }  // the cudaStream_t
  void Synchronize() const;
  // Scratch of at least `bytes` (contents kept only until the next call).
  uint8_t* Scratch(size_t bytes);

 private:
  void* handle_ = nullptr;
  DeviceBuffer scratch_;
};

void CopyToDevice(void* device, const void* host, size_t bytes, const Stream& stream);
void CopyToHost(void* host, const void* device, size_t bytes, const Stream& stream);  // waits for the copy

// Which matrix kernel runs: __dp4a over rows staged in shared memory (batches of up to 8 columns), or int8
// tensor-core products (mma.sync, any batch). Both give the same integer sums. kAuto takes __dp4a up to 8 columns
// and the tensor cores past them, which measured fastest on an H200 (2-4x at batch 1; notes/cuda_h200.md).
enum class KernelChoice { kAuto, kTensorCores, kDp4a };

// Activations X [n, cols] quantized on the device as the kernels of one layout take them (per segment, in its
// format's code order), in the stream's scratch: a model quantizes its input once and multiplies it with every
// matrix that reads it (q, k and v; gate and up). Valid until the stream's next QuantizeActivations.
struct DeviceActivations {
  const int8_t* values = nullptr;
  const float* scales = nullptr;
  const int32_t* sums = nullptr;  // per 32 values
  int64_t n = 0, cols = 0, stride = 0, segment = 0, segments = 0;
  int order = 0;  // the kernels' ActOrder
  int path = 0;   // the kernels' KernelPath
};
DeviceActivations QuantizeActivations(Stream& stream, const Layout& layout, const float* x, int64_t n,
                                      KernelChoice choice = KernelChoice::kAuto);
// y [n, rows] = X W^T for activations quantized for this layout (an atq::Error where they were quantized for
// another column count, segment or code order).
void MatMul(Stream& stream, const PackedMatrix& weights, const DeviceActivations& x, float* y);
// Both steps: y [n, rows] = x [n, cols] W^T with weights.data, x and y in device memory, queued on `stream`.
void MatMul(Stream& stream, const PackedMatrix& weights, const float* x, int64_t n, float* y,
            KernelChoice choice = KernelChoice::kAuto);
// The backend table's entry: on this thread's stream, returning when y is written.
void MatMulBlocking(const PackedMatrix& weights, const float* x, int64_t n, float* y);
// What runs, for reports: "sm_90 (NVIDIA H200)".
std::string Target();

}  // namespace atq::cuda
