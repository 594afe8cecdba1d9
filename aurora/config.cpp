// config.cpp: strict JSON parsing of Aurora's configuration sections (see config.h).
#include "aurora/config.h"

#include <algorithm>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "tensor/error.h"

namespace engine::aurora {

namespace {

using nlohmann::json;

// A short rendering of a JSON value for messages ("got ..."): its type and, when small, its text.
std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(v.type_name()) + " " + text;
}

std::string join(const std::vector<int64_t>& xs) {
  std::string s;
  for (size_t i = 0; i < xs.size(); ++i) s += (i ? ", " : "") + std::to_string(xs[i]);
  return s;
}

// One key of a section: its name and what it must hold (for "missing" and "expected" messages).
struct KeySpec {
  const char* name;
  const char* expected;
};

constexpr KeySpec kDiscKeys[] = {
    {"image_size", "a power-of-two integer >= 8 (the largest pyramid resolution)"},
    {"image_channels", "a positive integer (3 for RGB)"},
    {"channels",
     "an object {\"<resolution>\": <channels>} with a positive integer for every resolution R, R/2, ..., 4 and 1, "
     "e.g. {\"32\": 32, \"16\": 64, \"8\": 64, \"4\": 64, \"1\": 64} for image_size 32"},
    {"attention_resolutions", "an array of entry resolutions (integers among R, R/2, ..., 4), possibly empty"},
    {"attention_head_dim", "a positive integer that divides the channels at every attention resolution"},
    {"text_dim", "a positive integer (width of the global text embedding t_D)"},
    {"text_layers", "a positive integer (layers of D's text MLP)"},
    {"cond_dim", "a positive integer (width of D's text MLP and of the modulation input)"},
    {"predictor_layers", "a positive integer (1x1 modulated conv layers of each psi_j; the spec uses 4)"},
};

// Strict key check of an object: unknown keys (not starting with '_') and missing keys throw.
template <size_t N>
void check_keys(const json& j, const std::string& path, const KeySpec (&keys)[N]) {
  std::string known;
  for (const KeySpec& k : keys) known += std::string(known.empty() ? "" : ", ") + k.name;
  for (const auto& item : j.items()) {
    if (!item.key().empty() && item.key()[0] == '_') continue;  // comment
    bool ok = false;
    for (const KeySpec& k : keys) ok = ok || item.key() == k.name;
    ENGINE_CHECK(ok, "{}.{}: unknown key (known keys: {}; keys starting with '_' are comments)", path, item.key(),
                 known);
  }
  for (const KeySpec& k : keys) ENGINE_CHECK(j.contains(k.name), "{}.{}: missing; expected {}", path, k.name, k.expected);
}

const char* expected_of(const char* key) {
  for (const KeySpec& k : kDiscKeys)
    if (std::strcmp(k.name, key) == 0) return k.expected;
  return "?";
}

// An integer (JSON integer literal: 64, not 64.0 nor "64" nor true).
int64_t get_int(const json& v, const std::string& where, const char* expected) {
  ENGINE_CHECK(v.is_number_integer(), "{}: expected {}, got {}", where, expected, describe(v));
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    ENGINE_CHECK(u <= uint64_t(INT64_MAX), "{}: expected {}, got {}", where, expected, describe(v));
    return int64_t(u);
  }
  return v.get<int64_t>();
}

int64_t get_positive(const json& j, const std::string& path, const char* key) {
  const int64_t x = get_int(j.at(key), path + "." + key, expected_of(key));
  ENGINE_CHECK(x > 0, "{}.{}: expected {}, got {}", path, key, expected_of(key), x);
  return x;
}

// "64" -> 64; throws naming the key when the string is not a plain decimal integer.
int64_t parse_resolution_key(const std::string& key, const std::string& path) {
  bool digits = !key.empty() && key.size() <= 9;
  for (char c : key) digits = digits && c >= '0' && c <= '9';
  ENGINE_CHECK(digits, "{}.channels: key \"{}\" is not a resolution; expected {}", path, key, expected_of("channels"));
  return std::stoll(key);
}

bool is_power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

}  // namespace

// ---- DiscriminatorConfig ---------------------------------------------------------------------

int64_t DiscriminatorConfig::num_levels() const {
  int64_t n = 0;
  for (int64_t r = image_size; r >= 4; r /= 2) ++n;
  return n;
}

