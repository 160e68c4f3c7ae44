// atq's named-choice options (tools/atq/command.h): each name stores its own value (enum and bool), a wrong name
// is refused naming the choices, and --help lists the names instead of CLI11's internal mapping.
#include "atq/command.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace atq::cli {
namespace {

enum class Clip { kMse, kMax, kPercentile };

struct Parsed {
  Clip clip = Clip::kMse;
  bool affine = false;
};

void Parse(std::vector<std::string> args, Parsed& out, CLI::App& app) {
  Choices(app.add_option("--clip", out.clip, "clip rule"),
          std::map<std::string, Clip>{{"mse", Clip::kMse}, {"max", Clip::kMax}, {"percentile", Clip::kPercentile}})
      ->default_str("mse");
  Choices(app.add_option("--grid", out.affine, "grid"), std::map<std::string, bool>{{"symmetric", false}, {"affine", true}})
      ->default_str("symmetric");
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments last first
  app.parse(args);
}

TEST(CliChoices, EachNameStoresItsValue) {
  for (const auto& [name, clip] : std::map<std::string, Clip>{{"mse", Clip::kMse}, {"max", Clip::kMax},
                                                              {"percentile", Clip::kPercentile}}) {
    for (const auto& [grid, affine] : std::map<std::string, bool>{{"symmetric", false}, {"affine", true}}) {
      CLI::App app;
      Parsed parsed;
      Parse({"--clip", name, "--grid", grid}, parsed, app);
      EXPECT_EQ(parsed.clip, clip) << name;
      EXPECT_EQ(parsed.affine, affine) << grid;
    }
  }
}

TEST(CliChoices, AWrongNameListsTheChoicesAndHelpShowsThem) {
  CLI::App app;
  Parsed parsed;
  try {
    Parse({"--clip", "absmax"}, parsed, app);
    FAIL() << "absmax accepted";
  } catch (const CLI::ValidationError& error) {
    EXPECT_NE(std::string(error.what()).find("'absmax' is not one of {max,mse,percentile}"), std::string::npos)
        << error.what();
  }
  for (const char* number : {"0", "1"}) {  // the values behind the names are not names
    CLI::App again;
    EXPECT_THROW(Parse({"--clip", number}, parsed, again), CLI::ValidationError) << number;
  }
  const std::string help = app.help();
  EXPECT_NE(help.find("{max,mse,percentile}=mse"), std::string::npos) << help;
  EXPECT_NE(help.find("{affine,symmetric}=symmetric"), std::string::npos) << help;
  EXPECT_EQ(help.find("ENUM"), std::string::npos) << help;
  EXPECT_EQ(help.find("->"), std::string::npos) << help;
}

}  // namespace
}  // namespace atq::cli
