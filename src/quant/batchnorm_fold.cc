// FoldBatchNorms: BatchNorm statistics and affine parameters moved into the preceding layer.
#include "quant/batchnorm_fold.h"

#include <torch/torch.h>

#include "models/quant_layers.h"
#include "util/error.h"

namespace atq {
namespace {

// What folding needs from a BatchNorm of any dimension.
struct BatchNormView {
  torch::Tensor weight, bias, running_mean, running_var;
  double* eps = nullptr;
};

BatchNormView ViewOf(torch::nn::Module& module, const std::string& name) {
  if (auto* bn = module.as<torch::nn::BatchNorm2dImpl>()) {
    return {bn->weight, bn->bias, bn->running_mean, bn->running_var, &bn->options.eps()};
  }
  if (auto* bn = module.as<torch::nn::BatchNorm1dImpl>()) {
    return {bn->weight, bn->bias, bn->running_mean, bn->running_var, &bn->options.eps()};
  }
  Fail("fold BatchNorm: module '{}' is not a BatchNorm", name);
}

}  // namespace

int FoldBatchNorms(ClassifierModule& model) {
  torch::NoGradGuard no_grad;
  const auto modules = model.named_modules(/*name_prefix=*/"", /*include_self=*/false);
  int folded = 0;
  for (const auto& [layer_name, norm_name] : model.BatchNormPairs()) {
    const auto* layer_module = modules.find(layer_name);
    const auto* norm_module = modules.find(norm_name);
    Require(layer_module != nullptr && norm_module != nullptr, "fold BatchNorm: the model has no '{}' or '{}'",
            layer_name, norm_name);
    auto* layer = dynamic_cast<QuantWeightLayer*>(layer_module->get());
    Require(layer != nullptr, "fold BatchNorm: '{}' is not a quantizable layer", layer_name);
    BatchNormView norm = ViewOf(**norm_module, norm_name);
    Require(norm.weight.defined() && norm.running_mean.defined(),
            "fold BatchNorm: '{}' needs affine parameters and running statistics", norm_name);
    const torch::Tensor scale = norm.weight / (norm.running_var + *norm.eps).sqrt();  // [out]
    layer->FoldAffine(scale, norm.bias - norm.running_mean * scale);
    norm.weight.fill_(1);
    norm.bias.zero_();
    norm.running_mean.zero_();
    norm.running_var.fill_(1);
    *norm.eps = 0;
    ++folded;
  }
  return folded;
}

}  // namespace atq
