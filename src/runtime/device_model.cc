// From a loaded packed model to a decoder backend, and the CausalLm face of that backend.
#include "runtime/device_model.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

#include "models/lm_family.h"
#include "models/lm_linear.h"
#include "models/gpt2.h"
#include "models/llama.h"
#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

std::vector<float> Floats(const torch::Tensor& tensor) {
  const torch::Tensor values = tensor.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return std::vector<float>(values.data_ptr<float>(), values.data_ptr<float>() + values.numel());
}

// The scale an RMSNorm multiplies by, in float32 as the norm forms it: (offset + w) or w.
std::vector<float> NormScale(const RmsNormImpl& norm) {
  if (norm.weight_offset == 0) return Floats(norm.weight);
  return Floats(norm.weight_offset + norm.weight.to(torch::kFloat32));
}

std::string Unpacked(const std::string& name) {
  return fmt::format("{} is not packed (the decoder backends run packed weights only: quantize the model with atq "
                     "quantize, or load a packed checkpoint or a quantized GGUF)",
                     name);
}

// The model's packed linear layers by name, as the decoder takes them.
class PackedLinears {
 public:
  explicit PackedLinears(CausalLmImpl& model) {
    for (const auto& item : model.named_modules()) {
      if (const auto* linear = item.value()->as<LmLinearImpl>()) linears_.emplace(item.key(), linear);
    }
  }
  DecoderLinear operator()(const std::string& name) const {
    const auto found = linears_.find(name);
    Require(found != linears_.end(), "the model has no linear layer {}", name);
    const LmLinearImpl& layer = *found->second;
    Require(layer.packed != nullptr, "{}", Unpacked(name));
    DecoderLinear out;
    out.weights = layer.packed.get();
    if (layer.bias.defined()) out.bias = Floats(layer.bias);
    return out;
  }

 private:
  std::unordered_map<std::string, const LmLinearImpl*> linears_;
};

// By value: named_parameters() returns a temporary dictionary, so a reference into it would dangle.
torch::Tensor Parameter(CausalLmImpl& model, const std::string& name) {
  const auto parameters = model.named_parameters();
  const torch::Tensor* found = parameters.find(name);
  Require(found != nullptr, "the model has no {}", name);
  return *found;
}

// What every family shares: the sizes, the score scale, the token embedding and the head.
DecoderSpec CommonSpec(CausalLmImpl& model, const PackedLinears& linear) {
  const LmConfig& c = model.config();
  DecoderSpec s;
  s.hidden = c.hidden_size;
  s.heads = c.num_heads;
  s.kv_heads = c.num_kv_heads > 0 ? c.num_kv_heads : c.num_heads;
  s.head_dim = c.head_dim > 0 ? c.head_dim : c.hidden_size / std::max<int64_t>(1, c.num_heads);
  s.intermediate = c.intermediate_size;
  s.vocab = c.vocab_size;
  s.max_positions = c.max_positions;
  s.norm_eps = static_cast<float>(c.norm_eps);
  s.attention_scale = static_cast<float>(c.attention_scale > 0 ? c.attention_scale
                                                                : 1.0 / std::sqrt(static_cast<double>(s.head_dim)));
  Require(model.packed_embedding != nullptr, "{}", Unpacked("the token embedding"));
  s.embedding = model.packed_embedding.get();
  s.head = c.tied_embeddings ? s.embedding : linear("lm_head").weights;
  return s;
}

