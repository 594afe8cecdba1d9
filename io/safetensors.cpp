// safetensors.cpp: the safetensors reader and writer (format and checks in safetensors.h).
//
// Reading is two steps: parse_header() validates the JSON header against the buffer length and
// returns the entries sorted by offset; then the bytes of each entry are copied (from memory) or
// read (from the file, one fread per tensor straight into the tensor's storage, so a large
// checkpoint is never held twice in memory).
#include "io/safetensors.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "tensor/ops.h"

namespace engine::io {

// The format is little-endian and we copy bytes as they are.
static_assert(std::endian::native == std::endian::little, "safetensors I/O assumes a little-endian host");

namespace {

using Json = nlohmann::ordered_json;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr const char* kMetadataKey = "__metadata__";

struct Entry {
  std::string name;
  DType dtype;
  Dims sizes;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::vector<Entry> entries;  // sorted by begin
  std::map<std::string, std::string> metadata;
};

uint64_t read_u64_le(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void write_u64_le(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = char((v >> (8 * i)) & 0xff);
}

// A non-negative integer JSON value as uint64, or an error naming the file, key and field.
uint64_t json_u64(const Json& v, const std::string& source, const std::string& key, const char* field) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return uint64_t(v.get<int64_t>());
  throw Error(fmt::format("safetensors: {}: tensor '{}': {} must hold non-negative integers, got {}", source, key,
                          field, v.dump()));
}

// Parse and validate the JSON header of a file whose data buffer holds `buffer_len` bytes.
Header parse_header(const char* text, size_t len, uint64_t buffer_len, const std::string& source) {
  // Duplicate keys are legal JSON but ambiguous here (which tensor wins?), so the parse callback
  // keeps one set of seen keys per open object and flags a repeat.
  std::vector<std::set<std::string>> seen;
  std::string duplicate;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      seen.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!seen.empty()) seen.pop_back();
    } else if (event == Json::parse_event_t::key && !seen.empty()) {
      const std::string k = parsed.get<std::string>();
      if (!seen.back().insert(k).second && duplicate.empty()) duplicate = k;
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(text, text + len, callback);
  } catch (const Json::exception& e) {
    throw Error(fmt::format("safetensors: {}: the header is not valid JSON ({})", source, e.what()));
  }
  ENGINE_CHECK(duplicate.empty(), "safetensors: {}: the header has the key '{}' twice", source, duplicate);
  ENGINE_CHECK(root.is_object(), "safetensors: {}: the header must be a JSON object, got {}", source,
               root.type_name());

  Header h;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string& key = it.key();
    const Json& v = it.value();
    if (key == kMetadataKey) {
      ENGINE_CHECK(v.is_object(), "safetensors: {}: __metadata__ must be an object of strings, got {}", source,
                   v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        ENGINE_CHECK(m.value().is_string(), "safetensors: {}: __metadata__ value of '{}' must be a string, got {}",
                     source, m.key(), m.value().dump());
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    ENGINE_CHECK(v.is_object(), "safetensors: {}: tensor '{}': expected an object, got {}", source, key,
                 v.type_name());
    for (auto f = v.begin(); f != v.end(); ++f) {
      ENGINE_CHECK(f.key() == "dtype" || f.key() == "shape" || f.key() == "data_offsets",
                   "safetensors: {}: tensor '{}': unknown field '{}'", source, key, f.key());
    }
    ENGINE_CHECK(v.contains("dtype") && v["dtype"].is_string(), "safetensors: {}: tensor '{}': missing string 'dtype'",
                 source, key);
    ENGINE_CHECK(v.contains("shape") && v["shape"].is_array(), "safetensors: {}: tensor '{}': missing array 'shape'",
                 source, key);
    ENGINE_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2,
                 "safetensors: {}: tensor '{}': 'data_offsets' must be an array [begin, end]", source, key);
    Entry e;
    e.name = key;
    e.dtype = dtype_from_safetensors(v["dtype"].get<std::string>(), source, key);
    const Json& shape = v["shape"];
    ENGINE_CHECK(shape.size() <= size_t(kMaxDims), "safetensors: {}: tensor '{}': {} dims, the engine supports at most {}",
                 source, key, shape.size(), kMaxDims);
    uint64_t numel = 1;
    for (const Json& s : shape) {
      const uint64_t d = json_u64(s, source, key, "shape");
      ENGINE_CHECK(d <= uint64_t(INT64_MAX) && !__builtin_mul_overflow(numel, d, &numel),
                   "safetensors: {}: tensor '{}': shape {} is too large", source, key, shape.dump());
      e.sizes.push_back(int64_t(d));
    }
    e.begin = json_u64(v["data_offsets"][0], source, key, "data_offsets");
    e.end = json_u64(v["data_offsets"][1], source, key, "data_offsets");
    ENGINE_CHECK(e.begin <= e.end, "safetensors: {}: tensor '{}': data_offsets [{}, {}] end before begin", source, key,
                 e.begin, e.end);
    ENGINE_CHECK(e.end <= buffer_len,
                 "safetensors: {}: tensor '{}': data_offsets [{}, {}] outside the data buffer of {} bytes "
                 "(truncated file?)",
                 source, key, e.begin, e.end, buffer_len);
    uint64_t nbytes = 0;
    ENGINE_CHECK(!__builtin_mul_overflow(numel, uint64_t(dtype_size(e.dtype)), &nbytes) && nbytes == e.end - e.begin,
                 "safetensors: {}: tensor '{}': dtype {} and shape {} need {} bytes, data_offsets [{}, {}] hold {}",
                 source, key, safetensors_dtype_name(e.dtype), shape.dump(), numel * dtype_size(e.dtype), e.begin,
                 e.end, e.end - e.begin);
    h.entries.push_back(std::move(e));
  }

