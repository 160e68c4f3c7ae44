// SettingFlags: one CLI11 option or switch per table row.
#include "setting_flags.h"

namespace atq::cli {

void SettingFlags::Add(CLI::App& app) {
  values_.resize(table_.size());
  for (size_t i = 0; i < table_.size(); ++i) {
    const SettingFlag& flag = table_[i];
    options_.push_back(flag.value ? app.add_flag(flag.flag, flag.help) : app.add_option(flag.flag, values_[i], flag.help));
  }
}

std::map<std::string, std::string> SettingFlags::Settings() const {
  std::map<std::string, std::string> settings;
  for (size_t i = 0; i < table_.size(); ++i) {
    if (options_[i]->count() > 0) settings[table_[i].key] = table_[i].value ? table_[i].value : values_[i];
  }
  return settings;
}

}  // namespace atq::cli
