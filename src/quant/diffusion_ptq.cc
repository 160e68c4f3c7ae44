// QuantizeTextToImage: weights of both parts, the text tower's activations once, the UNet's per timestep range.
#include "quant/diffusion_ptq.h"

#include <chrono>
#include <optional>
#include <regex>

#include <torch/torch.h>

#include "models/quant_layers.h"
#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

// Calibration trajectories start from noise no evaluation uses (evaluations seed from 0 upwards).
constexpr uint64_t kCalibrationSeedOffset = 0xca11b;

VisionPtqReport QuantizeWeights(const NamedQuantLayers& layers, const VisionPtqOptions& options, int64_t& float_bytes) {
  VisionPtqReport report;
  for (const auto& [name, interface] : layers) {
    auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
    Require(layer != nullptr, "diffusion ptq: layer '{}' is not a QuantWeightLayer", name);
    Require(!layer->quant_config().quantized,
            "diffusion ptq: layer '{}' was trained quantized; post-training quantization starts from float weights",
            name);
    float_bytes += 4 * (layer->weight.numel() + (layer->bias.defined() ? layer->bias.numel() : 0));
    report.layers.push_back(QuantizeWeightLayer(name, *layer, options.bits, options));
    const torch::Tensor& divisor = layer->input_quant->channel_divisor();
    if (divisor.defined()) report.layers.back().packed_bytes += 4 * divisor.numel();  // smoothing's, float32
  }
  return report;
}

void ObserveAll(const TimestepActivationGrids::Quantizers& quantizers) {
  for (const auto& entry : quantizers) entry.second->Observe();
}

void CalibrateAll(const TimestepActivationGrids::Quantizers& quantizers, const VisionPtqOptions& options,
                  const std::optional<std::regex>& keep_float) {
  for (const auto& [name, quantizer] : quantizers) {
    if (keep_float && std::regex_search(name, *keep_float)) {
      quantizer->Disable();  // stored as bits 0: every timestep range leaves it float
      continue;
    }
    // A quantizer the forward pass never reached (none today) would have nothing to calibrate from.
    Require(quantizer->samples().defined(), "diffusion ptq: activation quantizer '{}' saw no values", name);
    quantizer->Calibrate(options.bits.activations, options.activation_range, options.percentile,
                         options.affine_activations);
  }
}

// The input rows of `report` take the scales their layers' input quantizers were calibrated to.
void FillActivationScales(VisionPtqReport& report, const NamedQuantLayers& layers) {
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto* layer = dynamic_cast<QuantWeightLayer*>(layers[i].second);
    if (layer == nullptr || !layer->input_quant->enabled()) continue;
    report.layers[i].activation_scale = layer->input_quant->scale();
    report.layers[i].activation_unsigned = layer->input_quant->unsigned_grid();
    report.layers[i].activation_zero_point = layer->input_quant->zero_point();
  }
}

// The input-channel dimension of a layer's input and the weight's |w| maximum per input channel.
std::pair<int64_t, torch::Tensor> InputChannels(QuantWeightLayer& layer) {
  const torch::Tensor magnitude = layer.weight.detach().abs();
  if (dynamic_cast<QuantConv2dImpl*>(&layer) != nullptr) return {1, magnitude.amax({0, 2, 3})};  // [out, in, k, k]
  return {-1, magnitude.amax(0)};                                                                // [out, in]
}

// SmoothQuant's migration (DiffusionPtqOptions::smooth) for `layers`, whose float inputs `run` produces; returns
// the divisors' bytes.
int64_t SmoothLayers(const NamedQuantLayers& layers, double alpha, const std::function<void()>& run) {
  std::vector<QuantWeightLayer*> weight_layers;
  for (const auto& [name, interface] : layers) {
    auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
    Require(layer != nullptr, "diffusion ptq: layer '{}' is not a QuantWeightLayer", name);
    layer->input_quant->ObserveChannelMax(InputChannels(*layer).first);
    weight_layers.push_back(layer);
  }
  run();
  int64_t bytes = 0;
  for (QuantWeightLayer* layer : weight_layers) {
    const torch::Tensor inputs = layer->input_quant->StopChannelMax().to(torch::kFloat64);
    const auto [dim, weights] = InputChannels(*layer);
    // A channel that never carried a value (or whose weights are all 0) keeps divisor 1; the rest are bounded so
    // that neither side is pushed to a denormal.
    torch::Tensor divisor = (inputs.pow(alpha) / weights.to(torch::kFloat64).pow(1 - alpha)).clamp(1e-4, 1e4);
    divisor = torch::where(inputs.gt(0) & weights.gt(0), divisor, torch::ones_like(divisor)).to(torch::kFloat32);
    std::vector<int64_t> shape(static_cast<size_t>(layer->weight.dim()), 1);
    shape[1] = divisor.size(0);
    layer->weight.mul_(divisor.reshape(shape));
    layer->input_quant->SetChannelDivisor(divisor, dim);
    bytes += 4 * divisor.numel();
  }
  return bytes;
}

}  // namespace

