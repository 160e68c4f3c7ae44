// Knowledge-distillation losses.
#include "train/distillation.h"

#include <torch/torch.h>

namespace atq {

torch::Tensor SoftTargetKl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                           double temperature) {
  // Log-probabilities on both sides: exact for teacher probabilities that underflow to 0.
  const torch::Tensor student_log = torch::log_softmax(student_logits / temperature, 1);  // [B, K]
  const torch::Tensor teacher_log = torch::log_softmax(teacher_logits / temperature, 1);  // [B, K]
  return (teacher_log.exp() * (teacher_log - student_log)).sum(1).mean();
}

torch::Tensor DistillationLoss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                               const torch::Tensor& labels, double temperature, double alpha) {
  const torch::Tensor soft = SoftTargetKl(student_logits, teacher_logits, temperature);
  const torch::Tensor hard = torch::nn::functional::cross_entropy(student_logits, labels);
  return alpha * temperature * temperature * soft + (1 - alpha) * hard;
}

}  // namespace atq
