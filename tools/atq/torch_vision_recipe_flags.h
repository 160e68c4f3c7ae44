// The flags that set vision recipe keys (eval/vision_experiment.h), shared by `atq ptq` and `atq sensitivity`.
#pragma once

#include <vector>

#include "torch_setting_flags.h"

namespace atq::cli {

const std::vector<SettingFlag>& VisionRecipeFlags();

}  // namespace atq::cli
