// Where atq finds the data the set-up fetched (npm corpora, GPT-2's BPE files, the English corpus splits).
#pragma once

#include <string>

namespace atq {

// $ATQ_DATA when set, else the project's data/ folder this build came from.
std::string ProjectDataDir();

}  // namespace atq
