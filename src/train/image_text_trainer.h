// Contrastive training of the image-text dual encoder (models/image_text.h) on Fashion-MNIST with seeded captions
// (data/captions.h), and its evaluation on held-out wordings: zero-shot classification by text prompts and
// class-level retrieval in both directions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/captions.h"
#include "data/image_data.h"
#include "models/image_text.h"

namespace atq {

struct ImageTextTrainOptions {
  std::string data_dir;       // Fashion-MNIST (MNIST-format files)
  std::string caption_file;   // assets/captions/fashion_mnist.yaml
  std::string tokenizer_dir;  // GPT-2's encoder.json + vocab.bpe
  ImageTextConfig model;      // vocab is set from the captions
  int64_t epochs = 3;
  int64_t batch_size = 256;
  double learning_rate = 2e-3;
  double weight_decay = 0.05;
  uint64_t seed = 0;
  int64_t subset = 0;          // first N training images (0: all)
  int64_t test_subset = 0;     // first N test images (0: all)
  int64_t retrieval_images = 1000;  // test images (with one held-out caption each) for retrieval
  std::function<void(const std::string&)> on_line;  // progress
};

struct ImageTextMetrics {
  double zero_shot_accuracy = 0;            // test images against the mean held-out prompt of each class
  double image_to_text_recall1 = 0, image_to_text_recall5 = 0;  // a caption of the image's class in the top k
  double text_to_image_recall1 = 0, text_to_image_recall5 = 0;  // an image of the caption's class in the top k
  nlohmann::json ToJson() const;
};

// Zero-shot accuracy and retrieval of `model` (in eval mode while measured) on `test` with held-out captions.
ImageTextMetrics EvaluateImageText(DualEncoderImpl& model, const ImageTensors& test, const CaptionSet& captions,
                                   const CaptionVocabulary& vocabulary, uint64_t seed, int64_t retrieval_images);

struct ImageTextTrainResult {
  DualEncoder model{nullptr};
  std::vector<ImageTextMetrics> epochs;  // after each epoch
  double seconds = 0;
  int64_t parameters = 0;
};

ImageTextTrainResult TrainImageText(const ImageTextTrainOptions& options);

}  // namespace atq
