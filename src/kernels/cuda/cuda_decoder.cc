// The CUDA decoder: device memory plan, upload and the forward pass as a sequence of launches on one stream.
#include "kernels/cuda/cuda_decoder.h"

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/decoder_kernels.h"
#include "util/error.h"

namespace atq::cuda {
namespace {

void CheckLaunch(const char* what) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) Fail("CUDA: the {} kernel failed: {}", what, cudaGetErrorString(status));
}

constexpr size_t kAlign = 256;  // each region starts on a 256-byte boundary and leaves 256 bytes of slack after it
size_t Region(size_t bytes) { return (bytes + 2 * kAlign - 1) / kAlign * kAlign; }

struct DeviceLinear {
  PackedMatrix matrix;           // data in device memory
  const float* bias = nullptr;   // device, or null
};

struct DeviceLayer {
  const float *input_norm = nullptr, *post_attention_norm = nullptr, *pre_feedforward_norm = nullptr,
              *post_feedforward_norm = nullptr;
  DeviceLinear q, k, v, o, gate, up, down;
  int64_t window = 0;
};

// Activations quantized for one layout serve another when both read the same columns in the same segments and
// code order, which the same format guarantees.
bool SameActivations(const Layout& a, const Layout& b) {
  return a.type == b.type && a.cols == b.cols && KernelSegment(a) == KernelSegment(b);
}

class CudaDecoder final : public DecoderRunner {
 public:
  CudaDecoder(const DecoderSpec& spec, int64_t capacity) : s_(spec), capacity_(capacity) {
    CheckDecoderSpec(s_);
    Require(!UsesGpt2Parts(s_),
            "the CUDA decoder runs the rotary decoder families; GPT-2's parts (LayerNorm, learned positions, a fused "
            "qkv, an ungated MLP) run on the CPU only");
    Require(capacity > 0, "decoder: a capacity of {} positions", capacity);
    Upload();
    const size_t cache_floats = 2 * s_.layers.size() * static_cast<size_t>(s_.kv_heads * capacity_ * s_.head_dim);
    cache_ = DeviceBuffer(cache_floats * sizeof(float));
  }

  void Forward(const int64_t* ids, int64_t n, bool all_logits, std::vector<float>& logits) override {
    CheckDecoderCall(s_, ids, n, length_, capacity_);
    Reserve(n);
    const cudaStream_t stream = static_cast<cudaStream_t>(stream_.handle());
    const int64_t width = s_.hidden;
    host_x_.resize(static_cast<size_t>(n * width));
    EmbedTokens(s_, ids, n, length_, host_x_.data());
    CopyToDevice(x_, host_x_.data(), host_x_.size() * sizeof(float), stream_);
    const size_t layer_cache = static_cast<size_t>(s_.kv_heads * capacity_ * s_.head_dim);
    for (size_t index = 0; index < layers_.size(); ++index) {
      const DeviceLayer& l = layers_[index];
      float* cache_keys = reinterpret_cast<float*>(cache_.get()) + 2 * index * layer_cache;
      float* cache_values = cache_keys + layer_cache;
      LaunchRmsNorm(x_, l.input_norm, normed_, n, width, s_.norm_eps, stream);
      CheckLaunch("RMSNorm");
      Multiply({{&l.q, q_}, {&l.k, k_}, {&l.v, v_}}, normed_, n);
      LaunchRotary(q_, n, s_.heads, s_.head_dim, length_, inv_freq_, s_.rope_position_divisor, stream);
      LaunchRotary(k_, n, s_.kv_heads, s_.head_dim, length_, inv_freq_, s_.rope_position_divisor, stream);
      CheckLaunch("rotary");
      LaunchStoreKv(k_, v_, cache_keys, cache_values, n, s_.kv_heads, s_.head_dim, capacity_, length_, stream);
      CheckLaunch("key/value store");
      AttentionArgs attention;
      attention.query = q_;
      attention.keys = cache_keys;
      attention.values = cache_values;
      attention.out = mixed_;
      attention.steps = n;
      attention.heads = s_.heads;
      attention.kv_heads = s_.kv_heads;
      attention.head_dim = s_.head_dim;
      attention.capacity = capacity_;
      attention.past = length_;
      attention.window = l.window;
      attention.scale = s_.attention_scale;
      attention.softcap = s_.attention_softcap;
      LaunchAttention(attention, stream);
      CheckLaunch("attention");
      Multiply({{&l.o, o_}}, mixed_, n);
      if (s_.sandwich_norms) LaunchRmsNorm(o_, l.post_attention_norm, o_, n, width, s_.norm_eps, stream);
      LaunchAdd(x_, o_, n * width, stream);
      LaunchRmsNorm(x_, s_.sandwich_norms ? l.pre_feedforward_norm : l.post_attention_norm, normed_, n, width,
                    s_.norm_eps, stream);
      CheckLaunch("RMSNorm");
      Multiply({{&l.gate, gate_}, {&l.up, up_}}, normed_, n);
      LaunchGatedActivation(gate_, up_, gate_, n * s_.intermediate,
                            s_.activation == DecoderActivation::kSilu ? GatedActivation::kSilu
                                                                      : GatedActivation::kGeluTanh,
                            stream);
      CheckLaunch("gated activation");
      Multiply({{&l.down, o_}}, gate_, n);
      if (s_.sandwich_norms) LaunchRmsNorm(o_, l.post_feedforward_norm, o_, n, width, s_.norm_eps, stream);
      LaunchAdd(x_, o_, n * width, stream);
      CheckLaunch("residual add");
    }
    const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    LaunchRmsNorm(x_ + first * width, final_norm_, normed_, rows, width, s_.norm_eps, stream);
    CheckLaunch("RMSNorm");
    Multiply({{&head_, logits_}}, normed_, rows);
    if (s_.final_softcap > 0) {
      LaunchSoftcap(logits_, rows * s_.vocab, s_.final_softcap, stream);
      CheckLaunch("soft-capping");
    }
    logits.resize(static_cast<size_t>(rows * s_.vocab));
    CopyToHost(logits.data(), logits_, logits.size() * sizeof(float), stream_);
    length_ += n;
  }

