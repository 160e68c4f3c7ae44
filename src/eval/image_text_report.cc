#include "eval/image_text_report.h"

#include <chrono>

#include <torch/torch.h>

#include "eval/classifier_work.h"
#include "models/quant_layers.h"
#include "report/plot.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr int kPackedActivationBits = 8;  // the packed kernels quantize each input row to int8

LayerBits BitsOf(const QuantizableLayer& layer, bool packed_kernels) {
  const LayerQuantConfig& config = layer.quant_config();
  switch (config.mode()) {
    case WeightMode::kTernary:
      return {2, packed_kernels ? kPackedActivationBits : kFloatBits};
    case WeightMode::kUniform:
      return {config.grid.bits, packed_kernels ? kPackedActivationBits : kFloatBits};
    default:
      return {kFloatBits, kFloatBits};
  }
}

}  // namespace

nlohmann::json ImageTextReport::ToJson() const {
  nlohmann::json layer_rows = nlohmann::json::array();
  for (const LayerQuantStats& layer : size.layers) {
    layer_rows.push_back({{"name", layer.name},
                          {"weights", layer.weights},
                          {"share_minus", layer.share_minus},
                          {"share_zero", layer.share_zero},
                          {"share_plus", layer.share_plus},
                          {"rpb_weights", layer.rpb_weights},
                          {"bytes", layer.packed_bytes},
                          {"fp32_bytes", layer.fp32_bytes}});
  }
  return {{"metrics", metrics.ToJson()},
          {"packed_kernels", size.packed_kernels},
          {"parameters", size.parameters},
          {"size",
           {{"quantized_layers", size.quantized_layers},
            {"quantized_weights", size.quantized_weights},
            {"quantized_layers_fp32_bytes", size.quantized_fp32_bytes},
            {"quantized_layers_bytes", size.quantized_bytes},
            {"quantized_layers_compression", size.Compression()},
            {"model_fp32_bytes", size.model_fp32_bytes},
            {"model_bytes", size.model_bytes}}},
          {"layers", layer_rows},
          {"energy_per_query", EnergyJson(energy_model, energy)},
          {"images_per_second", images_per_second}};
}

ImageTextReport ReportImageText(ImageTextModelImpl& model, const ImageTextData& data, uint64_t seed,
                                int64_t retrieval_images, const EnergyModel& energy_model) {
  torch::NoGradGuard no_grad;
  model.eval();
  ImageTextReport report;
  report.metrics =
      EvaluateImageText(model, data.test, *data.captions, *data.vocabulary, seed, retrieval_images);
  const NamedQuantLayers layers = model.QuantLayers();
  report.size = MeasureQuantizedModel(model, layers);
  std::vector<LayerBits> bits;
  for (const auto& [name, layer] : layers) {
    const auto* weights = dynamic_cast<const QuantWeightLayer*>(layer);
    Require(weights != nullptr, "image-text report: layer '{}' is not a QuantWeightLayer", name);
    bits.push_back(BitsOf(*layer, weights->RunsPackedKernels()));
  }

  // One query: an image and a caption embedded, and their match scored.
  const CaptionGenerator held_out(*data.captions, CaptionSplit::kHeldOut, seed);
  const CaptionBatch caption = EncodeCaptions({held_out.Caption(0, 0)}, *data.vocabulary, model.config().context);
  const torch::Tensor image = data.test.images.slice(0, 0, 1);
  const std::vector<LayerWork> work = CountModuleWork(model, layers, [&] {
    model.EncodeImages(image);
    model.EncodeText(caption);
    model.Match(image, caption);
  });
  // Attention products (activation x activation) run in float; each work row past the layers is one.
  while (bits.size() < work.size()) bits.push_back({kFloatBits, kFloatBits});
  report.energy_model = energy_model;
  report.energy = NetworkEnergy(energy_model, work, bits);
  report.energy_pj = TotalEnergy(report.energy);

  const int64_t n = std::min<int64_t>(1000, data.test.size());
  const auto start = std::chrono::steady_clock::now();
  for (int64_t first = 0; first < n; first += 250) {
    model.EncodeImages(data.test.images.slice(0, first, std::min(n, first + 250)));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.images_per_second = seconds > 0 ? static_cast<double>(n) / seconds : 0.0;
  return report;
}

void PlotImageTextComparison(const std::vector<std::pair<std::string, ImageTextMetrics>>& models,
                             const std::string& png_path) {
  PlotSpec spec;
  spec.title = "image-text model on held-out wordings";
  spec.y_label = "%";
  spec.categories = {"zero-shot", "img->text R@1", "img->text R@5", "text->img R@1", "text->img R@5",
                     "matching", "matching (hard)"};
  for (const auto& [name, m] : models) {
    spec.series.emplace_back(name, std::vector<double>{},
                             std::vector<double>{100 * m.zero_shot_accuracy, 100 * m.image_to_text_recall1,
                                                 100 * m.image_to_text_recall5, 100 * m.text_to_image_recall1,
                                                 100 * m.text_to_image_recall5, 100 * m.matching_accuracy,
                                                 100 * m.matching_accuracy_hard});
  }
  RenderPlot(spec, png_path);
}

void PlotTernaryDistribution(const std::vector<LayerQuantStats>& layers, const std::string& png_path) {
  PlotSpec spec;
  spec.title = "ternary codes per layer";
  spec.y_label = "share of weights (%)";
  spec.width = 1200;
  PlotSeries minus("-1", {}, {}), zero("0", {}, {}), plus("+1", {}, {});
  for (const LayerQuantStats& layer : layers) {
    spec.categories.push_back(layer.name);
    minus.y.push_back(100 * layer.share_minus);
    zero.y.push_back(100 * layer.share_zero);
    plus.y.push_back(100 * layer.share_plus);
  }
  spec.series = {minus, zero, plus};
  RenderPlot(spec, png_path);
}

void PlotZeroShotConfusion(const ImageTextMetrics& metrics, const std::vector<std::string>& class_names,
                           const std::string& title, const std::string& png_path) {
  HeatmapSpec spec;
  spec.title = title;
  spec.x_label = "predicted by the text prompts";
  spec.y_label = "true class";
  spec.row_labels = class_names;
  spec.column_labels = class_names;
  for (const auto& row : metrics.confusion) spec.values.emplace_back(row.begin(), row.end());
  RenderHeatmap(spec, png_path);
}

}  // namespace atq
