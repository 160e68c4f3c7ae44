#include "train/image_text_trainer.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <torch/torch.h>

#include "data/datasets.h"
#include "io/tokenizer.h"
#include "train/optimizer.h"
#include "util/error.h"

namespace atq {
namespace {

struct EncodedCaptions {
  torch::Tensor ids;      // [N, context] int64
  torch::Tensor lengths;  // [N] int64
};

EncodedCaptions Encode(const std::vector<std::string>& texts, const CaptionVocabulary& vocabulary, int64_t context) {
  EncodedCaptions out{torch::empty({static_cast<int64_t>(texts.size()), context}, torch::kLong),
                      torch::empty({static_cast<int64_t>(texts.size())}, torch::kLong)};
  for (size_t i = 0; i < texts.size(); ++i) {
    int64_t length = 0;
    const std::vector<int64_t> ids = vocabulary.Encode(texts[i], context, &length);
    out.ids[static_cast<int64_t>(i)].copy_(torch::tensor(ids, torch::kLong));
    out.lengths[static_cast<int64_t>(i)] = length;
  }
  return out;
}

// Share of rows whose top-k columns of `similarity` include one whose class equals the row's.
double ClassRecall(const torch::Tensor& similarity, const torch::Tensor& row_labels, const torch::Tensor& column_labels,
                   int64_t k) {
  const torch::Tensor top = std::get<1>(similarity.topk(std::min<int64_t>(k, similarity.size(1)), 1));  // [R, k]
  const torch::Tensor hit = column_labels.index_select(0, top.reshape({-1})).reshape(top.sizes()).eq(
      row_labels.unsqueeze(1));
  return hit.any(1).to(torch::kFloat64).mean().item<double>();
}

}  // namespace

nlohmann::json ImageTextMetrics::ToJson() const {
  return {{"zero_shot_accuracy", zero_shot_accuracy},
          {"image_to_text_recall_at_1", image_to_text_recall1},
          {"image_to_text_recall_at_5", image_to_text_recall5},
          {"text_to_image_recall_at_1", text_to_image_recall1},
          {"text_to_image_recall_at_5", text_to_image_recall5}};
}

ImageTextMetrics EvaluateImageText(DualEncoderImpl& model, const ImageTensors& test, const CaptionSet& captions,
                                   const CaptionVocabulary& vocabulary, uint64_t seed, int64_t retrieval_images) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t context = model.config().context;
  const CaptionGenerator held_out(captions, CaptionSplit::kHeldOut, seed);
  // Class prototypes: the normalized mean embedding of every held-out prompt of the class.
  std::vector<torch::Tensor> prototypes;
  for (int label = 0; label < captions.classes(); ++label) {
    const EncodedCaptions prompts = Encode(held_out.Prompts(label), vocabulary, context);
    prototypes.push_back(model.EncodeText(prompts.ids, prompts.lengths).mean(0));
  }
  const torch::Tensor classes =
      torch::nn::functional::normalize(torch::stack(prototypes), torch::nn::functional::NormalizeFuncOptions().dim(1));
  std::vector<torch::Tensor> embeddings;
  for (int64_t start = 0; start < test.size(); start += 1000) {
    embeddings.push_back(model.EncodeImages(test.images.slice(0, start, std::min(test.size(), start + 1000))));
  }
  const torch::Tensor images = torch::cat(embeddings);
  ImageTextMetrics metrics;
  metrics.zero_shot_accuracy =
      images.matmul(classes.t()).argmax(1).eq(test.labels).to(torch::kFloat64).mean().item<double>();
  // Retrieval: the first N test images, each with one held-out caption of its class.
  const int64_t n = std::min(retrieval_images, test.size());
  std::vector<std::string> texts;
  for (int64_t i = 0; i < n; ++i) texts.push_back(held_out.Caption(static_cast<int>(test.labels[i].item<int64_t>()), i));
  const EncodedCaptions encoded = Encode(texts, vocabulary, context);
  const torch::Tensor text = model.EncodeText(encoded.ids, encoded.lengths);
  const torch::Tensor similarity = images.slice(0, 0, n).matmul(text.t());  // [images, captions]
  const torch::Tensor labels = test.labels.slice(0, 0, n);
  metrics.image_to_text_recall1 = ClassRecall(similarity, labels, labels, 1);
  metrics.image_to_text_recall5 = ClassRecall(similarity, labels, labels, 5);
  metrics.text_to_image_recall1 = ClassRecall(similarity.t(), labels, labels, 1);
  metrics.text_to_image_recall5 = ClassRecall(similarity.t(), labels, labels, 5);
  if (was_training) model.train();
  return metrics;
}