  // The tensors must tile the buffer: sorted by offset, each starts where the previous ended.
  std::stable_sort(h.entries.begin(), h.entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry& e : h.entries) {
    ENGINE_CHECK(e.begin >= pos, "safetensors: {}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes [{}, {}))",
                 source, e.name, e.begin, e.end, prev ? prev->name : "", prev ? prev->begin : 0, pos);
    ENGINE_CHECK(e.begin == pos, "safetensors: {}: tensor '{}' starts at byte {} but the previous tensor ends at {} (gap)",
                 source, e.name, e.begin, pos);
    pos = e.end;
    prev = &e;
  }
  ENGINE_CHECK(pos == buffer_len,
               "safetensors: {}: the tensors cover {} bytes but the data buffer holds {} (trailing bytes)", source, pos,
               buffer_len);
  return h;
}

// The header length field, checked against the total size.
uint64_t checked_header_length(const unsigned char* first8, uint64_t total, const std::string& source) {
  const uint64_t n = read_u64_le(first8);
  ENGINE_CHECK(n <= kMaxHeaderBytes, "safetensors: {}: header length {} exceeds the limit of {} bytes", source, n,
               kMaxHeaderBytes);
  ENGINE_CHECK(n <= total - 8, "safetensors: {}: header length {} exceeds the {} bytes after the length field", source,
               n, total - 8);
  ENGINE_CHECK(n >= 2, "safetensors: {}: header length {} is too small for a JSON object", source, n);
  return n;
}

// A file handle closed on scope exit.
struct File {
  std::FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};

// The tensor-independent part of writing: header JSON and the entries' order.
struct Layout {
  std::string header;  // padded JSON
  std::vector<Tensor> data;  // contiguous CPU tensors, in buffer order
};

Layout plan(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
            const std::string& source) {
  std::set<std::string> names;
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    ENGINE_CHECK(!name.empty(), "safetensors: {}: tensor #{} has an empty name", source, i);
    ENGINE_CHECK(name != kMetadataKey, "safetensors: {}: '__metadata__' is reserved and cannot name a tensor", source);
    ENGINE_CHECK(names.insert(name).second, "safetensors: {}: the name '{}' is used twice", source, name);
    ENGINE_CHECK(t.defined(), "safetensors: {}: tensor '{}' is undefined", source, name);
    ENGINE_CHECK(t.device().is_cpu(), "safetensors: {}: tensor '{}' is on {}; move it to the CPU first", source, name,
                 t.device().str());
    order[i] = i;
  }
  // Larger elements first (stable): every tensor then starts at a multiple of its element size.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });
  Json root = Json::object();
  if (!metadata.empty()) {
    Json m = Json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    root[kMetadataKey] = m;
  }
  Layout layout;
  uint64_t pos = 0;
  for (size_t i : order) {
    const auto& [name, t] = tensors[i];
    Json e = Json::object();
    e["dtype"] = safetensors_dtype_name(t.dtype());
    Json shape = Json::array();
    for (int64_t s : t.sizes()) shape.push_back(s);
    e["shape"] = shape;
    const uint64_t n = t.nbytes();
    e["data_offsets"] = Json::array({pos, pos + n});
    pos += n;
    root[name] = e;
    layout.data.push_back(engine::contiguous(t.detach()));
  }
  layout.header = root.dump();
  layout.header.append((8 - layout.header.size() % 8) % 8, ' ');
  return layout;
}

}  // namespace

const char* safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::u8: return "U8";
    case DType::boolean: return "BOOL";
  }
  return "?";
}

DType dtype_from_safetensors(const std::string& name, const std::string& source, const std::string& key) {
  static const std::pair<const char*, DType> table[] = {
      {"F32", DType::f32}, {"F64", DType::f64}, {"BF16", DType::bf16}, {"F16", DType::f16},
      {"I32", DType::i32}, {"I64", DType::i64}, {"U8", DType::u8},     {"BOOL", DType::boolean}};
  for (const auto& [n, t] : table) {
    if (name == n) return t;
  }
  throw Error(fmt::format(
      "safetensors: {}: tensor '{}': dtype '{}' is not supported (supported: F32 F64 BF16 F16 I32 I64 U8 BOOL)",
      source, key, name));
}

