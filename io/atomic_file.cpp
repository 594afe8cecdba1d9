// atomic_file.cpp: replace a file in one step, so that a reader or a crash sees either the old
// content or the new, never a mixture (DESIGN.md section 11: "written atomically (temp file,
// fsync, rename)"). Checkpoints, PNGs, plots and metrics rewrites all come through here.
//
// The protocol (POSIX; rename(2) within one file system is atomic):
//   1. create PATH.tmp.<pid>.<n> in the same directory as PATH (so the rename cannot cross file
//      systems; <n> is a per-process counter so two threads never share a temporary);
//   2. let the caller stream the content into it;
//   3. fflush + fsync the file, so the data is on disk before the name points at it (without
//      this, a crash after the rename can leave PATH empty on ext4/xfs);
//   4. rename over PATH;
//   5. fsync the directory, so the new directory entry itself survives a power loss.
// Any failure before the rename removes the temporary and leaves PATH as it was.
#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "tensor/error.h"

namespace engine::io {

namespace {

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string temporary_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, long(::getpid()), counter.fetch_add(1));
}

// fsync the directory that holds `path`. EINVAL means the file system cannot sync directories
// (some network and FUSE file systems); the rename has happened by then, so that is not an error.
void sync_directory(const std::string& path) {
  const std::string dir = directory_of(path);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ENGINE_CHECK(dfd >= 0, "write_file_atomically: '{}' was written, but its directory '{}' cannot be opened to sync it: {}",
               path, dir, std::strerror(errno));
  const int rc = ::fsync(dfd);
  const int err = errno;
  ::close(dfd);
  ENGINE_CHECK(rc == 0 || err == EINVAL || err == EROFS,
               "write_file_atomically: '{}' was written, but syncing its directory '{}' failed: {}", path, dir,
               std::strerror(err));
}

}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& write) {
  ENGINE_CHECK(!path.empty(), "write_file_atomically: empty path");
  const std::string tmp = temporary_name(path);
  // 0666 and the process umask: the permissions fopen would give a new file.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  ENGINE_CHECK(fd >= 0, "cannot write '{}': creating the temporary file '{}' failed: {}", path, tmp,
               std::strerror(errno));
  std::FILE* f = ::fdopen(fd, "wb");
  if (f == nullptr) {
    const int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write '{}': fdopen failed: {}", path, std::strerror(err)));
  }
  // From here on every failure closes and removes the temporary; `path` is untouched.
  auto fail = [&](const char* what, int err) {
    if (f != nullptr) std::fclose(f);
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write '{}': {} failed: {}", path, what, std::strerror(err)));
  };
  try {
    write(f);
  } catch (...) {
    std::fclose(f);
    ::unlink(tmp.c_str());
    throw;
  }
  // ferror catches a write the callback did not check (fputs/fprintf into a full disk).
  if (std::ferror(f)) fail("writing", errno != 0 ? errno : EIO);
  if (std::fflush(f) != 0) fail("flushing", errno);
  if (::fsync(::fileno(f)) != 0) fail("fsync", errno);
  const int close_rc = std::fclose(f);
  f = nullptr;
  if (close_rc != 0) fail("close", errno);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail(fmt::format("rename from '{}'", tmp).c_str(), errno);
  sync_directory(path);
}

void write_file_atomically(const std::string& path, std::string_view content) {
  write_file_atomically(path, [&](std::FILE* f) {
    if (!content.empty() && std::fwrite(content.data(), 1, content.size(), f) != content.size())
      throw Error(fmt::format("cannot write '{}': writing {} bytes failed: {}", path, content.size(),
                              std::strerror(errno)));
  });
}

void make_directories(const std::string& path) {
  ENGINE_CHECK(!path.empty(), "make_directories: empty path");
  // Create each prefix in turn ("a", "a/b", "a/b/c"); an existing directory is fine, an existing
  // file in the way is an error naming it.
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (prefix.empty() || prefix == "/" || prefix.back() == '/') continue;  // "//" or a trailing '/'
    if (::mkdir(prefix.c_str(), 0777) == 0) continue;
    const int err = errno;
    struct stat st {};
    if (err == EEXIST && ::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
    if (err == EEXIST)
      throw Error(fmt::format("cannot create directory '{}': '{}' exists and is not a directory", path, prefix));
    throw Error(fmt::format("cannot create directory '{}': mkdir '{}' failed: {}", path, prefix, std::strerror(err)));
  }
}

}  // namespace engine::io
