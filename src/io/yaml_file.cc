#include "io/yaml_file.h"

#include <map>

#include "io/input_file.h"
#include "util/error.h"
#include "util/strings.h"
#include "util/utf8.h"

namespace atq {
namespace {

// Real recipes nest 3 deep; the limit keeps a hostile file from costing deep recursion in the check.
constexpr int kMaxYamlDepth = 64;

void CheckKeys(const YAML::Node& node, const std::string& what, int depth) {
  Require(depth <= kMaxYamlDepth, "{}: YAML nested more than {} levels deep", what, kMaxYamlDepth);
  if (node.IsMap()) {
    std::map<std::string, int> seen;  // key -> line (1-based)
    for (const auto& pair : node) {
      const int line = pair.first.Mark().line + 1;
      if (pair.first.IsScalar()) {
        const auto [at, inserted] = seen.emplace(pair.first.Scalar(), line);
        if (!inserted) {
          Fail("{}: line {}: key {} appears more than once (first on line {}); say it once", what, line,
               QuoteForMessage(pair.first.Scalar()), at->second);
        }
      }
      CheckKeys(pair.second, what, depth + 1);
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) CheckKeys(item, what, depth + 1);
  }
}

}  // namespace

YAML::Node ParseYaml(std::string_view text, const std::string& what) {
  // Flow nesting ([ and {) is counted before yaml-cpp recurses into it (its own limit is 2000 levels, deep
  // enough to exhaust a sanitizer's stack).
  Require(BracketNestingDepth(text, kMaxYamlDepth) <= kMaxYamlDepth, "{}: YAML nested more than {} levels deep", what, kMaxYamlDepth);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    Fail("{}: not valid YAML: {}", what, e.what());
  }
  CheckKeys(root, what, 0);
  return root;
}

YAML::Node LoadYamlFile(const std::string& path) { return ParseYaml(ReadInputText(path), path); }

}  // namespace atq
