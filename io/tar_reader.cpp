// tar_reader.cpp: see tar_reader.h. The field offsets and the pax/GNU conventions follow POSIX.1
// (pax, ustar) and the GNU tar manual ("Basic Tar Format"); the checksum accepts both the
// unsigned and the signed byte sum, as GNU tar and Python's tarfile do (old writers used signed).
#include "io/tar_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "tensor/error.h"

namespace engine::io {
namespace {

constexpr uint64_t kBlock = 512;
// Extension headers (pax records, GNU long names) are read into memory; anything larger than
// this is not a real header but damage.
constexpr uint64_t kMaxExtensionHeader = 64ull << 20;

uint64_t round_up_block(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

// A NUL-terminated string field of at most `n` bytes.
std::string field_string(const unsigned char* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len] != 0) ++len;
  return std::string(reinterpret_cast<const char*>(p), len);
}

// A numeric field: octal digits surrounded by spaces/NULs, or GNU base-256 (first byte 0x80,
// then the value big-endian in the remaining bytes). nullopt when it is neither.
std::optional<uint64_t> field_number(const unsigned char* p, size_t n) {
  if (p[0] & 0x80) {
    if (p[0] != 0x80) return std::nullopt;  // 0xff: negative, meaningless for sizes
    uint64_t v = 0;
    for (size_t i = 1; i < n; ++i) {
      if (v >> 56) return std::nullopt;  // overflow of 64 bits
      v = (v << 8) | p[i];
    }
    return v;
  }
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == 0)) ++i;
  if (i == n) return 0;  // an all-blank field counts as 0 (tarfile does the same)
  uint64_t v = 0;
  for (; i < n && p[i] >= '0' && p[i] <= '7'; ++i) v = (v << 3) | uint64_t(p[i] - '0');
  for (; i < n; ++i)
    if (p[i] != ' ' && p[i] != 0) return std::nullopt;
  return v;
}

bool checksum_ok(const unsigned char* b) {
  const std::optional<uint64_t> stored = field_number(b + 148, 8);
  if (!stored) return false;
  uint64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    const bool in_field = i >= 148 && i < 156;  // the checksum field counts as eight spaces
    unsigned_sum += in_field ? uint64_t(' ') : uint64_t(b[i]);
    signed_sum += in_field ? int64_t(' ') : int64_t(static_cast<signed char>(b[i]));
  }
  return *stored == unsigned_sum || int64_t(*stored) == signed_sum;
}

}  // namespace

TarReader::TarReader(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "rb");
  ENGINE_CHECK(file_ != nullptr, "tar: cannot open '{}': {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(::fileno(file_), &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fclose(file_);
    file_ = nullptr;
    throw Error(fmt::format("tar: '{}' is not a regular file", path));
  }
  file_size_ = uint64_t(st.st_size);
}

TarReader::~TarReader() {
  if (file_) std::fclose(file_);
}

void TarReader::read_exact(void* dst, size_t n, uint64_t at, const char* what) {
  ENGINE_CHECK(::fseeko(file_, off_t(at), SEEK_SET) == 0, "tar: '{}': cannot seek to offset {} ({})", path_,
               at, what);
  const size_t got = std::fread(dst, 1, n, file_);
  ENGINE_CHECK(got == n, "tar: '{}': truncated: {} at offset {} needs {} bytes, got {}", path_, what, at, n,
               got);
}