bool SafetensorsFile::contains(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return true;
  }
  return false;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  for (const auto& [n, t] : tensors) {
    if (n == name) return t;
  }
  throw Error(fmt::format("safetensors: {}: no tensor named '{}' ({} tensors in the file)", source, name,
                          tensors.size()));
}

std::map<std::string, Tensor> SafetensorsFile::to_map() const { return {tensors.begin(), tensors.end()}; }

SafetensorsFile parse_safetensors(const void* data, size_t size, const std::string& source, memory::Kind kind) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  ENGINE_CHECK(size >= 8, "safetensors: {}: {} bytes is too short for the 8-byte header length", source, size);
  const uint64_t n = checked_header_length(bytes, size, source);
  const uint64_t buffer_len = size - 8 - n;
  Header h = parse_header(reinterpret_cast<const char*>(bytes + 8), size_t(n), buffer_len, source);
  SafetensorsFile out;
  out.source = source;
  out.metadata = std::move(h.metadata);
  const unsigned char* buffer = bytes + 8 + n;
  for (const Entry& e : h.entries) {
    TensorOptions o = opts(e.dtype);
    o.kind = kind;
    Tensor t = empty(e.sizes, o);
    if (e.end > e.begin) std::memcpy(t.raw_data(), buffer + e.begin, size_t(e.end - e.begin));
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

SafetensorsFile read_safetensors(const std::string& path, memory::Kind kind) {
  File file;
  file.f = std::fopen(path.c_str(), "rb");
  ENGINE_CHECK(file.f, "safetensors: cannot open {}: {}", path, std::strerror(errno));
  struct stat st {};
  ENGINE_CHECK(fstat(fileno(file.f), &st) == 0, "safetensors: cannot stat {}: {}", path, std::strerror(errno));
  ENGINE_CHECK(S_ISREG(st.st_mode), "safetensors: {} is not a regular file", path);
  const uint64_t total = uint64_t(st.st_size);
  ENGINE_CHECK(total >= 8, "safetensors: {}: {} bytes is too short for the 8-byte header length", path, total);
  unsigned char first8[8];
  ENGINE_CHECK(std::fread(first8, 1, 8, file.f) == 8, "safetensors: {}: cannot read the header length", path);
  const uint64_t n = checked_header_length(first8, total, path);
  std::string text(size_t(n), '\0');
  ENGINE_CHECK(std::fread(text.data(), 1, text.size(), file.f) == text.size(), "safetensors: {}: cannot read the header",
               path);
  const uint64_t buffer_len = total - 8 - n;
  Header h = parse_header(text.data(), text.size(), buffer_len, path);
  SafetensorsFile out;
  out.source = path;
  out.metadata = std::move(h.metadata);
  for (const Entry& e : h.entries) {
    TensorOptions o = opts(e.dtype);
    o.kind = kind;
    Tensor t = empty(e.sizes, o);
    const uint64_t nbytes = e.end - e.begin;
    if (nbytes > 0) {
      ENGINE_CHECK(fseeko(file.f, off_t(8 + n + e.begin), SEEK_SET) == 0, "safetensors: {}: tensor '{}': seek failed: {}",
                   path, e.name, std::strerror(errno));
      ENGINE_CHECK(std::fread(t.raw_data(), 1, size_t(nbytes), file.f) == nbytes,
                   "safetensors: {}: tensor '{}': short read of {} bytes (file changed while reading?)", path, e.name,
                   nbytes);
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

std::map<std::string, Tensor> load_safetensors(const std::string& path) { return read_safetensors(path).to_map(); }

std::string serialize_safetensors(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata,
                                  const std::string& source) {
  Layout layout = plan(tensors, metadata, source);
  std::string out(8, '\0');
  write_u64_le(out.data(), layout.header.size());
  out += layout.header;
  for (const Tensor& t : layout.data) out.append(static_cast<const char*>(t.raw_data()), t.nbytes());
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata) {
  Layout layout = plan(tensors, metadata, path);
  // Temporary file, fsync, rename, fsync of the folder (io/atomic_file.h): a crash while a
  // checkpoint is written leaves the previous checkpoint intact.
  write_file_atomically(path, [&](std::FILE* f) {
    auto write_all = [&](const void* p, size_t n) {
      if (n > 0 && std::fwrite(p, 1, n, f) != n)
        throw Error(fmt::format("safetensors: writing {}: write failed: {}", path, std::strerror(errno)));
    };
    char len[8];
    write_u64_le(len, layout.header.size());
    write_all(len, 8);
    write_all(layout.header.data(), layout.header.size());
    for (const Tensor& t : layout.data) write_all(t.raw_data(), t.nbytes());
  });
}

}  // namespace engine::io
