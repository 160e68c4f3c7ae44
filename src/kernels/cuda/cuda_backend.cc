// The host side of the CUDA backend: from the format table to the kernels' arguments, device memory and streams.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "formats/atq_packed.h"
#include "kernels/cuda/kernel_args.h"
#include "util/error.h"

namespace atq::cuda {
namespace {

void Check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) Fail("CUDA: {} failed: {}", what, cudaGetErrorString(status));
}

constexpr size_t kPadding = 256;  // every allocation: kernels read 16-byte words up to the next multiple of 16
size_t Padded(size_t bytes) { return (bytes + 2 * kPadding - 1) / kPadding * kPadding; }

KernelFormat FormatOf(QuantType type) {
  switch (type) {
    case QuantType::kTernary2: return KernelFormat::kT2;
    case QuantType::kUniform4Sym: return KernelFormat::kU4Sym;
    case QuantType::kUniform4Asym: return KernelFormat::kU4Asym;
    case QuantType::kQ8_0: return KernelFormat::kQ8_0;
    case QuantType::kQ4_0: return KernelFormat::kQ4_0;
    case QuantType::kTQ2_0: return KernelFormat::kTQ2_0;
    case QuantType::kTQ1_0: return KernelFormat::kTQ1_0;
    default: Fail("the cuda backend has no kernel for {} (it runs t2, u4s, u4a, q8_0, q4_0, tq2_0, tq1_0)", TypeName(type));
  }
}

// __dp4a for up to 8 columns (unless the tensor cores are asked for), the tensor cores past them.
KernelPath PathFor(int64_t n, KernelChoice choice) {
  return choice != KernelChoice::kTensorCores && n <= 8 ? KernelPath::kDp4a : KernelPath::kMma;
}

ActOrder OrderOf(KernelFormat format, KernelPath path) {
  switch (format) {
    case KernelFormat::kT2: return path == KernelPath::kMma ? ActOrder::kTernary2Mma : ActOrder::kTernary2;
    case KernelFormat::kU4Sym:
    case KernelFormat::kU4Asym: return ActOrder::kUniform4;
    default: return ActOrder::kNatural;
  }
}

int64_t Align(int64_t value, int64_t to) { return (value + to - 1) / to * to; }

}  // namespace

bool Available() {
  static const bool available = [] {
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  }();
  return available;
}

std::string DeviceSummary() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) return fmt::format("no CUDA device ({})", cudaGetErrorString(status));
  if (count == 0) return "no CUDA device";
  int device = 0;
  Check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  Check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return fmt::format("{}, sm_{}{}, {} SMs, {:.1f} GiB", prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                     static_cast<double>(prop.totalGlobalMem) / (1ull << 30));
}

bool Supports(QuantType type) {
  switch (type) {
    case QuantType::kTernary2:
    case QuantType::kUniform4Sym:
    case QuantType::kUniform4Asym:
    case QuantType::kQ8_0:
    case QuantType::kQ4_0:
    case QuantType::kTQ2_0:
    case QuantType::kTQ1_0: return true;
    default: return false;
  }
}

void CheckLayout(const Layout& layout) {
  FormatOf(layout.type);
  const int64_t segment = KernelSegment(layout);
  // A segment must hold whole units of the kernels (32 columns; t2's codes are taken 64 at a time).
  const int64_t unit = layout.type == QuantType::kTernary2 ? 64 : 32;
  Require(segment % unit == 0 || SegmentsPerRow(layout) <= 1,
          "the cuda kernels take {} scale groups of a multiple of {} weights or whole rows, not {} ({}x{})",
          TypeName(layout.type), unit, segment, layout.rows, layout.cols);
}

DeviceBuffer::DeviceBuffer(size_t bytes) : size_(bytes) {
  void* data = nullptr;
  Check(cudaMalloc(&data, Padded(bytes)), "cudaMalloc");
  data_ = static_cast<uint8_t*>(data);
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

Stream::Stream() {
  cudaStream_t stream = nullptr;
  Check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  handle_ = stream;
}

Stream::~Stream() {
  if (handle_ != nullptr) {
    cudaStreamSynchronize(static_cast<cudaStream_t>(handle_));
    cudaStreamDestroy(static_cast<cudaStream_t>(handle_));
  }
}

void Stream::Synchronize() const {
  Check(cudaStreamSynchronize(static_cast<cudaStream_t>(handle_)), "cudaStreamSynchronize");
}

uint8_t* Stream::Scratch(size_t bytes) {
  if (scratch_.size() < bytes) {
    Synchronize();  // work queued earlier may still read the old scratch
    scratch_ = DeviceBuffer(bytes + bytes / 2);
  }
  return scratch_.get();
}

void CopyToDevice(void* device, const void* host, size_t bytes, const Stream& stream) {
  Check(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream.handle())),
        "cudaMemcpyAsync to the device");
}

