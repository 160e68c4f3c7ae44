// Knowledge distillation's losses (Hinton et al. 2015).
#pragma once

#include <torch/types.h>

namespace atq {

// Mean over the batch of KL(softmax(teacher / T) || softmax(student / T)). logits: [B, classes].
torch::Tensor SoftTargetKl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                           double temperature);

// alpha * T^2 * SoftTargetKl + (1 - alpha) * cross-entropy(student, labels) (Hinton et al. 2015: T^2 keeps the
// soft term's gradient scale independent of T).
torch::Tensor DistillationLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                               const torch::Tensor& labels, double temperature, double alpha);

}  // namespace atq
