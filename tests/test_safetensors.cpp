// Tests of io/safetensors: round trips of every dtype (bytes and values), the documented byte
// layout, atomic writes, and corrupt files (truncated, bad header length, offsets out of range,
// overlaps, gaps, bad JSON, bad dtype ...) that must fail with an engine::Error naming the file
// and the tensor. Also checks that the tiny Python reader/writer used by the parity references
// (tests/parity/safetensors_io.py) and ours agree, in both directions.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "io/safetensors.h"
#include "tensor/ops.h"
#include "tests/temp_dir.h"

using namespace engine;
using namespace engine::io;
namespace fs = std::filesystem;

namespace {

using test::no_temporaries_of;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("engine_st") {}
};

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A file image made of a header (given as JSON text) and raw data bytes.
std::string image(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string raw(const Tensor& t) {
  Tensor c = contiguous(t);
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

// parse_safetensors on bytes must throw an Error whose message contains every `parts`.
void check_parse_error(const std::string& bytes, std::initializer_list<const char*> parts) {
  std::string msg;
  try {
    parse_safetensors(bytes.data(), bytes.size(), "bad.safetensors");
  } catch (const Error& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  REQUIRE_FALSE(msg.empty());
  CHECK(msg.find("bad.safetensors") != std::string::npos);
  for (const char* p : parts) CHECK(msg.find(p) != std::string::npos);
}

NamedTensors every_dtype() {
  NamedTensors ts;
  ts.emplace_back("f32", from_vector({1.5, -2.25, 3.0e-8, 1e30, -0.0, 7.0}, {2, 3}, opts(DType::f32)));
  ts.emplace_back("f64", from_vector({M_PI, -1e-300, 2.5}, {3}, opts(DType::f64)));
  ts.emplace_back("bf16", from_vector({1.0, -2.0, 0.5, 3.0e38}, {2, 2}, opts(DType::bf16)));
  ts.emplace_back("f16", from_vector({1.0, -65504.0, 6.103515625e-05, 0.333251953125}, {4}, opts(DType::f16)));
  ts.emplace_back("i32", from_vector({-2147483648.0, 2147483647.0, 0.0}, {3, 1}, opts(DType::i32)));
  ts.emplace_back("i64", from_vector_i64({INT64_MIN, INT64_MAX, -1, 0x0123456789abcdefLL}, {2, 2}));
  ts.emplace_back("u8", from_vector({0.0, 1.0, 128.0, 255.0}, {1, 4}, opts(DType::u8)));
  ts.emplace_back("bool", from_vector({1.0, 0.0, 1.0}, {3}, opts(DType::boolean)));
  return ts;
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips bit for bit, with shapes and metadata") {
  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  NamedTensors ts = every_dtype();
  save_safetensors(path, ts, {{"format", "pt"}, {"note", "ünïcode ✓"}});
  CHECK(no_temporaries_of(path));
  SafetensorsFile f = read_safetensors(path);
  CHECK(f.tensors.size() == ts.size());
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}, {"note", "ünïcode ✓"}});
  for (const auto& [name, t] : ts) {
    CAPTURE(name);
    REQUIRE(f.contains(name));
    const Tensor& r = f.at(name);
    CHECK(r.dtype() == t.dtype());
    CHECK(r.sizes() == t.sizes());
    CHECK(r.is_contiguous());
    CHECK(raw(r) == raw(t));
  }
  // Values, not only bytes (the i64 extremes and bf16/f16 conversions).
  CHECK(f.at("i64").data<int64_t>()[0] == INT64_MIN);
  CHECK(f.at("i64").data<int64_t>()[3] == 0x0123456789abcdefLL);
  CHECK(f.at("bf16").to_vector()[3] == doctest::Approx(3.0e38).epsilon(0.01));
  CHECK(f.at("f16").to_vector()[1] == -65504.0);
  CHECK(f.at("f64").to_vector()[0] == M_PI);
  // load_safetensors gives the same tensors by name.
  auto m = load_safetensors(path);
  CHECK(m.size() == ts.size());
  CHECK(raw(m.at("u8")) == raw(ts[6].second));
}

