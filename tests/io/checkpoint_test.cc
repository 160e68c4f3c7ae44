// Checkpoints: single files and folders, sharded writes read back, and indexes that lie about their shards.
#include "io/checkpoint.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

using testutil::ReadFileBytes;
using testutil::TempDir;
using testutil::WriteFileText;

// memcmp that also accepts the null pointers of empty buffers.
bool SameBytes(const void* a, const void* b, size_t count) { return count == 0 || std::memcmp(a, b, count) == 0; }

// Tensors of U8 bytes with the given sizes, named t0, t1, ...; the bytes live in `storage`.
std::vector<TensorToWrite> MakeTensors(const std::vector<int64_t>& sizes, std::vector<std::vector<uint8_t>>& storage) {
  std::mt19937 rng(42);
  storage.clear();
  storage.reserve(sizes.size());
  std::vector<TensorToWrite> tensors;
  for (size_t i = 0; i < sizes.size(); ++i) {
    storage.emplace_back(static_cast<size_t>(sizes[i]));
    for (uint8_t& b : storage.back()) b = static_cast<uint8_t>(rng());
    tensors.push_back({"t" + std::to_string(i), QuantType::kU8, {sizes[i]}, storage.back().data(),
                       static_cast<uint64_t>(sizes[i])});
  }
  return tensors;
}

void ExpectSameTensors(const SafetensorsCheckpoint& checkpoint, const std::vector<TensorToWrite>& expected) {
  ASSERT_EQ(checkpoint.tensors().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    const CheckpointTensor& tensor = checkpoint.tensors()[i];  // files in name order, each in file order
    EXPECT_EQ(tensor.info->name, expected[i].name);
    EXPECT_EQ(tensor.info->type, expected[i].type);
    EXPECT_EQ(tensor.info->shape, expected[i].shape);
    ASSERT_EQ(tensor.info->nbytes, expected[i].nbytes);
    EXPECT_TRUE(SameBytes(tensor.data, expected[i].data, expected[i].nbytes)) << expected[i].name;
    EXPECT_EQ(checkpoint.Find(expected[i].name), &tensor);
  }
}

std::string OpenError(const std::string& path) {
  try {
    SafetensorsCheckpoint::Open(path);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected atq::Error opening " << path;
  return "";
}

void ExpectContains(const std::string& message, const std::vector<std::string>& needles) {
  for (const std::string& needle : needles) EXPECT_NE(message.find(needle), std::string::npos) << message;
}

TEST(CheckpointTest, OpensSingleFileByPathOrFolder) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> storage;
  const std::vector<TensorToWrite> tensors = MakeTensors({10, 20, 0, 5}, storage);
  WriteSafetensors(dir.File("model.safetensors"), tensors, {{"format", "pt"}});

  for (const std::string& path : {dir.path(), dir.File("model.safetensors")}) {
    const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::Open(path);
    EXPECT_FALSE(checkpoint.sharded());
    EXPECT_EQ(checkpoint.path(), dir.File("model.safetensors"));
    ASSERT_EQ(checkpoint.files().size(), 1u);
    EXPECT_EQ(checkpoint.metadata().at("format"), "pt");
    EXPECT_EQ(checkpoint.total_bytes(), 35u);
    ExpectSameTensors(checkpoint, tensors);
    EXPECT_EQ(checkpoint.Find("t1")->file, checkpoint.files()[0]);
    EXPECT_EQ(checkpoint.Find("missing"), nullptr);
  }
}

TEST(CheckpointTest, SingleShardWhenEverythingFits) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> storage;
  const std::vector<TensorToWrite> tensors = MakeTensors({100, 200}, storage);
  WriteShardedSafetensors(dir.path(), tensors, {}, 300);
  EXPECT_EQ(dir.List(), std::vector<std::string>{"model.safetensors"});
  ExpectSameTensors(SafetensorsCheckpoint::Open(dir.path()), tensors);
}

