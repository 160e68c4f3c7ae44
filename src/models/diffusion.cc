#include "models/diffusion.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <torch/torch.h>

#include "data/image_data.h"
#include "io/atomic_file.h"
#include "io/strict_json.h"
#include "models/classifier_checkpoint.h"
#include "models/packed_module.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr int64_t kGroups = 8;        // GroupNorm groups (every width here is a multiple)
constexpr int64_t kSinusoidDim = 64;  // the timestep's sinusoidal features

torch::nn::GroupNorm GroupNorm(int64_t channels) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(std::min(kGroups, channels), channels));
}

// Transformer-style features of the timestep: sin and cos of t / 10000^(i / half).
torch::Tensor TimestepFeatures(const torch::Tensor& t) {
  const int64_t half = kSinusoidDim / 2;
  const torch::Tensor frequencies =
      torch::exp(-std::log(10000.0) * torch::arange(half, torch::kFloat32) / static_cast<double>(half));
  const torch::Tensor angles = t.to(torch::kFloat32).unsqueeze(1) * frequencies.unsqueeze(0);
  return torch::cat({angles.sin(), angles.cos()}, 1);
}

torch::Tensor Upsample(const torch::Tensor& x) {
  return torch::nn::functional::interpolate(
      x, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
}

}  // namespace

nlohmann::json UNetConfigToJson(const UNetConfig& c) {
  return {{"image_size", c.image_size}, {"in_channels", c.in_channels}, {"channels", c.channels},
          {"context_dim", c.context_dim}, {"heads", c.heads},           {"time_dim", c.time_dim}};
}

UNetConfig UNetConfigFromJson(const nlohmann::json& json, const std::string& what) {
  UNetConfig c;
  try {
    c.image_size = json.at("image_size").get<int64_t>();
    c.in_channels = json.at("in_channels").get<int64_t>();
    c.channels = json.at("channels").get<int64_t>();
    c.context_dim = json.at("context_dim").get<int64_t>();
    c.heads = json.at("heads").get<int64_t>();
    c.time_dim = json.at("time_dim").get<int64_t>();
  } catch (const nlohmann::json::exception& error) {
    Fail("{}: bad UNet config: {}", what, error.what());
  }
  Require(c.image_size >= 4 && c.image_size <= kMaxImageSize && c.image_size % 4 == 0 && c.in_channels > 0 &&
              c.in_channels <= kMaxInChannels && c.channels >= 8 && c.channels <= 1024 && c.channels % kGroups == 0 &&
              c.context_dim > 0 && c.context_dim <= 8192 && c.heads > 0 && (2 * c.channels) % c.heads == 0 &&
              c.time_dim > 0 && c.time_dim <= 8192,
          "{}: UNet sizes out of range: {}", what, UNetConfigToJson(c).dump());
  return c;
}

ResBlockImpl::ResBlockImpl(int64_t in, int64_t out, int64_t cond_dim) {
  norm1_ = register_module("norm1", GroupNorm(in));
  conv1_ = register_module("conv1", QuantConv2d(in, out, 3, 1, 1));
  cond_ = register_module("cond", QuantLinear(cond_dim, out));
  norm2_ = register_module("norm2", GroupNorm(out));
  conv2_ = register_module("conv2", QuantConv2d(out, out, 3, 1, 1));
  if (in != out) skip_ = register_module("skip", QuantConv2d(in, out, 1, 1, 0));
}

torch::Tensor ResBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cond) {
  torch::Tensor h = conv1_->forward(torch::silu(norm1_->forward(x)));
  h = h + cond_->forward(torch::silu(cond)).unsqueeze(2).unsqueeze(3);
  h = conv2_->forward(torch::silu(norm2_->forward(h)));
  return (skip_ ? skip_->forward(x) : x) + h;
}

SpatialCrossAttentionImpl::SpatialCrossAttentionImpl(int64_t channels, int64_t context_dim, int64_t heads)
    : heads_(heads) {
  Require(channels % heads == 0, "cross-attention: {} channels over {} heads", channels, heads);
  norm_ = register_module("norm", GroupNorm(channels));
  query_ = register_module("query", QuantLinear(channels, channels));
  key_value_ = register_module("key_value", QuantLinear(context_dim, 2 * channels));
  proj_ = register_module("proj", QuantLinear(channels, channels));
  query_quant = register_module("query_quant", ActivationQuantizer());
  key_quant = register_module("key_quant", ActivationQuantizer());
  probs_quant = register_module("probs_quant", ActivationQuantizer());
  value_quant = register_module("value_quant", ActivationQuantizer());
}