// Llama and the families built from its block (models/llama.h).
DecoderSpec RotarySpec(CausalLmImpl& model) {
  const LmConfig& c = model.config();
  const PackedLinears linear(model);
  DecoderSpec s = CommonSpec(model, linear);
  s.activation = c.activation == LmActivation::kSilu ? DecoderActivation::kSilu : DecoderActivation::kGeluTanh;
  s.sandwich_norms = c.sandwich_norms;
  s.attention_softcap = static_cast<float>(c.attention_softcap);
  s.final_softcap = static_cast<float>(c.final_softcap);
  s.embedding_scale = c.scale_embeddings ? static_cast<float>(std::sqrt(static_cast<double>(c.hidden_size))) : 0.0f;
  s.inv_freq = Floats(RotaryInverseFrequencies(c, torch::kFloat32, torch::kCPU));
  s.rope_position_divisor = static_cast<float>(c.rope_linear_factor);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const auto* block = model.Block(static_cast<size_t>(i))->as<LlamaBlockImpl>();
    const std::string prefix = fmt::format("model.layers.{}.", i);
    DecoderLayer l;
    l.input_norm.scale = NormScale(*block->input_layernorm);
    l.post_attention_norm.scale = NormScale(*block->post_attention_layernorm);
    if (block->pre_feedforward_layernorm) {
      l.pre_feedforward_norm.scale = NormScale(*block->pre_feedforward_layernorm);
      l.post_feedforward_norm.scale = NormScale(*block->post_feedforward_layernorm);
    }
    l.q = linear(prefix + "self_attn.q_proj");
    l.k = linear(prefix + "self_attn.k_proj");
    l.v = linear(prefix + "self_attn.v_proj");
    l.o = linear(prefix + "self_attn.o_proj");
    l.gate = linear(prefix + "mlp.gate_proj");
    l.up = linear(prefix + "mlp.up_proj");
    l.down = linear(prefix + "mlp.down_proj");
    l.window = block->self_attn->options.window;
    s.layers.push_back(std::move(l));
  }
  const torch::Tensor final_norm = Parameter(model, "model.norm.weight");
  s.final_norm.scale = c.norm_weight_offset != 0 ? Floats(c.norm_weight_offset + final_norm.to(torch::kFloat32))
                                                 : Floats(final_norm);
  return s;
}

// GPT-2 (models/gpt2.h): LayerNorms, learned positions, the fused c_attn, the ungated gelu_new MLP.
DecoderSpec Gpt2Spec(CausalLmImpl& model) {
  const LmConfig& c = model.config();
  const PackedLinears linear(model);
  DecoderSpec s = CommonSpec(model, linear);
  s.norm = DecoderNormKind::kLayer;
  s.activation = DecoderActivation::kGeluTanh;
  s.position_embedding = Floats(Parameter(model, "transformer.wpe.weight"));
  const auto norm = [&](const std::string& name) {
    return DecoderNorm{Floats(Parameter(model, name + ".weight")), Floats(Parameter(model, name + ".bias"))};
  };
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string prefix = fmt::format("transformer.h.{}.", i);
    DecoderLayer l;
    l.input_norm = norm(prefix + "ln_1");
    l.post_attention_norm = norm(prefix + "ln_2");
    l.qkv = linear(prefix + "attn.c_attn");
    l.o = linear(prefix + "attn.c_proj");
    l.up = linear(prefix + "mlp.c_fc");
    l.down = linear(prefix + "mlp.c_proj");
    if (c.scale_attn_by_inverse_layer_idx) l.attention_scale = s.attention_scale / static_cast<float>(i + 1);
    s.layers.push_back(std::move(l));
  }
  s.final_norm = norm("transformer.ln_f");
  return s;
}

}  // namespace

DecoderSpec DecoderSpecOf(CausalLmImpl& model) {
  DecoderSpec spec;
  if (dynamic_cast<LlamaImpl*>(&model) != nullptr) {
    spec = RotarySpec(model);
  } else if (dynamic_cast<Gpt2Impl*>(&model) != nullptr) {
    spec = Gpt2Spec(model);
  } else {
    Fail("the decoder backends do not run this model ({})", FamilyOf(model.config()).model_type);
  }
  CheckDecoderSpec(spec);
  return spec;
}

DecoderLmImpl::DecoderLmImpl(std::shared_ptr<CausalLmImpl> source, Device device, int64_t capacity)
    : CausalLmImpl(source->config()), source_(std::move(source)) {
  // Registered so that callers asking the model for its parameters' device get the CPU, where logits arrive.
  register_module("source", source_);
  // The cache is allocated whole on the device: a long-context model's full window (128k positions of Llama 3.1)
  // would take tens of GB, so the default stops at 8192 positions.
  if (capacity <= 0) capacity = std::min<int64_t>(UsableContext(config_), 8192);
  runner_ = MakeDecoderRunner(device, DecoderSpecOf(*source_), capacity);
}

torch::Tensor DecoderLmImpl::forward(const torch::Tensor& ids, KvCache* cache) { return Run(ids, cache, true); }