std::vector<int64_t> DiscriminatorConfig::entry_resolutions() const {
  std::vector<int64_t> out;
  for (int64_t r = image_size; r >= 4; r /= 2) out.push_back(r);
  return out;
}

std::vector<int64_t> DiscriminatorConfig::exit_resolutions() const {
  std::vector<int64_t> out;
  for (int64_t r = image_size / 2; r >= 4; r /= 2) out.push_back(r);
  out.push_back(1);
  return out;
}

int64_t DiscriminatorConfig::channels_at(int64_t resolution) const {
  const auto it = channels.find(resolution);
  ENGINE_CHECK(it != channels.end(), "DiscriminatorConfig: no channel count for resolution {}", resolution);
  return it->second;
}

bool DiscriminatorConfig::has_attention(int64_t r) const {
  return std::find(attention_resolutions.begin(), attention_resolutions.end(), r) != attention_resolutions.end();
}

void DiscriminatorConfig::validate(const std::string& path) const {
  ENGINE_CHECK(is_power_of_two(image_size) && image_size >= 8, "{}.image_size: expected {}, got {}", path,
               expected_of("image_size"), image_size);
  ENGINE_CHECK(image_size <= (int64_t(1) << 20), "{}.image_size: {} is too large", path, image_size);
  ENGINE_CHECK(image_channels > 0, "{}.image_channels: expected {}, got {}", path, expected_of("image_channels"),
               image_channels);
  // channels: exactly the resolutions of the stack.
  std::vector<int64_t> need = entry_resolutions();
  need.push_back(1);
  for (int64_t r : need) {
    const auto it = channels.find(r);
    ENGINE_CHECK(it != channels.end(), "{}.channels: missing resolution {} (image_size {} needs {})", path, r,
                 image_size, join(need));
    ENGINE_CHECK(it->second > 0, "{}.channels.{}: expected a positive integer, got {}", path, r, it->second);
  }
  for (const auto& [r, c] : channels) {
    ENGINE_CHECK(std::find(need.begin(), need.end(), r) != need.end(),
                 "{}.channels.{}: resolution {} is not part of the stack (image_size {} needs {})", path, r, r,
                 image_size, join(need));
  }
  ENGINE_CHECK(attention_head_dim > 0, "{}.attention_head_dim: expected {}, got {}", path,
               expected_of("attention_head_dim"), attention_head_dim);
  const std::vector<int64_t> entries = entry_resolutions();
  std::set<int64_t> seen;
  for (int64_t r : attention_resolutions) {
    ENGINE_CHECK(std::find(entries.begin(), entries.end(), r) != entries.end(),
                 "{}.attention_resolutions: {} is not an entry resolution (image_size {} has {})", path, r, image_size,
                 join(entries));
    ENGINE_CHECK(seen.insert(r).second, "{}.attention_resolutions: {} is listed twice", path, r);
    ENGINE_CHECK(channels_at(r) % attention_head_dim == 0,
                 "{}.attention_head_dim: {} does not divide the {} channels at attention resolution {}", path,
                 attention_head_dim, channels_at(r), r);
  }
  ENGINE_CHECK(text_dim > 0, "{}.text_dim: expected {}, got {}", path, expected_of("text_dim"), text_dim);
  ENGINE_CHECK(text_layers > 0, "{}.text_layers: expected {}, got {}", path, expected_of("text_layers"), text_layers);
  ENGINE_CHECK(cond_dim > 0, "{}.cond_dim: expected {}, got {}", path, expected_of("cond_dim"), cond_dim);
  ENGINE_CHECK(predictor_layers > 0, "{}.predictor_layers: expected {}, got {}", path, expected_of("predictor_layers"),
               predictor_layers);
}

nlohmann::json DiscriminatorConfig::to_json() const {
  json ch = json::object();
  for (const auto& [r, c] : channels) ch[std::to_string(r)] = c;
  return json{{"image_size", image_size},
              {"image_channels", image_channels},
              {"channels", ch},
              {"attention_resolutions", attention_resolutions},
              {"attention_head_dim", attention_head_dim},
              {"text_dim", text_dim},
              {"text_layers", text_layers},
              {"cond_dim", cond_dim},
              {"predictor_layers", predictor_layers}};
}