TEST(CheckpointTest, ShardedWriteReadsBack) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> storage;
  // Limit 100: [60, 30] [50, 0, 40] [150 alone: larger than the limit] [10]
  const std::vector<TensorToWrite> tensors = MakeTensors({60, 30, 50, 0, 40, 150, 10}, storage);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"atq.version", "test"}};
  WriteShardedSafetensors(dir.path(), tensors, metadata, 100);
  EXPECT_EQ(dir.List(), (std::vector<std::string>{"model-00001-of-00004.safetensors",
                                                   "model-00002-of-00004.safetensors",
                                                   "model-00003-of-00004.safetensors",
                                                   "model-00004-of-00004.safetensors",
                                                   "model.safetensors.index.json"}));

  const std::vector<uint8_t> index_bytes = ReadFileBytes(dir.File("model.safetensors.index.json"));
  const nlohmann::json index = nlohmann::json::parse(index_bytes.begin(), index_bytes.end());
  EXPECT_EQ(index["metadata"]["total_size"], 340);
  EXPECT_EQ(index["weight_map"].size(), tensors.size());
  EXPECT_EQ(index["weight_map"]["t0"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t1"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t2"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t4"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t5"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["t6"], "model-00004-of-00004.safetensors");

  for (const std::string& path : {dir.path(), dir.File("model.safetensors.index.json")}) {
    const SafetensorsCheckpoint checkpoint = SafetensorsCheckpoint::Open(path);
    EXPECT_TRUE(checkpoint.sharded());
    EXPECT_EQ(checkpoint.path(), dir.File("model.safetensors.index.json"));
    EXPECT_EQ(checkpoint.files().size(), 4u);
    EXPECT_EQ(checkpoint.total_bytes(), 340u);
    EXPECT_EQ(checkpoint.metadata().at("total_size"), "340");
    EXPECT_EQ(checkpoint.metadata().at("format"), "pt");
    EXPECT_EQ(checkpoint.metadata().at("atq.version"), "test");
    ExpectSameTensors(checkpoint, tensors);
    EXPECT_EQ(checkpoint.Find("t5")->file->path(), dir.File("model-00003-of-00004.safetensors"));
  }
}

TEST(CheckpointTest, RewriteRemovesWeightsOfAnEarlierSave) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> storage;
  WriteShardedSafetensors(dir.path(), MakeTensors({60, 60, 60}, storage), {}, 100);
  EXPECT_EQ(dir.List().size(), 4u);
  WriteFileText(dir.File("config.json"), "{}");  // not a weight file: left alone

  const std::vector<TensorToWrite> tensors = MakeTensors({5, 6}, storage);
  WriteShardedSafetensors(dir.path(), tensors, {}, 100);
  EXPECT_EQ(dir.List(), (std::vector<std::string>{"config.json", "model.safetensors"}));
  ExpectSameTensors(SafetensorsCheckpoint::Open(dir.path()), tensors);

  WriteShardedSafetensors(dir.path(), MakeTensors({60, 60}, storage), {}, 100);
  EXPECT_EQ(dir.List(), (std::vector<std::string>{"config.json", "model-00001-of-00002.safetensors",
                                                   "model-00002-of-00002.safetensors",
                                                   "model.safetensors.index.json"}));
}

TEST(CheckpointTest, WriterValidatesBeforeWritingAnything) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorToWrite> tensors = MakeTensors({60, 60, 60}, storage);
  tensors[2].name = "t0";
  EXPECT_THROW(WriteShardedSafetensors(dir.path(), tensors, {}, 100), Error);
  tensors[2].name = "t2";
  tensors[2].nbytes = 59;
  EXPECT_THROW(WriteShardedSafetensors(dir.path(), tensors, {}, 100), Error);
  EXPECT_THROW(WriteShardedSafetensors(dir.path(), {}, {}, 0), Error);
  EXPECT_TRUE(dir.List().empty());
}

// A two-shard checkpoint whose index the test then rewrites.
class CheckpointIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tensors_ = MakeTensors({60, 60}, storage_);
    WriteShardedSafetensors(dir_.path(), tensors_, {}, 100);
  }
  void WriteIndex(const std::string& weight_map) {
    WriteFileText(dir_.File("model.safetensors.index.json"),
                  R"({"metadata": {"total_size": 120}, "weight_map": )" + weight_map + "}");
  }
  std::string index_path() const { return dir_.File("model.safetensors.index.json"); }

  TempDir dir_;
  std::vector<std::vector<uint8_t>> storage_;
  std::vector<TensorToWrite> tensors_;
};

TEST_F(CheckpointIndexTest, AcceptsTheWrittenIndex) {
  ExpectSameTensors(SafetensorsCheckpoint::Open(index_path()), tensors_);
}

TEST_F(CheckpointIndexTest, MissingShardIsRejected) {
  WriteIndex(R"({"t0": "model-00001-of-00002.safetensors", "t1": "model-00009-of-00009.safetensors"})");
  ExpectContains(OpenError(dir_.path()),
                 {index_path(), "shard 'model-00009-of-00009.safetensors'", "does not exist"});
}

TEST_F(CheckpointIndexTest, TensorMissingFromItsShardIsRejected) {
  WriteIndex(R"({"t0": "model-00001-of-00002.safetensors", "t1": "model-00002-of-00002.safetensors",)"
             R"( "ghost": "model-00002-of-00002.safetensors"})");
  ExpectContains(OpenError(dir_.path()),
                 {index_path(), "tensor 'ghost' is mapped to 'model-00002-of-00002.safetensors'", "no such tensor"});
}

