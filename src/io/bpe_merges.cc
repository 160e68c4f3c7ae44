// A priority queue of candidate pairs over a linked list of symbols; an entry is stale once either side has
// changed, and is skipped when popped. O(n log n) in the symbols, so a whole unsplit text merges in one pass.
#include "io/bpe_merges.h"

#include <queue>

namespace atq {

bool BpeMerges::Add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  return merges_.emplace(Key(left, right), Merge{rank, merged}).second;
}

const BpeMerges::Merge* BpeMerges::Find(int32_t left, int32_t right) const {
  const auto found = merges_.find(Key(left, right));
  return found == merges_.end() ? nullptr : &found->second;
}

void BpeMerges::Apply(std::vector<int32_t>& symbols) const {
  if (symbols.size() < 2 || merges_.empty()) return;
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // neighbours still alive, -1 at the ends
    bool alive;
  };
  // Lowest rank first, then leftmost.
  struct Candidate {
    int32_t rank, position, merged;
    bool operator<(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : position > other.position;
    }
  };
  const auto size = static_cast<int32_t>(symbols.size());
  std::vector<Symbol> list(symbols.size());
  for (int32_t i = 0; i < size; ++i) list[i] = {symbols[i], i - 1, i + 1 < size ? i + 1 : -1, true};
  std::vector<Candidate> storage;
  storage.reserve(symbols.size());
  std::priority_queue<Candidate> queue(std::less<Candidate>(), std::move(storage));
  const auto consider = [&](int32_t left) {
    if (left < 0 || list[left].next < 0) return;
    if (const Merge* merge = Find(list[left].id, list[list[left].next].id)) {
      queue.push({merge->rank, left, merge->merged});
    }
  };
  for (int32_t i = 0; i + 1 < size; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = list[top.position];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = list[left.next];
    const Merge* current = Find(left.id, right.id);
    if (current == nullptr || current->merged != top.merged) continue;  // stale
    left.id = top.merged;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) list[right.next].prev = top.position;
    consider(left.prev);
    consider(top.position);
  }
  symbols.clear();
  for (int32_t i = 0; i >= 0; i = list[i].next) symbols.push_back(list[i].id);
}

void BpeWordCache::Encode(std::string_view word, std::vector<int32_t>& out,
                          const std::function<std::vector<int32_t>(std::string_view)>& encode) const {
  if (word.size() > kMaxWordBytes) {
    const std::vector<int32_t> ids = encode(word);
    out.insert(out.end(), ids.begin(), ids.end());
    return;
  }
  std::string key(word);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto found = words_.find(key);
    if (found != words_.end()) {
      out.insert(out.end(), found->second.begin(), found->second.end());
      return;
    }
  }
  std::vector<int32_t> ids = encode(word);
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(mutex_);
  if (words_.size() >= kMaxEntries) words_.clear();
  words_.emplace(std::move(key), std::move(ids));
}

}  // namespace atq
