// The setting table every key/value reader goes through: known keys parse, unknown ones list the known.
#include "util/setting_table.h"

#include <gtest/gtest.h>

#include "test_util.h"
#include "util/parse.h"

namespace atq {
namespace {

struct Target {
  int64_t size = 0;
  bool flag = false;
};

const SettingTable<Target>& Table() {
  static const SettingTable<Target> table = {
      {"size", [](Target& t, const std::string& v, const std::string& w) { t.size = ParseInt(v, w); }},
      {"flag", [](Target& t, const std::string& v, const std::string& w) { t.flag = ParseBool(v, w); }},
  };
  return table;
}

TEST(SettingTableTest, AppliesKnownKeysAndNamesTheSourceOfErrors) {
  Target target;
  Table().Apply(target, "size", "12", "recipe.yaml");
  Table().Apply(target, "flag", "yes", "recipe.yaml");
  EXPECT_EQ(target.size, 12);
  EXPECT_TRUE(target.flag);
  EXPECT_EQ(Table().Keys(), (std::vector<std::string>{"flag", "size"}));
  EXPECT_TRUE(Table().Has("size"));
  EXPECT_FALSE(Table().Has("sise"));
  const std::string unknown = testutil::ErrorMessageOf([&] { Table().Apply(target, "sise", "1", "recipe.yaml"); });
  EXPECT_NE(unknown.find("recipe.yaml: unknown setting 'sise' (one of: flag, size)"), std::string::npos) << unknown;
  const std::string bad = testutil::ErrorMessageOf([&] { Table().Apply(target, "size", "big", "recipe.yaml"); });
  EXPECT_NE(bad.find("recipe.yaml: size"), std::string::npos) << bad;
}

TEST(SettingTableTest, ChoicesNameTheAcceptedValues) {
  enum class Color { kRed, kBlue };
  EXPECT_EQ(ParseChoice<Color>("blue", "x", {{"red", Color::kRed}, {"blue", Color::kBlue}}), Color::kBlue);
  const std::string message =
      testutil::ErrorMessageOf([] { ParseChoice<Color>("green", "plan.yaml: color", {{"red", Color::kRed}, {"blue", Color::kBlue}}); });
  EXPECT_NE(message.find("plan.yaml: color: 'green' is not one of red, blue"), std::string::npos) << message;
}

}  // namespace
}  // namespace atq