TimestepActivationGrids::TimestepActivationGrids(Quantizers quantizers, int64_t ranges, int64_t schedule_steps)
    : quantizers_(std::move(quantizers)), schedule_steps_(schedule_steps) {
  Require(ranges >= 1 && ranges <= schedule_steps, "timestep ranges must be 1..{}, not {}", schedule_steps, ranges);
  grids_.resize(static_cast<size_t>(ranges));
}

int64_t TimestepActivationGrids::RangeOf(int64_t t) const {
  Require(t >= 0 && t < schedule_steps_, "timestep {} outside [0, {})", t, schedule_steps_);
  return t * ranges() / schedule_steps_;
}

void TimestepActivationGrids::Store(int64_t range) {
  std::vector<Grid>& grids = grids_.at(static_cast<size_t>(range));
  grids.clear();
  for (const auto& entry : quantizers_) {
    grids.push_back(
        {entry.second->bits(), entry.second->scale(), entry.second->unsigned_grid(), entry.second->zero_point()});
  }
}

void TimestepActivationGrids::Select(int64_t t) {
  const int64_t range = RangeOf(t);
  if (range == selected_) return;
  const std::vector<Grid>& grids = grids_[static_cast<size_t>(range)];
  Require(!grids.empty(), "activation grids: timestep range {} was never calibrated", range);
  for (size_t i = 0; i < quantizers_.size(); ++i) {
    if (grids[i].bits == 0) {
      quantizers_[i].second->Disable();
    } else {
      quantizers_[i].second->SetGrid(grids[i].bits, grids[i].scale, grids[i].unsigned_grid, grids[i].zero_point);
    }
  }
  selected_ = range;
}

nlohmann::json TimestepActivationGrids::ToJson() const {
  nlohmann::json ranges = nlohmann::json::array();
  for (int64_t r = 0; r < this->ranges(); ++r) {
    const int64_t first = (r * schedule_steps_ + this->ranges() - 1) / this->ranges();
    const int64_t last = ((r + 1) * schedule_steps_ + this->ranges() - 1) / this->ranges() - 1;
    nlohmann::json scales = nlohmann::json::object();
    const std::vector<Grid>& grids = grids_[static_cast<size_t>(r)];
    for (size_t i = 0; i < grids.size(); ++i) {
      scales[quantizers_[i].first] = {{"bits", grids[i].bits}, {"scale", grids[i].scale},
                                      {"unsigned", grids[i].unsigned_grid}, {"zero_point", grids[i].zero_point}};
    }
    ranges.push_back({{"timesteps", {first, last}}, {"grids", scales}});
  }
  return ranges;
}

std::function<void(int64_t)> DiffusionPtqResult::OnTimestep() const {
  if (!grids) return {};
  std::shared_ptr<TimestepActivationGrids> grids_copy = grids;
  return [grids_copy](int64_t t) { grids_copy->Select(t); };
}

nlohmann::json DiffusionPtqResult::ToJson() const {
  nlohmann::json json = {{"unet", unet.ToJson()},
                         {"text", text.ToJson()},
                         {"float_bytes", float_bytes},
                         {"smoothing_divisor_bytes", divisor_bytes},
                         {"packed_bytes", unet.packed_bytes() + text.packed_bytes()},
                         {"seconds", seconds}};
  if (grids) json["activation_grids"] = grids->ToJson();
  return json;
}

TimestepActivationGrids::Quantizers ActivationQuantizersOf(torch::nn::Module& module) {
  TimestepActivationGrids::Quantizers found;
  for (const auto& item : module.named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    if (auto* quantizer = item.value()->as<ActivationQuantizerImpl>()) found.emplace_back(item.key(), quantizer);
  }
  return found;
}