torch::Tensor SpatialCrossAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context,
                                                 const torch::Tensor& mask) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t positions = height * width, tokens = context.size(1), head_dim = channels / heads_;
  const torch::Tensor h = norm_->forward(x).flatten(2).transpose(1, 2);  // [B, HW, C]
  const torch::Tensor q =
      query_quant->forward(query_->forward(h).reshape({batch, positions, heads_, head_dim}).transpose(1, 2));
  const torch::Tensor kv =
      key_value_->forward(context).reshape({batch, tokens, 2, heads_, head_dim}).permute({2, 0, 3, 1, 4});
  const torch::Tensor k = key_quant->forward(kv[0]), v = value_quant->forward(kv[1]);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim));
  scores = scores.masked_fill(mask.logical_not().unsqueeze(1).unsqueeze(2), -std::numeric_limits<float>::infinity());
  const torch::Tensor probs = probs_quant->forward(scores.softmax(-1));
  const torch::Tensor mixed = torch::matmul(probs, v).transpose(1, 2).reshape({batch, positions, channels});
  return x + proj_->forward(mixed).transpose(1, 2).reshape({batch, channels, height, width});
}

UNetImpl::UNetImpl(const UNetConfig& config) : config_(config) {
  Require(config.image_size % 4 == 0, "UNet: image size {} is not a multiple of 4", config.image_size);
  const int64_t c = config.channels, c2 = 2 * c, cond = config.time_dim, ctx = config.context_dim;
  time1_ = register_module("time1", QuantLinear(kSinusoidDim, cond));
  time2_ = register_module("time2", QuantLinear(cond, cond));
  text_cond_ = register_module("text_cond", QuantLinear(ctx, cond));
  conv_in_ = register_module("conv_in", QuantConv2d(config.in_channels, c, 3, 1, 1));
  res_d0_ = register_module("res_d0", ResBlock(c, c, cond));
  down0_ = register_module("down0", QuantConv2d(c, c, 3, 2, 1));
  res_d1_ = register_module("res_d1", ResBlock(c, c2, cond));
  attn_d1_ = register_module("attn_d1", SpatialCrossAttention(c2, ctx, config.heads));
  down1_ = register_module("down1", QuantConv2d(c2, c2, 3, 2, 1));
  res_d2_ = register_module("res_d2", ResBlock(c2, c2, cond));
  attn_d2_ = register_module("attn_d2", SpatialCrossAttention(c2, ctx, config.heads));
  res_m1_ = register_module("res_m1", ResBlock(c2, c2, cond));
  attn_m_ = register_module("attn_m", SpatialCrossAttention(c2, ctx, config.heads));
  res_m2_ = register_module("res_m2", ResBlock(c2, c2, cond));
  res_u2_ = register_module("res_u2", ResBlock(2 * c2, c2, cond));
  attn_u2_ = register_module("attn_u2", SpatialCrossAttention(c2, ctx, config.heads));
  up2_conv_ = register_module("up2_conv", QuantConv2d(c2, c2, 3, 1, 1));
  res_u1_ = register_module("res_u1", ResBlock(2 * c2, c2, cond));
  attn_u1_ = register_module("attn_u1", SpatialCrossAttention(c2, ctx, config.heads));
  up1_conv_ = register_module("up1_conv", QuantConv2d(c2, c, 3, 1, 1));
  res_u0_ = register_module("res_u0", ResBlock(2 * c, c, cond));
  norm_out_ = register_module("norm_out", GroupNorm(c));
  conv_out_ = register_module("conv_out", QuantConv2d(c, config.in_channels, 3, 1, 1));
}

torch::Tensor UNetImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const TextCondition& text) {
  Require(x.dim() == 4 && x.size(2) == config_.image_size && x.size(3) == config_.image_size && t.dim() == 1 &&
              t.size(0) == x.size(0) && text.states.size(0) == x.size(0),
          "UNet: inputs [B, {}, {}, {}] with B timesteps and captions expected", config_.in_channels,
          config_.image_size, config_.image_size);
  const torch::Tensor cond = time2_->forward(torch::silu(time1_->forward(TimestepFeatures(t)))) +
                             text_cond_->forward(text.pooled);
  const auto attend = [&](SpatialCrossAttention& attention, const torch::Tensor& h) {
    return attention->forward(h, text.states, text.mask);
  };
  const torch::Tensor h0 = res_d0_->forward(conv_in_->forward(x), cond);                      // [B, C, S, S]
  const torch::Tensor h1 = attend(attn_d1_, res_d1_->forward(down0_->forward(h0), cond));    // [B, 2C, S/2]
  const torch::Tensor h2 = attend(attn_d2_, res_d2_->forward(down1_->forward(h1), cond));    // [B, 2C, S/4]
  torch::Tensor h = res_m2_->forward(attend(attn_m_, res_m1_->forward(h2, cond)), cond);
  h = attend(attn_u2_, res_u2_->forward(torch::cat({h, h2}, 1), cond));                      // [B, 2C, S/4]
  h = up2_conv_->forward(Upsample(h));                                                        // [B, 2C, S/2]
  h = attend(attn_u1_, res_u1_->forward(torch::cat({h, h1}, 1), cond));
  h = up1_conv_->forward(Upsample(h));                                                        // [B, C, S]
  h = res_u0_->forward(torch::cat({h, h0}, 1), cond);
  return conv_out_->forward(torch::silu(norm_out_->forward(h)));
}

