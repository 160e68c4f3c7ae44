// The energy model: Horowitz's figures as defaults, hand-computed totals of a three-layer network at several
// precisions, config files that override exactly what they name, and malformed config files.
#include "eval/energy.h"

#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "test_util.h"

namespace atq {
namespace {

using testutil::ErrorMessageOf;
using testutil::ExpectErrorNaming;
using testutil::TempDir;
using testutil::WriteFileText;

// The expected values below are decimal sums worked out by hand; double arithmetic differs from them by rounding.
constexpr double kRelativeTolerance = 1e-12;

void ExpectClose(double actual, double expected) {
  EXPECT_NEAR(actual, expected, kRelativeTolerance * std::abs(expected)) << "expected " << expected;
}

// conv: 3x3, 2 -> 4 channels, padding 1, on a 4x4 input: 4*2*3*3 = 72 weights, 72 * 16 positions = 1152 MACs,
//       2*16 = 32 inputs, 4*16 = 64 outputs.
// fc:   64 -> 10: 640 weights, 640 MACs, 64 inputs, 10 outputs.
// qk:   Q K^T with 4 tokens of width 8: 4*4*8 = 128 MACs, no weights, 2*4*8 = 64 inputs (Q and K), 16 outputs.
std::vector<LayerWork> TinyNetwork() {
  return {{"conv", 1152, 72, 32, 64},
          {"fc", 640, 640, 64, 10},
          {"qk", 128, 0, 64, 16, MacOperands::kActivationTimesActivation}};
}

std::vector<LayerBits> Uniform(int weight_bits, int activation_bits) {
  return std::vector<LayerBits>(3, LayerBits{weight_bits, activation_bits});
}

TEST(EnergyModelTest, DefaultsAreHorowitzFigures) {
  const EnergyModel model;
  ExpectClose(MacEnergy(model, 32, 32), 4.6);   // 3.7 pJ multiply + 0.9 pJ add
  ExpectClose(MacEnergy(model, 8, 8), 0.23);    // 0.2 pJ multiply + 0.03 pJ add
  ExpectClose(MemoryEnergy(model, 32), 640);
  ExpectClose(MemoryEnergy(model, 8), 160);
  EXPECT_TRUE(model.count_activations);
}

TEST(EnergyModelTest, MacScalesWithTheProductOfWidthsAndFloatOperandsMakeAFloatMac) {
  const EnergyModel model;
  ExpectClose(MacEnergy(model, 4, 4), 0.23 / 4);   // b^2: half the bits, a quarter of the energy
  ExpectClose(MacEnergy(model, 4, 8), 0.23 / 2);
  ExpectClose(MacEnergy(model, 2, 8), 0.23 / 4);
  ExpectClose(MacEnergy(model, 16, 16), 0.23 * 4);
  ExpectClose(MacEnergy(model, 8, 32), 4.6);        // weights dequantized and multiplied in float
  ExpectClose(MacEnergy(model, 32, 8), 4.6);
  ExpectClose(MemoryEnergy(model, 4), 80);
  ExpectClose(MemoryEnergy(model, 2), 40);
  EXPECT_THROW(MacEnergy(model, 0, 8), Error);
  EXPECT_THROW(MemoryEnergy(model, 0), Error);
}

TEST(EnergyModelTest, Fp32Network) {
  // MACs: (1152 + 640 + 128) * 4.6 = 8832. DRAM: every element at 640 pJ: conv 72+32+64 = 168, fc 640+64+10 =
  // 714, qk 64+16 = 80 elements; 962 * 640 = 615680. Total 624512.
  const std::vector<LayerEnergy> layers = NetworkEnergy(EnergyModel(), TinyNetwork(), Uniform(32, 32));
  ASSERT_EQ(layers.size(), 3u);
  ExpectClose(layers[0].mac_pj, 1152 * 4.6);  // 5299.2
  ExpectClose(layers[0].memory_pj, 107520);
  ExpectClose(layers[0].total_pj, 112819.2);
  ExpectClose(layers[1].total_pj, 2944 + 456960);
  ExpectClose(layers[2].total_pj, 588.8 + 51200);
  ExpectClose(TotalEnergy(layers), 624512);
}

TEST(EnergyModelTest, W8A8Network) {
  // MACs: 1920 * 0.23 = 441.6. DRAM: 962 elements * 160 = 153920. Total 154361.6.
  const std::vector<LayerEnergy> layers = NetworkEnergy(EnergyModel(), TinyNetwork(), Uniform(8, 8));
  ExpectClose(layers[0].total_pj, 264.96 + 26880);
  ExpectClose(layers[1].total_pj, 147.2 + 114240);
  ExpectClose(layers[2].total_pj, 29.44 + 12800);
  ExpectClose(TotalEnergy(layers), 154361.6);
}

TEST(EnergyModelTest, W4A8Network) {
  // A 4x8-bit MAC costs 0.23 * 32/64 = 0.115; a 4-bit weight 80 pJ, an 8-bit activation 160 pJ.
  // conv: 1152 * 0.115 = 132.48; 72*80 + 96*160 = 21120.
  // fc:   640 * 0.115 = 73.6;    640*80 + 74*160 = 63040.
  // qk:   both operands are 8-bit activations: 128 * 0.23 = 29.44; 80*160 = 12800.
  // Total 235.52 + 96960 = 97195.52.
  const std::vector<LayerEnergy> layers = NetworkEnergy(EnergyModel(), TinyNetwork(), Uniform(4, 8));
  ExpectClose(layers[0].mac_pj, 132.48);
  ExpectClose(layers[0].memory_pj, 21120);
  ExpectClose(layers[1].mac_pj, 73.6);
  ExpectClose(layers[1].memory_pj, 63040);
  ExpectClose(layers[2].mac_pj, 29.44);
  ExpectClose(layers[2].memory_pj, 12800);
  ExpectClose(TotalEnergy(layers), 97195.52);
}

TEST(EnergyModelTest, TernaryAsTwoBitNetwork) {
  // A 2x8-bit MAC costs 0.23 * 16/64 = 0.0575; a 2-bit weight 40 pJ.
  // conv: 1152 * 0.0575 = 66.24; 72*40 + 96*160 = 18240.
  // fc:   640 * 0.0575 = 36.8;   640*40 + 74*160 = 37440.
  // qk:   29.44; 12800.
  // Total 132.48 + 68480 = 68612.48.
  const std::vector<LayerEnergy> layers = NetworkEnergy(EnergyModel(), TinyNetwork(), Uniform(2, 8));
  ExpectClose(layers[0].total_pj, 66.24 + 18240);
  ExpectClose(layers[1].total_pj, 36.8 + 37440);
  ExpectClose(layers[2].total_pj, 29.44 + 12800);
  ExpectClose(TotalEnergy(layers), 68612.48);
}

TEST(EnergyModelTest, WeightOnlyQuantizationMultipliesInFloat) {
  // W8 with float activations: every MAC is a float MAC (1920 * 4.6 = 8832); weights at 160 pJ, activations at
  // 640: (72 + 640) * 160 + (96 + 74 + 80) * 640 = 113920 + 160000. Total 282752.
  const std::vector<LayerEnergy> layers = NetworkEnergy(EnergyModel(), TinyNetwork(), Uniform(8, 32));
  ExpectClose(TotalEnergy(layers), 282752);
}

TEST(EnergyModelTest, WithoutActivationsOnlyWeightsMove) {
  // FP32: 8832 pJ of MACs and (72 + 640) * 640 = 455680 pJ of weights.
  EnergyModel model;
  model.count_activations = false;
  const std::vector<LayerEnergy> layers = NetworkEnergy(model, TinyNetwork(), Uniform(32, 32));
  ExpectClose(TotalEnergy(layers), 464512);
  EXPECT_EQ(layers[2].activation_elements, 0);
  ExpectClose(layers[2].memory_pj, 0);
}

TEST(EnergyModelTest, PerLayerBitsAndJson) {
  // conv W8A8 (264.96 + 26880), fc W4A8 (73.6 + 63040), qk A8 (29.44 + 12800): total 103088.
  const EnergyModel model;
  const std::vector<LayerEnergy> layers = NetworkEnergy(model, TinyNetwork(), {{8, 8}, {4, 8}, {32, 8}});
  ExpectClose(TotalEnergy(layers), 103088);
  const nlohmann::json json = EnergyJson(model, layers);
  ASSERT_EQ(json["layers"].size(), 3u);
  EXPECT_EQ(json["layers"][1]["layer"], "fc");
  EXPECT_EQ(json["layers"][1]["weight_bits"], 4);
  EXPECT_EQ(json["layers"][1]["macs"], 640);
  ExpectClose(json["layers"][1]["total_pj"].get<double>(), 73.6 + 63040);
  ExpectClose(json["mac_pj"].get<double>(), 264.96 + 73.6 + 29.44);
  ExpectClose(json["memory_pj"].get<double>(), 26880 + 63040 + 12800);
  ExpectClose(json["total_pj"].get<double>(), 103088);
  EXPECT_EQ(json["model"]["dram_per_32_bits"], 640.0);
  EXPECT_EQ(json["model"]["int8_multiply"], 0.2);
  EXPECT_EQ(json["model"]["count_activations"], true);
  EXPECT_EQ(json["model"].size(), 8u);
}

TEST(EnergyModelTest, RejectsMismatchedOrInconsistentWork) {
  const EnergyModel model;
  EXPECT_NE(ErrorMessageOf([&] { NetworkEnergy(model, TinyNetwork(), std::vector<LayerBits>(2)); })
                .find("3 layers of work but 2"),
            std::string::npos);
  std::vector<LayerWork> negative = TinyNetwork();
  negative[1].inputs = -1;
  EXPECT_NE(ErrorMessageOf([&] { NetworkEnergy(model, negative, Uniform(8, 8)); }).find("'fc'"), std::string::npos);
  std::vector<LayerWork> weighted_product = TinyNetwork();
  weighted_product[2].weights = 5;
  EXPECT_NE(ErrorMessageOf([&] { NetworkEnergy(model, weighted_product, Uniform(8, 8)); }).find("'qk'"),
            std::string::npos);
  EXPECT_THROW(NetworkEnergy(model, TinyNetwork(), Uniform(0, 8)), Error);
}

TEST(EnergyModelConfigTest, OverridesExactlyTheKeysItNames) {
  TempDir dir;
  const std::string path = dir.File("energy.yaml");
  WriteFileText(path, "# 7 nm guesses\nint8_multiply: 0.5\nmemory_exponent: 2\n");
  const EnergyModel loaded = LoadEnergyModel(path);
  const EnergyModel defaults;
  EXPECT_EQ(loaded.int8_multiply, 0.5);
  EXPECT_EQ(loaded.memory_exponent, 2);
  EXPECT_EQ(loaded.int8_add, defaults.int8_add);
  EXPECT_EQ(loaded.fp32_multiply, defaults.fp32_multiply);
  EXPECT_EQ(loaded.fp32_add, defaults.fp32_add);
  EXPECT_EQ(loaded.dram_per_32_bits, defaults.dram_per_32_bits);
  EXPECT_EQ(loaded.mac_exponent, defaults.mac_exponent);
  EXPECT_EQ(loaded.count_activations, defaults.count_activations);
  ExpectClose(MacEnergy(loaded, 8, 8), 0.53);
  ExpectClose(MemoryEnergy(loaded, 8), 640.0 / 16);  // (8/32)^2
}

TEST(EnergyModelConfigTest, ReadsJsonAndEveryKey) {
  TempDir dir;
  const std::string path = dir.File("energy.json");
  WriteFileText(path, R"({"int8_multiply": 1, "int8_add": 2, "fp32_multiply": 3, "fp32_add": 4,
                          "dram_per_32_bits": 100, "mac_exponent": 1, "memory_exponent": 0,
                          "count_activations": false})");
  const EnergyModel model = LoadEnergyModel(path);
  ExpectClose(MacEnergy(model, 32, 32), 7);
  ExpectClose(MacEnergy(model, 4, 8), 3 * std::sqrt(0.5));  // (32/64)^(1/2)
  ExpectClose(MemoryEnergy(model, 4), 100);                 // exponent 0: width does not matter
  EXPECT_FALSE(model.count_activations);
}

TEST(EnergyModelConfigTest, EmptyFileKeepsDefaults) {
  TempDir dir;
  const std::string path = dir.File("empty.yaml");
  WriteFileText(path, "");
  EXPECT_EQ(LoadEnergyModel(path).dram_per_32_bits, 640);
}

TEST(EnergyModelConfigTest, RejectsBadFilesNamingFileAndKey) {
  TempDir dir;
  const auto expect_rejected = [&](const std::string& name, const std::string& text,
                                   const std::vector<std::string>& needles) {
    const std::string path = dir.File(name);
    WriteFileText(path, text);
    ExpectErrorNaming(ErrorMessageOf([&] { LoadEnergyModel(path); }), path, needles);
  };
  expect_rejected("unknown.yaml", "int8_add: 0.1\ndram_per_bit: 20\n", {"'dram_per_bit'", "unknown"});
  expect_rejected("word.yaml", "fp32_add: cheap\n", {"'fp32_add'", "number"});
  expect_rejected("negative.yaml", "int8_multiply: -0.2\n", {"'int8_multiply'", ">= 0"});
  expect_rejected("nan.yaml", "mac_exponent: .nan\n", {"'mac_exponent'", "finite"});
  expect_rejected("infinite.yaml", "dram_per_32_bits: .inf\n", {"'dram_per_32_bits'", "finite"});
  expect_rejected("list.yaml", "fp32_multiply: [1, 2]\n", {"'fp32_multiply'", "number"});
  expect_rejected("flag.yaml", "count_activations: maybe\n", {"'count_activations'", "true or false"});
  expect_rejected("twice.yaml", "int8_add: 0.1\nint8_add: 0.2\n", {"'int8_add'", "more than once"});
  expect_rejected("sequence.yaml", "- 1\n- 2\n", {"map"});
  expect_rejected("broken.yaml", "{int8_add: [\n", {"YAML"});
  const std::string missing = dir.File("missing.yaml");
  ExpectErrorNaming(ErrorMessageOf([&] { LoadEnergyModel(missing); }), missing, {"does not exist"});
}

}  // namespace
}  // namespace atq