DiffusionPtqResult QuantizeTextToImage(UNetImpl& unet, TextEncoderImpl& text_tower,
                                       const CaptionConditioner& conditioner, const CaptionSet& captions,
                                       const DiffusionPtqOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const LayerBitWidths& bits = options.ptq.bits;
  Require(ValidBitWidths(bits) && !bits.ternary && bits.weights != kFloatBits,
          "diffusion ptq: weights must be 2..8 bits (ternary needs training), activations 2..16 or {} (float); "
          "not W{}A{}", kFloatBits, bits.weights, bits.activations);
  Require(options.ptq.layers.empty(), "diffusion ptq: every layer takes the same widths");
  Require(options.calibration_prompts >= captions.classes(),
          "diffusion ptq: {} calibration prompts for {} classes", options.calibration_prompts, captions.classes());
  std::optional<std::regex> keep_float;
  if (!options.float_activations.empty()) {
    try {
      keep_float.emplace(options.float_activations);
    } catch (const std::regex_error& error) {
      Fail("diffusion ptq: float activations '{}' is not a regular expression: {}", options.float_activations,
           error.what());
    }
  }
  torch::NoGradGuard no_grad;
  unet.eval();
  text_tower.eval();
  DiffusionPtqResult result;
  const bool activations = bits.activations != kFloatBits;
  Require(options.smooth >= 0 && options.smooth <= 1 && (options.smooth == 0 || activations),
          "diffusion ptq: smoothing strength {} must be in [0, 1], and it needs quantized activations",
          options.smooth);
  const CaptionGenerator train_wordings(captions, CaptionSplit::kTrain, options.caption_seed);
  std::vector<std::string> prompts;
  for (int64_t i = 0; i < options.calibration_prompts; ++i) {
    prompts.push_back(train_wordings.Caption(static_cast<int>(i % captions.classes()), i));
  }
  std::vector<std::string> with_empty = prompts;
  with_empty.push_back("");  // the guidance's unconditional branch reads the empty caption
  const NoiseSchedule schedule;
  SamplerOptions calibration_sampler = options.sampler;
  calibration_sampler.seed = options.sampler.seed + kCalibrationSeedOffset;
  calibration_sampler.batch = options.calibration_prompts;
  const NamedQuantLayers unet_layers = unet.QuantLayers();
  if (options.smooth > 0) {  // on the float model, before any weight is rounded
    if (options.quantize_text) {
      result.divisor_bytes +=
          SmoothLayers(text_tower.StateLayers(), options.smooth, [&] { conditioner.Encode(with_empty); });
    }
    result.divisor_bytes += SmoothLayers(unet_layers, options.smooth, [&] {
      SampleDdim(unet, schedule, conditioner.Encode(prompts), conditioner.Encode({""}), calibration_sampler);
    });
  }
  if (options.quantize_text) {
    result.text = QuantizeWeights(text_tower.StateLayers(), options.ptq, result.float_bytes);
  }
  result.unet = QuantizeWeights(unet_layers, options.ptq, result.float_bytes);
  if (activations && options.quantize_text) {
    const auto quantizers = ActivationQuantizersOf(*text_tower.blocks());
    ObserveAll(quantizers);
    conditioner.Encode(with_empty);
    CalibrateAll(quantizers, options.ptq, keep_float);
    FillActivationScales(result.text, text_tower.StateLayers());
  }
  if (activations) {
    result.grids = std::make_shared<TimestepActivationGrids>(ActivationQuantizersOf(unet), options.timestep_ranges,
                                                             schedule.steps());
    const auto quantizers = ActivationQuantizersOf(unet);
    ObserveAll(quantizers);
    // DDIM visits the timesteps from T - 1 down to 0, so each range is observed in one stretch: on entering the
    // next, the last one's observations become its grids and observing starts afresh. One batch holds every
    // prompt, or the second batch would visit the ranges again.
    SamplerOptions sampler = calibration_sampler;
    int64_t current = -1;
    TimestepActivationGrids& grids = *result.grids;
    sampler.on_timestep = [&](int64_t t) {
      const int64_t range = grids.RangeOf(t);
      if (range == current) return;
      if (current >= 0) {
        CalibrateAll(quantizers, options.ptq, keep_float);
        grids.Store(current);
        ObserveAll(quantizers);
      }
      current = range;
    };
    SampleDdim(unet, schedule, conditioner.Encode(prompts), conditioner.Encode({""}), sampler);
    CalibrateAll(quantizers, options.ptq, keep_float);
    grids.Store(current);
    for (int64_t r = 0; r < grids.ranges(); ++r) {
      Require(grids.Stored(r),
              "diffusion ptq: {} calibration steps never reach timestep range {} of {}; use more steps or fewer "
              "ranges", options.sampler.steps, r, grids.ranges());
    }
    grids.Select(0);
    FillActivationScales(result.unet, unet_layers);
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  LogInfo("diffusion ptq: W{}A{} in {:.1f} s ({} timestep ranges)", bits.weights, bits.activations, result.seconds,
          activations ? options.timestep_ranges : 0);
  return result;
}

}  // namespace atq