NamedQuantLayers UNetImpl::QuantLayers() { return FindQuantLayers(*this); }

NoiseSchedule::NoiseSchedule(int64_t steps) {
  Require(steps >= 2 && steps <= 100000, "noise schedule: {} steps", steps);
  // alpha_bar(t) = f(t + 1) / f(0), f(u) = cos^2(((u / T) + s) / (1 + s) * pi / 2), s = 0.008, each step's beta
  // capped at 0.999 (Nichol & Dhariwal) so the last steps stay invertible.
  const double s = 0.008;
  const auto f = [&](double u) {
    const double angle = (u / static_cast<double>(steps) + s) / (1 + s) * M_PI / 2;
    return std::cos(angle) * std::cos(angle);
  };
  alpha_bar_ = torch::empty({steps}, torch::kFloat64);
  double product = 1;
  for (int64_t t = 0; t < steps; ++t) {
    const double beta = std::min(0.999, 1 - f(static_cast<double>(t + 1)) / f(static_cast<double>(t)));
    product *= 1 - beta;
    alpha_bar_[t] = product;
  }
}

torch::Tensor NoiseSchedule::AddNoise(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) const {
  const torch::Tensor a = alpha_bar_.index_select(0, t).to(x0.dtype()).reshape({-1, 1, 1, 1});
  return a.sqrt() * x0 + (1 - a).sqrt() * noise;
}

std::vector<int64_t> NoiseSchedule::DdimTimesteps(int64_t count) const {
  Require(count >= 1 && count <= steps(), "DDIM: {} steps of a {}-step schedule", count, steps());
  std::vector<int64_t> timesteps;
  for (int64_t i = 0; i < count; ++i) {
    const double position = count == 1 ? 0.0 : static_cast<double>(i) / static_cast<double>(count - 1);
    timesteps.push_back(static_cast<int64_t>(std::llround((1 - position) * static_cast<double>(steps() - 1))));
  }
  return timesteps;
}

CaptionConditioner::CaptionConditioner(ImageTextModel text_model, const CaptionVocabulary* vocabulary)
    : model_(std::move(text_model)), vocabulary_(vocabulary) {
  Require(vocabulary_ != nullptr && model_->config().vocab == vocabulary_->size(),
          "caption conditioner: the text model's vocabulary ({}) is not the captions' ({})", model_->config().vocab,
          vocabulary_ ? vocabulary_->size() : 0);
  model_->eval();
  for (auto& p : model_->parameters()) p.set_requires_grad(false);
}

TextCondition CaptionConditioner::Encode(const std::vector<std::string>& captions) const {
  torch::NoGradGuard no_grad;
  const CaptionBatch batch = EncodeCaptions(captions, *vocabulary_, model_->config().context);
  TextCondition text;
  text.states = model_->text().States(batch.ids);
  text.mask = torch::arange(batch.ids.size(1), torch::kLong).unsqueeze(0) < batch.lengths.unsqueeze(1);
  text.pooled = MeanOverTokens(text.states, batch.lengths);
  return text;
}

namespace {

TextCondition Rows(const TextCondition& text, int64_t begin, int64_t end) {
  return {text.states.slice(0, begin, end), text.mask.slice(0, begin, end), text.pooled.slice(0, begin, end)};
}

TextCondition Concat(const TextCondition& a, const TextCondition& b) {
  return {torch::cat({a.states, b.states}), torch::cat({a.mask, b.mask}), torch::cat({a.pooled, b.pooled})};
}

TextCondition Repeat(const TextCondition& one, int64_t n) {
  return {one.states.expand({n, -1, -1}), one.mask.expand({n, -1}), one.pooled.expand({n, -1})};
}

}  // namespace

