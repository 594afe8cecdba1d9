// temp_dir.h: a fresh temporary folder for a test, removed with everything in it at scope exit.
#pragma once
#include <doctest/doctest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace engine::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "engine_test") {
    std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

// True when no temporary of an atomic write of `path` (PATH.tmp.<pid>.<n>, io/atomic_file.h) is
// left in its folder.
inline bool no_temporaries_of(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.filename().string() + ".tmp";
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path()))
    if (e.path().filename().string().rfind(prefix, 0) == 0) return false;
  return true;
}

}  // namespace engine::test
