// gnuplot driver: one script with inline data blocks, run through `gnuplot` in a child process.
#include "report/plot.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "io/atomic_file.h"
#include "util/error.h"

namespace atq {
namespace {

// gnuplot strings are single-quoted; a quote inside is doubled.
std::string Quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// Data-block strings are double-quoted; gnuplot has no escape for a double quote there, so it becomes a single one.
std::string DataLabel(std::string text) {
  for (char& c : text) c = c == '"' ? '\'' : c;
  return "\"" + text + "\"";
}

}  // namespace

std::string GnuplotScript(const PlotSpec& spec, const std::string& png_path) {
  Require(!spec.series.empty(), "plot {}: nothing to draw", png_path);
  std::string script = fmt::format(
      "set terminal pngcairo size {},{} noenhanced font 'Sans,11'\nset output {}\nset title {}\n"
      "set xlabel {}\nset ylabel {}\nset grid ytics lc rgb '#dddddd'\nset key below\n",
      spec.width, spec.height, Quoted(png_path), Quoted(spec.title), Quoted(spec.x_label), Quoted(spec.y_label));
  if (spec.log_x) script += "set logscale x 2\n";
  if (spec.y_min || spec.y_max) {
    const auto bound = [](const std::optional<double>& v) { return v ? fmt::format("{:.10g}", *v) : std::string("*"); };
    script += fmt::format("set yrange [{}:{}]\n", bound(spec.y_min), bound(spec.y_max));
  }
  const bool bars = !spec.categories.empty();
  for (size_t s = 0; s < spec.series.size(); ++s) {
    const PlotSeries& series = spec.series[s];
    script += fmt::format("$series{} << EOD\n", s);
    if (bars) {
      Require(series.y.size() == spec.categories.size(), "plot {}: series '{}' has {} values for {} categories",
              png_path, series.title, series.y.size(), spec.categories.size());
      for (size_t k = 0; k < series.y.size(); ++k) {
        script += fmt::format("{} {:.10g}\n", DataLabel(spec.categories[k]), series.y[k]);
      }
    } else {
      Require(series.x.size() == series.y.size(), "plot {}: series '{}' has {} x and {} y values", png_path,
              series.title, series.x.size(), series.y.size());
      Require(series.labels.empty() || series.labels.size() == series.x.size(),
              "plot {}: series '{}' has {} labels for {} points", png_path, series.title, series.labels.size(),
              series.x.size());
      for (size_t k = 0; k < series.x.size(); ++k) {
        script += fmt::format("{:.10g} {:.10g}", series.x[k], series.y[k]);
        script += series.labels.empty() ? "\n" : " " + DataLabel(series.labels[k]) + "\n";
      }
    }
    script += "EOD\n";
  }
  if (bars) {
    script += "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.85 border -1\n"
              "set boxwidth 0.9\nset xtics rotate by -30\nset yrange [0:*]\n";
  }
  script += "plot ";
  for (size_t s = 0; s < spec.series.size(); ++s) {
    if (s > 0) script += ", \\\n     ";
    const PlotSeries& series = spec.series[s];
    if (bars) {
      script += fmt::format("$series{} using 2:xtic(1) title {}", s, Quoted(series.title));
      continue;
    }
    script += fmt::format("$series{} using 1:2 with {} title {}", s,
                          series.points_only ? "points pt 7 ps 1.1" : "linespoints lw 2 pt 7 ps 0.6", Quoted(series.title));
    if (!series.labels.empty()) {
      script += fmt::format(", \
     $series{} using 1:2:3 with labels offset char 0.6,0.6 left font ',8' notitle", s);
    }
  }
  return script + "\n";
}

namespace {

// Writes the script `make_script(temporary png)` gives, runs gnuplot on it and renames the picture into place.
template <typename MakeScript>
void RunGnuplot(const std::string& png_path, const MakeScript& make_script) {
  const std::string temp_png = png_path + ".tmp.png";
  const std::string script_path = png_path + ".gp.tmp";
  WriteFileAtomically(script_path, make_script(temp_png));
  const std::string command = fmt::format("gnuplot {} 2>&1", Quoted(script_path));
  std::FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    std::filesystem::remove(script_path);
    Fail("{}: cannot start gnuplot", png_path);
  }
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  const int status = ::pclose(pipe);
  std::filesystem::remove(script_path);
  if (status != 0 || !std::filesystem::exists(temp_png)) {
    std::filesystem::remove(temp_png);
    Fail("{}: gnuplot failed (is gnuplot-nox installed?): {}", png_path, output);
  }
  std::filesystem::rename(temp_png, png_path);
}

}  // namespace

void RenderPlot(const PlotSpec& spec, const std::string& png_path) {
  RunGnuplot(png_path, [&](const std::string& temp) { return GnuplotScript(spec, temp); });
}

std::string HeatmapScript(const HeatmapSpec& spec, const std::string& png_path) {
  const size_t rows = spec.values.size();
  Require(rows > 0 && rows == spec.row_labels.size(), "heat map {}: {} rows of values for {} row labels", png_path,
          rows, spec.row_labels.size());
  const size_t columns = spec.column_labels.size();
  for (const auto& row : spec.values) {
    Require(row.size() == columns, "heat map {}: a row of {} values for {} column labels", png_path, row.size(),
            columns);
  }
  std::string script = fmt::format(
      "set terminal pngcairo size {},{} noenhanced font 'Sans,10'\nset output {}\nset title {}\n"
      "set xlabel {}\nset ylabel {}\nunset key\nset palette defined (0 '#ffffff', 1 '#2b6cb0')\n"
      "set xrange [-0.5:{}]\nset yrange [{}:-0.5]\nset xtics rotate by -35\n",
      spec.width, spec.height, Quoted(png_path), Quoted(spec.title), Quoted(spec.x_label), Quoted(spec.y_label),
      static_cast<double>(columns) - 0.5, static_cast<double>(rows) - 0.5);
  std::string xtics = "set xtics (", ytics = "set ytics (";
  for (size_t c = 0; c < columns; ++c) xtics += fmt::format("{}{} {}", c ? ", " : "", Quoted(spec.column_labels[c]), c);
  for (size_t r = 0; r < rows; ++r) ytics += fmt::format("{}{} {}", r ? ", " : "", Quoted(spec.row_labels[r]), r);
  script += xtics + ")\n" + ytics + ")\n$cells << EOD\n";
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < columns; ++c) script += fmt::format("{} {} {:.10g}\n", c, r, spec.values[r][c]);
  }
  return script + "EOD\nplot $cells using 1:2:3 with image, $cells using 1:2:(sprintf('%g', $3)) with labels "
                  "font ',8'\n";
}

void RenderHeatmap(const HeatmapSpec& spec, const std::string& png_path) {
  RunGnuplot(png_path, [&](const std::string& temp) { return HeatmapScript(spec, temp); });
}

}  // namespace atq
