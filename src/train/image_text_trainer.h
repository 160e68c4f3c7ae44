// Training of the image-text model (models/image_text.h) on Fashion-MNIST with seeded captions (data/captions.h):
// contrastive (symmetric InfoNCE) for the towers plus image-text matching with hard negatives for the fusion
// module, in full precision or quantization-aware (the classifier QAT's grids and schedule, train/qat_schedule.h)
// with distillation from a full-precision teacher. Evaluation on held-out wordings: zero-shot classification by
// text prompts, class-level retrieval both ways, matching accuracy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/captions.h"
#include "data/image_data.h"
#include "models/image_text.h"
#include "train/qat_schedule.h"

namespace atq {

// Images, captions and the caption vocabulary, loaded and checked against each other.
struct ImageTextData {
  std::unique_ptr<CaptionSet> captions;  // stable address: generators keep a reference
  std::unique_ptr<CaptionVocabulary> vocabulary;
  ImageTensors train, test;
  int64_t image_size = 0;
};
ImageTextData LoadImageTextData(const std::string& data_dir, const std::string& caption_file,
                                const std::string& tokenizer_dir, int64_t subset, int64_t test_subset);

struct ImageTextTrainOptions {
  std::string data_dir;       // Fashion-MNIST (MNIST-format files)
  std::string caption_file;   // assets/captions/fashion_mnist.yaml
  std::string tokenizer_dir;  // GPT-2's encoder.json + vocab.bpe
  ImageTextConfig model;      // vocab is set from the captions (ignored with init_from: the checkpoint's own)
  int64_t epochs = 3;
  int64_t batch_size = 256;
  double learning_rate = 2e-3;
  double weight_decay = 0.05;
  double match_weight = 1.0;   // the matching loss beside InfoNCE (0: a dual encoder alone)
  uint64_t seed = 0;
  int64_t subset = 0;          // first N training images (0: all)
  int64_t test_subset = 0;     // first N test images (0: all)
  int64_t retrieval_images = 1000;  // test images (with one held-out caption each) for retrieval and matching

  // Quantization-aware training: every layer on this grid but image.conv1 (the raw image's 1-channel input,
  // 288 weights, kept full precision as the classifiers keep their first layer) unless quantize_first.
  WeightQatOptions qat;
  bool quantize_first = false;
  std::string init_from;        // an image-text checkpoint folder to start from (e.g. the full-precision model)
  std::string distill_teacher;  // an image-text checkpoint folder; empty: no distillation
  double temperature = 4.0;
  double distill_alpha = 0.5;   // weight of the teacher's soft targets in each loss term

  std::function<void(const std::string&)> on_line;  // progress
};

struct ImageTextMetrics {
  double zero_shot_accuracy = 0;            // test images against the mean held-out prompt of each class
  double image_to_text_recall1 = 0, image_to_text_recall5 = 0;  // a caption of the image's class in the top k
  double text_to_image_recall1 = 0, text_to_image_recall5 = 0;  // an image of the caption's class in the top k
  double matching_accuracy = 0;      // (image, its caption) and (image, a negative caption) pairs, half each
  double matching_accuracy_hard = 0; // the negatives from a similar class only
  double sparsity = 0;               // zero share over the ternary layers (0 without any)
  std::vector<std::vector<int64_t>> confusion;  // zero-shot: [true class][predicted class]
  nlohmann::json ToJson() const;
};

// Every metric of `model` (in eval mode while measured) on `test` with held-out captions.
ImageTextMetrics EvaluateImageText(ImageTextModelImpl& model, const ImageTensors& test, const CaptionSet& captions,
                                   const CaptionVocabulary& vocabulary, uint64_t seed, int64_t retrieval_images);

struct ImageTextTrainResult {
  ImageTextModel model{nullptr};
  std::vector<ImageTextMetrics> epochs;  // after each epoch
  double seconds = 0;
  int64_t parameters = 0;
};

ImageTextTrainResult TrainImageText(const ImageTextTrainOptions& options);

}  // namespace atq
