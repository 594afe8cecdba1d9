// error.h: the one exception type of the engine.
//
// Every failure that a user can cause (bad shape, bad file, stale saved tensor, out of memory)
// raises engine::Error with a message that names the op, file or key and the offending value.
// The CLI catches it, prints one line and exits 1.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace engine {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// ENGINE_CHECK(cond, "conv2d: expected 4-D input, got {}-D", x.dim());
#define ENGINE_CHECK(cond, ...)                                   \
  do {                                                            \
    if (!(cond)) throw ::engine::Error(::fmt::format(__VA_ARGS__)); \
  } while (0)

}  // namespace engine
