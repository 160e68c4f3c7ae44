// The energy model of energy.h: its config file, per-operation costs and per-layer totals.
#include "eval/energy.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <set>

#include <yaml-cpp/yaml.h>

#include "util/error.h"
#include "io/yaml_file.h"

namespace atq {
namespace {

struct NumberField {
  const char* key;
  double EnergyModel::*field;
};

// The numeric constants by their config key; the config reader and the JSON report both go through this list.
constexpr NumberField kNumberFields[] = {
    {"int8_multiply", &EnergyModel::int8_multiply},
    {"int8_add", &EnergyModel::int8_add},
    {"fp32_multiply", &EnergyModel::fp32_multiply},
    {"fp32_add", &EnergyModel::fp32_add},
    {"dram_per_32_bits", &EnergyModel::dram_per_32_bits},
    {"mac_exponent", &EnergyModel::mac_exponent},
    {"memory_exponent", &EnergyModel::memory_exponent},
};
constexpr const char* kCountActivationsKey = "count_activations";

// Widths at or above this are float: a MAC with such an operand runs in float32.
constexpr int kFloatBits = 32;

std::string KnownKeys() {
  std::string keys;
  for (const NumberField& number : kNumberFields) keys += std::string(number.key) + ", ";
  return keys + kCountActivationsKey;
}

void SetNumber(EnergyModel& model, double EnergyModel::*field, const YAML::Node& value, const std::string& where) {
  double number = 0;
  Require(value.IsScalar() && YAML::convert<double>::decode(value, number), "{}: expected a number", where);
  Require(std::isfinite(number) && number >= 0, "{}: {} must be a finite number >= 0", where, value.Scalar());
  model.*field = number;
}

void SetCountActivations(EnergyModel& model, const YAML::Node& value, const std::string& where) {
  bool flag = false;
  Require(value.IsScalar() && YAML::convert<bool>::decode(value, flag), "{}: expected true or false", where);
  model.count_activations = flag;
}

}  // namespace

EnergyModel LoadEnergyModel(const std::string& path) {
  const YAML::Node root = LoadYamlFile(path);
  EnergyModel model;
  if (root.IsNull()) return model;  // an empty file overrides nothing
  Require(root.IsMap(), "{}: an energy model is a map of constants (key: value; keys: {})", path, KnownKeys());
  std::set<std::string> seen;
  for (const auto& item : root) {
    Require(item.first.IsScalar(), "{}: a key is not a plain name", path);
    const std::string key = item.first.Scalar();
    const std::string where = fmt::format("{}: key '{}'", path, key);
    Require(seen.insert(key).second, "{}: appears more than once", where);
    if (key == kCountActivationsKey) {
      SetCountActivations(model, item.second, where);
      continue;
    }
    const auto number = std::find_if(std::begin(kNumberFields), std::end(kNumberFields),
                                     [&](const NumberField& field) { return key == field.key; });
    Require(number != std::end(kNumberFields), "{}: unknown constant (one of: {})", where, KnownKeys());
    SetNumber(model, number->field, item.second, where);
  }
  return model;
}

double MacEnergy(const EnergyModel& model, int weight_bits, int activation_bits) {
  Require(weight_bits >= 1 && activation_bits >= 1, "energy model: a MAC needs operand widths >= 1, not {} and {} bits",
          weight_bits, activation_bits);
  if (weight_bits >= kFloatBits || activation_bits >= kFloatBits) return model.fp32_multiply + model.fp32_add;
  const double relative_to_int8 = static_cast<double>(weight_bits) * activation_bits / 64.0;
  return (model.int8_multiply + model.int8_add) * std::pow(relative_to_int8, model.mac_exponent / 2);
}

double MemoryEnergy(const EnergyModel& model, int bits) {
  Require(bits >= 1, "energy model: an element needs a width >= 1, not {} bits", bits);
  return model.dram_per_32_bits * std::pow(bits / 32.0, model.memory_exponent);
}

std::vector<LayerEnergy> NetworkEnergy(const EnergyModel& model, const std::vector<LayerWork>& work,
                                       const std::vector<LayerBits>& bits) {
  Require(work.size() == bits.size(), "energy model: {} layers of work but {} layers of bit widths", work.size(),
          bits.size());
  std::vector<LayerEnergy> out;
  out.reserve(work.size());
  for (size_t l = 0; l < work.size(); ++l) {
    const LayerWork& layer = work[l];
    Require(layer.macs >= 0 && layer.weights >= 0 && layer.inputs >= 0 && layer.outputs >= 0,
            "energy model: layer '{}' has a negative count", layer.name);
    const bool activation_product = layer.operands == MacOperands::kActivationTimesActivation;
    Require(!activation_product || layer.weights == 0,
            "energy model: layer '{}' multiplies activations by activations but has {} weights", layer.name,
            layer.weights);
    LayerEnergy energy;
    energy.name = layer.name;
    energy.weight_bits = bits[l].weights;
    energy.activation_bits = bits[l].activations;
    energy.macs = layer.macs;
    energy.weight_elements = layer.weights;
    energy.activation_elements = model.count_activations ? layer.inputs + layer.outputs : 0;
    const int first_operand_bits = activation_product ? energy.activation_bits : energy.weight_bits;
    energy.mac_pj = static_cast<double>(layer.macs) * MacEnergy(model, first_operand_bits, energy.activation_bits);
    energy.memory_pj = static_cast<double>(energy.weight_elements) * MemoryEnergy(model, energy.weight_bits) +
                       static_cast<double>(energy.activation_elements) * MemoryEnergy(model, energy.activation_bits);
    energy.total_pj = energy.mac_pj + energy.memory_pj;
    out.push_back(std::move(energy));
  }
  return out;
}

double TotalEnergy(const std::vector<LayerEnergy>& layers) {
  double total = 0;
  for (const LayerEnergy& layer : layers) total += layer.total_pj;
  return total;
}

nlohmann::json EnergyJson(const EnergyModel& model, const std::vector<LayerEnergy>& layers) {
  nlohmann::json constants = nlohmann::json::object();
  for (const NumberField& number : kNumberFields) constants[number.key] = model.*number.field;
  constants[kCountActivationsKey] = model.count_activations;
  nlohmann::json rows = nlohmann::json::array();
  double mac_pj = 0, memory_pj = 0;
  for (const LayerEnergy& layer : layers) {
    mac_pj += layer.mac_pj;
    memory_pj += layer.memory_pj;
    rows.push_back({{"layer", layer.name},
                    {"weight_bits", layer.weight_bits},
                    {"activation_bits", layer.activation_bits},
                    {"macs", layer.macs},
                    {"weight_elements", layer.weight_elements},
                    {"activation_elements", layer.activation_elements},
                    {"mac_pj", layer.mac_pj},
                    {"memory_pj", layer.memory_pj},
                    {"total_pj", layer.total_pj}});
  }
  return {{"model", constants},
          {"layers", rows},
          {"mac_pj", mac_pj},
          {"memory_pj", memory_pj},
          {"total_pj", TotalEnergy(layers)}};
}

}  // namespace atq