  void Reset() override { length_ = 0; }
  int64_t length() const override { return length_; }
  int64_t capacity() const override { return capacity_; }
  std::string description() const override { return "cuda " + Target(); }

 private:
  // The device memory plan: every packed matrix, bias, norm and the rotary frequencies in one allocation.
  void Upload() {
    std::vector<std::pair<const void*, size_t>> pieces;  // host source and size, in the order of the offsets
    size_t total = 0;
    const auto place = [&](const void* data, size_t bytes) {
      const size_t offset = total;
      pieces.emplace_back(data, bytes);
      total += Region(bytes);
      return offset;
    };
    struct Pending {
      size_t weights = 0, bias = 0;
      bool has_bias = false;
    };
    const auto place_linear = [&](const DecoderLinear& linear) {
      CheckLayout(linear.weights->layout);
      Pending p;
      p.weights = place(linear.weights->data(), linear.weights->size());
      if (!linear.bias.empty()) {
        p.has_bias = true;
        p.bias = place(linear.bias.data(), linear.bias.size() * sizeof(float));
      }
      return p;
    };
    const auto place_vector = [&](const std::vector<float>& values) {
      return values.empty() ? SIZE_MAX : place(values.data(), values.size() * sizeof(float));
    };
    struct PendingLayer {
      size_t norms[4];
      Pending linears[7];
    };
    std::vector<PendingLayer> pending(s_.layers.size());
    for (size_t i = 0; i < s_.layers.size(); ++i) {
      const DecoderLayer& l = s_.layers[i];
      PendingLayer& p = pending[i];
      p.norms[0] = place_vector(l.input_norm.scale);
      p.norms[1] = place_vector(l.post_attention_norm.scale);
      p.norms[2] = place_vector(l.pre_feedforward_norm.scale);
      p.norms[3] = place_vector(l.post_feedforward_norm.scale);
      const DecoderLinear* linears[7] = {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down};
      for (int j = 0; j < 7; ++j) p.linears[j] = place_linear(*linears[j]);
    }
    const Pending head = place_linear({s_.head, {}});
    const size_t final_norm = place_vector(s_.final_norm.scale), inv_freq = place_vector(s_.inv_freq);
    weights_ = DeviceBuffer(total);
    size_t offset = 0;
    for (const auto& [data, bytes] : pieces) {
      CopyToDevice(weights_.get() + offset, data, bytes, stream_);
      offset += Region(bytes);
    }
    stream_.Synchronize();
    uint8_t* base = weights_.get();
    const auto floats = [&](size_t at) { return at == SIZE_MAX ? nullptr : reinterpret_cast<const float*>(base + at); };
    const auto linear = [&](const DecoderLinear& host, const Pending& p) {
      DeviceLinear d;
      d.matrix = {host.weights->layout, base + p.weights};
      d.bias = p.has_bias ? reinterpret_cast<const float*>(base + p.bias) : nullptr;
      return d;
    };
    layers_.resize(s_.layers.size());
    for (size_t i = 0; i < s_.layers.size(); ++i) {
      const DecoderLayer& l = s_.layers[i];
      const PendingLayer& p = pending[i];
      DeviceLayer& d = layers_[i];
      d.input_norm = floats(p.norms[0]);
      d.post_attention_norm = floats(p.norms[1]);
      d.pre_feedforward_norm = floats(p.norms[2]);
      d.post_feedforward_norm = floats(p.norms[3]);
      d.q = linear(l.q, p.linears[0]);
      d.k = linear(l.k, p.linears[1]);
      d.v = linear(l.v, p.linears[2]);
      d.o = linear(l.o, p.linears[3]);
      d.gate = linear(l.gate, p.linears[4]);
      d.up = linear(l.up, p.linears[5]);
      d.down = linear(l.down, p.linears[6]);
      d.window = l.window;
    }
    head_ = linear({s_.head, {}}, head);
    final_norm_ = floats(final_norm);
    inv_freq_ = floats(inv_freq);
  }

