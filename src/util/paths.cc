// The data folder, from the environment or the build.
#include "util/paths.h"

#include <cstdlib>

namespace atq {

std::string ProjectDataDir() {
  if (const char* dir = std::getenv("ATQ_DATA"); dir != nullptr && *dir != '\0') return dir;
  return ATQ_DATA_DIR;
}

std::string ProjectAssetDir() {
  if (const char* dir = std::getenv("ATQ_ASSETS"); dir != nullptr && *dir != '\0') return dir;
  return ATQ_ASSET_DIR;
}

}  // namespace atq
