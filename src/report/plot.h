// Plots people look at, drawn by gnuplot (PNG): line charts over epochs or bits, bar charts over categories.
#pragma once

#include <string>
#include <vector>

namespace atq {

struct PlotSeries {
  std::string title;
  std::vector<double> x;  // line charts; ignored for bar charts
  std::vector<double> y;
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  // Bar charts: one cluster per category, one bar per series (series[i].y[k] is category k).
  std::vector<std::string> categories;
  bool log_x = false;
  int width = 900;
  int height = 540;
};

// The gnuplot script and inline data that draw `spec` into `png_path` (exposed for tests).
std::string GnuplotScript(const PlotSpec& spec, const std::string& png_path);

// Runs gnuplot; writes under a temporary name and renames, so a failed plot leaves no file.
// Throws atq::Error naming the output when gnuplot is missing or fails.
void RenderPlot(const PlotSpec& spec, const std::string& png_path);

}  // namespace atq