  // Working buffers for n tokens at once, grown as needed.
  void Reserve(int64_t n) {
    if (n <= reserved_) return;
    const int64_t width = s_.hidden, q_width = s_.heads * s_.head_dim, kv_width = s_.kv_heads * s_.head_dim;
    const int64_t sizes[] = {width, width, q_width, kv_width, kv_width, q_width, width, s_.intermediate,
                             s_.intermediate, s_.vocab};
    size_t total = 0;
    for (const int64_t size : sizes) total += Region(static_cast<size_t>(n * size) * sizeof(float));
    stream_.Synchronize();
    work_ = DeviceBuffer(total);
    float** buffers[] = {&x_, &normed_, &q_, &k_, &v_, &mixed_, &o_, &gate_, &up_, &logits_};
    size_t offset = 0;
    for (size_t i = 0; i < std::size(sizes); ++i) {
      *buffers[i] = reinterpret_cast<float*>(work_.get() + offset);
      offset += Region(static_cast<size_t>(n * sizes[i]) * sizeof(float));
    }
    reserved_ = n;
  }

  // y = x W^T (+ b) for each (linear, y), quantizing x once for every run of matrices that read it alike.
  void Multiply(std::initializer_list<std::pair<const DeviceLinear*, float*>> products, const float* x, int64_t n) {
    DeviceActivations activations;
    const Layout* quantized_for = nullptr;
    const cudaStream_t stream = static_cast<cudaStream_t>(stream_.handle());
    for (const auto& [linear, y] : products) {
      const Layout& layout = linear->matrix.layout;
      if (quantized_for == nullptr || !SameActivations(*quantized_for, layout)) {
        activations = QuantizeActivations(stream_, layout, x, n);
        quantized_for = &layout;
      }
      MatMul(stream_, linear->matrix, activations, y);
      if (linear->bias != nullptr) {
        LaunchAddBias(y, linear->bias, n, layout.rows, stream);
        CheckLaunch("bias");
      }
    }
  }

  DecoderSpec s_;
  int64_t capacity_;
  int64_t length_ = 0;
  Stream stream_;
  DeviceBuffer weights_, cache_, work_;
  std::vector<DeviceLayer> layers_;
  DeviceLinear head_;
  const float* final_norm_ = nullptr;
  const float* inv_freq_ = nullptr;
  int64_t reserved_ = 0;
  float *x_ = nullptr, *normed_ = nullptr, *q_ = nullptr, *k_ = nullptr, *v_ = nullptr, *mixed_ = nullptr,
        *o_ = nullptr, *gate_ = nullptr, *up_ = nullptr, *logits_ = nullptr;
  std::vector<float> host_x_;
};

}  // namespace

std::unique_ptr<DecoderRunner> MakeCudaDecoder(const DecoderSpec& spec, int64_t capacity) {
  Require(Available(), "no CUDA device: {}", DeviceSummary());  // before the decoder's stream is made
  return std::make_unique<CudaDecoder>(spec, capacity);
}

}  // namespace atq::cuda
