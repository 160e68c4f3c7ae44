// Caption files (YAML) and the seeded caption generator.
#include "data/captions.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "io/yaml_file.h"
#include "util/error.h"
#include "util/paths.h"

namespace atq {
namespace {

// A non-empty list of distinct, non-empty strings at node[key]; `what` names it in errors.
std::vector<std::string> StringList(const YAML::Node& node, const char* key, const std::string& what) {
  const YAML::Node list = node[key];
  Require(list && list.IsSequence() && list.size() > 0, "{}: '{}' must be a non-empty list", what, key);
  std::vector<std::string> out;
  for (const YAML::Node& item : list) {
    Require(item.IsScalar(), "{}: '{}' holds an entry that is not a string (line {})", what, key, item.Mark().line + 1);
    const std::string text = item.as<std::string>();
    Require(!text.empty(), "{}: '{}' holds an empty string (line {})", what, key, item.Mark().line + 1);
    Require(std::find(out.begin(), out.end(), text) == out.end(), "{}: '{}' lists \"{}\" twice", what, key, text);
    out.push_back(text);
  }
  return out;
}

// SplitMix64: a counter-based stream of well-mixed 64-bit values.
uint64_t Mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

}  // namespace

const char* CaptionSplitName(CaptionSplit split) { return split == CaptionSplit::kTrain ? "train" : "held_out"; }

CaptionSet LoadCaptionSet(const std::string& path) {
  const YAML::Node root = LoadYamlFile(path);
  Require(root.IsMap(), "{}: a caption file is a mapping with 'classes', 'templates' and 'similar'", path);
  CaptionSet set;
  set.source = path;
  const YAML::Node classes = root["classes"];
  Require(classes && classes.IsSequence() && classes.size() >= 2, "{}: 'classes' must list at least two classes",
          path);
  std::map<std::string, std::string> owner;  // description -> where it was first given
  for (const YAML::Node& entry : classes) {
    Require(entry.IsMap() && entry["name"] && entry["name"].IsScalar(), "{}: a class without a 'name' (line {})", path,
            entry.Mark().line + 1);
    const std::string name = entry["name"].as<std::string>();
    Require(std::find(set.class_names.begin(), set.class_names.end(), name) == set.class_names.end(),
            "{}: class '{}' is listed twice", path, name);
    set.class_names.push_back(name);
    for (const CaptionSplit split : {CaptionSplit::kTrain, CaptionSplit::kHeldOut}) {
      const std::string what = fmt::format("{}: class '{}'", path, name);
      std::vector<std::string> list = StringList(entry, CaptionSplitName(split), what);
      for (const std::string& text : list) {
        const std::string here = fmt::format("class '{}' {}", name, CaptionSplitName(split));
        const auto [it, fresh] = owner.emplace(text, here);
        Require(fresh, "{}: the description \"{}\" is given in {} and again in {}", path, text, it->second, here);
      }
      set.descriptions[static_cast<int>(split)].push_back(std::move(list));
    }
  }
  const YAML::Node templates = root["templates"];
  Require(templates && templates.IsMap(), "{}: 'templates' must be a mapping with 'train' and 'held_out'", path);
  std::set<std::string> seen;
  for (const CaptionSplit split : {CaptionSplit::kTrain, CaptionSplit::kHeldOut}) {
    std::vector<std::string> list = StringList(templates, CaptionSplitName(split), path + ": templates");
    for (const std::string& pattern : list) {
      const size_t at = pattern.find("{}");
      Require(at != std::string::npos && pattern.find("{}", at + 2) == std::string::npos,
              "{}: the template \"{}\" must hold exactly one {{}}", path, pattern);
      Require(seen.insert(pattern).second, "{}: the template \"{}\" is in both splits", path, pattern);
    }
    set.templates[static_cast<int>(split)] = std::move(list);
  }
  set.similar.assign(set.class_names.size(), {});
  if (const YAML::Node similar = root["similar"]; similar) {
    Require(similar.IsSequence(), "{}: 'similar' must be a list of groups of class names", path);
    for (const YAML::Node& group : similar) {
      Require(group.IsSequence() && group.size() >= 2, "{}: a 'similar' group must name two classes or more (line {})",
              path, group.Mark().line + 1);
      std::vector<int> members;
      for (const YAML::Node& item : group) {
        const std::string name = item.as<std::string>();
        const auto found = std::find(set.class_names.begin(), set.class_names.end(), name);
        Require(found != set.class_names.end(), "{}: 'similar' names '{}', which is not a class", path, name);
        members.push_back(static_cast<int>(found - set.class_names.begin()));
      }
      for (const int a : members) {
        for (const int b : members) {
          auto& list = set.similar[static_cast<size_t>(a)];
          if (a != b && std::find(list.begin(), list.end(), b) == list.end()) list.push_back(b);
        }
      }
    }
  }
  for (const auto& pair : root) {
    const std::string name = pair.first.as<std::string>();
    Require(name == "classes" || name == "templates" || name == "similar", "{}: unknown key '{}'", path, name);
  }
  return set;
}

std::string CaptionFileFor(const std::string& dataset) {
  const std::string path = (std::filesystem::path(ProjectAssetDir()) / "captions" / (dataset + ".yaml")).string();
  Require(std::filesystem::is_regular_file(path), "{}: no captions for dataset '{}' (set ATQ_ASSETS to the "
          "project's assets folder)", path, dataset);
  return path;
}

CaptionGenerator::CaptionGenerator(const CaptionSet& set, CaptionSplit split, uint64_t seed)
    : set_(set), split_(split), seed_(seed) {
  Require(set.classes() > 1, "{}: captions need two classes or more", set.source);
}

void CaptionGenerator::CheckLabel(int label) const {
  Require(label >= 0 && label < set_.classes(), "{}: label {} is outside 0..{}", set_.source, label,
          set_.classes() - 1);
}

uint64_t CaptionGenerator::Draw(int label, int64_t index, uint64_t stream) const {
  return Mix(Mix(Mix(seed_ ^ (static_cast<uint64_t>(split_) << 62)) + static_cast<uint64_t>(label)) +
             static_cast<uint64_t>(index) * 4 + stream);
}

std::string CaptionGenerator::Caption(int label, int64_t index) const {
  CheckLabel(label);
  const auto& descriptions = set_.descriptions[static_cast<int>(split_)][static_cast<size_t>(label)];
  const auto& templates = set_.templates[static_cast<int>(split_)];
  return FillTemplate(templates[Draw(label, index, 0) % templates.size()],
                      descriptions[Draw(label, index, 1) % descriptions.size()]);
}

int CaptionGenerator::Negative(int label, int64_t index) const {
  CheckLabel(label);
  const auto& similar = set_.similar[static_cast<size_t>(label)];
  const uint64_t draw = Draw(label, index, 2);
  if (!similar.empty() && draw % 2 == 0) return similar[(draw / 2) % similar.size()];
  const int other = static_cast<int>((draw / 2) % static_cast<uint64_t>(set_.classes() - 1));
  return other < label ? other : other + 1;
}

std::vector<std::string> CaptionGenerator::Prompts(int label) const {
  CheckLabel(label);
  std::vector<std::string> prompts;
  for (const std::string& pattern : set_.templates[static_cast<int>(split_)]) {
    for (const std::string& description : set_.descriptions[static_cast<int>(split_)][static_cast<size_t>(label)]) {
      prompts.push_back(FillTemplate(pattern, description));
    }
  }
  return prompts;
}

CaptionVocabulary::CaptionVocabulary(const CaptionSet& set,
                                     const std::function<std::vector<int32_t>(const std::string&)>& encode)
    : encode_(encode) {
  std::set<int32_t> seen;
  const CaptionGenerator train(set, CaptionSplit::kTrain, 0);
  for (int label = 0; label < set.classes(); ++label) {
    for (const std::string& text : train.Prompts(label)) {
      for (const int32_t id : encode_(text)) seen.insert(id);
    }
  }
  gpt2_ids_.assign(seen.begin(), seen.end());
  for (size_t i = 0; i < gpt2_ids_.size(); ++i) dense_[gpt2_ids_[i]] = static_cast<int64_t>(i) + 2;
}

std::vector<int64_t> CaptionVocabulary::Encode(const std::string& text, int64_t context, int64_t* length) const {
  Require(context > 0, "caption context must be positive, got {}", context);
  std::vector<int64_t> ids(static_cast<size_t>(context), kPad);
  int64_t count = 0;
  for (const int32_t id : encode_(text)) {
    if (count == context) break;
    const auto found = dense_.find(id);
    ids[static_cast<size_t>(count++)] = found == dense_.end() ? kUnknown : found->second;
  }
  if (count == 0) ids[0] = kUnknown, count = 1;
  if (length != nullptr) *length = count;
  return ids;
}

std::string FillTemplate(const std::string& pattern, const std::string& description) {
  const size_t at = pattern.find("{}");
  Require(at != std::string::npos, "caption template \"{}\" has no {{}}", pattern);
  std::string text = pattern.substr(0, at) + description + pattern.substr(at + 2);
  if (!text.empty()) text[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[0])));
  return text;
}

}  // namespace atq
