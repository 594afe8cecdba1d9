// router_stats.h: how evenly an MoE layer spreads its tokens over its experts (docs/aurora-spec.md
// section 6; the load balance that the auxiliary loss L_aux of the sparse MoE aims for).
//
// For one layer with E experts and counts n_e (tokens routed to expert e over a batch, total
// N = sum_e n_e = B * r * r for a resolution-r layer), with p_e = n_e / N:
//   fraction_e          p_e
//   max/min fraction    max_e p_e, min_e p_e      (1/E each when perfectly balanced)
//   entropy             H = -sum_e p_e ln p_e      (nats; 0 when one expert takes everything)
//   normalized entropy  H / ln E in [0, 1]         (1 = uniform; defined as 1 when E = 1)
//   experts used        #{e : n_e > 0}, and that number / E
// Used by `aurora router` (aurora/cli/router.cpp, a table and a JSON file) and by the trainer's
// metrics.jsonl (aurora/cli/train.cpp, "router" key). docs/run-outputs.md, "Router statistics".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aurora/generator.h"

namespace engine::aurora {

struct RouterLayerStats {
  std::string name;
  int64_t resolution = 0, num_experts = 0, tokens = 0, experts_used = 0;
  std::vector<int64_t> counts;
  std::vector<double> fractions;
  double max_fraction = 0, min_fraction = 0, entropy = 0, normalized_entropy = 0;
  double fraction_used() const { return num_experts > 0 ? double(experts_used) / double(num_experts) : 0.0; }
  nlohmann::json to_json() const;
};

// Statistics from counts per expert (counts.size() = E >= 1, every count >= 0).
RouterLayerStats router_stats_from_counts(std::string name, int64_t resolution, const std::vector<int64_t>& counts);
// Statistics of every layer of a forward's routing; a layer's E is the num_experts of its stage in
// `config` (an expert id outside [0, E) is an engine::Error naming the layer).
std::vector<RouterLayerStats> router_stats(const std::vector<RouterLayer>& routing, const GeneratorConfig& config);

// A fixed-width text table, one line per layer (header first; newline-terminated):
//   layer  res  experts  tokens  used  H/lnE  max%  min%  tokens per expert
// (H/lnE = normalized entropy; max% and min% = 100 x max/min fraction).
std::string format_router_table(const std::vector<RouterLayerStats>& stats);

}  // namespace engine::aurora