DiscriminatorConfig parse_discriminator_config(const json& j, const std::string& path) {
  ENGINE_CHECK(j.is_object(), "{}: expected an object with keys image_size, channels, ..., got {}", path, describe(j));
  check_keys(j, path, kDiscKeys);
  DiscriminatorConfig c;
  c.image_size = get_positive(j, path, "image_size");
  c.image_channels = get_positive(j, path, "image_channels");
  const json& ch = j.at("channels");
  ENGINE_CHECK(ch.is_object(), "{}.channels: expected {}, got {}", path, expected_of("channels"), describe(ch));
  for (const auto& item : ch.items()) {
    const int64_t r = parse_resolution_key(item.key(), path);
    const std::string where = path + ".channels." + item.key();
    const int64_t n = get_int(item.value(), where, "a positive integer");
    ENGINE_CHECK(n > 0, "{}: expected a positive integer, got {}", where, n);
    ENGINE_CHECK(c.channels.emplace(r, n).second, "{}: resolution {} is given twice", where, r);
  }
  const json& attn = j.at("attention_resolutions");
  ENGINE_CHECK(attn.is_array(), "{}.attention_resolutions: expected {}, got {}", path,
               expected_of("attention_resolutions"), describe(attn));
  for (size_t i = 0; i < attn.size(); ++i) {
    c.attention_resolutions.push_back(get_int(attn[i], path + ".attention_resolutions[" + std::to_string(i) + "]",
                                              "an integer resolution"));
  }
  c.attention_head_dim = get_positive(j, path, "attention_head_dim");
  c.text_dim = get_positive(j, path, "text_dim");
  c.text_layers = get_positive(j, path, "text_layers");
  c.cond_dim = get_positive(j, path, "cond_dim");
  c.predictor_layers = get_positive(j, path, "predictor_layers");
  c.validate(path);
  return c;
}

// ---- GeneratorConfig ------------------------------------------------------------------------

namespace {

constexpr KeySpec kGenKeys[] = {
    {"image_size", "a power-of-two integer >= 4 (the largest synthesized resolution)"},
    {"image_channels", "a positive integer (3 for RGB)"},
    {"z_dim", "a positive integer (released: 128)"},
    {"w_dim", "a positive integer (released: 1024)"},
    {"mapping_layers", "a positive integer (released: 4)"},
    {"mapping_hidden", "a positive integer (released: 1024)"},
    {"mapping_lr_mul", "a positive number (released: 0.01)"},
    {"text_in_dim", "a positive integer (CLIP ViT-L/14 token width 768)"},
    {"text_width", "a positive integer divisible by text_heads (released: 1024)"},
    {"text_heads", "a positive integer (released: 8)"},
    {"text_layers", "a positive integer (released: 4)"},
    {"text_mlp_ratio", "a positive integer (released: 4)"},
    {"text_lr_mul", "a positive number (released: 0.01)"},
    {"attn_heads", "a positive integer (released: 8)"},
    {"attn_head_dim", "a positive integer (released: 64)"},
    {"attn_groups", "a positive integer dividing the channels of every stage with attention (released: 32)"},
    {"expert_hidden", "a positive integer (GEGLU hidden width; released: 2048)"},
    {"residual_gain", "a positive number (released: 0.4)"},
    {"attn_gain", "a positive number (released: 0.3)"},
    {"fourier_sampling_rate", "a positive number (released: 4)"},
    {"fourier_bandwidth", "a positive number (released: 1)"},
    {"compat_official",
     "a boolean (true: reproduce the released checkpoint's text-head attention, spec 11.1; "
     "see docs/official-checkpoint.md)"},
    {"stages",
     "an object {\"<resolution>\": {channels, conv_blocks, attn_modules, attn_depth, num_kernels, num_experts, mtm}} "
     "for every resolution 4, 8, ..., image_size"},
};

constexpr KeySpec kStageKeys[] = {
    {"channels", "a positive integer"},
    {"conv_blocks", "an integer >= 0 (ResConv blocks; >= 1 at resolutions >= 8, where the first upsamples)"},
    {"attn_modules", "an integer >= 0 (ResidualAttn modules; 0 at resolution 4)"},
    {"attn_depth", "an integer >= 0 (AttentionBlocks per module; >= 1 when attn_modules > 0)"},
    {"num_kernels", "a positive integer (adaptive kernels N)"},
    {"num_experts", "an integer >= 0 (experts per MoE layer; 0 = dense GEGLU FFN)"},
    {"mtm", "a boolean (MTM on the 4x4 input conv and on conv2 of every ResConv)"},
};

template <size_t N>
const char* expected_in(const KeySpec (&keys)[N], const char* key) {
  for (const KeySpec& k : keys)
    if (std::strcmp(k.name, key) == 0) return k.expected;
  return "?";
}

template <size_t N>
int64_t get_int_min(const json& j, const std::string& path, const KeySpec (&keys)[N], const char* key, int64_t min) {
  const int64_t x = get_int(j.at(key), path + "." + key, expected_in(keys, key));
  ENGINE_CHECK(x >= min, "{}.{}: expected {}, got {}", path, key, expected_in(keys, key), x);
  return x;
}

template <size_t N>
double get_positive_number(const json& j, const std::string& path, const KeySpec (&keys)[N], const char* key) {
  const json& v = j.at(key);
  ENGINE_CHECK(v.is_number(), "{}.{}: expected {}, got {}", path, key, expected_in(keys, key), describe(v));
  const double x = v.get<double>();
  ENGINE_CHECK(x > 0 && std::isfinite(x), "{}.{}: expected {}, got {}", path, key, expected_in(keys, key), x);
  return x;
}

}  // namespace

