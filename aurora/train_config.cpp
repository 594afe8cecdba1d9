// train_config.cpp: strict parsing of the "train" section (see train_config.h).
#include "aurora/train_config.h"

#include <functional>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "tensor/error.h"

namespace engine::aurora {

namespace {

using nlohmann::json;

std::string describe(const json& v) {
  std::string text = v.dump();
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return std::string(v.type_name()) + " " + text;
}

// Reads the keys of one object: each call consumes a key if present; finish() rejects the rest.
class Reader {
 public:
  Reader(const json& j, std::string path) : j_(j), path_(std::move(path)) {
    ENGINE_CHECK(j.is_null() || j.is_object(), "{}: expected an object, got {}", path_, describe(j));
  }
  const json* find(const char* key) {
    known_.insert(key);
    if (j_.is_null() || !j_.contains(key)) return nullptr;
    return &j_.at(key);
  }
  std::string where(const char* key) const { return path_ + "." + key; }

  void integer(const char* key, int64_t& out, int64_t min, const char* expected) {
    if (const json* v = find(key)) {
      ENGINE_CHECK(v->is_number_integer() && v->get<int64_t>() >= min, "{}: expected {}, got {}", where(key),
                   expected, describe(*v));
      out = v->get<int64_t>();
    }
  }
  void number(const char* key, double& out, double min, double max, const char* expected) {
    if (const json* v = find(key)) {
      ENGINE_CHECK(v->is_number() && v->get<double>() >= min && v->get<double>() <= max, "{}: expected {}, got {}",
                   where(key), expected, describe(*v));
      out = v->get<double>();
    }
  }
  void boolean(const char* key, bool& out) {
    if (const json* v = find(key)) {
      ENGINE_CHECK(v->is_boolean(), "{}: expected true or false, got {}", where(key), describe(*v));
      out = v->get<bool>();
    }
  }
  void string(const char* key, std::string& out, const std::vector<std::string>& allowed = {}) {
    if (const json* v = find(key)) {
      ENGINE_CHECK(v->is_string(), "{}: expected a string, got {}", where(key), describe(*v));
      const std::string s = v->get<std::string>();
      if (!allowed.empty()) {
        bool ok = false;
        std::string list;
        for (const std::string& a : allowed) {
          ok = ok || a == s;
          list += (list.empty() ? "" : ", ") + a;
        }
        ENGINE_CHECK(ok, "{}: expected one of {}, got \"{}\"", where(key), list, s);
      }
      out = s;
    }
  }
  void finish() const {
    if (j_.is_null()) return;
    for (const auto& item : j_.items()) {
      const std::string& k = item.key();
      if (!k.empty() && k[0] == '_') continue;
      if (!known_.count(k)) {
        std::string list;
        for (const std::string& n : known_) list += (list.empty() ? "" : ", ") + n;
        throw Error(fmt::format("{}.{}: unknown key (known keys: {}; keys starting with '_' are comments)", path_, k,
                                list));
      }
    }
  }

