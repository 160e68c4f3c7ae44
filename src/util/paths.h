// Where atq finds the data the set-up fetched (npm corpora, GPT-2's BPE files, the English corpus splits) and the
// data kept in the repository.
#pragma once

#include <string>

namespace atq {

// $ATQ_DATA when set, else the project's data/ folder this build came from.
std::string ProjectDataDir();

// $ATQ_ASSETS when set, else the project's assets/ folder (data written by hand and kept in git, such as the
// caption lists of assets/captions/).
std::string ProjectAssetDir();

}  // namespace atq
