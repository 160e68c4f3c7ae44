// Folding evaluation-mode BatchNorm into the convolution or linear layer before it, so that post-training
// quantization sees (and quantizes) the weights the network really applies.
#pragma once

#include "models/classifier.h"

namespace atq {

// For every (layer, BatchNorm) pair of model.BatchNormPairs(): W *= gamma / sqrt(var + eps) per output channel,
// b = (b - mean) * gamma / sqrt(var + eps) + beta, and the BatchNorm becomes the identity (mean 0, var 1,
// gamma 1, beta 0, eps 0), so evaluation-mode outputs are unchanged up to float rounding. Training mode would
// use batch statistics again: fold only models that are evaluated. Returns the number of BatchNorms folded;
// throws atq::Error when a pair names a module the model lacks.
int FoldBatchNorms(ClassifierModule& model);

}  // namespace atq
