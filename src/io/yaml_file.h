// YAML inputs (recipes, sweeps, energy tables): regular files only, and a key given twice in one mapping is an
// error naming both lines (yaml-cpp keeps both pairs and a lookup silently sees one).
#pragma once

#include <string>
#include <string_view>

#include <yaml-cpp/yaml.h>

namespace atq {

YAML::Node LoadYamlFile(const std::string& path);
// `what` names the text in errors (a path, or "--recipe" for inline text).
YAML::Node ParseYaml(std::string_view text, const std::string& what);

}  // namespace atq