ImageTextTrainResult TrainImageText(const ImageTextTrainOptions& options) {
  Require(options.epochs > 0 && options.batch_size > 1, "image-text training: {} epochs of batches of {}",
          options.epochs, options.batch_size);
  const auto start = std::chrono::steady_clock::now();
  const CaptionSet captions = LoadCaptionSet(options.caption_file);
  const auto tokenizer =
      LoadGpt2Tokenizer(options.tokenizer_dir + "/encoder.json", options.tokenizer_dir + "/vocab.bpe");
  const CaptionVocabulary vocabulary(captions, [&](const std::string& text) { return tokenizer->Encode(text); });
  const TrainingData data = LoadTrainingData("fashion_mnist", options.data_dir, options.subset, options.test_subset);
  Require(data.classes == captions.classes(), "{}: {} classes of captions for {} classes of images",
          options.caption_file, captions.classes(), data.classes);
  torch::manual_seed(options.seed);
  ImageTextConfig config = options.model;
  config.vocab = vocabulary.size();
  config.image_size = data.image_size;
  ImageTextTrainResult result;
  result.model = DualEncoder(config);
  for (const auto& p : result.model->parameters()) result.parameters += p.numel();
  const auto optimizer = MakeAdamW(result.model->parameters(), options.learning_rate, options.weight_decay);
  const CaptionGenerator train_captions(captions, CaptionSplit::kTrain, options.seed);
  const int64_t steps_per_epoch = (data.train.size() + options.batch_size - 1) / options.batch_size;
  const int64_t total = steps_per_epoch * options.epochs;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    result.model->train();
    const EpochBatches batches(data.train, options.batch_size, MixSeed(options.seed, static_cast<uint64_t>(epoch)),
                               /*shuffle=*/true, /*augment=*/false);
    double loss_sum = 0;
    for (int64_t b = 0; b < batches.size(); ++b, ++step) {
      const Batch batch = batches.Get(b);
      if (batch.labels.size(0) < 2) continue;  // InfoNCE needs a negative
      std::vector<std::string> texts;
      for (int64_t j = 0; j < batch.labels.size(0); ++j) {
        const int64_t index = (epoch * steps_per_epoch + b) * options.batch_size + j;
        texts.push_back(train_captions.Caption(static_cast<int>(batch.labels[j].item<int64_t>()), index));
      }
      const EncodedCaptions encoded = Encode(texts, vocabulary, config.context);
      SetLearningRate(*optimizer, WarmupCosineLearningRate(step, total, std::min<int64_t>(100, total / 10),
                                                           options.learning_rate));
      optimizer->zero_grad();
      const torch::Tensor loss = result.model->ContrastiveLoss(batch.images, encoded.ids, encoded.lengths);
      loss.backward();
      optimizer->step();
      loss_sum += loss.item<double>();
      if (options.on_line && ((b + 1) % 20 == 0 || b + 1 == batches.size())) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double eta = seconds / static_cast<double>(step + 1) * static_cast<double>(total - step - 1);
        options.on_line(fmt::format("epoch {}/{}: {}/{} batches | loss {:.4f} | {:.0f}s | ETA {:.0f}s", epoch + 1,
                                    options.epochs, b + 1, batches.size(), loss_sum / static_cast<double>(b + 1),
                                    seconds, eta));
      }
    }
    result.epochs.push_back(EvaluateImageText(*result.model, data.test, captions, vocabulary, options.seed,
                                              options.retrieval_images));
    if (options.on_line) {
      const ImageTextMetrics& m = result.epochs.back();
      options.on_line(fmt::format("epoch {}: zero-shot {:.2f}% | image->text R@1 {:.2f}% R@5 {:.2f}% | "
                                  "text->image R@1 {:.2f}% R@5 {:.2f}%",
                                  epoch + 1, 100 * m.zero_shot_accuracy, 100 * m.image_to_text_recall1,
                                  100 * m.image_to_text_recall5, 100 * m.text_to_image_recall1,
                                  100 * m.text_to_image_recall5));
    }
  }
  result.model->eval();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace atq