torch::Tensor DecoderLmImpl::LastLogits(const torch::Tensor& ids, KvCache* cache) {
  return Run(ids, cache, false).select(1, 0);
}

// Logits [B, T, vocab] with `all_logits`, else [B, 1, vocab] of each row's last position.
torch::Tensor DecoderLmImpl::Run(const torch::Tensor& ids, KvCache* cache, bool all_logits) {
  Require(ids.dim() == 2, "decoder: ids must be [batch, steps], not {} dimensions", ids.dim());
  const torch::Tensor tokens = ids.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t batch = tokens.size(0), steps = tokens.size(1), vocab = config_.vocab_size;
  const int64_t rows = all_logits ? steps : 1;
  torch::Tensor logits = torch::empty({batch, rows, vocab}, torch::kFloat32);
  std::vector<float>& out = logits_;  // kept between calls: a window's logits are tens of MB, new pages each time
  if (cache != nullptr) {
    Require(batch == 1, "decoder: a cached pass runs one sequence, not {}", batch);
    if (cache->length == 0) runner_->Reset();
    Require(cache->length == runner_->length(), "decoder: the cache is at {} positions, the {} backend at {}",
            cache->length, runner_->description(), runner_->length());
    runner_->Forward(tokens.data_ptr<int64_t>(), steps, all_logits, out);
    std::copy(out.begin(), out.end(), logits.data_ptr<float>());
    cache->length += steps;
    return logits;
  }
  for (int64_t row = 0; row < batch; ++row) {
    runner_->Reset();
    runner_->Forward(tokens.data_ptr<int64_t>() + row * steps, steps, all_logits, out);
    std::copy(out.begin(), out.end(), logits.data_ptr<float>() + row * rows * vocab);
  }
  runner_->Reset();
  return logits;
}

void DecoderLmImpl::Unstaged() const {
  Fail("the model on {} runs whole forward passes only (no staged pass for calibration)", runner_->description());
}
torch::Tensor DecoderLmImpl::Embed(const torch::Tensor&) { Unstaged(); }
torch::Tensor DecoderLmImpl::ForwardBlock(size_t, const torch::Tensor&) { Unstaged(); }
torch::Tensor DecoderLmImpl::Head(const torch::Tensor&) { Unstaged(); }
std::shared_ptr<torch::nn::Module> DecoderLmImpl::Block(size_t) { Unstaged(); }

std::string DecoderRefusal(CausalLmImpl& model) {
  try {
    DecoderSpecOf(model);
    return "";
  } catch (const Error& error) {
    return error.what();
  }
}

std::shared_ptr<CausalLmImpl> PlaceOnDevice(std::shared_ptr<CausalLmImpl> model, Device device) {
  auto placed = std::make_shared<DecoderLmImpl>(std::move(model), device);
  placed->eval();
  LogInfo("decoder on {}: key/value cache for up to {} positions", placed->runner().description(),
          placed->runner().capacity());
  return placed;
}

std::string_view CpuRuntimeName(CpuRuntime runtime) {
  switch (runtime) {
    case CpuRuntime::kAuto: return "auto";
    case CpuRuntime::kDecoder: return "decoder";
    case CpuRuntime::kLibtorch: return "libtorch";
  }
  return "?";
}

std::optional<CpuRuntime> ParseCpuRuntime(std::string_view name) {
  for (const CpuRuntime runtime : {CpuRuntime::kAuto, CpuRuntime::kDecoder, CpuRuntime::kLibtorch}) {
    if (CpuRuntimeName(runtime) == name) return runtime;
  }
  return std::nullopt;
}

std::shared_ptr<CausalLmImpl> ForWholePasses(std::shared_ptr<CausalLmImpl> model, Device device, CpuRuntime runtime) {
  if (device != Device::kCpu || runtime == CpuRuntime::kDecoder) return PlaceOnDevice(std::move(model), device);
  if (runtime == CpuRuntime::kLibtorch) return model;
  const std::string refusal = DecoderRefusal(*model);
  if (!refusal.empty()) {
    LogInfo("libtorch runs the model's float parts ({})", refusal);
    return model;
  }
  return PlaceOnDevice(std::move(model), device);
}

}  // namespace atq