TEST_F(CheckpointIndexTest, TensorInTheWrongShardIsRejected) {
  WriteIndex(R"({"t0": "model-00002-of-00002.safetensors", "t1": "model-00001-of-00002.safetensors"})");
  ExpectContains(OpenError(dir_.path()), {"tensor 't0' is mapped to 'model-00002-of-00002.safetensors', but it is in",
                                          "model-00001-of-00002.safetensors"});
}

TEST_F(CheckpointIndexTest, TensorInTwoShardsIsRejected) {
  // A third shard that holds t0 again.
  WriteSafetensors(dir_.File("extra.safetensors"), {tensors_[0]});
  WriteIndex(R"({"t0": "model-00001-of-00002.safetensors", "t1": "model-00002-of-00002.safetensors",)"
             R"( "t0copy": "extra.safetensors"})");
  ExpectContains(OpenError(dir_.path()), {"tensor 't0' is in both", dir_.File("model-00001-of-00002.safetensors"),
                                          dir_.File("extra.safetensors")});
}

TEST_F(CheckpointIndexTest, ShardPathsMustNotLeaveTheFolder) {
  for (const std::string shard : {"../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors",
                                   "..", "", "..\\\\x.safetensors"}) {
    WriteIndex(R"({"t0": ")" + shard + R"(", "t1": "model-00002-of-00002.safetensors"})");
    ExpectContains(OpenError(dir_.path()), {index_path(), "must be a file name in the index's folder"});
  }
}

TEST_F(CheckpointIndexTest, MalformedIndexIsRejected) {
  WriteFileText(index_path(), R"({"metadata": {}})");
  ExpectContains(OpenError(index_path()), {index_path(), "missing \"weight_map\""});
  WriteFileText(index_path(), R"({"weight_map": {"t0": 5}})");
  ExpectContains(OpenError(index_path()), {"entry for 't0' must be a file name, got number"});
  WriteFileText(index_path(), R"({"weight_map": {"t0": "a.safetensors", "t0": "b.safetensors"}})");
  ExpectContains(OpenError(index_path()), {index_path(), "duplicate key 't0'"});
  WriteFileText(index_path(), R"({"weight_map": {}, "metadata": [1]})");
  ExpectContains(OpenError(index_path()), {"\"metadata\" must be an object"});
  WriteFileText(index_path(), "{\"weight_map\": ");
  ExpectContains(OpenError(index_path()), {index_path(), "not valid JSON"});
}

TEST(CheckpointTest, FolderWithoutWeightsIsRejected) {
  TempDir dir;
  ExpectContains(OpenError(dir.path()), {dir.path(), "neither model.safetensors nor model.safetensors.index.json"});
  ExpectContains(OpenError(dir.File("nothing-here")), {"nothing-here", "no such file"});
}

TEST(CheckpointFixtureTest, Gpt2MiniFolderAndReshardedCopy) {
  ATQ_FIXTURE_OR_SKIP(folder, "gpt2-mini/model");
  const SafetensorsCheckpoint original = SafetensorsCheckpoint::Open(folder);
  EXPECT_FALSE(original.sharded());
  EXPECT_EQ(original.tensors().size(), 76u);
  EXPECT_EQ(original.metadata().at("format"), "pt");
  const CheckpointTensor* wte = original.Find("transformer.wte.weight");
  ASSERT_NE(wte, nullptr);
  EXPECT_EQ(wte->info->shape, (std::vector<int64_t>{50257, 512}));
  EXPECT_EQ(wte->file->path(), folder + "/model.safetensors");

  // Sharded at 20 MB: layers 0-2 (18.9 MB), layers 3-5 + ln_f + wpe (19.4 MB), the 51 MB embedding alone.
  std::vector<TensorToWrite> tensors;
  for (const CheckpointTensor& tensor : original.tensors()) {
    tensors.push_back({tensor.info->name, tensor.info->type, tensor.info->shape, tensor.data, tensor.info->nbytes});
  }
  TempDir dir;
  WriteShardedSafetensors(dir.path(), tensors, original.metadata(), 20'000'000);
  const SafetensorsCheckpoint copy = SafetensorsCheckpoint::Open(dir.path());
  EXPECT_TRUE(copy.sharded());
  EXPECT_EQ(copy.files().size(), 3u);
  EXPECT_EQ(copy.metadata().at("total_size"), std::to_string(original.total_bytes()));
  EXPECT_EQ(copy.metadata().at("format"), "pt");
  ExpectSameTensors(copy, tensors);
  EXPECT_EQ(copy.Find("transformer.wte.weight")->file->tensors().size(), 1u);
}

}  // namespace
}  // namespace atq
