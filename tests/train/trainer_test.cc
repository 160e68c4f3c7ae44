// Training, evaluation, distillation and checkpoints: known answers, a short real run, hostile inputs.
#include "train/trainer.h"

#include "train/distillation.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "models/classifiers.h"
#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::TempDir;

std::string FashionMnistDir() {
  if (const char* env = std::getenv("ATQ_FASHION_MNIST"); env != nullptr && *env != '\0') return env;
  return "/usr/share/datasets/fashion-mnist";
}

#define ATQ_FASHION_MNIST_OR_SKIP(var)                                                                \
  const std::string var = FashionMnistDir();                                                          \
  do {                                                                                                \
    std::error_code exists_error;                                                                     \
    if (!std::filesystem::exists(std::filesystem::path(var) / "train-images-idx3-ubyte.gz",          \
                                 exists_error)) {                                                     \
      GTEST_SKIP() << "Fashion-MNIST not found at " << var << " (set ATQ_FASHION_MNIST)";             \
    }                                                                                                 \
  } while (0)

template <typename Body>
std::string ErrorOf(Body body) {
  try {
    body();
  } catch (const Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "no atq::Error";
  return "";
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// Predicts the class written in the image's single pixel: a model whose confusion matrix is known.
class PixelOracle : public ClassifierModule {
 public:
  explicit PixelOracle(int64_t classes) : classes_(classes) {}
  // images: [N, 1, 1, 1] -> one-hot logits [N, classes]
  torch::Tensor forward(torch::Tensor images) override {
    return torch::one_hot(images.flatten().to(torch::kInt64), classes_).to(torch::kFloat32);
  }
  std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() override { return {}; }

 private:
  int64_t classes_;
};

TEST(Evaluate, ConfusionMatrixKnownAnswer) {
  PixelOracle model(3);
  ImageTensors data;
  // truth:     0 0 0 1 1 2 2 2
  // predicted: 0 0 1 1 1 2 0 2
  data.labels = torch::tensor({0, 0, 0, 1, 1, 2, 2, 2}, torch::kInt64);
  data.images = torch::tensor({0.f, 0.f, 1.f, 1.f, 1.f, 2.f, 0.f, 2.f}).reshape({8, 1, 1, 1});
  model.train();
  const EvalResult result = Evaluate(model, data, /*batch_size=*/3);
  EXPECT_TRUE(model.is_training());  // mode restored
  EXPECT_EQ(result.count, 8);
  EXPECT_DOUBLE_EQ(result.accuracy, 6.0 / 8.0);
  const std::vector<std::vector<int64_t>> expected = {{2, 1, 0}, {0, 2, 0}, {1, 0, 2}};
  EXPECT_EQ(result.confusion, expected);
  ASSERT_EQ(result.per_class_accuracy.size(), 3u);
  EXPECT_DOUBLE_EQ(result.per_class_accuracy[0], 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(result.per_class_accuracy[1], 1.0);
  EXPECT_DOUBLE_EQ(result.per_class_accuracy[2], 2.0 / 3.0);
}

TEST(Distillation, KnownAnswers) {
  const torch::Tensor teacher = torch::tensor({{0.f, 0.f}, {3.f, -1.f}});
  // Identical logits: KL 0 at any temperature.
  for (const double temperature : {1.0, 4.0}) {
    EXPECT_NEAR(SoftTargetKl(teacher, teacher, temperature).item<double>(), 0.0, 1e-7);
  }
  // Teacher (1/2, 1/2), student logits (2 ln 3, 0) at T = 2 -> (3/4, 1/4):
  // KL = 1/2 ln(1/2 / 3/4) + 1/2 ln(1/2 / 1/4) = 1/2 ln(4/3).
  const torch::Tensor uniform = torch::zeros({1, 2});
  const torch::Tensor student = torch::tensor({{static_cast<float>(2 * std::log(3.0)), 0.f}});
  const double kl = 0.5 * std::log(4.0 / 3.0);
  constexpr double kFloatTolerance = 1e-6;
  EXPECT_NEAR(SoftTargetKl(student, uniform, 2.0).item<double>(), kl, kFloatTolerance);
  const torch::Tensor labels = torch::tensor({1}, torch::kInt64);
  // alpha = 1: T^2 * KL only.
  EXPECT_NEAR(DistillationLoss(student, uniform, labels, 2.0, 1.0).item<double>(), 4 * kl, kFloatTolerance);
  // alpha = 0: cross-entropy on the labels only: -ln(softmax(2 ln 3, 0)[1]) = ln(10).
  EXPECT_NEAR(DistillationLoss(student, uniform, labels, 2.0, 0.0).item<double>(), std::log(10.0), kFloatTolerance);
  // The mix.
  EXPECT_NEAR(DistillationLoss(student, uniform, labels, 2.0, 0.25).item<double>(),
              0.25 * 4 * kl + 0.75 * std::log(10.0), kFloatTolerance);
  // Gradient flows to the student only through the soft term when alpha = 1 and logits agree: zero.
  torch::Tensor s = teacher.clone().requires_grad_(true);
  DistillationLoss(s, teacher, torch::tensor({0, 0}, torch::kInt64), 4.0, 1.0).backward();
  EXPECT_NEAR(s.grad().abs().max().item<double>(), 0.0, 1e-7);
}

// A CNN with ternary layers and BatchNorm statistics that moved off their initial values.
std::shared_ptr<ClassifierModule> TernaryCnnWithStatistics(int64_t classes) {
  torch::manual_seed(3);
  std::shared_ptr<ClassifierModule> model = MakeClassifier("cnn", 1, classes, 28);
  LayerQuantConfig config;
  config.quantized = true;
  config.grid.threshold_value = 0.4;
  config.rpb_fraction = 0.01;
  ApplyQuantConfig(*model, config);
  model->train();
  torch::NoGradGuard no_grad;
  for (int i = 0; i < 3; ++i) model->forward(torch::randn({16, 1, 28, 28}));
  model->eval();
  return model;
}

ClassifierConfig CnnConfig(int64_t classes) {
  ClassifierConfig config;
  config.model = "cnn";
  config.classes = classes;
  config.dataset = "fashion_mnist";
  config.normalization = kFashionMnistNormalization;
  return config;
}

TEST(Checkpoint, SaveLoadGivesIdenticalLogits) {
  TempDir dir;
  const auto model = TernaryCnnWithStatistics(10);
  const torch::Tensor images = torch::randn({8, 1, 28, 28});
  torch::Tensor before;
  {
    torch::NoGradGuard no_grad;
    before = model->forward(images);
  }
  SaveClassifier(dir.path(), *model, CnnConfig(10));
  EXPECT_TRUE(std::filesystem::exists(dir.File("model.safetensors")));
  EXPECT_TRUE(std::filesystem::exists(dir.File("config.json")));

  const LoadedClassifier loaded = LoadClassifier(dir.path());
  EXPECT_FALSE(loaded.model->is_training());
  EXPECT_EQ(loaded.config.model, "cnn");
  EXPECT_EQ(loaded.config.classes, 10);
  EXPECT_DOUBLE_EQ(loaded.config.normalization.mean, 0.2860);
  const auto layers = loaded.model->QuantLayers();
  ASSERT_EQ(loaded.config.layers.size(), layers.size());
  // First and last full precision, the rest ternary with the saved sparsity.
  EXPECT_EQ(layers.front().second->quant_config().mode(), WeightMode::kFull);
  EXPECT_EQ(layers.back().second->quant_config().mode(), WeightMode::kFull);
  EXPECT_EQ(layers[1].second->quant_config().mode(), WeightMode::kTernary);
  EXPECT_DOUBLE_EQ(layers[1].second->quant_config().grid.threshold_value, 0.4);
  EXPECT_DOUBLE_EQ(layers[1].second->quant_config().rpb_fraction, 0.01);
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(loaded.model->forward(images), before));
  // The safetensors path works as well as the folder.
  EXPECT_TRUE(torch::equal(LoadClassifier(dir.File("model.safetensors")).model->forward(images), before));
}

TEST(Checkpoint, MissingAndMismatchedTensorsAreNamed) {
  TempDir ten, five, mlp;
  SaveClassifier(ten.path(), *TernaryCnnWithStatistics(10), CnnConfig(10));
  SaveClassifier(five.path(), *TernaryCnnWithStatistics(5), CnnConfig(5));
  ClassifierConfig mlp_config = CnnConfig(10);
  mlp_config.model = "mlp";
  SaveClassifier(mlp.path(), *MakeClassifier("mlp", 1, 10, 28), mlp_config);

  // The 5-class head in a 10-class checkpoint.
  std::filesystem::copy_file(five.File("model.safetensors"), ten.File("model.safetensors"),
                             std::filesystem::copy_options::overwrite_existing);
  std::string message = ErrorOf([&] { LoadClassifier(ten.path()); });
  EXPECT_NE(message.find("fc2."), std::string::npos) << message;
  EXPECT_NE(message.find("shape"), std::string::npos) << message;
  EXPECT_NE(message.find("model.safetensors"), std::string::npos) << message;

  // MLP tensors where the CNN's belong.
  std::filesystem::copy_file(mlp.File("model.safetensors"), ten.File("model.safetensors"),
                             std::filesystem::copy_options::overwrite_existing);
  message = ErrorOf([&] { LoadClassifier(ten.path()); });
  EXPECT_NE(message.find("missing tensor 'conv1.weight'"), std::string::npos) << message;

  // No config.
  std::filesystem::remove(ten.File("config.json"));
  message = ErrorOf([&] { LoadClassifier(ten.path()); });
  EXPECT_NE(message.find("config.json"), std::string::npos) << message;
}

TEST(Train, BadDataFolderIsRejectedWithTheFileNamed) {
  TempDir dir;
  TrainOptions options;
  options.data_dir = dir.path();
  options.show_progress = false;
  std::string message = ErrorOf([&] { Train(options); });
  EXPECT_NE(message.find("train-images-idx3-ubyte"), std::string::npos) << message;
  EXPECT_NE(message.find(dir.path()), std::string::npos) << message;

  // Present but corrupt: a labels file where the images belong (next to a good labels file).
  testutil::WriteFileBytes(dir.File("train-images-idx3-ubyte"), {0, 0, 8, 1, 0, 0, 0, 1, 5});
  testutil::WriteFileBytes(dir.File("train-labels-idx1-ubyte"), {0, 0, 8, 1, 0, 0, 0, 1, 5});
  message = ErrorOf([&] { Train(options); });
  EXPECT_NE(message.find(dir.File("train-images-idx3-ubyte")), std::string::npos) << message;

  options.data_dir = dir.File("no-such-folder");
  message = ErrorOf([&] { Train(options); });
  EXPECT_NE(message.find("no-such-folder"), std::string::npos) << message;
}

TEST(Train, ShortRunBeatsChanceAndWritesCheckpoints) {
  ATQ_FASHION_MNIST_OR_SKIP(data_dir);
  TempDir out;
  TrainOptions options;
  options.data_dir = data_dir;
  options.model = "mlp";
  options.epochs = 2;
  options.batch_size = 64;
  options.learning_rate = 2e-3;
  options.subset = 2000;
  options.test_subset = 1000;
  options.threads = 2;
  options.seed = 1;
  options.out_dir = out.path();
  options.show_progress = false;
  const TrainResult result = Train(options);
  ASSERT_EQ(result.epochs.size(), 2u);
  // Chance is 10%; 2000 images and 2 epochs give an MLP ~75-80%.
  EXPECT_GT(result.final_eval.accuracy, 0.60);
  EXPECT_EQ(result.final_eval.count, 1000);
  EXPECT_LT(result.epochs[1].loss, result.epochs[0].loss);
  EXPECT_DOUBLE_EQ(result.epochs[1].test_accuracy, result.final_eval.accuracy);

  for (const char* file : {"model.safetensors", "config.json", "metrics.json", "best/model.safetensors",
                           "best/config.json"}) {
    EXPECT_TRUE(std::filesystem::exists(out.File(file))) << file;
  }
  const nlohmann::json metrics = ReadJson(out.File("metrics.json"));
  ASSERT_EQ(metrics.at("epochs").size(), 2u);
  EXPECT_EQ(metrics.at("best").at("epoch").get<int>(), result.best_epoch);
  EXPECT_DOUBLE_EQ(metrics.at("epochs")[1].at("test_acc").get<double>(), result.final_eval.accuracy);
  EXPECT_EQ(metrics.at("final").at("confusion").size(), 10u);

  // The saved model is the trained one: same accuracy when reloaded.
  const LoadedClassifier loaded = LoadClassifier(out.path());
  const ImageTensors test = LoadTestData(loaded.config, data_dir, 1000);
  EXPECT_DOUBLE_EQ(Evaluate(*loaded.model, test).accuracy, result.final_eval.accuracy);
}

TEST(Train, TernaryRunReachesScheduledSparsityWithDistillation) {
  ATQ_FASHION_MNIST_OR_SKIP(data_dir);
  TempDir teacher_dir;
  TrainOptions options;
  options.data_dir = data_dir;
  options.model = "mlp";
  options.epochs = 1;
  options.batch_size = 64;
  options.learning_rate = 2e-3;
  options.subset = 2000;
  options.test_subset = 1000;
  options.threads = 2;
  options.show_progress = false;
  options.out_dir = teacher_dir.path();
  const TrainResult teacher = Train(options);

  options.out_dir.clear();
  options.epochs = 2;
  options.qat.mode = WeightMode::kTernary;
  options.qat.sparsity = 0.6;
  options.qat.ramp_epochs = 1;
  options.init_from = teacher_dir.path();
  options.distill_teacher = teacher_dir.path();
  const TrainResult student = Train(options);
  ASSERT_EQ(student.epochs.size(), 2u);
  EXPECT_GT(student.final_eval.accuracy, 0.60);
  // The ramp reaches the target after one epoch; ties can only add zeros.
  EXPECT_NEAR(student.epochs[1].sparsity, 0.6, 0.01);
  const auto layers = student.model->QuantLayers();
  EXPECT_EQ(layers.front().second->quant_config().mode(), WeightMode::kFull);
  EXPECT_EQ(layers[1].second->quant_config().mode(), WeightMode::kTernary);
  EXPECT_DOUBLE_EQ(layers[1].second->quant_config().grid.threshold_value, 0.6);
  (void)teacher;
}

}  // namespace
}  // namespace atq
