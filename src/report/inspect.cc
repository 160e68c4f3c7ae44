// Describing a tensor file: per tensor, per type and in total.
#include "report/inspect.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

namespace atq {
namespace {

std::string HumanBytes(double bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (bytes >= 1024 && unit < 4) {
    bytes /= 1024;
    ++unit;
  }
  return unit == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.2f} {}", bytes, kUnits[unit]);
}

std::string Dump(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Tensors, elements and bytes per type (in first-seen order) and in total.
struct TypeTotals {
  std::string type;
  int64_t tensors = 0, elements = 0;
  uint64_t bytes = 0;
};
std::vector<TypeTotals> CountByType(const TensorFile& file, TypeTotals& total) {
  std::vector<TypeTotals> by_type;
  for (const TensorEntry& entry : file.tensors()) {
    const TensorInfo& info = *entry.info;
    const std::string type = TensorFile::TypeName(info);
    auto found = std::find_if(by_type.begin(), by_type.end(), [&](const TypeTotals& t) { return t.type == type; });
    if (found == by_type.end()) found = by_type.insert(by_type.end(), TypeTotals{type});
    for (TypeTotals* t : {&*found, &total}) {
      ++t->tensors;
      t->elements += CheckedElementCount(info.shape, info.name);
      t->bytes += info.nbytes;
    }
  }
  return by_type;
}

}  // namespace

nlohmann::json DescribeTensorFile(const TensorFile& file, size_t max_array_elements) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorEntry& entry : file.tensors()) {
    const TensorInfo& info = *entry.info;
    tensors.push_back({{"name", info.name},
                       {"type", TensorFile::TypeName(info)},
                       {"shape", info.shape},
                       {"elements", CheckedElementCount(info.shape, info.name)},
                       {"bytes", info.nbytes},
                       {"file", entry.file}});
  }
  TypeTotals total;
  nlohmann::json by_type = nlohmann::json::object();
  for (const TypeTotals& t : CountByType(file, total)) {
    by_type[t.type] = {{"tensors", t.tensors}, {"elements", t.elements}, {"bytes", t.bytes}};
  }
  nlohmann::json out = {{"path", file.path()},
                        {"format", file.kind_name()},
                        {"metadata", file.MetadataJson(max_array_elements)}};
  out["tensors"] = std::move(tensors);
  out["by_type"] = std::move(by_type);
  out["total"] = {{"tensors", total.tensors}, {"elements", total.elements}, {"bytes", total.bytes}};
  return out;
}

void PrintInspection(const TensorFile& file, size_t max_array_elements, std::FILE* out) {
  fmt::print(out, "{} ({})\n", file.path(), file.kind_name());
  const nlohmann::json metadata = file.MetadataJson(max_array_elements);
  if (!metadata.empty()) {
    fmt::print(out, "metadata:\n");
    for (const auto& [key, value] : metadata.items()) {
      std::string shown = value.is_string() ? value.get<std::string>() : Dump(value);
      constexpr size_t kMaxShown = 160;
      if (shown.size() > kMaxShown) shown = shown.substr(0, kMaxShown) + "...";
      fmt::print(out, "  {} = {}\n", key, shown);
    }
  }
  size_t name_width = 4;
  for (const TensorEntry& entry : file.tensors()) name_width = std::max(name_width, entry.info->name.size());
  fmt::print(out, "tensors:\n  {:<{}}  {:<6}  {:<22}  {:>12}  {:>12}\n", "name", name_width, "type", "shape",
             "elements", "bytes");
  for (const TensorEntry& entry : file.tensors()) {
    const TensorInfo& info = *entry.info;
    fmt::print(out, "  {:<{}}  {:<6}  {:<22}  {:>12}  {:>12}\n", info.name, name_width, TensorFile::TypeName(info),
               Dump(info.shape), CheckedElementCount(info.shape, info.name), info.nbytes);
  }
  TypeTotals total;
  fmt::print(out, "by type:\n");
  for (const TypeTotals& t : CountByType(file, total)) {
    fmt::print(out, "  {:<6} {:>5} tensors  {:>14} elements  {:>12}\n", t.type, t.tensors, t.elements,
               HumanBytes(static_cast<double>(t.bytes)));
  }
  fmt::print(out, "total:  {:>5} tensors  {:>14} elements  {:>12}\n", total.tensors, total.elements,
             HumanBytes(static_cast<double>(total.bytes)));
}

}  // namespace atq