void CopyToHost(void* host, const void* device, size_t bytes, const Stream& stream) {
  Check(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream.handle())),
        "cudaMemcpyAsync to the host");
  stream.Synchronize();
}

namespace {

MatrixArgs ArgsOf(const PackedMatrix& weights) {
  const Layout& layout = weights.layout;
  CheckLayout(layout);
  MatrixArgs m;
  m.format = FormatOf(layout.type);
  m.data = weights.data;
  m.rows = layout.rows;
  m.cols = layout.cols;
  m.segment = KernelSegment(layout);
  m.segments = SegmentsPerRow(layout);
  m.units_per_segment = m.segments > 1 ? m.segment / 32 : 1;
  const TypeTraits& traits = Traits(layout.type);
  if (traits.family == TypeFamily::kGgmlBlock) {
    m.row_bytes = layout.cols / traits.block_size * traits.bytes_per_block;
  } else {
    m.row_bytes = RowBytes(layout);
    m.scales = reinterpret_cast<const float*>(weights.data + ScalesOffset(layout));
    if (layout.type == QuantType::kUniform4Asym) {
      m.zeros = weights.data + ScalesOffset(layout) + 4 * NumScaleGroups(layout);
    }
    m.granularity = static_cast<int>(layout.granularity);
    m.groups_per_row = GroupsPerRow(layout);
  }
  return m;
}

}  // namespace

DeviceActivations QuantizeActivations(Stream& stream, const Layout& layout, const float* x, int64_t n,
                                      KernelChoice choice) {
  CheckLayout(layout);
  DeviceActivations out;
  const KernelPath path = PathFor(n, choice);
  out.n = n;
  out.cols = layout.cols;
  out.segment = KernelSegment(layout);
  out.segments = SegmentsPerRow(layout);
  out.order = static_cast<int>(OrderOf(FormatOf(layout.type), path));
  out.path = static_cast<int>(path);
  // Scratch: int8 values (a multiple of 256 per row), the int32 sums of each 32, then the float scales.
  out.stride = Align(std::max<int64_t>(layout.cols, 1), 256);
  const size_t value_bytes = static_cast<size_t>(n * out.stride), sum_bytes = value_bytes / 8;
  uint8_t* scratch =
      stream.Scratch(value_bytes + sum_bytes + static_cast<size_t>(n * std::max<int64_t>(out.segments, 1)) * 4);
  ActArgs acts;
  acts.values = reinterpret_cast<int8_t*>(scratch);
  acts.sums = reinterpret_cast<int32_t*>(scratch + value_bytes);
  acts.scales = reinterpret_cast<float*>(scratch + value_bytes + sum_bytes);
  acts.stride = out.stride;
  out.values = acts.values;
  out.sums = acts.sums;
  out.scales = acts.scales;
  if (n == 0) return out;
  LaunchQuantizeActivations(x, n, layout.cols, out.segment, out.segments, static_cast<ActOrder>(out.order), acts,
                            static_cast<cudaStream_t>(stream.handle()));
  Check(cudaGetLastError(), "the activation quantizer's launch");
  return out;
}

void MatMul(Stream& stream, const PackedMatrix& weights, const DeviceActivations& x, float* y) {
  const Layout& layout = weights.layout;
  const MatrixArgs m = ArgsOf(weights);
  const auto path = static_cast<KernelPath>(x.path);
  Require(x.cols == layout.cols && x.segment == m.segment &&
              x.order == static_cast<int>(OrderOf(m.format, path)),
          "activations quantized for {} columns in segments of {} do not fit a {} matrix {}x{}", x.cols, x.segment,
          TypeName(layout.type), layout.rows, layout.cols);
  if (x.n == 0 || layout.rows == 0) return;
  ActArgs acts;
  acts.values = const_cast<int8_t*>(x.values);
  acts.scales = const_cast<float*>(x.scales);
  acts.sums = const_cast<int32_t*>(x.sums);
  acts.stride = x.stride;
  LaunchMatMul(m, acts, x.n, y, path, static_cast<cudaStream_t>(stream.handle()));
  Check(cudaGetLastError(), "the packed matrix product's launch");
}

void MatMul(Stream& stream, const PackedMatrix& weights, const float* x, int64_t n, float* y, KernelChoice choice) {
  const DeviceActivations acts = QuantizeActivations(stream, weights.layout, x, n, choice);
  MatMul(stream, weights, acts, y);
}

void MatMulBlocking(const PackedMatrix& weights, const float* x, int64_t n, float* y) {
  thread_local Stream stream;
  MatMul(stream, weights, x, n, y);
  stream.Synchronize();
}

std::string Target() {
  if (!Available()) return DeviceSummary();
  int device = 0;
  Check(cudaGetDevice(&device), "cudaGetDevice");
  cudaDeviceProp prop{};
  Check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return fmt::format("sm_{}{} ({})", prop.major, prop.minor, prop.name);
}

}  // namespace atq::cuda
