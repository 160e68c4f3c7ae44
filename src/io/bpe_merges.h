// Byte-pair merges by rank, applied as Hugging Face's BPE applies them: the adjacent pair of lowest rank first,
// leftmost on ties, until no pair has a merge. Shared by GPT-2's files and tokenizer.json's BPE model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace atq {

class BpeMerges {
 public:
  // Adds the merge (left, right) -> merged at `rank`; false (and nothing changed) when the pair already has one,
  // since the first, highest-priority entry wins.
  bool Add(int32_t left, int32_t right, int32_t rank, int32_t merged);
  void Reserve(size_t count) { merges_.reserve(count); }
  size_t size() const { return merges_.size(); }

  // `symbols` (token ids) merged in place.
  void Apply(std::vector<int32_t>& symbols) const;

 private:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };
  static uint64_t Key(int32_t left, int32_t right) {
    return (uint64_t{static_cast<uint32_t>(left)} << 32) | static_cast<uint32_t>(right);
  }
  const Merge* Find(int32_t left, int32_t right) const;

  std::unordered_map<uint64_t, Merge> merges_;
};

// Words' ids remembered: pre-tokens are mostly words, so caching the short ones saves nearly all BPE work on real
// text; the cap keeps a long-lived tokenizer's memory bounded. Thread-safe.
class BpeWordCache {
 public:
  // Appends the ids of `word` to `out`: remembered ones, else `encode(word)`'s (remembered when short).
  void Encode(std::string_view word, std::vector<int32_t>& out,
              const std::function<std::vector<int32_t>(std::string_view)>& encode) const;

 private:
  static constexpr size_t kMaxWordBytes = 64;
  static constexpr size_t kMaxEntries = size_t{1} << 17;
  mutable std::mutex mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> words_;
};

}  // namespace atq
