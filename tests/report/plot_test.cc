// Plots: the gnuplot script for known input, and a real PNG when gnuplot is installed.
#include "report/plot.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "test_util.h"
#include "util/error.h"

namespace atq {
namespace {

PlotSpec LineSpec() {
  PlotSpec spec;
  spec.title = "It's a curve";
  spec.x_label = "epoch";
  spec.y_label = "accuracy";
  spec.series = {{"fp32", {1, 2, 3}, {0.5, 0.75, 0.875}}};
  return spec;
}

TEST(Plot, ScriptCarriesDataAndEscapesQuotes) {
  const std::string script = GnuplotScript(LineSpec(), "out.png");
  EXPECT_NE(script.find("set output 'out.png'"), std::string::npos);
  EXPECT_NE(script.find("set title 'It''s a curve'"), std::string::npos);
  EXPECT_NE(script.find("$series0 << EOD\n1 0.5\n2 0.75\n3 0.875\nEOD\n"), std::string::npos);
  EXPECT_EQ(script.find("set yrange"), std::string::npos);
  PlotSpec zoomed = LineSpec();
  zoomed.y_min = 0.4;
  EXPECT_NE(GnuplotScript(zoomed, "out.png").find("set yrange [0.4:*]\n"), std::string::npos);
}

TEST(Plot, ScatterSeriesWithLabels) {
  PlotSpec spec = LineSpec();
  spec.series.push_back({"configs", {1, 2}, {0.6, 0.7}, /*points_only=*/true, {"W8A8", "W\"4\""}});
  const std::string script = GnuplotScript(spec, "out.png");
  EXPECT_NE(script.find("$series1 << EOD\n1 0.6 \"W8A8\"\n2 0.7 \"W'4'\"\nEOD\n"), std::string::npos) << script;
  EXPECT_NE(script.find("$series1 using 1:2 with points"), std::string::npos);
  EXPECT_NE(script.find("$series1 using 1:2:3 with labels"), std::string::npos);
  spec.series[1].labels.pop_back();
  EXPECT_THROW(GnuplotScript(spec, "out.png"), Error);
}

TEST(Plot, BarChartsNeedOneValuePerCategory) {
  PlotSpec spec;
  spec.categories = {"-1", "0", "+1"};
  spec.series = {{"layer", {}, {0.2, 0.6}}};
  EXPECT_THROW(GnuplotScript(spec, "bars.png"), Error);
  spec.series[0].y.push_back(0.2);
  EXPECT_NE(GnuplotScript(spec, "bars.png").find("\"+1\" 0.2"), std::string::npos);
}

TEST(Plot, HeatmapCellsLabelsAndShapeChecks) {
  HeatmapSpec spec;
  spec.title = "confusion";
  spec.row_labels = {"a", "b's"};
  spec.column_labels = {"a", "b's"};
  spec.values = {{5, 1}, {0, 7}};
  const std::string script = HeatmapScript(spec, "/tmp/x.png");
  EXPECT_NE(script.find("0 0 5\n1 0 1\n0 1 0\n1 1 7\n"), std::string::npos) << script;
  EXPECT_NE(script.find("'b''s' 1"), std::string::npos) << script;
  EXPECT_NE(script.find("set yrange [1.5:-0.5]"), std::string::npos) << script;  // row 0 on top
  spec.values[1].pop_back();
  EXPECT_NE(testutil::ErrorMessageOf([&] { HeatmapScript(spec, "/tmp/x.png"); }).find("a row of 1 values"),
            std::string::npos);
}

TEST(Plot, RendersAPng) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed";
  const std::string path =
      (std::filesystem::temp_directory_path() / ("atq_plot_test_" + std::to_string(::getpid()) + ".png")).string();
  RenderPlot(LineSpec(), path);
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace atq
