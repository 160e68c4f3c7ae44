// QuantizeTextToImage: weights of both parts, the text tower's activations once, the UNet's per timestep range.
#include "quant/diffusion_ptq.h"

#include <chrono>

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
  }
  return report;
}

void ObserveAll(const TimestepActivationGrids::Quantizers& quantizers) {
  for (const auto& entry : quantizers) entry.second->Observe();
}

void CalibrateAll(const TimestepActivationGrids::Quantizers& quantizers, const VisionPtqOptions& options) {
  for (const auto& [name, quantizer] : quantizers) {
    // A quantizer the forward pass never reached (none today) would have nothing to calibrate from.
    Require(quantizer->samples().defined(), "diffusion ptq: activation quantizer '{}' saw no values", name);
    quantizer->Calibrate(options.bits.activations, options.activation_range, options.percentile);
  }
}

// The input rows of `report` take the scales their layers' input quantizers were calibrated to.
void FillActivationScales(VisionPtqReport& report, const NamedQuantLayers& layers) {
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto* layer = dynamic_cast<QuantWeightLayer*>(layers[i].second);
    if (layer == nullptr || !layer->input_quant->enabled()) continue;
    report.layers[i].activation_scale = layer->input_quant->scale();
    report.layers[i].activation_unsigned = layer->input_quant->unsigned_grid();
  }
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
    grids.push_back({entry.second->bits(), entry.second->scale(), entry.second->unsigned_grid()});
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
      quantizers_[i].second->SetGrid(grids[i].bits, grids[i].scale, grids[i].unsigned_grid);
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
                                      {"unsigned", grids[i].unsigned_grid}};
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
  torch::NoGradGuard no_grad;
  unet.eval();
  text_tower.eval();
  DiffusionPtqResult result;
  if (options.quantize_text) {
    result.text = QuantizeWeights(text_tower.StateLayers(), options.ptq, result.float_bytes);
  }
  const NamedQuantLayers unet_layers = unet.QuantLayers();
  result.unet = QuantizeWeights(unet_layers, options.ptq, result.float_bytes);
  const bool activations = bits.activations != kFloatBits;

  const CaptionGenerator train_wordings(captions, CaptionSplit::kTrain, options.caption_seed);
  std::vector<std::string> prompts;
  for (int64_t i = 0; i < options.calibration_prompts; ++i) {
    prompts.push_back(train_wordings.Caption(static_cast<int>(i % captions.classes()), i));
  }
  if (activations && options.quantize_text) {
    const auto quantizers = ActivationQuantizersOf(*text_tower.blocks());
    ObserveAll(quantizers);
    std::vector<std::string> with_empty = prompts;
    with_empty.push_back("");  // the guidance's unconditional branch reads the empty caption
    conditioner.Encode(with_empty);
    CalibrateAll(quantizers, options.ptq);
    FillActivationScales(result.text, text_tower.StateLayers());
  }
  if (activations) {
    const NoiseSchedule schedule;
    result.grids = std::make_shared<TimestepActivationGrids>(ActivationQuantizersOf(unet), options.timestep_ranges,
                                                             schedule.steps());
    const auto quantizers = ActivationQuantizersOf(unet);
    ObserveAll(quantizers);
    // DDIM visits the timesteps from T - 1 down to 0, so each range is observed in one stretch: on entering the
    // next, the last one's observations become its grids and observing starts afresh. One batch holds every
    // prompt, or the second batch would visit the ranges again.
    SamplerOptions sampler = options.sampler;
    sampler.seed = options.sampler.seed + kCalibrationSeedOffset;
    sampler.batch = options.calibration_prompts;
    int64_t current = -1;
    TimestepActivationGrids& grids = *result.grids;
    sampler.on_timestep = [&](int64_t t) {
      const int64_t range = grids.RangeOf(t);
      if (range == current) return;
      if (current >= 0) {
        CalibrateAll(quantizers, options.ptq);
        grids.Store(current);
        ObserveAll(quantizers);
      }
      current = range;
    };
    SampleDdim(unet, schedule, conditioner.Encode(prompts), conditioner.Encode({""}), sampler);
    CalibrateAll(quantizers, options.ptq);
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
