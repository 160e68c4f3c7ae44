// Inputs are regular files only: a FIFO would block open() forever, a device could be endless, a directory has
// no bytes. Every reader opens its input through MappedFile::Open or these helpers, which name the path and what
// it is instead.
#pragma once

#include <string>

namespace atq {

// Throws atq::Error "PATH: does not exist" / "is a directory" / "is a FIFO, not a regular file" / ...
void RequireRegularFile(const std::string& path);

// The whole file as text (bytes as they are), through MappedFile::Open.
std::string ReadInputText(const std::string& path);

}  // namespace atq
