// Block-by-block calibration of causal language models: Hessian capture and the loop over blocks.
#include "quant/lm_calibration.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>
#include <unordered_map>

#include <torch/torch.h>

#include "models/lm_linear.h"
#include "quant/calibration.h"
#include "quant/gptq.h"
#include "util/error.h"

namespace atq {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::unordered_map<const torch::nn::Module*, std::string> ModuleNames(CausalLmImpl& model) {
  std::unordered_map<const torch::nn::Module*, std::string> names;
  for (const auto& item : model.named_modules()) names.emplace(item.value().get(), item.key());
  return names;
}

// The block's linear layers with their full module names, in registration (= forward) order.
std::vector<CalibratedLayer> BlockLayers(CausalLmImpl& model, size_t block,
                                         const std::unordered_map<const torch::nn::Module*, std::string>& names) {
  std::vector<CalibratedLayer> layers;
  for (const auto& module : model.Block(block)->modules(/*include_self=*/false)) {
    if (auto* linear = module->as<LmLinearImpl>()) layers.push_back({names.at(module.get()), linear, {}});
  }
  return layers;
}

// Thrown by a tap to end a block's forward pass once the layers it captures have been fed (the rest of the block
// would compute nothing the capture uses); caught around the pass.
struct FirstStageFed {};

// Collects the Hessians of `layers` while the block runs over the calibration batches. Layers fed the same
// tensor (Llama's q/k/v, gate/up) share one accumulator. Returns the first-called group of layers (indices). With
// kFirstStage only that group is accumulated and each pass stops at the first layer fed anything else.
std::vector<size_t> CaptureHessians(CausalLmImpl& model, size_t block, std::vector<CalibratedLayer>& layers,
                                    const std::vector<torch::Tensor>& hidden, CaptureScope scope) {
  std::vector<std::shared_ptr<HessianAccumulator>> accumulators(layers.size());
  // This batch's inputs, kept alive so that no later input can reuse their memory and pass for one of them.
  std::vector<std::pair<torch::Tensor, std::shared_ptr<HessianAccumulator>>> seen;
  std::vector<HessianAccumulator*> call_order;
  const bool first_only = scope == CaptureScope::kFirstStage;
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i].linear->tap = [&, i](const torch::Tensor& x) {
      for (const auto& [input, accumulator] : seen) {
        if (input.data_ptr() == x.data_ptr() && input.sizes() == x.sizes() && input.strides() == x.strides()) {
          accumulators[i] = accumulator;  // a layer fed the same tensor accumulated it already
          return;
        }
      }
      if (first_only && !seen.empty()) throw FirstStageFed{};
      if (!accumulators[i]) {
        accumulators[i] = std::make_shared<HessianAccumulator>(x.size(-1), x.device());
        call_order.push_back(accumulators[i].get());
      }
      accumulators[i]->Add(x);
      seen.emplace_back(x, accumulators[i]);
    };
  }
  for (const torch::Tensor& batch : hidden) {
    seen.clear();
    try {
      model.ForwardBlock(block, batch);
    } catch (const FirstStageFed&) {
    }
  }
  for (CalibratedLayer& layer : layers) layer.linear->tap = nullptr;
  std::vector<size_t> first_stage;
  for (size_t i = 0; i < layers.size(); ++i) {
    Require(accumulators[i] != nullptr || (first_only && !call_order.empty()),
            "layer {} was never called while its block ran", layers[i].name);
    if (accumulators[i] == nullptr) {
      layers[i].hessian = torch::Tensor();  // not captured in this pass: no stale Hessian from an earlier one
      continue;
    }
    layers[i].hessian = accumulators[i]->hessian();
    if (accumulators[i].get() == call_order.front()) first_stage.push_back(i);
  }
  return first_stage;
}

}  // namespace

std::vector<std::string> QuantizableLayers(CausalLmImpl& model) {
  const auto names = ModuleNames(model);
  std::vector<std::string> out;
  for (int64_t block = 0; block < model.config().num_layers; ++block) {
    for (const CalibratedLayer& layer : BlockLayers(model, static_cast<size_t>(block), names)) out.push_back(layer.name);
  }
  return out;
}

CalibrationRun CalibrateBlocks(CausalLmImpl& model, const Tokenizer& tokenizer, const LmQuantizeOptions& options,
                               const BlockVisitor& visit, const BlockHooks* hooks, CaptureScope scope) {
  torch::NoGradGuard no_grad;
  const bool calibrated = options.samples > 0;
  Require(!calibrated || !options.text.empty(), "calibration needs a text file (--calib)");
  CalibrationRun run;
  const auto sample_start = Clock::now();
  const auto names = ModuleNames(model);
  std::vector<torch::Tensor> hidden;  // the calibration batches entering the current block: [B, T, C]
  if (calibrated) {
    const torch::Tensor ids = SampleCalibration(tokenizer, options.text, options.samples, options.length, options.seed);
    run.tokens = ids.numel();
    const torch::Device device = model.parameters().front().device();
    for (const torch::Tensor& batch : ids.split(std::max<int64_t>(1, options.batch_size))) {
      hidden.push_back(model.Embed(batch.to(device)));
    }
  }
  run.seconds += SecondsSince(sample_start);
  for (int64_t block = 0; block < model.config().num_layers; ++block) {
    if (hooks != nullptr && hooks->before) hooks->before(block);
    std::vector<CalibratedLayer> remaining = BlockLayers(model, static_cast<size_t>(block), names);
    while (!remaining.empty()) {
      std::vector<size_t> first_stage(remaining.size());
      std::iota(first_stage.begin(), first_stage.end(), 0);
      if (calibrated) {
        const auto capture_start = Clock::now();
        first_stage = CaptureHessians(model, static_cast<size_t>(block), remaining, hidden, scope);
        run.seconds += SecondsSince(capture_start);
      }
      const std::vector<size_t> done = visit(block, remaining, first_stage);
      Require(!done.empty(), "calibration: nothing was done with the {} layers left in block {}", remaining.size(),
              block);
      std::vector<CalibratedLayer> rest;
      for (size_t i = 0; i < remaining.size(); ++i) {
        if (std::find(done.begin(), done.end(), i) == done.end()) rest.push_back(std::move(remaining[i]));
      }
      remaining = std::move(rest);
    }
    if (calibrated) {  // what the next block sees: this block's output under the weights the visitor left
      const auto forward_start = Clock::now();
      for (torch::Tensor& batch : hidden) batch = model.ForwardBlock(static_cast<size_t>(block), batch);
      run.seconds += SecondsSince(forward_start);
    }
    if (hooks != nullptr && hooks->after) hooks->after(block);
  }
  return run;
}

}  // namespace atq