nlohmann::json GeneratorStageConfig::to_json() const {
  return json{{"channels", channels},       {"conv_blocks", conv_blocks}, {"attn_modules", attn_modules},
              {"attn_depth", attn_depth},   {"num_kernels", num_kernels}, {"num_experts", num_experts},
              {"mtm", mtm}};
}

std::vector<int64_t> GeneratorConfig::resolutions() const {
  std::vector<int64_t> out;
  for (int64_t r = 4; r <= image_size; r *= 2) out.push_back(r);
  return out;
}

const GeneratorStageConfig& GeneratorConfig::stage(int64_t resolution) const {
  const auto it = stages.find(resolution);
  ENGINE_CHECK(it != stages.end(), "GeneratorConfig: no stage for resolution {}", resolution);
  return it->second;
}

void GeneratorConfig::validate(const std::string& path) const {
  ENGINE_CHECK(is_power_of_two(image_size) && image_size >= 4 && image_size <= (int64_t(1) << 20),
               "{}.image_size: expected {}, got {}", path, expected_in(kGenKeys, "image_size"), image_size);
  for (const char* key : {"image_channels", "z_dim", "w_dim", "mapping_layers", "mapping_hidden", "text_in_dim",
                          "text_width", "text_heads", "text_layers", "text_mlp_ratio", "attn_heads", "attn_head_dim",
                          "attn_groups", "expert_hidden"}) {
    const json v = to_json().at(key);
    ENGINE_CHECK(v.get<int64_t>() > 0, "{}.{}: expected {}, got {}", path, key, expected_in(kGenKeys, key), v.dump());
  }
  for (double x : {mapping_lr_mul, text_lr_mul, residual_gain, attn_gain, fourier_sampling_rate, fourier_bandwidth})
    ENGINE_CHECK(x > 0 && std::isfinite(x), "{}: gains, learning-rate multipliers and Fourier settings must be positive",
                 path);
  ENGINE_CHECK(text_width % text_heads == 0, "{}.text_heads: {} does not divide text_width {}", path, text_heads,
               text_width);
  const std::vector<int64_t> need = resolutions();
  for (const auto& [r, st] : stages)
    ENGINE_CHECK(std::find(need.begin(), need.end(), r) != need.end(),
                 "{}.stages.{}: resolution {} is not synthesized (image_size {} has {})", path, r, r, image_size,
                 join(need));
  for (int64_t r : need) {
    const auto it = stages.find(r);
    ENGINE_CHECK(it != stages.end(), "{}.stages: missing resolution {} (image_size {} needs {})", path, r, image_size,
                 join(need));
    const GeneratorStageConfig& s = it->second;
    const std::string sp = path + ".stages." + std::to_string(r);
    ENGINE_CHECK(s.channels > 0 && s.num_kernels > 0 && s.conv_blocks >= 0 && s.attn_modules >= 0 &&
                     s.attn_depth >= 0 && s.num_experts >= 0,
                 "{}: channels and num_kernels must be positive, the counts >= 0", sp);
    if (r == 4) {
      ENGINE_CHECK(s.attn_modules == 0, "{}.attn_modules: the 4x4 stage has no attention (spec 2), got {}", sp,
                   s.attn_modules);
    } else {
      ENGINE_CHECK(s.conv_blocks >= 1, "{}.conv_blocks: expected >= 1 (the first ResConv upsamples), got {}", sp,
                   s.conv_blocks);
    }
    if (s.attn_modules > 0) {
      ENGINE_CHECK(s.attn_depth >= 1, "{}.attn_depth: expected >= 1 when attn_modules > 0, got {}", sp, s.attn_depth);
      ENGINE_CHECK(s.channels % attn_groups == 0, "{}.channels: {} is not divisible by attn_groups {}", sp,
                   s.channels, attn_groups);
    }
  }
}

