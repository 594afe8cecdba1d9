// router_stats.cpp: the load-balance statistics of aurora/router_stats.h.
#include "aurora/router_stats.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "tensor/error.h"

namespace engine::aurora {

nlohmann::json RouterLayerStats::to_json() const {
  return {{"name", name},
          {"resolution", resolution},
          {"num_experts", num_experts},
          {"tokens", tokens},
          {"counts", counts},
          {"fractions", fractions},
          {"max_fraction", max_fraction},
          {"min_fraction", min_fraction},
          {"entropy", entropy},
          {"normalized_entropy", normalized_entropy},
          {"experts_used", experts_used},
          {"fraction_used", fraction_used()}};
}

RouterLayerStats router_stats_from_counts(std::string name, int64_t resolution, const std::vector<int64_t>& counts) {
  ENGINE_CHECK(!counts.empty(), "router_stats: layer '{}': no experts", name);
  RouterLayerStats s;
  s.name = std::move(name);
  s.resolution = resolution;
  s.num_experts = int64_t(counts.size());
  s.counts = counts;
  for (int64_t n : counts) {
    ENGINE_CHECK(n >= 0, "router_stats: layer '{}': negative count {}", s.name, n);
    s.tokens += n;
    s.experts_used += n > 0 ? 1 : 0;
  }
  // An empty batch has no distribution; report zeros rather than NaN.
  if (s.tokens == 0) {
    s.fractions.assign(counts.size(), 0.0);
    return s;
  }
  s.max_fraction = 0.0;
  s.min_fraction = 1.0;
  for (int64_t n : counts) {
    const double p = double(n) / double(s.tokens);
    s.fractions.push_back(p);
    s.max_fraction = std::max(s.max_fraction, p);
    s.min_fraction = std::min(s.min_fraction, p);
    if (p > 0) s.entropy -= p * std::log(p);  // 0 ln 0 = 0
  }
  s.normalized_entropy = s.num_experts > 1 ? s.entropy / std::log(double(s.num_experts)) : 1.0;
  return s;
}

std::vector<RouterLayerStats> router_stats(const std::vector<RouterLayer>& routing, const GeneratorConfig& config) {
  std::vector<RouterLayerStats> out;
  out.reserve(routing.size());
  for (const RouterLayer& layer : routing) {
    const auto it = config.stages.find(layer.resolution);
    ENGINE_CHECK(it != config.stages.end() && it->second.num_experts > 0,
                 "router_stats: layer '{}': resolution {} has no MoE stage in the generator config", layer.name,
                 layer.resolution);
    const Tensor ids = layer.expert_ids.to(Device::cpu());
    RouterLayer cpu{layer.name, layer.resolution, ids};
    out.push_back(router_stats_from_counts(layer.name, layer.resolution, cpu.tokens_per_expert(it->second.num_experts)));
  }
  return out;
}

std::string format_router_table(const std::vector<RouterLayerStats>& stats) {
  size_t name_w = 5;
  for (const auto& s : stats) name_w = std::max(name_w, s.name.size());
  std::string out = fmt::format("{:<{}}  {:>4}  {:>7}  {:>8}  {:>7}  {:>7}  {:>6}  {:>6}  {}\n", "layer", name_w, "res",
                                "experts", "tokens", "used", "H/lnE", "max%", "min%", "tokens per expert");
  for (const auto& s : stats) {
    std::string counts;
    for (size_t e = 0; e < s.counts.size(); ++e) counts += (e ? " " : "") + std::to_string(s.counts[e]);
    out += fmt::format("{:<{}}  {:>4}  {:>7}  {:>8}  {:>7}  {:>7.4f}  {:>6.2f}  {:>6.2f}  {}\n", s.name, name_w,
                       s.resolution, s.num_experts, s.tokens, fmt::format("{}/{}", s.experts_used, s.num_experts),
                       s.normalized_entropy, 100.0 * s.max_fraction, 100.0 * s.min_fraction, counts);
  }
  return out;
}

}  // namespace engine::aurora
