// Estimated energy of one inference from each layer's operation counts and bit widths, anchored to Horowitz's
// 45 nm figures ("Computing's energy problem", ISSCC 2014), every constant overridable from a config file.
//
// The model, for layers l with weight bits b_w(l) and activation bits b_a(l):
//   E = sum_l macs(l) * MacEnergy(b_w(l), b_a(l))                      (weight x activation layers)
//     + sum_l macs(l) * MacEnergy(b_a(l), b_a(l))                      (activation x activation products)
//     + sum_l weights(l) * MemoryEnergy(b_w(l))
//     + sum_l (inputs(l) + outputs(l)) * MemoryEnergy(b_a(l))          (only when count_activations)
// with, in pJ,
//   MacEnergy(w, a) = fp32_multiply + fp32_add                                          if w >= 32 or a >= 32
//                   = (int8_multiply + int8_add) * (w * a / 64) ^ (mac_exponent / 2)    otherwise
//   MemoryEnergy(b) = dram_per_32_bits * (b / 32) ^ memory_exponent                     per element
// A MAC with one float operand is a float MAC: quantized weights against float activations are dequantized and
// multiplied in float. With the defaults an int8 MAC costs 0.23 pJ and scales as b^2 (b_w = b_a = b), a float32
// MAC 4.6 pJ, and DRAM traffic is linear in the bits moved: 640 pJ per 32-bit element, 160 pJ per 8-bit one.
// Each layer reads its weights and its input activations from DRAM once and writes its outputs once; caches and
// on-chip reuse are left out on purpose, so the numbers compare precisions rather than predict a chip.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace atq {

struct EnergyModel {
  double int8_multiply = 0.2;      // pJ
  double int8_add = 0.03;          // pJ
  double fp32_multiply = 3.7;      // pJ
  double fp32_add = 0.9;           // pJ
  double dram_per_32_bits = 640;   // pJ per 32 bits read or written
  double mac_exponent = 2;         // integer MAC energy ~ (b_w * b_a)^(mac_exponent / 2)
  double memory_exponent = 1;      // DRAM energy per element ~ b^memory_exponent
  bool count_activations = true;   // false: only weights move through DRAM
};

// A YAML (or JSON) map with any subset of EnergyModel's field names; the rest keep their defaults. Throws
// atq::Error naming the file, and the key where one is at fault: unreadable file, not a map, unknown or repeated
// key, a value that is not a number (true/false for count_activations), negative or not finite.
EnergyModel LoadEnergyModel(const std::string& path);

// pJ per multiply-accumulate with operands of these widths (each >= 1).
double MacEnergy(const EnergyModel& model, int weight_bits, int activation_bits);
// pJ per element of this width (>= 1) moved to or from DRAM.
double MemoryEnergy(const EnergyModel& model, int bits);

enum class MacOperands {
  kWeightTimesActivation,      // convolutions, linear layers: a b_w-bit weight times a b_a-bit activation
  kActivationTimesActivation,  // attention scores and their product with values: both operands b_a-bit
};

// One layer's work for one inference of one sample, counted by the caller from the real layer shapes.
struct LayerWork {
  std::string name;
  int64_t macs = 0;
  int64_t weights = 0;  // 0 for activation x activation products
  int64_t inputs = 0;   // activation elements read (both operands of an activation x activation product)
  int64_t outputs = 0;  // activation elements written
  MacOperands operands = MacOperands::kWeightTimesActivation;
};

// Bit widths of one layer; 32 (or more) means float.
struct LayerBits {
  int weights = 32;
  int activations = 32;
};

struct LayerEnergy {
  std::string name;
  int weight_bits = 32;
  int activation_bits = 32;
  int64_t macs = 0;
  int64_t weight_elements = 0;      // moved through DRAM at weight_bits
  int64_t activation_elements = 0;  // moved through DRAM at activation_bits (0 unless count_activations)
  double mac_pj = 0;
  double memory_pj = 0;
  double total_pj = 0;
};

// Each layer's energy; work and bits pair up by index. Throws atq::Error when the sizes differ, a count is
// negative, a width is below 1, or an activation x activation layer has weights.
std::vector<LayerEnergy> NetworkEnergy(const EnergyModel& model, const std::vector<LayerWork>& work,
                                       const std::vector<LayerBits>& bits);

// Sum of the layers' total_pj.
double TotalEnergy(const std::vector<LayerEnergy>& layers);

// {"model": the constants used, "layers": [per layer counts, widths and pJ], "mac_pj", "memory_pj", "total_pj"}.
nlohmann::json EnergyJson(const EnergyModel& model, const std::vector<LayerEnergy>& layers);

}  // namespace atq
