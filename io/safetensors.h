// safetensors.h: reading and writing the safetensors format (Hugging Face), the engine's format for
// checkpoints, parity-test references and imported weights (DESIGN.md section 11;
// docs/eval-data-formats.md section 3.1).
//
// Byte layout:
//   [0, 8)          u64 little-endian N, the header length (at most 100,000,000)
//   [8, 8 + N)      UTF-8 JSON object: {name: {"dtype": "F32", "shape": [2, 3],
//                   "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
//   [8 + N, EOF)    the data buffer: each tensor's raw little-endian bytes in C order;
//                   data_offsets are relative to the start of the buffer
// Supported dtypes: F32 F64 BF16 F16 I32 I64 U8 BOOL (the engine's DTypes). Others are rejected.
//
// The reader trusts nothing: header length vs file size, JSON syntax, field types, dtype names,
// shape vs byte count, offsets inside the buffer, tensors covering the buffer exactly (sorted by
// offset, no gap, no overlap, as the reference implementation requires), duplicate names. Every
// failure is an engine::Error naming the file and, where there is one, the tensor name.
// The writer pads the header with spaces to a multiple of 8 bytes (so every tensor whose offset is
// a multiple of its element size is aligned in a memory map), orders tensors by element size
// descending (stable), and writes atomically: path + ".tmp", fsync, rename, fsync of the folder,
// so a crash never leaves a half-written checkpoint under `path`.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace engine::io {

// The contents of one safetensors file, tensors in file (offset) order.
struct SafetensorsFile {
  std::string source;  // the path (or buffer name) it was read from, for error messages
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  bool contains(const std::string& name) const;
  // The tensor called `name`; throws engine::Error naming the file and the key when absent.
  const Tensor& at(const std::string& name) const;
  // name -> tensor, for lookups.
  std::map<std::string, Tensor> to_map() const;
};

// Read a whole file. Tensors are contiguous CPU tensors allocated with `kind` (persistent by
// default, so loading inside a PhaseScope does not count as a phase leak).
SafetensorsFile read_safetensors(const std::string& path, memory::Kind kind = memory::Kind::buffer);
// The same from bytes in memory (fuzzing, embedded data); `source` names it in errors.
SafetensorsFile parse_safetensors(const void* data, size_t size, const std::string& source,
                                  memory::Kind kind = memory::Kind::buffer);
// Shorthand: read_safetensors(path).to_map().
std::map<std::string, Tensor> load_safetensors(const std::string& path);

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
// Write `tensors` (any strides, CPU; names unique, non-empty, not "__metadata__") and optional
// string metadata to `path` atomically. Throws engine::Error naming the file (and tensor) on bad
// input or any I/O failure; `path` is then left untouched.
void save_safetensors(const std::string& path, const NamedTensors& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// The bytes save_safetensors would write (tests, fuzz seeds).
std::string serialize_safetensors(const NamedTensors& tensors,
                                  const std::map<std::string, std::string>& metadata = {},
                                  const std::string& source = "<memory>");

// "F32" <-> DType::f32 ...; dtype_from_safetensors throws naming `source` and `key`.
const char* safetensors_dtype_name(DType t);
DType dtype_from_safetensors(const std::string& name, const std::string& source, const std::string& key);

}  // namespace engine::io