bool TarReader::next(TarMember& member) {
  have_current_ = false;
  std::optional<std::string> long_name;  // from a pax 'path' record or a GNU 'L' member
  std::optional<uint64_t> pax_size;
  unsigned char b[kBlock];
  for (;;) {
    if (pos_ == file_size_) {
      // The end of the file on a block boundary without the closing zero blocks: an archive
      // whose writer did not finish it. Members so far are complete, so this is the end; an
      // extension header with no member after it is damage, though.
      ENGINE_CHECK(!long_name && !pax_size, "tar: '{}': truncated: extension header at the end of the file",
                   path_);
      return false;
    }
    ENGINE_CHECK(pos_ + kBlock <= file_size_,
                 "tar: '{}': truncated header at offset {} (the file ends at {})", path_, pos_, file_size_);
    read_exact(b, kBlock, pos_, "header");
    if (std::all_of(b, b + kBlock, [](unsigned char c) { return c == 0; })) return false;
    ENGINE_CHECK(checksum_ok(b), "tar: '{}': corrupt header at offset {} (checksum mismatch)", path_, pos_);
    const std::optional<uint64_t> header_size = field_number(b + 124, 12);
    ENGINE_CHECK(header_size.has_value(), "tar: '{}': corrupt header at offset {} (bad size field)", path_,
                 pos_);
    const char type = char(b[156]);
    const uint64_t header_offset = pos_;
    const uint64_t data_offset = pos_ + kBlock;

    if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
      const uint64_t size = *header_size;
      ENGINE_CHECK(size <= kMaxExtensionHeader, "tar: '{}': corrupt header at offset {} ({} bytes of type '{}')",
                   path_, pos_, size, type);
      ENGINE_CHECK(data_offset + size <= file_size_,
                   "tar: '{}': truncated extension header at offset {} (needs {} bytes, the file ends at {})",
                   path_, pos_, size, file_size_);
      std::string data(size, '\0');
      if (size > 0) read_exact(data.data(), size, data_offset, "extension header");
      pos_ = data_offset + round_up_block(size);
      if (type == 'L') {
        long_name = data.substr(0, data.find('\0'));
      } else if (type == 'x') {
        // Records "LEN key=value\n", LEN counting the whole record including itself.
        size_t at = 0;
        while (at < data.size() && data[at] != '\0') {
          size_t sp = data.find(' ', at);
          ENGINE_CHECK(sp != std::string::npos && sp > at, "tar: '{}': corrupt pax header at offset {}", path_,
                       header_offset);
          uint64_t len = 0;
          for (size_t i = at; i < sp; ++i) {
            ENGINE_CHECK(data[i] >= '0' && data[i] <= '9' && len < (1ull << 40),
                         "tar: '{}': corrupt pax header at offset {} (bad record length)", path_, header_offset);
            len = len * 10 + uint64_t(data[i] - '0');
          }
          ENGINE_CHECK(len > sp - at + 1 && at + len <= data.size() && data[at + len - 1] == '\n',
                       "tar: '{}': corrupt pax header at offset {} (record overruns the header)", path_,
                       header_offset);
          const std::string record = data.substr(sp + 1, at + len - 1 - (sp + 1));
          const size_t eq = record.find('=');
          ENGINE_CHECK(eq != std::string::npos, "tar: '{}': corrupt pax header at offset {} (record without '=')",
                       path_, header_offset);
          const std::string key = record.substr(0, eq), value = record.substr(eq + 1);
          if (key == "path") {
            long_name = value;
          } else if (key == "size") {
            uint64_t v = 0;
            bool ok = !value.empty();
            for (char c : value) {
              ok = ok && c >= '0' && c <= '9' && v < (1ull << 58);
              if (ok) v = v * 10 + uint64_t(c - '0');
            }
            ENGINE_CHECK(ok, "tar: '{}': corrupt pax header at offset {} (size '{}')", path_, header_offset, value);
            pax_size = v;
          }
          at += len;
        }
      }
      continue;  // 'g' and 'K' carry nothing a reader of file members needs
    }

    TarMember m;
    m.type = type;
    m.header_offset = header_offset;
    m.data_offset = data_offset;
    m.size = pax_size ? *pax_size : *header_size;
    if (long_name) {
      m.name = *long_name;
    } else {
      m.name = field_string(b, 100);
      // POSIX ustar ("ustar\0" + version "00") splits long names into prefix + "/" + name; GNU's
      // magic ("ustar  \0") uses those bytes for other fields.
      if (std::memcmp(b + 257, "ustar\0", 6) == 0) {
        const std::string prefix = field_string(b + 345, 155);
        if (!prefix.empty()) m.name = prefix + "/" + m.name;
      }
    }
    if (m.type == '\0' && !m.name.empty() && m.name.back() == '/') m.type = '5';  // old-style directory
    // Links, devices, directories and FIFOs have no data in the archive whatever their size says.
    const bool has_data = !(m.type >= '1' && m.type <= '6');
    const uint64_t data_size = has_data ? m.size : 0;
    ENGINE_CHECK(data_offset + data_size <= file_size_,
                 "tar: '{}': truncated member '{}' at offset {} (needs {} bytes of data, the file ends at {})",
                 path_, m.name, header_offset, data_size, file_size_);
    // The padding after the last member may be missing in a cut-off file; the next call then
    // sees the end of the file (or a partial block, reported there).
    pos_ = std::min(data_offset + round_up_block(data_size), file_size_);
    member = m;
    current_ = m;
    have_current_ = true;
    return true;
  }
}

std::string TarReader::read_data(uint64_t max_bytes) {
  ENGINE_CHECK(have_current_, "tar: '{}': read_data without a current member", path_);
  have_current_ = false;
  const uint64_t n = std::min(max_bytes, current_.size);
  std::string data(n, '\0');
  if (n > 0) read_exact(data.data(), n, current_.data_offset, "member data");
  return data;
}

std::vector<TarMember> list_tar(const std::string& path) {
  TarReader reader(path);
  std::vector<TarMember> out;
  TarMember m;
  while (reader.next(m)) out.push_back(m);
  return out;
}

std::string read_file_range(const std::string& path, uint64_t offset, uint64_t size, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ENGINE_CHECK(fd >= 0, "cannot open '{}' to read {}: {}", path, what, std::strerror(errno));
  std::string data(size, '\0');
  uint64_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd, data.data() + done, size - done, off_t(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = errno;
      ::close(fd);
      throw Error(fmt::format("'{}': cannot read {} ({} bytes at offset {}): {}", path, what, size, offset,
                              got == 0 ? "the file is shorter (truncated)" : std::strerror(err)));
    }
    done += uint64_t(got);
  }
  ::close(fd);
  return data;
}

}  // namespace engine::io