nlohmann::json GeneratorConfig::to_json() const {
  json st = json::object();
  for (const auto& [r, s] : stages) st[std::to_string(r)] = s.to_json();
  return json{{"image_size", image_size},
              {"image_channels", image_channels},
              {"z_dim", z_dim},
              {"w_dim", w_dim},
              {"mapping_layers", mapping_layers},
              {"mapping_hidden", mapping_hidden},
              {"mapping_lr_mul", mapping_lr_mul},
              {"text_in_dim", text_in_dim},
              {"text_width", text_width},
              {"text_heads", text_heads},
              {"text_layers", text_layers},
              {"text_mlp_ratio", text_mlp_ratio},
              {"text_lr_mul", text_lr_mul},
              {"attn_heads", attn_heads},
              {"attn_head_dim", attn_head_dim},
              {"attn_groups", attn_groups},
              {"expert_hidden", expert_hidden},
              {"residual_gain", residual_gain},
              {"attn_gain", attn_gain},
              {"fourier_sampling_rate", fourier_sampling_rate},
              {"fourier_bandwidth", fourier_bandwidth},
              {"compat_official", compat_official},
              {"stages", st}};
}

GeneratorConfig parse_generator_config(const json& j, const std::string& path) {
  ENGINE_CHECK(j.is_object(), "{}: expected an object with keys image_size, z_dim, stages, ..., got {}", path,
               describe(j));
  check_keys(j, path, kGenKeys);
  GeneratorConfig c;
  const auto I = [&](const char* key) { return get_int_min(j, path, kGenKeys, key, 1); };
  const auto D = [&](const char* key) { return get_positive_number(j, path, kGenKeys, key); };
  c.image_size = I("image_size");
  c.image_channels = I("image_channels");
  c.z_dim = I("z_dim");
  c.w_dim = I("w_dim");
  c.mapping_layers = I("mapping_layers");
  c.mapping_hidden = I("mapping_hidden");
  c.mapping_lr_mul = D("mapping_lr_mul");
  c.text_in_dim = I("text_in_dim");
  c.text_width = I("text_width");
  c.text_heads = I("text_heads");
  c.text_layers = I("text_layers");
  c.text_mlp_ratio = I("text_mlp_ratio");
  c.text_lr_mul = D("text_lr_mul");
  c.attn_heads = I("attn_heads");
  c.attn_head_dim = I("attn_head_dim");
  c.attn_groups = I("attn_groups");
  c.expert_hidden = I("expert_hidden");
  c.residual_gain = D("residual_gain");
  c.attn_gain = D("attn_gain");
  c.fourier_sampling_rate = D("fourier_sampling_rate");
  c.fourier_bandwidth = D("fourier_bandwidth");
  ENGINE_CHECK(j.at("compat_official").is_boolean(), "{}.compat_official: expected {}, got {}", path,
               expected_in(kGenKeys, "compat_official"), describe(j.at("compat_official")));
  c.compat_official = j.at("compat_official").get<bool>();
  const json& st = j.at("stages");
  ENGINE_CHECK(st.is_object(), "{}.stages: expected {}, got {}", path, expected_in(kGenKeys, "stages"), describe(st));
  for (const auto& item : st.items()) {
    const std::string& key = item.key();
    bool digits = !key.empty() && key.size() <= 9;
    for (char ch : key) digits = digits && ch >= '0' && ch <= '9';
    ENGINE_CHECK(digits, "{}.stages: key \"{}\" is not a resolution; expected {}", path, key,
                 expected_in(kGenKeys, "stages"));
    const std::string sp = path + ".stages." + key;
    const json& sj = item.value();
    ENGINE_CHECK(sj.is_object(), "{}: expected an object {{channels, conv_blocks, ...}}, got {}", sp, describe(sj));
    check_keys(sj, sp, kStageKeys);
    GeneratorStageConfig s;
    s.channels = get_int_min(sj, sp, kStageKeys, "channels", 1);
    s.conv_blocks = get_int_min(sj, sp, kStageKeys, "conv_blocks", 0);
    s.attn_modules = get_int_min(sj, sp, kStageKeys, "attn_modules", 0);
    s.attn_depth = get_int_min(sj, sp, kStageKeys, "attn_depth", 0);
    s.num_kernels = get_int_min(sj, sp, kStageKeys, "num_kernels", 1);
    s.num_experts = get_int_min(sj, sp, kStageKeys, "num_experts", 0);
    ENGINE_CHECK(sj.at("mtm").is_boolean(), "{}.mtm: expected {}, got {}", sp, expected_in(kStageKeys, "mtm"),
                 describe(sj.at("mtm")));
    s.mtm = sj.at("mtm").get<bool>();
    c.stages.emplace(std::stoll(key), s);
  }
  c.validate(path);
  return c;
}

