// The one calibration loop of language-model PTQ, shared by every method and by the sensitivity measurement:
// calibration windows run through the model block by block; for each block the caller gets every linear layer
// with its input Hessian H = 2 X X^T / n, collected from what the model (with whatever the caller already did to
// the blocks before) actually feeds it; then the block's output, under the weights the caller left, becomes the
// next block's input.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/types.h>

#include "io/tokenizer.h"
#include "models/causal_lm.h"
#include "quant/lm_options.h"

namespace atq {

struct LmLinearImpl;

// One linear layer of a block as calibration sees it.
struct CalibratedLayer {
  std::string name;  // module name
  LmLinearImpl* linear = nullptr;
  torch::Tensor hessian;  // [in, in]; undefined when the run has no calibration (samples = 0)
};

// The linear layers of the blocks, as module names in forward order.
std::vector<std::string> QuantizableLayers(CausalLmImpl& model);

// visit(block, layers, first_stage) handles some of `layers` and returns their indices. `first_stage` lists the
// layers fed by the first input the block computed (true-sequential quantization takes those first). While layers
// are left, their Hessians are collected again on the block's inputs, now with the handled layers as the visitor
// left them, and visit is called with the rest. Without calibration (options.samples = 0) the Hessians are
// undefined and nothing runs through the model.
using BlockVisitor = std::function<std::vector<size_t>(int64_t block, std::vector<CalibratedLayer>& layers,
                                                       const std::vector<size_t>& first_stage)>;

// Which Hessians each pass over a block collects: every remaining layer's (a visitor that handles all layers at
// once), or only the first stage's (true-sequential quantization, which handles one stage per pass: the later
// layers' Hessians would be collected again after it anyway, and the block's forward stops once the first stage
// has been fed, so a stage costs the part of the block up to it).
enum class CaptureScope { kAllLayers, kFirstStage };

struct CalibrationRun {
  int64_t tokens = 0;    // calibration tokens
  double seconds = 0;    // running the blocks (sampling included), without the visitor's own time
};

// Called around each block: before its layers are visited (a streamed model reads the block's weights), and
// after the block has run on the calibration batches under the weights the visitor left (its tensors are final).
struct BlockHooks {
  std::function<void(int64_t block)> before, after;
};

// Throws atq::Error when the visitor handles nothing in a call, or a layer is never called while its block runs
// (with kFirstStage: when no layer is).
CalibrationRun CalibrateBlocks(CausalLmImpl& model, const Tokenizer& tokenizer, const LmQuantizeOptions& options,
                               const BlockVisitor& visit, const BlockHooks* hooks = nullptr,
                               CaptureScope scope = CaptureScope::kAllLayers);

}  // namespace atq
