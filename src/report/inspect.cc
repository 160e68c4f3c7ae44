// Describing a tensor file: per tensor, per type and in total.
#include "report/inspect.h"

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

}  // namespace

nlohmann::json DescribeTensorFile(const TensorFile& file, size_t max_array_elements) {
  nlohmann::json tensors = nlohmann::json::array();
  nlohmann::json by_type = nlohmann::json::object();
  int64_t total_elements = 0;
  uint64_t total_bytes = 0;
  for (const TensorEntry& entry : file.tensors()) {
    const TensorInfo& info = *entry.info;
    const std::string type = TensorFile::TypeName(info);
    const int64_t elements = CheckedElementCount(info.shape, info.name);
    nlohmann::json row = {{"name", info.name}, {"type", type},           {"shape", info.shape},
                          {"elements", elements}, {"bytes", info.nbytes}, {"file", entry.file}};
    tensors.push_back(std::move(row));
    if (!by_type.contains(type)) by_type[type] = {{"tensors", 0}, {"elements", 0}, {"bytes", 0}};
    nlohmann::json& totals = by_type[type];
    totals["tensors"] = totals["tensors"].get<int64_t>() + 1;
    totals["elements"] = totals["elements"].get<int64_t>() + elements;
    totals["bytes"] = totals["bytes"].get<uint64_t>() + info.nbytes;
    total_elements += elements;
    total_bytes += info.nbytes;
  }
  return {{"path", file.path()},
          {"format", file.kind_name()},
          {"metadata", file.MetadataJson(max_array_elements)},
          {"tensors", tensors},
          {"by_type", by_type},
          {"total",
           {{"tensors", file.tensors().size()}, {"elements", total_elements}, {"bytes", total_bytes}}}};
}

std::string FormatInspection(const nlohmann::json& d) {
  std::string out = fmt::format("{} ({})\n", d["path"].get<std::string>(), d["format"].get<std::string>());
  if (!d["metadata"].empty()) {
    out += "metadata:\n";
    for (const auto& [key, value] : d["metadata"].items()) {
      std::string shown = value.is_string() ? value.get<std::string>() : Dump(value);
      constexpr size_t kMaxShown = 160;
      if (shown.size() > kMaxShown) shown = shown.substr(0, kMaxShown) + "...";
      out += fmt::format("  {} = {}\n", key, shown);
    }
  }
  size_t name_width = 4;
  for (const auto& t : d["tensors"]) name_width = std::max(name_width, t["name"].get<std::string>().size());
  out += fmt::format("tensors:\n  {:<{}}  {:<6}  {:<22}  {:>12}  {:>12}\n", "name", name_width, "type", "shape",
                     "elements", "bytes");
  for (const auto& t : d["tensors"]) {
    out += fmt::format("  {:<{}}  {:<6}  {:<22}  {:>12}  {:>12}\n", t["name"].get<std::string>(), name_width,
                       t["type"].get<std::string>(), Dump(t["shape"]), t["elements"].get<int64_t>(),
                       t["bytes"].get<uint64_t>());
  }
  out += "by type:\n";
  for (const auto& [type, totals] : d["by_type"].items()) {
    out += fmt::format("  {:<6} {:>5} tensors  {:>14} elements  {:>12}\n", type, totals["tensors"].get<int64_t>(),
                       totals["elements"].get<int64_t>(), HumanBytes(totals["bytes"].get<double>()));
  }
  const auto& total = d["total"];
  out += fmt::format("total:  {:>5} tensors  {:>14} elements  {:>12}\n", total["tensors"].get<int64_t>(),
                     total["elements"].get<int64_t>(), HumanBytes(total["bytes"].get<double>()));
  return out;
}

}  // namespace atq
