// What a trained image-text model is worth and costs: every metric on held-out wordings (train/image_text_trainer.h),
// the size of its quantized layers and of the whole model as stored, the energy of one query by the energy model
// (eval/energy.h), the image encoder's throughput; and the plots people compare (full precision against ternary
// per metric, the ternary code shares per layer, the zero-shot confusion matrix).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/energy.h"
#include "models/image_text.h"
#include "models/quant_layers.h"
#include "train/image_text_trainer.h"

namespace atq {

struct ImageTextReport {
  ImageTextMetrics metrics;
  QuantizedModelSize size;            // the quantized layers as stored, and the whole model
  // One query: one image and one caption embedded and their match scored (every layer once).
  std::vector<LayerEnergy> energy;
  EnergyModel energy_model;
  double energy_pj = 0;
  double images_per_second = 0;       // the image encoder on test images, batches of 250

  nlohmann::json ToJson() const;
};

ImageTextReport ReportImageText(ImageTextModelImpl& model, const ImageTextData& data, uint64_t seed,
                                int64_t retrieval_images, const EnergyModel& energy_model);

// Bars of each metric (in %) for each named model.
void PlotImageTextComparison(const std::vector<std::pair<std::string, ImageTextMetrics>>& models,
                             const std::string& png_path);
// Bars of the -1 / 0 / +1 code shares of every ternary layer.
void PlotTernaryDistribution(const std::vector<LayerQuantStats>& layers, const std::string& png_path);
// The zero-shot confusion matrix, rows the true classes.
void PlotZeroShotConfusion(const ImageTextMetrics& metrics, const std::vector<std::string>& class_names,
                           const std::string& title, const std::string& png_path);

}  // namespace atq