TEST_CASE("safetensors: layout: padded header, buffer order by element size, documented example parses") {
  NamedTensors ts = {{"a_u8", from_vector({1, 2, 3}, {3}, opts(DType::u8))},
                     {"b_f64", from_vector({1.0}, {1}, opts(DType::f64))},
                     {"c_f32", from_vector({2.0, 3.0}, {2}, opts(DType::f32))}};
  const std::string bytes = serialize_safetensors(ts);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[size_t(i)]);
  CHECK(n % 8 == 0);
  CHECK(bytes.size() == 8 + n + 3 + 8 + 8);
  SafetensorsFile f = parse_safetensors(bytes.data(), bytes.size(), "mem");
  // File order = buffer order: 8-byte f64 first, then f32, then u8.
  REQUIRE(f.tensors.size() == 3);
  CHECK(f.tensors[0].first == "b_f64");
  CHECK(f.tensors[1].first == "c_f32");
  CHECK(f.tensors[2].first == "a_u8");
  CHECK(f.at("c_f32").to_vector() == std::vector<double>{2.0, 3.0});

  // The example of eval-data-formats.md 3.1: N = 60, unpadded header, a 2x2 I32.
  const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  REQUIRE(header.size() == 60);
  std::string data(16, '\0');
  const int32_t vals[4] = {1, -2, 3, 400000};
  std::memcpy(data.data(), vals, 16);
  const std::string ex = image(header, data);
  SafetensorsFile e = parse_safetensors(ex.data(), ex.size(), "example");
  CHECK(e.at("test").sizes() == Dims{2, 2});
  CHECK(e.at("test").to_vector() == std::vector<double>{1, -2, 3, 400000});
  CHECK(e.metadata.empty());
}

TEST_CASE("safetensors: non-contiguous inputs are written in logical order; rank 0 and empty tensors") {
  Tensor base = from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  NamedTensors ts = {{"t", transpose(base, 0, 1)},
                     {"s", slice(base, 1, 0, 3, 2)},
                     {"scalar", scalar_tensor(-4.5, opts(DType::f64))},
                     {"empty", zeros({0, 3})},
                     {"empty_i64", zeros({2, 0}, opts(DType::i64))}};
  const std::string bytes = serialize_safetensors(ts);
  SafetensorsFile f = parse_safetensors(bytes.data(), bytes.size(), "mem");
  CHECK(f.at("t").sizes() == Dims{3, 2});
  CHECK(f.at("t").to_vector() == std::vector<double>{0, 3, 1, 4, 2, 5});
  CHECK(f.at("s").to_vector() == std::vector<double>{0, 2, 3, 5});
  CHECK(f.at("scalar").dim() == 0);
  CHECK(f.at("scalar").item() == -4.5);
  CHECK(f.at("empty").sizes() == Dims{0, 3});
  CHECK(f.at("empty_i64").numel() == 0);
}

TEST_CASE("safetensors: save rejects bad input and leaves an existing file untouched") {
  TempDir dir;
  const std::string path = dir.file("keep.safetensors");
  save_safetensors(path, {{"x", ones({2})}});
  const std::string before = read_bytes(path);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"x", ones({2})}, {"x", zeros({1})}}),
                       doctest::Contains("'x' is used twice"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"", ones({2})}}), doctest::Contains("empty name"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"__metadata__", ones({2})}}), doctest::Contains("reserved"), Error);
  CHECK_THROWS_WITH_AS(save_safetensors(path, {{"u", Tensor()}}), doctest::Contains("'u' is undefined"), Error);
  CHECK(read_bytes(path) == before);
  CHECK(no_temporaries_of(path));
  // A folder that does not exist: the error names the temporary file being created.
  const std::string missing = dir.file("no/such/dir/x.safetensors");
  CHECK_THROWS_WITH_AS(save_safetensors(missing, {{"x", ones({1})}}), doctest::Contains("no/such/dir/x.safetensors"),
                       Error);
  // Overwriting replaces the whole file.
  save_safetensors(path, {{"y", full({3}, 2.0)}}, {{"k", "v"}});
  SafetensorsFile f = read_safetensors(path);
  CHECK_FALSE(f.contains("x"));
  CHECK(f.at("y").to_vector() == std::vector<double>{2, 2, 2});
  CHECK_THROWS_WITH_AS(f.at("x"), doctest::Contains("no tensor named 'x'"), Error);
}

