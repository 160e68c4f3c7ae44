// Perplexity protocols: windows, batched forward passes, negative log-likelihood of the scored targets.
#include "eval/perplexity.h"

#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "util/error.h"
#include "util/log.h"
#include "util/progress.h"

namespace atq {

PerplexityProtocol ParsePerplexityProtocol(const std::string& name) {
  if (name == "chunked") return PerplexityProtocol::kChunked;
  if (name == "sliding") return PerplexityProtocol::kSliding;
  if (name == "llama.cpp" || name == "llamacpp") return PerplexityProtocol::kLlamaCpp;
  throw UsageError(fmt::format("unknown perplexity protocol '{}' (chunked, sliding, llama.cpp)", name));
}

std::string PerplexityProtocolName(PerplexityProtocol protocol) {
  switch (protocol) {
    case PerplexityProtocol::kChunked: return "chunked";
    case PerplexityProtocol::kSliding: return "sliding";
    case PerplexityProtocol::kLlamaCpp: return "llama.cpp";
  }
  return "?";
}

std::vector<PerplexityWindow> PerplexityWindows(const PerplexityOptions& options, int64_t token_count) {
  const int64_t ctx = options.ctx;
  Require(ctx >= 2, "perplexity context must be at least 2 tokens, got {}", ctx);
  std::vector<PerplexityWindow> windows;
  switch (options.protocol) {
    case PerplexityProtocol::kChunked:
      for (int64_t begin = 0; begin + ctx <= token_count; begin += ctx) windows.push_back({begin, begin + ctx, 1, false});
      break;
    case PerplexityProtocol::kLlamaCpp:
      Require(ctx >= 4, "llama.cpp's protocol needs a context of at least 4 tokens, got {}", ctx);
      for (int64_t begin = 0; begin + ctx <= token_count; begin += ctx) {
        windows.push_back({begin, begin + ctx, ctx / 2 + 1, true});
      }
      break;
    case PerplexityProtocol::kSliding: {
      const int64_t stride = options.stride > 0 ? options.stride : ctx / 2;
      Require(stride <= ctx, "sliding stride {} is longer than the context {}", stride, ctx);
      int64_t scored_until = 1;  // targets before this position are already scored (position 0 never is)
      for (int64_t begin = 0; begin < token_count; begin += stride) {
        const int64_t end = std::min(begin + ctx, token_count);
        if (end - begin >= 2 && end > scored_until) {
          windows.push_back({begin, end, std::max<int64_t>(scored_until - begin, 1), false});
          scored_until = end;
        }
        if (end == token_count) break;
      }
      break;
    }
  }
  if (options.max_windows > 0 && static_cast<int64_t>(windows.size()) > options.max_windows) {
    windows.resize(static_cast<size_t>(options.max_windows));
  }
  return windows;
}

nlohmann::json PerplexityResult::ToJson(const PerplexityOptions& options) const {
  nlohmann::json json = {{"protocol", PerplexityProtocolName(options.protocol)},
                         {"ctx", options.ctx},
                         {"perplexity", perplexity},
                         {"mean_nll", mean_nll},
                         {"scored_tokens", scored_tokens},
                         {"windows", windows},
                         {"text_tokens", text_tokens},
                         {"seconds", seconds},
                         {"tokens_per_second", tokens_per_second}};
  if (options.protocol == PerplexityProtocol::kSliding) json["stride"] = options.stride > 0 ? options.stride : options.ctx / 2;
  return json;
}

PerplexityResult MeasurePerplexity(CausalLmImpl& model, const std::vector<int32_t>& text_tokens,
                                   const PerplexityOptions& options, int32_t bos_id) {
  std::vector<int64_t> tokens;
  tokens.reserve(text_tokens.size() + 1);
  // llama.cpp puts BOS in front of the text and of every chunk only where the vocabulary adds BOS (bos_id >= 0).
  const bool add_bos = options.protocol == PerplexityProtocol::kLlamaCpp && bos_id >= 0;
  if (add_bos) tokens.push_back(bos_id);
  tokens.insert(tokens.end(), text_tokens.begin(), text_tokens.end());
  const int64_t usable = UsableContext(model.config());
  Require(options.ctx <= usable,
          "a perplexity window of {} tokens is longer than the model's context of {} tokens (choose --ctx {} or less)",
          options.ctx, usable, usable);
  if (options.ctx > model.config().max_positions) {
    LogWarn("a perplexity window of {} tokens is longer than the {} the model was trained at", options.ctx,
            model.config().max_positions);
  }
  const std::vector<PerplexityWindow> windows = PerplexityWindows(options, static_cast<int64_t>(tokens.size()));
  Require(!windows.empty(), "the text has {} tokens, fewer than one window of {}", tokens.size(), options.ctx);

  torch::NoGradGuard no_grad;
  const bool was_training = model.is_training();
  model.eval();
  const torch::Device device = model.parameters().front().device();
  const torch::Tensor all = torch::tensor(tokens, torch::kInt64);
  int64_t total_window_tokens = 0;
  for (const PerplexityWindow& w : windows) total_window_tokens += w.end - w.begin;

  PerplexityResult result;
  result.text_tokens = static_cast<int64_t>(text_tokens.size());
  result.windows = static_cast<int64_t>(windows.size());
  double nll_sum = 0;
  Progress progress(fmt::format("perplexity ({}, ctx {})", PerplexityProtocolName(options.protocol), options.ctx),
                    total_window_tokens, "tokens");
  const int64_t batch = std::max<int64_t>(1, options.batch);
  for (size_t first = 0; first < windows.size();) {
    // Windows of one length go through the model together.
    size_t last = first + 1;
    while (last < windows.size() && static_cast<int64_t>(last - first) < batch &&
           windows[last].end - windows[last].begin == windows[first].end - windows[first].begin &&
           windows[last].score_from == windows[first].score_from) {
      ++last;
    }
    std::vector<torch::Tensor> rows;
    std::vector<torch::Tensor> targets;
    for (size_t i = first; i < last; ++i) {
      torch::Tensor row = all.slice(0, windows[i].begin, windows[i].end).clone();
      if (windows[i].bos_first && add_bos) row[0] = bos_id;
      targets.push_back(row.slice(0, windows[i].score_from));
      rows.push_back(row);
    }
    const int64_t length = windows[first].end - windows[first].begin, score_from = windows[first].score_from;
    const torch::Tensor logits = model.forward(torch::stack(rows).to(device));  // [B, T, V]
    const torch::Tensor scored = AtLeastFloat32(logits.slice(1, score_from - 1, length - 1));
    const torch::Tensor log_probs = torch::log_softmax(scored, -1);
    const torch::Tensor target = torch::stack(targets).to(device).unsqueeze(-1);  // [B, scored, 1]
    nll_sum -= log_probs.gather(-1, target).to(torch::kFloat64).sum().item<double>();
    result.scored_tokens += target.numel();
    progress.Advance(length * static_cast<int64_t>(last - first),
                     fmt::format("ppl {:.4f}", std::exp(nll_sum / static_cast<double>(result.scored_tokens))));
    first = last;
  }
  progress.Finish();
  result.mean_nll = nll_sum / static_cast<double>(result.scored_tokens);
  result.perplexity = std::exp(result.mean_nll);
  result.seconds = progress.ElapsedSeconds();
  result.tokens_per_second = result.seconds > 0 ? total_window_tokens / result.seconds : 0;
  if (was_training) model.train();
  return result;
}

}  // namespace atq
