#include "train/image_text_trainer.h"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <torch/torch.h>

#include "data/datasets.h"
#include "io/tokenizer.h"
#include "train/distillation.h"
#include "train/optimizer.h"
#include "util/error.h"
#include "util/progress.h"

namespace atq {
namespace {

// Share of rows whose top-k columns of `similarity` include one whose class equals the row's.
double ClassRecall(const torch::Tensor& similarity, const torch::Tensor& row_labels, const torch::Tensor& column_labels,
                   int64_t k) {
  const torch::Tensor top = std::get<1>(similarity.topk(std::min<int64_t>(k, similarity.size(1)), 1));  // [R, k]
  const torch::Tensor hit = column_labels.index_select(0, top.reshape({-1})).reshape(top.sizes()).eq(
      row_labels.unsqueeze(1));
  return hit.any(1).to(torch::kFloat64).mean().item<double>();
}

int Label(const torch::Tensor& labels, int64_t i) { return static_cast<int>(labels[i].item<int64_t>()); }

// The matching task's pairs for images [first, first + n) of a batch: each image's caption, and a caption of
// Negative(label) for the same image; example indices keep the captions counter-based.
struct MatchCaptions {
  std::vector<std::string> positives, negatives;
  std::vector<int> negative_labels;
};
MatchCaptions DrawMatchCaptions(const CaptionGenerator& generator, const torch::Tensor& labels, int64_t first_index) {
  MatchCaptions out;
  for (int64_t j = 0; j < labels.size(0); ++j) {
    const int label = Label(labels, j);
    const int64_t index = first_index + j;
    const int negative = generator.Negative(label, index);
    out.positives.push_back(generator.Caption(label, index));
    // A different draw index for the negative's wording (the caption generator is counter-based per example).
    out.negatives.push_back(generator.Caption(negative, ~index));
    out.negative_labels.push_back(negative);
  }
  return out;
}

}  // namespace

ImageTextData LoadImageTextData(const std::string& data_dir, const std::string& caption_file,
                                const std::string& tokenizer_dir, int64_t subset, int64_t test_subset) {
  ImageTextData data;
  data.captions = std::make_unique<CaptionSet>(LoadCaptionSet(caption_file));
  // The vocabulary keeps the tokenizer for the held-out wordings it encodes later: shared, not borrowed.
  const std::shared_ptr<Tokenizer> tokenizer =
      LoadGpt2Tokenizer(tokenizer_dir + "/encoder.json", tokenizer_dir + "/vocab.bpe");
  data.vocabulary = std::make_unique<CaptionVocabulary>(
      *data.captions, [tokenizer](const std::string& text) { return tokenizer->Encode(text); });
  TrainingData images = LoadTrainingData("fashion_mnist", data_dir, subset, test_subset);
  Require(images.classes == data.captions->classes(), "{}: {} classes of captions for {} classes of images",
          caption_file, data.captions->classes(), images.classes);
  data.train = std::move(images.train);
  data.test = std::move(images.test);
  data.image_size = images.image_size;
  return data;
}

nlohmann::json ImageTextMetrics::ToJson() const {
  return {{"zero_shot_accuracy", zero_shot_accuracy},
          {"image_to_text_recall_at_1", image_to_text_recall1},
          {"image_to_text_recall_at_5", image_to_text_recall5},
          {"text_to_image_recall_at_1", text_to_image_recall1},
          {"text_to_image_recall_at_5", text_to_image_recall5},
          {"matching_accuracy", matching_accuracy},
          {"matching_accuracy_hard_negatives", matching_accuracy_hard},
          {"sparsity", sparsity},
          {"zero_shot_confusion", confusion}};
}

ImageTextMetrics EvaluateImageText(ImageTextModelImpl& model, const ImageTensors& test, const CaptionSet& captions,
                                   const CaptionVocabulary& vocabulary, uint64_t seed, int64_t retrieval_images) {
  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const int64_t context = model.config().context;
  const int classes = captions.classes();
  const CaptionGenerator held_out(captions, CaptionSplit::kHeldOut, seed);
  // Class prototypes: the normalized mean embedding of every held-out prompt of the class.
  std::vector<torch::Tensor> prototypes;
  for (int label = 0; label < classes; ++label) {
    prototypes.push_back(model.EncodeText(EncodeCaptions(held_out.Prompts(label), vocabulary, context)).mean(0));
  }
  const torch::Tensor class_embeddings =
      torch::nn::functional::normalize(torch::stack(prototypes), torch::nn::functional::NormalizeFuncOptions().dim(1));
  std::vector<torch::Tensor> embeddings;
  for (int64_t start = 0; start < test.size(); start += 1000) {
    embeddings.push_back(model.EncodeImages(test.images.slice(0, start, std::min(test.size(), start + 1000))));
  }
  const torch::Tensor images = torch::cat(embeddings);
  ImageTextMetrics metrics;
  const torch::Tensor predicted = images.matmul(class_embeddings.t()).argmax(1);
  metrics.zero_shot_accuracy = predicted.eq(test.labels).to(torch::kFloat64).mean().item<double>();
  metrics.confusion.assign(static_cast<size_t>(classes), std::vector<int64_t>(static_cast<size_t>(classes), 0));
  const torch::Tensor pairs = (test.labels * classes + predicted).bincount({}, classes * classes);
  for (int t = 0; t < classes; ++t) {
    for (int p = 0; p < classes; ++p) metrics.confusion[t][p] = pairs[t * classes + p].item<int64_t>();
  }

  // Retrieval: the first N test images, each with one held-out caption of its class.
  const int64_t n = std::min(retrieval_images, test.size());
  const torch::Tensor labels = test.labels.slice(0, 0, n);
  const MatchCaptions drawn = DrawMatchCaptions(held_out, labels, 0);
  const CaptionBatch positives = EncodeCaptions(drawn.positives, vocabulary, context);
  const torch::Tensor text = model.EncodeText(positives);
  const torch::Tensor similarity = images.slice(0, 0, n).matmul(text.t());  // [images, captions]
  metrics.image_to_text_recall1 = ClassRecall(similarity, labels, labels, 1);
  metrics.image_to_text_recall5 = ClassRecall(similarity, labels, labels, 5);
  metrics.text_to_image_recall1 = ClassRecall(similarity.t(), labels, labels, 1);
  metrics.text_to_image_recall5 = ClassRecall(similarity.t(), labels, labels, 5);

  // Matching: each of the N images with its caption (a match) and with a negative caption (none), in chunks.
  const CaptionBatch negatives = EncodeCaptions(drawn.negatives, vocabulary, context);
  int64_t correct = 0, hard_correct = 0, hard = 0;
  for (int64_t start = 0; start < n; start += 250) {
    const int64_t end = std::min(n, start + 250);
    const torch::Tensor chunk = test.images.slice(0, start, end);
    const auto slice = [&](const CaptionBatch& batch) {
      return CaptionBatch{batch.ids.slice(0, start, end), batch.lengths.slice(0, start, end)};
    };
    const torch::Tensor match = model.Match(chunk, slice(positives)).argmax(1);
    const torch::Tensor mismatch = model.Match(chunk, slice(negatives)).argmax(1);
    correct += match.eq(1).sum().item<int64_t>() + mismatch.eq(0).sum().item<int64_t>();
    for (int64_t i = start; i < end; ++i) {
      const auto& similar = captions.similar[static_cast<size_t>(Label(labels, i))];
      if (std::find(similar.begin(), similar.end(), drawn.negative_labels[static_cast<size_t>(i)]) == similar.end()) {
        continue;
      }
      ++hard;
      hard_correct += mismatch[i - start].item<int64_t>() == 0 ? 1 : 0;
    }
  }
  metrics.matching_accuracy = static_cast<double>(correct) / static_cast<double>(2 * n);
  metrics.matching_accuracy_hard = hard > 0 ? static_cast<double>(hard_correct) / static_cast<double>(hard) : 0.0;
  metrics.sparsity = MeasuredSparsity(model.QuantLayers());
  if (was_training) model.train();
  return metrics;
}

ImageTextTrainResult TrainImageText(const ImageTextTrainOptions& options) {
  Require(options.epochs > 0 && options.batch_size > 1, "image-text training: {} epochs of batches of {}",
          options.epochs, options.batch_size);
  Require(options.match_weight >= 0, "image-text training: match weight must be >= 0, got {}", options.match_weight);
  Require(options.temperature > 0 && options.distill_alpha >= 0 && options.distill_alpha <= 1,
          "image-text training: distillation temperature {} and weight {} (must be > 0 and in [0, 1])",
          options.temperature, options.distill_alpha);
  options.qat.Validate();
  const auto start = std::chrono::steady_clock::now();
  const ImageTextData data =
      LoadImageTextData(options.data_dir, options.caption_file, options.tokenizer_dir, options.subset,
                        options.test_subset);
  torch::manual_seed(options.seed);
  ImageTextTrainResult result;
  if (!options.init_from.empty()) {
    result.model = LoadImageTextModel(options.init_from);
    Require(result.model->config().vocab == data.vocabulary->size() &&
                result.model->config().image_size == data.image_size,
            "{}: the checkpoint has a vocabulary of {} and {}-pixel images, the captions and data give {} and {}",
            options.init_from, result.model->config().vocab, result.model->config().image_size,
            data.vocabulary->size(), data.image_size);
  } else {
    ImageTextConfig config = options.model;
    config.vocab = data.vocabulary->size();
    config.image_size = data.image_size;
    result.model = ImageTextModel(config);
  }
  const ImageTextConfig& config = result.model->config();
  const auto layers = result.model->QuantLayers();
  std::vector<std::string> keep_full;
  if (!options.quantize_first) keep_full.push_back("image.conv1");
  ApplyQatConfig(options.qat, layers, keep_full);
  ImageTextModel teacher{nullptr};
  if (!options.distill_teacher.empty()) {
    teacher = LoadImageTextModel(options.distill_teacher);
    Require(teacher->config().vocab == config.vocab && teacher->config().image_size == config.image_size,
            "{}: the teacher's vocabulary ({}) or image size ({}) differs from the student's ({}, {})",
            options.distill_teacher, teacher->config().vocab, teacher->config().image_size, config.vocab,
            config.image_size);
    teacher->eval();
  }
  for (const auto& p : result.model->parameters()) result.parameters += p.numel();
  const auto optimizer = MakeAdamW(result.model->parameters(), options.learning_rate, options.weight_decay);
  const CaptionGenerator train_captions(*data.captions, CaptionSplit::kTrain, options.seed);
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
      const MatchCaptions drawn =
          DrawMatchCaptions(train_captions, batch.labels, (epoch * steps_per_epoch + b) * options.batch_size);
      const CaptionBatch captions = EncodeCaptions(drawn.positives, *data.vocabulary, config.context);
      const CaptionBatch negatives = EncodeCaptions(drawn.negatives, *data.vocabulary, config.context);
      SetLearningRate(*optimizer, WarmupCosineLearningRate(step, total, std::min<int64_t>(100, total / 10),
                                                           options.learning_rate));
      ScheduleSparsity(options.qat, layers, static_cast<double>(step + 1) / static_cast<double>(steps_per_epoch));
      optimizer->zero_grad();
      const ImageTextLogits logits = result.model->Logits(batch.images, captions, negatives);
      torch::Tensor loss;
      if (teacher) {
        ImageTextLogits soft;
        {
          torch::NoGradGuard no_grad;
          soft = teacher->Logits(batch.images, captions, negatives);
        }
        const torch::Tensor targets = torch::arange(batch.labels.size(0), torch::kLong);
        const double t = options.temperature, alpha = options.distill_alpha;
        loss = 0.5 * (DistillationLoss(logits.similarity, soft.similarity, targets, t, alpha) +
                      DistillationLoss(logits.similarity.t(), soft.similarity.t(), targets, t, alpha));
        if (options.match_weight > 0) {
          loss = loss + options.match_weight * DistillationLoss(logits.match, soft.match,
                                                                MatchLabels(batch.labels.size(0)), t, alpha);
        }
      } else {
        loss = ImageTextLoss(logits, options.match_weight);
      }
      loss.backward();
      optimizer->step();
      loss_sum += loss.item<double>();
      if (options.on_line && ((b + 1) % 20 == 0 || b + 1 == batches.size())) {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        options.on_line(TrainingProgressLine(epoch + 1, options.epochs, b + 1, batches.size(),
                                             loss_sum / static_cast<double>(b + 1), seconds, step, total));
      }
    }
    result.epochs.push_back(EvaluateImageText(*result.model, data.test, *data.captions, *data.vocabulary,
                                              options.seed, options.retrieval_images));
    if (options.on_line) {
      const ImageTextMetrics& m = result.epochs.back();
      options.on_line(fmt::format("epoch {}: zero-shot {:.2f}% | image->text R@1 {:.2f}% R@5 {:.2f}% | "
                                  "text->image R@1 {:.2f}% R@5 {:.2f}% | matching {:.2f}% (hard {:.2f}%) | "
                                  "sparsity {:.3f}",
                                  epoch + 1, 100 * m.zero_shot_accuracy, 100 * m.image_to_text_recall1,
                                  100 * m.image_to_text_recall5, 100 * m.text_to_image_recall1,
                                  100 * m.text_to_image_recall5, 100 * m.matching_accuracy,
                                  100 * m.matching_accuracy_hard, m.sparsity));
    }
  }
  result.model->eval();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace atq
