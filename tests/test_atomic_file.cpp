// Tests of io/atomic_file: the new content appears whole, a failing writer leaves the old file and
// no temporary behind, errors name the path and the system's reason, make_directories is mkdir -p.
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/atomic_file.h"
#include "io/image.h"
#include "tensor/error.h"
#include "tests/temp_dir.h"

using namespace engine;
using namespace engine::io;
namespace fs = std::filesystem;

namespace {

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("engine_atomic") {}
  // Every entry of the folder (names only), to prove no temporary was left behind.
  std::vector<std::string> entries() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(path)) out.push_back(e.path().filename().string());
    return out;
  }
  bool has_temporary() const {
    for (const std::string& n : entries())
      if (n.find(".tmp") != std::string::npos) return true;
    return false;
  }
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.is_open());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("write_file_atomically: writes the content, replaces an old file, leaves no temporary") {
  TempDir dir;
  const std::string path = dir.file("a.bin");
  write_file_atomically(path, std::string_view("first"));
  CHECK(slurp(path) == "first");
  // A longer then a shorter content: the file is replaced, not overwritten in place.
  std::string big(1 << 20, 'x');
  for (size_t i = 0; i < big.size(); ++i) big[i] = char('a' + i % 26);
  write_file_atomically(path, big);
  CHECK(slurp(path) == big);
  write_file_atomically(path, [](std::FILE* f) {
    std::fputs("sec", f);
    std::fprintf(f, "ond %d", 2);
  });
  CHECK(slurp(path) == "second 2");
  write_file_atomically(path, std::string_view());
  CHECK(fs::exists(path));
  CHECK(fs::file_size(path) == 0);
  CHECK(dir.entries() == std::vector<std::string>{"a.bin"});
}

TEST_CASE("write_file_atomically: the old file is untouched while the new one is written") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  write_file_atomically(path, std::string_view("old content"));
  std::string seen_during_write;
  write_file_atomically(path, [&](std::FILE* f) {
    std::fputs("new content", f);
    std::fflush(f);
    seen_during_write = slurp(path);  // a reader at this moment
  });
  CHECK(seen_during_write == "old content");
  CHECK(slurp(path) == "new content");
}

TEST_CASE("write_file_atomically: a throwing writer keeps the old file and removes the temporary") {
  TempDir dir;
  const std::string path = dir.file("metrics.jsonl");
  write_file_atomically(path, std::string_view("old\n"));

  // Any exception type propagates unchanged.
  CHECK_THROWS_WITH_AS(write_file_atomically(path,
                                             [](std::FILE* f) {
                                               std::fputs("half of the new", f);
                                               throw std::runtime_error("writer failed");
                                             }),
                       "writer failed", std::runtime_error);
  CHECK(slurp(path) == "old\n");
  CHECK_FALSE(dir.has_temporary());

  CHECK_THROWS_AS(write_file_atomically(path, [](std::FILE*) { throw Error("bad tensor"); }), Error);
  CHECK(slurp(path) == "old\n");
  CHECK(dir.entries() == std::vector<std::string>{"metrics.jsonl"});

  // A writer that fails before the file ever existed leaves nothing at all.
  const std::string fresh = dir.file("never.png");
  CHECK_THROWS(write_file_atomically(fresh, [](std::FILE*) { throw std::logic_error("x"); }));
  CHECK_FALSE(fs::exists(fresh));
  CHECK_FALSE(dir.has_temporary());
}

TEST_CASE("write_file_atomically: a missing directory is an error naming the path and the reason") {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/out.png");
  try {
    write_file_atomically(path, std::string_view("x"));
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find(path) != std::string::npos);
    CHECK(msg.find(std::strerror(ENOENT)) != std::string::npos);
  }
  CHECK(dir.entries().empty());
  CHECK_THROWS_AS(write_file_atomically("", std::string_view("x")), Error);
}

TEST_CASE("write_file_atomically: a directory in place of the file is an error, the directory survives") {
  TempDir dir;
  const std::string path = dir.file("taken");
  fs::create_directory(path);
  fs::create_directory(path + "/inner");
  try {
    write_file_atomically(path, std::string_view("x"));
    FAIL("expected an error");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find(path) != std::string::npos);
    CHECK(std::string(e.what()).find("rename") != std::string::npos);
  }
  CHECK(fs::is_directory(path + "/inner"));
  CHECK_FALSE(dir.has_temporary());
}

TEST_CASE("make_directories: creates every level, accepts existing ones, rejects a file in the way") {
  TempDir dir;
  const std::string deep = dir.file("runs/exp1/samples");
  make_directories(deep);
  CHECK(fs::is_directory(deep));
  make_directories(deep);  // idempotent
  make_directories(dir.file("runs/exp2/"));  // trailing slash
  CHECK(fs::is_directory(dir.file("runs/exp2")));
  make_directories(dir.file("runs//exp3"));  // doubled slash
  CHECK(fs::is_directory(dir.file("runs/exp3")));

  write_file_atomically(dir.file("runs/file"), std::string_view("x"));
  try {
    make_directories(dir.file("runs/file/sub"));
    FAIL("expected an error");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find(dir.file("runs/file/sub")) != std::string::npos);
    CHECK(msg.find("not a directory") != std::string::npos);
  }
  CHECK_THROWS_AS(make_directories(""), Error);

  // Relative paths work from the current directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path);
  make_directories("rel/a/b");
  fs::current_path(cwd);
  CHECK(fs::is_directory(dir.path / "rel/a/b"));
}

TEST_CASE("write_png goes through write_file_atomically (no temporary left, bad input leaves the old file)") {
  TempDir dir;
  const std::string path = dir.file("grid.png");
  Tensor img = zeros({4, 5, 3}, opts(DType::u8));
  img.data<uint8_t>()[7] = 200;
  write_png(path, img);
  const Tensor back = read_image(path, 3);
  CHECK(back.to_vector() == img.to_vector());
  const std::string before = slurp(path);
  CHECK_THROWS_AS(write_png(path, zeros({4, 5, 7}, opts(DType::u8))), Error);  // 7 channels: not encodable
  CHECK(slurp(path) == before);
  CHECK(dir.entries() == std::vector<std::string>{"grid.png"});
}