// ---- Whole files -----------------------------------------------------------------------------

AuroraConfig parse_config(const json& root, const std::string& source) {
  ENGINE_CHECK(root.is_object(), "config: expected a JSON object {{\"generator\": ..., \"discriminator\": ...}}, got {}",
               describe(root));
  AuroraConfig out;
  out.source = source;
  // Sections known to this parser; a new section (training, data) is added here with its struct.
  for (const auto& item : root.items()) {
    const std::string& k = item.key();
    if (!k.empty() && k[0] == '_') continue;
    ENGINE_CHECK(k == "generator" || k == "discriminator" || k == "train",
                 "config.{}: unknown section (known sections: generator, discriminator, train)", k);
  }
  if (root.contains("generator")) {
    ENGINE_CHECK(root["generator"].is_object(), "config.generator: expected an object, got {}",
                 describe(root["generator"]));
    out.generator = root["generator"];
  }
  if (root.contains("discriminator")) {
    out.discriminator = parse_discriminator_config(root["discriminator"], "config.discriminator");
    out.has_discriminator = true;
  }
  if (root.contains("train")) out.train = root["train"];  // parsed by parse_train_config
  return out;
}

json read_config_json(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  ENGINE_CHECK(f.good(), "config file '{}': cannot open ({})", path, std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("config file '{}': invalid JSON: {}", path, e.what()));
  }
}

AuroraConfig load_config(const std::string& path) {
  const json root = read_config_json(path);
  try {
    return parse_config(root, path);
  } catch (const Error& e) {
    throw Error(fmt::format("{} (in {})", e.what(), path));
  }
}

void apply_override(json& root, const std::string& assignment, bool allow_new) {
  const size_t eq = assignment.find('=');
  ENGINE_CHECK(eq != std::string::npos && eq > 0, "--set '{}': expected key=value, e.g. discriminator.cond_dim=256",
               assignment);
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  for (size_t start = 0;;) {
    const size_t dot = key.find('.', start);
    parts.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  json* node = &root;
  std::string walked = "config";
  for (size_t i = 0; i < parts.size(); ++i) {
    ENGINE_CHECK(!parts[i].empty(), "--set '{}': empty key component", assignment);
    ENGINE_CHECK(node->is_object(), "--set '{}': {} is not an object", assignment, walked);
    walked += "." + parts[i];
    const bool last = i + 1 == parts.size();
    ENGINE_CHECK(node->contains(parts[i]) || (last && allow_new), "--set '{}': {} does not exist", assignment, walked);
    node = &(*node)[parts[i]];
  }
  json value;
  try {
    value = json::parse(text);
  } catch (const json::parse_error&) {
    value = text;  // a bare word: a string
  }
  *node = value;
}

}  // namespace engine::aurora