TEST_CASE("safetensors: reading a missing or truncated file names the file") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(read_safetensors(dir.file("nope.safetensors")), doctest::Contains("nope.safetensors"), Error);
  const std::string good = serialize_safetensors({{"w", from_vector({1, 2, 3, 4}, {4})}});
  // Cut inside the length field, inside the header, and inside the data.
  const std::string p1 = dir.file("short.safetensors");
  write_bytes(p1, good.substr(0, 5));
  CHECK_THROWS_WITH_AS(read_safetensors(p1), doctest::Contains("too short"), Error);
  const std::string p2 = dir.file("cut_header.safetensors");
  write_bytes(p2, good.substr(0, 20));
  CHECK_THROWS_WITH_AS(read_safetensors(p2), doctest::Contains("header length"), Error);
  const std::string p3 = dir.file("cut_data.safetensors");
  write_bytes(p3, good.substr(0, good.size() - 3));
  std::string msg;
  try {
    read_safetensors(p3);
  } catch (const Error& e) {
    msg = e.what();
  }
  CHECK(msg.find("cut_data.safetensors") != std::string::npos);
  CHECK(msg.find("'w'") != std::string::npos);
  CHECK(msg.find("outside the data buffer") != std::string::npos);
  // The intact file reads.
  const std::string p4 = dir.file("ok.safetensors");
  write_bytes(p4, good);
  CHECK(read_safetensors(p4).at("w").to_vector() == std::vector<double>{1, 2, 3, 4});
}

