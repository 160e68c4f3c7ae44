// Plots people look at, drawn by gnuplot (PNG): line charts over epochs or bits, bar charts over categories,
// heat maps of a matrix (confusion matrices).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace atq {

struct PlotSeries {
  PlotSeries() = default;
  PlotSeries(std::string title, std::vector<double> x, std::vector<double> y, bool points_only = false,
             std::vector<std::string> labels = {})
      : title(std::move(title)), x(std::move(x)), y(std::move(y)), points_only(points_only), labels(std::move(labels)) {}

  std::string title;
  std::vector<double> x;  // line charts; ignored for bar charts
  std::vector<double> y;
  bool points_only = false;         // line charts: markers without a line (scatter plots)
  std::vector<std::string> labels;  // line charts: a text beside each point (empty: none)
};

struct PlotSpec {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<PlotSeries> series;
  // Bar charts: one cluster per category, one bar per series (series[i].y[k] is category k).
  std::vector<std::string> categories;
  bool log_x = false;
  std::optional<double> y_min, y_max;  // line charts: the y range (unset: gnuplot's choice)
  int width = 900;
  int height = 540;
};

// The gnuplot script and inline data that draw `spec` into `png_path` (exposed for tests).
std::string GnuplotScript(const PlotSpec& spec, const std::string& png_path);

// Runs gnuplot; writes under a temporary name and renames, so a failed plot leaves no file.
// Throws atq::Error naming the output when gnuplot is missing or fails.
void RenderPlot(const PlotSpec& spec, const std::string& png_path);

// A matrix drawn cell by cell, each cell coloured by its value and labelled with it (row 0 at the top).
struct HeatmapSpec {
  std::string title;
  std::string x_label;  // what the columns are
  std::string y_label;  // what the rows are
  std::vector<std::string> row_labels, column_labels;
  std::vector<std::vector<double>> values;  // [row][column]
  int width = 760;
  int height = 680;
};

std::string HeatmapScript(const HeatmapSpec& spec, const std::string& png_path);
void RenderHeatmap(const HeatmapSpec& spec, const std::string& png_path);

}  // namespace atq
