// The one way atq reads settings given as key/value text (recipe files, sweep files, command-line recipes, vision
// experiment files): a table from key to the setter that parses the value into a target. Unknown keys are errors
// that list the known ones; every error starts with where the text came from.
#pragma once

#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "util/error.h"

namespace atq {

// A value that is one of a few names: `choices` maps each accepted name to its value. Throws atq::Error
// "WHERE: 'VALUE' is not one of a, b, c".
template <typename Value>
Value ParseChoice(const std::string& value, const std::string& where,
                  std::initializer_list<std::pair<std::string_view, Value>> choices) {
  std::vector<std::string_view> names;
  for (const auto& [name, choice] : choices) {
    if (name == value) return choice;
    names.push_back(name);
  }
  Fail("{}: '{}' is not one of {}", where, value, fmt::join(names, ", "));
}

template <typename Target>
class SettingTable {
 public:
  // Parses `value` into the target; throws atq::Error starting with `where` for a bad value.
  using Setter = std::function<void(Target& target, const std::string& value, const std::string& where)>;

  SettingTable(std::initializer_list<std::pair<const std::string, Setter>> rows) : setters_(rows) {}

  bool Has(std::string_view key) const { return setters_.find(key) != setters_.end(); }

  // The keys, sorted.
  std::vector<std::string> Keys() const {
    std::vector<std::string> keys;
    for (const auto& [key, setter] : setters_) keys.push_back(key);
    return keys;
  }

  // Sets `key` in `target`; `where` names the source ("recipe.yaml", "configs[2]"). Throws atq::Error
  // "WHERE: unknown setting 'KEY' (one of: ...)" for a key not in the table.
  void Apply(Target& target, const std::string& key, const std::string& value, const std::string& where) const {
    const auto setter = setters_.find(key);
    Require(setter != setters_.end(), "{}: unknown setting '{}' (one of: {})", where, key, fmt::join(Keys(), ", "));
    setter->second(target, value, fmt::format("{}: {}", where, key));
  }

 private:
  std::map<std::string, Setter, std::less<>> setters_;
};

}  // namespace atq