TEST_CASE("safetensors: corrupt headers fail with clear errors") {
  const std::string d8(8, '\0');
  auto entry = [](const std::string& name, const std::string& dtype, const std::string& shape, int b, int e) {
    return fmt::format(R"("{}":{{"dtype":"{}","shape":{},"data_offsets":[{},{}]}})", name, dtype, shape, b, e);
  };
  // Header length bigger than the file, and absurdly big.
  check_parse_error(le64(1000) + "{}", {"header length 1000"});
  check_parse_error(le64(uint64_t(1) << 40) + "{}", {"exceeds the limit"});
  check_parse_error(le64(1) + "{", {"too small"});
  // Not JSON, not an object.
  check_parse_error(image("{\"a\": [1, 2", ""), {"not valid JSON"});
  check_parse_error(image("[1,2,3]", ""), {"must be a JSON object"});
  check_parse_error(image("{\"a\": 5}", ""), {"'a'", "expected an object"});
  // Missing or malformed fields.
  check_parse_error(image(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", d8), {"'a'", "dtype"});
  check_parse_error(image(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", d8), {"'a'", "shape"});
  check_parse_error(image(R"({"a":{"dtype":"F32","shape":[2]}})", d8), {"'a'", "data_offsets"});
  check_parse_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", d8),
                    {"'a'", "unknown field 'x'"});
  check_parse_error(image("{" + entry("a", "F32", "[-2]", 0, 8) + "}", d8), {"'a'", "non-negative"});
  check_parse_error(image("{" + entry("a", "F32", "[2.5]", 0, 8) + "}", d8), {"'a'", "non-negative"});
  check_parse_error(image("{" + entry("a", "F32", "[2]", -8, 8) + "}", d8), {"'a'", "non-negative"});
  check_parse_error(image("{" + entry("a", "F32", "[1,2,3,4,5,6,7,8,9]", 0, 8) + "}", d8), {"'a'", "at most 8"});
  check_parse_error(image("{" + entry("a", "F32", "[4294967296,4294967296]", 0, 8) + "}", d8), {"'a'", "too large"});
  // Unsupported and unknown dtypes.
  check_parse_error(image("{" + entry("a", "I8", "[8]", 0, 8) + "}", d8), {"'a'", "'I8' is not supported"});
  check_parse_error(image("{" + entry("a", "float", "[2]", 0, 8) + "}", d8), {"'a'", "'float'"});
  // Shape vs byte count.
  check_parse_error(image("{" + entry("a", "F32", "[3]", 0, 8) + "}", d8), {"'a'", "need 12 bytes"});
  // Offsets out of range, reversed, overlapping, with a gap, and trailing bytes.
  check_parse_error(image("{" + entry("a", "F32", "[4]", 0, 16) + "}", d8), {"'a'", "outside the data buffer"});
  check_parse_error(image("{" + entry("a", "F32", "[0]", 8, 0) + "}", d8), {"'a'", "end before begin"});
  check_parse_error(image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 4, 8) + "}", d8),
                    {"'b'", "overlaps tensor 'a'"});
  check_parse_error(image("{" + entry("a", "F32", "[1]", 4, 8) + "}", d8), {"'a'", "gap"});
  check_parse_error(image("{" + entry("a", "F32", "[1]", 0, 4) + "}", d8), {"trailing bytes"});
  // Duplicate tensor names; metadata that is not all strings.
  check_parse_error(image("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) + "}", d8),
                    {"'a' twice"});
  check_parse_error(image(R"({"__metadata__":{"step":3}})", ""), {"__metadata__", "'step'"});
  check_parse_error(image(R"({"__metadata__":[1]})", ""), {"__metadata__"});
  // A good image with the same pieces parses (so the checks above are not rejecting everything).
  const std::string ok = image("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "U8", "[4]", 4, 8) +
                                   R"(,"__metadata__":{"step":"3"}})",
                               d8);
  SafetensorsFile f = parse_safetensors(ok.data(), ok.size(), "ok");
  CHECK(f.at("a").to_vector() == std::vector<double>{0.0});
  CHECK(f.at("b").numel() == 4);
  CHECK(f.metadata.at("step") == "3");
}

TEST_CASE("safetensors: the parity tests' Python reader/writer agrees with ours") {
  // tests/parity/safetensors_io.py writes the references the parity tests read; check both
  // directions on every dtype. Needs ENGINE_PYTHON with torch (CI installs python3-torch).
  TempDir dir;
  const std::string ours = dir.file("ours.safetensors");
  const std::string theirs = dir.file("theirs.safetensors");
  save_safetensors(ours, every_dtype(), {{"from", "c++"}});
  const std::string cmd = fmt::format("{} {}/tests/parity/safetensors_io.py --roundtrip {} {} > {} 2>&1", ENGINE_PYTHON,
                                      ENGINE_SOURCE_DIR, ours, theirs, dir.file("log.txt"));
  const int rc = std::system(cmd.c_str());
  INFO("command: " << cmd);
  INFO("output: " << read_bytes(dir.file("log.txt")));
  REQUIRE_MESSAGE(rc == 0, "the Python safetensors round trip failed; ENGINE_PYTHON (" ENGINE_PYTHON
                           ") must exist and have torch (Debian: apt install python3-torch)");
  SafetensorsFile f = read_safetensors(theirs);
  CHECK(f.metadata.at("from") == "c++");
  CHECK(f.metadata.at("via") == "python");
  for (const auto& [name, t] : every_dtype()) {
    CAPTURE(name);
    REQUIRE(f.contains(name));
    CHECK(f.at(name).dtype() == t.dtype());
    CHECK(f.at(name).sizes() == t.sizes());
    CHECK(raw(f.at(name)) == raw(t));
  }
}