torch::Tensor SampleDdim(UNetImpl& unet, const NoiseSchedule& schedule, const TextCondition& text,
                         const TextCondition& empty, const SamplerOptions& options) {
  Require(options.batch > 0 && options.guidance >= 0, "DDIM: batch {} and guidance {}", options.batch,
          options.guidance);
  torch::NoGradGuard no_grad;
  const bool was_training = unet.is_training();
  unet.eval();
  const int64_t n = text.states.size(0), size = unet.config().image_size, channels = unet.config().in_channels;
  const std::vector<int64_t> timesteps = schedule.DdimTimesteps(options.steps);
  std::vector<torch::Tensor> out;
  for (int64_t first = 0; first < n; first += options.batch) {
    const int64_t rows = std::min(options.batch, n - first);
    // Sample i's starting noise from (seed, i) alone: the same prompt and seed give the same image whatever the
    // batch, and a W8A8 model starts from the float model's noise.
    std::vector<torch::Tensor> noise;
    for (int64_t i = first; i < first + rows; ++i) {
      auto generator = at::make_generator<at::CPUGeneratorImpl>(MixSeed(options.seed, static_cast<uint64_t>(i)));
      noise.push_back(torch::randn({1, channels, size, size}, generator));
    }
    torch::Tensor x = torch::cat(noise);
    const TextCondition both = Concat(Rows(text, first, first + rows), Repeat(empty, rows));
    for (size_t k = 0; k < timesteps.size(); ++k) {
      const int64_t t = timesteps[k];
      if (options.on_timestep) options.on_timestep(t);
      const double a = schedule.alpha_bar()[t].item<double>();
      const double a_prev = k + 1 < timesteps.size() ? schedule.alpha_bar()[timesteps[k + 1]].item<double>() : 1.0;
      const torch::Tensor eps_both =
          unet.forward(torch::cat({x, x}), torch::full({2 * rows}, t, torch::kLong), both);
      const torch::Tensor eps_text = eps_both.slice(0, 0, rows), eps_empty = eps_both.slice(0, rows);
      torch::Tensor eps = eps_empty + options.guidance * (eps_text - eps_empty);
      // The clean image it implies, kept in the data range, and the noise consistent with that image.
      const torch::Tensor x0 = ((x - std::sqrt(1 - a) * eps) / std::sqrt(a)).clamp(-1, 1);
      eps = (x - std::sqrt(a) * x0) / std::sqrt(1 - a);
      x = std::sqrt(a_prev) * x0 + std::sqrt(1 - a_prev) * eps;
    }
    out.push_back(x.clamp(-1, 1));
  }
  unet.train(was_training);
  return torch::cat(out);
}

torch::Tensor ToPixels(const torch::Tensor& samples) {
  return ((samples.squeeze(1) + 1) * 127.5).round().clamp(0, 255).to(torch::kUInt8);
}

namespace {

constexpr const char* kPackedFormat = "atq-packed-text-to-image/1";

// What config.json holds: the model kind, the UNet's sizes, each layer's quantization.
nlohmann::json UNetJson(UNetImpl& unet) {
  return {{"model", "text-to-image"}, {"unet", UNetConfigToJson(unet.config())},
          {"layers", LayerConfigsToJson(unet.QuantLayers())}};
}

// The UNet a config.json (or a packed file's atq.config) describes, untrained.
UNet UNetFromJson(const nlohmann::json& json, const std::string& what) {
  Require(json.is_object() && json.value("model", std::string()) == "text-to-image" && json.contains("unet"),
          "{}: not a text-to-image checkpoint (\"model\": \"text-to-image\" missing)", what);
  return UNet(UNetConfigFromJson(json.at("unet"), what));
}

}  // namespace

void SaveUNet(const std::string& dir, UNetImpl& unet, const nlohmann::json& extra) {
  SaveModuleFolder(dir, unet, UNetJson(unet), extra);
}

UNet LoadUNet(const std::string& dir, nlohmann::json* config_json) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const nlohmann::json json = ReadStrictJsonFile(config_path);
  UNet unet = UNetFromJson(json, config_path);
  LoadModuleTensors(*unet, (std::filesystem::path(dir) / "model.safetensors").string());
  if (json.contains("layers")) ApplyLayerConfigsJson(json.at("layers"), unet->QuantLayers(), config_path);
  unet->eval();
  if (config_json != nullptr) *config_json = json;
  return unet;
}

int64_t ExportPackedUNet(UNetImpl& unet, const nlohmann::json& extra, QuantType type, const std::string& path) {
  return WritePackedModel(unet, unet.QuantLayers(), type, kPackedFormat, UNetJson(unet), extra, path);
}

bool IsPackedUNet(const std::string& path) { return PackedFormatOf(path) == kPackedFormat; }

UNet LoadUNetAny(const std::string& path, PackedRun run, nlohmann::json* config_json) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) return LoadUNet(path, config_json);
  return LoadPackedModel<UNet>(path, kPackedFormat, run, UNetFromJson, config_json);
}

}  // namespace atq
