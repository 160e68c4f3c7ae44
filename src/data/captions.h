// English captions for image datasets: a class's descriptions set into sentence templates, from a YAML file kept in
// the repository (assets/captions/fashion_mnist.yaml documents the format). Training captions and evaluation
// captions come from disjoint descriptions and disjoint templates, so that a model's text side is tested on
// wordings it never saw.
//
// The generator is counter-based: the caption of example i depends only on (seed, split, label, i), not on the
// order examples are drawn in, so data-parallel ranks and resumed runs see the same captions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace atq {

enum class CaptionSplit { kTrain, kHeldOut };
const char* CaptionSplitName(CaptionSplit split);  // "train", "held_out"

struct CaptionSet {
  std::string source;                    // the file, for errors
  std::vector<std::string> class_names;  // in label order
  // [split][label]: descriptions ("a pair of trousers"); [split]: templates with one "{}".
  std::vector<std::vector<std::string>> descriptions[2];
  std::vector<std::string> templates[2];
  // similar[label]: the other classes that look alike (hard negatives), from the file's `similar` groups.
  std::vector<std::vector<int>> similar;

  int classes() const { return static_cast<int>(class_names.size()); }
};

// Reads and checks a caption file: every class with training and held-out descriptions, templates of both splits
// with exactly one "{}", no description or template given twice (within a split, across splits or across
// classes), `similar` groups naming known classes. Throws atq::Error naming the file and the entry.
CaptionSet LoadCaptionSet(const std::string& path);

// assets/captions/<dataset>.yaml (ProjectAssetDir); throws atq::Error naming the file when there is none.
std::string CaptionFileFor(const std::string& dataset);

class CaptionGenerator {
 public:
  CaptionGenerator(const CaptionSet& set, CaptionSplit split, uint64_t seed);

  // A caption of class `label` for example `index`: a template and a description of the split, each drawn
  // uniformly from (seed, label, index).
  std::string Caption(int label, int64_t index) const;
  // A class other than `label` for the matching task's negative of example `index`: half of the time a similar
  // class (when `label` has one), else any other class.
  int Negative(int label, int64_t index) const;
  // Every template of the split with every description of `label`: the prompts a zero-shot classifier averages.
  std::vector<std::string> Prompts(int label) const;

  const CaptionSet& set() const { return set_; }
  CaptionSplit split() const { return split_; }

 private:
  uint64_t Draw(int label, int64_t index, uint64_t stream) const;
  void CheckLabel(int label) const;  // atq::Error naming the file for a label outside the classes

  const CaptionSet& set_;
  CaptionSplit split_;
  uint64_t seed_;
};

// The token ids a text encoder embeds: GPT-2's ids of every training wording (each training template with each
// training description of every class) renumbered densely, 0 for padding and 1 for a token the training wordings
// never use (held-out wordings may hold such tokens; they share one embedding). Built from the GPT-2 ids so that
// the text still goes through GPT-2's tokenizer, but without a 50,257-row embedding table of which a few hundred
// rows would ever train.
class CaptionVocabulary {
 public:
  static constexpr int64_t kPad = 0, kUnknown = 1;

  // `encode`: GPT-2's tokenizer (any text -> ids).
  CaptionVocabulary(const CaptionSet& set, const std::function<std::vector<int32_t>(const std::string&)>& encode);

  int64_t size() const { return static_cast<int64_t>(gpt2_ids_.size()) + 2; }
  // `text` as `context` ids: tokens renumbered, cut at `context`, padded with kPad; `length` gets the count of
  // real tokens (at least 1: an empty text is one kUnknown).
  std::vector<int64_t> Encode(const std::string& text, int64_t context, int64_t* length) const;
  const std::vector<int32_t>& gpt2_ids() const { return gpt2_ids_; }  // by dense id - 2

 private:
  std::function<std::vector<int32_t>(const std::string&)> encode_;
  std::vector<int32_t> gpt2_ids_;
  std::unordered_map<int32_t, int64_t> dense_;
};

// `template` with its "{}" replaced by `description` and the first letter upper-cased.
std::string FillTemplate(const std::string& pattern, const std::string& description);

}  // namespace atq
