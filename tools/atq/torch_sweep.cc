// atq sweep MODEL --configs FILE --text FILE --out DIR: quantize one model under many recipes and tabulate
// perplexity against bits per weight (sweep.json, sweep.csv, sweep.png).
#include <memory>
#include <string>

#include <fmt/format.h>

#include "command.h"
#include "eval/sweep.h"
#include "torch_lm_options.h"
#include "torch/tensor_bridge.h"
#include "io/output_path.h"

namespace atq::cli {

RunFn DeclareSweep(CLI::App& app) {
  struct Options {
    LmCliOptions lm;
    std::string configs;
    std::string text;
    std::string out;
    int64_t ctx = 512;
    int64_t batch = 4;
    int64_t max_windows = 0;
    bool no_plot = false;
  };
  auto o = std::make_shared<Options>();
  AddLmOptions(app, o->lm);
  app.add_option("--configs", o->configs,
                 "YAML sweep file: base settings, a list of named configs and/or a grid of settings (see README)")
      ->required();
  app.add_option("--text", o->text, "Text the perplexity is measured on (chunked protocol)")->required();
  app.add_option("--out", o->out, "Output folder for sweep.json, sweep.csv and sweep.png")->required();
  app.add_option("--ctx", o->ctx, "Perplexity window in tokens")->check(CountFrom(1))->capture_default_str();
  app.add_option("--batch", o->batch, "Windows per forward pass")->check(CountFrom(1))->capture_default_str();
  app.add_option("--max-windows", o->max_windows, "Score only the first N windows (0: all)")->check(CountFrom(0))->capture_default_str();
  app.add_flag("--no-plot", o->no_plot, "Skip the PNG");
  return [o] {
    CheckOutputPath(o->out, {o->lm.model, o->lm.tokenizer, o->configs, o->text}, "--out");
    const OutputLock lock(o->out);
    SweepOptions options;
    options.configs = ReadSweepFile(o->configs);
    options.model = o->lm.model;
    options.text = o->text;
    options.out_dir = o->out;
    options.perplexity.ctx = o->ctx;
    options.perplexity.batch = o->batch;
    options.perplexity.max_windows = o->max_windows;
    options.plot = !o->no_plot;
    SetTorchThreads(o->lm.threads);
    options.load.tokenizer = o->lm.tokenizer;
    if (o->lm.device == "cuda") options.load.device = torch::kCUDA;
    const std::vector<SweepRow> rows = RunSweep(options);
    fmt::print("{:<40} {:>7} {:>10} {:>11} {:>8} {:>9}\n", "config", "bpw", "model MB", "perplexity", "ratio",
               "quant s");
    for (const SweepRow& row : rows) {
      fmt::print("{:<40} {:>7.3f} {:>10.2f} {:>11.4f} {:>8.4f} {:>9.1f}\n", row.name, row.bits_per_weight,
                 row.model_bytes / 1e6, row.perplexity, row.ratio, row.quantize_seconds);
    }
    fmt::print("table: {0}/sweep.json, {0}/sweep.csv{1}\n", o->out, options.plot ? fmt::format(", {}/sweep.png", o->out) : "");
    return 0;
  };
}

}  // namespace atq::cli
