// What one inference of an image classifier (or any model of QuantWeightLayers) costs in operations and memory traffic, counted from the real
// layer shapes of a forward pass, and the bit widths a post-training recipe gives each of those layers: the
// inputs of the energy model (eval/energy.h).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "eval/energy.h"
#include "models/classifier.h"
#include "quant/vision_ptq.h"

namespace atq {

// One forward pass of a single [1, channels, size, size] image, then per weight layer (QuantLayers() order):
// MACs, weights, input and output elements; and per attention module with query/key quantizers (ViT) two
// activation x activation products, "<attention>.scores" (Q K^T) and "<attention>.context" (P V).
std::vector<LayerWork> CountClassifierWork(ClassifierModule& model, int64_t channels, int64_t image_size);

// The same for any module: `forward` runs one sample through `module` (in eval mode, without gradients), then
// each of `layers` reports what its input quantizer saw, and each attention with query/key quantizers its two
// products. A layer that saw no input is an error naming it.
std::vector<LayerWork> CountModuleWork(torch::nn::Module& module, const NamedQuantLayers& layers,
                                       const std::function<void()>& forward);

// The bits each entry of `work` runs at after QuantizeClassifier reported `report`: weight layers as the report
// says (ternary weights as 2 bits, their packed width), attention products at `attention_bits`.
std::vector<LayerBits> RecipeBits(const std::vector<LayerWork>& work, const VisionPtqReport& report,
                                  int attention_bits);

}  // namespace atq
