// tar_reader.h: a streaming reader of tar archives (POSIX ustar, pax and GNU extensions), enough
// for WebDataset shards (docs/eval-data-formats.md section 4; DESIGN.md section 11).
//
// The reader walks the 512-byte headers of a file one after another and seeks over the member
// data, so indexing a shard reads only its headers (and whatever the caller asks for), never the
// whole file. Header layout (POSIX.1-1988 ustar): name @0[100], size @124[12] (octal, or GNU
// base-256 when the first byte has its high bit set), checksum @148[8], type @156, magic @257
// ("ustar"), prefix @345[155] (ustar only: the full name is prefix + "/" + name). Member data
// follows the header, padded to a multiple of 512; the archive ends with zero blocks.
// Extensions understood:
//   pax 'x'   records "LEN key=value\n" applying to the next member: path and size override the
//             header's fields (long names, sizes beyond 8 GiB); 'g' (global) records are skipped
//   GNU 'L'   the data is the next member's name (GNU tar's long names); 'K' (long link) skipped
// Damage is detected and reported as engine::Error naming the archive and the byte offset:
// a header whose checksum does not match (corrupt), a header cut off by the end of the file, or
// a member whose data runs past the end of the file (truncated). Members read before the damage
// stay valid, so a caller can keep them (webdataset.cpp does).
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace engine::io {

struct TarMember {
  std::string name;         // full path inside the archive (pax / GNU long names applied)
  char type = '0';          // ustar type flag: '0' (or '\0', '7') regular file, '5' directory, ...
  uint64_t header_offset = 0;  // byte offset of the member's own header block
  uint64_t data_offset = 0;    // byte offset of its first data byte
  uint64_t size = 0;           // data size in bytes
  bool is_file() const { return type == '0' || type == '\0' || type == '7'; }
};

class TarReader {
 public:
  // Opens `path` (throws engine::Error when it cannot be opened).
  explicit TarReader(const std::string& path);
  ~TarReader();
  TarReader(const TarReader&) = delete;
  TarReader& operator=(const TarReader&) = delete;

  // Advance to the next member (of any type; extension headers are consumed, not returned).
  // Returns false at the end of the archive (a zero block, or the end of the file on a block
  // boundary). Throws engine::Error for corrupt or truncated headers and members.
  bool next(TarMember& member);
  // The first `max_bytes` bytes of the current member's data (all of it by default). May be
  // called at most once per member, before the next call to next().
  std::string read_data(uint64_t max_bytes = UINT64_MAX);

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }

 private:
  void read_exact(void* dst, size_t n, uint64_t at, const char* what);
  std::string path_;
  std::FILE* file_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t pos_ = 0;  // offset of the next header block
  TarMember current_;
  bool have_current_ = false;
};

// All members of the archive at `path`, in order (throws like TarReader::next).
std::vector<TarMember> list_tar(const std::string& path);

// `size` bytes at `offset` of the file `path` (a member's data, by the offsets an index stored).
// Thread-safe (pread on a descriptor of its own). Throws engine::Error naming `path` and
// `what` when the file is shorter than offset + size.
std::string read_file_range(const std::string& path, uint64_t offset, uint64_t size,
                            const std::string& what);

}  // namespace engine::io