 private:
  const json& j_;
  std::string path_;
  std::set<std::string> known_;
};

bool is_power_of_two(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

}  // namespace

json SmallTextEncoderConfig::to_json() const {
  return {{"vocab_size", vocab_size}, {"layers", layers}, {"heads", heads}, {"mlp_ratio", mlp_ratio}, {"lr_mul", lr_mul}};
}

json GrowingConfig::to_json() const {
  return {{"rule", rule},          {"start_resolution", start_resolution}, {"stage_kimg", stage_kimg},
          {"fid_weights", fid_weights}, {"fid_n", fid_n},                   {"fid_check_kimg", fid_check_kimg},
          {"fid_tolerance", fid_tolerance}};
}

json TrainConfig::to_json() const {
  return {{"batch_size", batch_size},
          {"micro_batch", micro_batch},
          {"expert_parallel", expert_parallel},
          {"steps", steps},
          {"seed", seed},
          {"g_lr", g_lr},
          {"d_lr", d_lr},
          {"beta1", beta1},
          {"beta2", beta2},
          {"eps", eps},
          {"g_weight_decay", g_weight_decay},
          {"d_weight_decay", d_weight_decay},
          {"lr_multipliers", lr_multipliers},
          {"r1_gamma", r1_gamma},
          {"r1_interval", r1_interval},
          {"match_weight", match_weight},
          {"moe_loss_weight", moe_loss_weight},
          {"ema_kimg", ema_kimg},
          {"ema_rampup", ema_rampup},
          {"w_avg_decay", w_avg_decay},
          {"growing", growing.to_json()},
          {"text_encoder", text_encoder},
          {"small_text_encoder", small_text_encoder.to_json()},
          {"clip_weights", clip_weights},
          {"clip_text_heads", clip_text_heads},
          {"clip_vision_heads", clip_vision_heads},
          {"clip_loss_weight", clip_loss_weight},
          {"clip_loss_kind", clip_loss_kind},
          {"clip_loss_resolutions", clip_loss_resolutions},
          {"clip_loss_level_weights", clip_loss_level_weights},
          {"vocab", vocab},
          {"data", data},
          {"flip", flip},
          {"log_every", log_every},
          {"sample_every", sample_every},
          {"checkpoint_every", checkpoint_every},
          {"keep_checkpoints", keep_checkpoints},
          {"sample_psi", sample_psi},
          {"device", device},
          {"precision", precision},
          {"conv_algorithm", conv_algorithm}};
}

TrainConfig parse_train_config(const json& j, const std::string& path) {
  TrainConfig c;
  Reader r(j, path);
  constexpr double inf = 1e300;
  r.integer("batch_size", c.batch_size, 1, "a positive integer (the global batch)");
  r.integer("micro_batch", c.micro_batch, 0, "an integer >= 0 (0 = the whole local batch)");
  r.integer("expert_parallel", c.expert_parallel, 1, "a positive integer (the expert-parallel group size)");
  r.integer("steps", c.steps, 0, "an integer >= 0");
  if (const json* v = r.find("seed")) {
    ENGINE_CHECK(v->is_number_integer() && (v->is_number_unsigned() || v->get<int64_t>() >= 0),
                 "{}: expected an integer >= 0, got {}", r.where("seed"), describe(*v));
    c.seed = v->get<uint64_t>();
  }
  r.number("g_lr", c.g_lr, 0, inf, "a number >= 0");
  r.number("d_lr", c.d_lr, 0, inf, "a number >= 0");
  r.number("beta1", c.beta1, 0, 0.999999, "a number in [0, 1)");
  r.number("beta2", c.beta2, 0, 0.999999, "a number in [0, 1)");
  r.number("eps", c.eps, 0, inf, "a number >= 0");
  r.number("g_weight_decay", c.g_weight_decay, 0, inf, "a number >= 0");
  r.number("d_weight_decay", c.d_weight_decay, 0, inf, "a number >= 0");
  if (const json* m = r.find("lr_multipliers")) {
    ENGINE_CHECK(m->is_object(), "{}: expected an object {{\"<name prefix>\": <multiplier>}}, got {}",
                 r.where("lr_multipliers"), describe(*m));
    for (const auto& item : m->items()) {
      ENGINE_CHECK(item.key().rfind("G.", 0) == 0 || item.key().rfind("D.", 0) == 0,
                   "{}.{}: a prefix must start with \"G.\" or \"D.\"", r.where("lr_multipliers"), item.key());
      ENGINE_CHECK(item.value().is_number() && item.value().get<double>() >= 0, "{}.{}: expected a number >= 0, got {}",
                   r.where("lr_multipliers"), item.key(), describe(item.value()));
      c.lr_multipliers[item.key()] = item.value().get<double>();
    }
  }
  r.number("r1_gamma", c.r1_gamma, 0, inf, "a number >= 0");
  r.integer("r1_interval", c.r1_interval, 0, "an integer >= 0 (0 disables R1)");
  r.number("match_weight", c.match_weight, 0, inf, "a number >= 0");
  r.number("moe_loss_weight", c.moe_loss_weight, 0, inf, "a number >= 0");
  r.number("ema_kimg", c.ema_kimg, 0, inf, "a number >= 0 (0 = G_ema follows G exactly)");
  r.number("ema_rampup", c.ema_rampup, 0, inf, "a number >= 0 (0 = no ramp-up)");
  r.number("w_avg_decay", c.w_avg_decay, 0, 1, "a number in [0, 1]");
  if (const json* g = r.find("growing")) {
    Reader gr(*g, r.where("growing"));
    ENGINE_CHECK(g->is_object(), "{}: expected an object, got {}", r.where("growing"), describe(*g));
    gr.string("rule", c.growing.rule, {"kimg", "fid", "none"});
    gr.integer("start_resolution", c.growing.start_resolution, 4, "a power of two >= 4");
    ENGINE_CHECK(is_power_of_two(c.growing.start_resolution), "{}: expected a power of two >= 4, got {}",
                 gr.where("start_resolution"), c.growing.start_resolution);
    gr.number("stage_kimg", c.growing.stage_kimg, 0, inf, "a number >= 0");
    gr.string("fid_weights", c.growing.fid_weights);
    gr.integer("fid_n", c.growing.fid_n, 2, "an integer >= 2");
    gr.number("fid_check_kimg", c.growing.fid_check_kimg, 1e-6, inf, "a number > 0");
    gr.number("fid_tolerance", c.growing.fid_tolerance, 1, inf, "a number >= 1");
    gr.finish();
  }
  r.string("text_encoder", c.text_encoder, {"small", "clip"});
  if (const json* t = r.find("small_text_encoder")) {
    Reader tr(*t, r.where("small_text_encoder"));
    ENGINE_CHECK(t->is_object(), "{}: expected an object, got {}", r.where("small_text_encoder"), describe(*t));
    tr.integer("vocab_size", c.small_text_encoder.vocab_size, 1, "a positive integer (<= 49408)");
    ENGINE_CHECK(c.small_text_encoder.vocab_size <= 49408, "{}: expected at most 49408 (the CLIP vocabulary), got {}",
                 tr.where("vocab_size"), c.small_text_encoder.vocab_size);
    tr.integer("layers", c.small_text_encoder.layers, 0, "an integer >= 0");
    tr.integer("heads", c.small_text_encoder.heads, 1, "a positive integer");
    tr.integer("mlp_ratio", c.small_text_encoder.mlp_ratio, 1, "a positive integer");
    tr.number("lr_mul", c.small_text_encoder.lr_mul, 1e-12, inf, "a number > 0");
    tr.finish();
  }
  r.string("clip_weights", c.clip_weights);
  r.integer("clip_text_heads", c.clip_text_heads, 0, "an integer >= 0 (0 = width / 64)");
  r.integer("clip_vision_heads", c.clip_vision_heads, 0, "an integer >= 0 (0 = width / 64)");
  r.number("clip_loss_weight", c.clip_loss_weight, 0, inf, "a number >= 0 (0 disables the CLIP loss)");
  r.string("clip_loss_kind", c.clip_loss_kind, {"symmetric_contrastive", "image_to_text", "cosine"});
  if (const json* v = r.find("clip_loss_resolutions")) {
    ENGINE_CHECK(v->is_array(), "{}: expected an array of powers of two >= 4, got {}", r.where("clip_loss_resolutions"),
                 describe(*v));
    for (const json& e : *v) {
      ENGINE_CHECK(e.is_number_integer() && is_power_of_two(e.get<int64_t>()) && e.get<int64_t>() >= 4,
                   "{}: expected powers of two >= 4, got {}", r.where("clip_loss_resolutions"), describe(e));
      c.clip_loss_resolutions.push_back(e.get<int64_t>());
    }
  }
  if (const json* v = r.find("clip_loss_level_weights")) {
    ENGINE_CHECK(v->is_array(), "{}: expected an array of numbers >= 0, got {}", r.where("clip_loss_level_weights"),
                 describe(*v));
    for (const json& e : *v) {
      ENGINE_CHECK(e.is_number() && e.get<double>() >= 0, "{}: expected numbers >= 0, got {}",
                   r.where("clip_loss_level_weights"), describe(e));
      c.clip_loss_level_weights.push_back(e.get<double>());
    }
  }
  ENGINE_CHECK(c.clip_loss_level_weights.empty() || c.clip_loss_level_weights.size() == c.clip_loss_resolutions.size(),
               "{}: {} weights for {} entries of {}.clip_loss_resolutions (give one per resolution, or none)",
               r.where("clip_loss_level_weights"), c.clip_loss_level_weights.size(), c.clip_loss_resolutions.size(),
               path);
  r.string("vocab", c.vocab);
  r.string("data", c.data);
  r.boolean("flip", c.flip);
  r.integer("log_every", c.log_every, 1, "a positive integer");
  r.integer("sample_every", c.sample_every, 0, "an integer >= 0 (0 = at the end only)");
  r.integer("checkpoint_every", c.checkpoint_every, 0, "an integer >= 0 (0 = at the end only)");
  r.integer("keep_checkpoints", c.keep_checkpoints, 1, "a positive integer");
  r.number("sample_psi", c.sample_psi, 0, inf, "a number >= 0");
  r.string("device", c.device);
  parse_device_spec(c.device, r.where("device"));
  r.string("precision", c.precision, {"f32", "tf32", "bf16"});
  ENGINE_CHECK(c.precision != "tf32" || parse_device_spec(c.device).cuda,
               "{}: \"tf32\" is a CUDA (tensor-core) mode; with device \"{}\" use \"f32\" or \"bf16\"",
               r.where("precision"), c.device);
  r.string("conv_algorithm", c.conv_algorithm, {"im2col", "cudnn"});
  ENGINE_CHECK(c.conv_algorithm != "cudnn" || parse_device_spec(c.device).cuda,
               "{}: \"cudnn\" runs CUDA convolutions; with device \"{}\" use \"im2col\"", r.where("conv_algorithm"),
               c.device);
  r.finish();
  return c;
}

DeviceSpec parse_device_spec(const std::string& value, const std::string& key) {
  if (value == "cpu") return {};
  if (value == "cuda") return {true, 0};
  const std::string pre = "cuda:";
  bool ok = value.size() > pre.size() && value.size() <= pre.size() + 4 && value.rfind(pre, 0) == 0;
  for (size_t i = pre.size(); ok && i < value.size(); ++i) ok = value[i] >= '0' && value[i] <= '9';
  ENGINE_CHECK(ok, "{}: expected \"cpu\", \"cuda\" or \"cuda:N\", got \"{}\"", key, value);
  return {true, std::stoi(value.substr(pre.size()))};
}

double lr_multiplier(const std::map<std::string, double>& multipliers, const std::string& name) {
  double m = 1.0;
  size_t best = 0;
  for (const auto& [prefix, value] : multipliers)
    if (prefix.size() >= best && name.rfind(prefix, 0) == 0) {
      best = prefix.size();
      m = value;
    }
  return m;
}

}  // namespace engine::aurora
