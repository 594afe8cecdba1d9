// expert_parallel.h: expert parallelism for nn::MoE (DESIGN.md section 10; issue 6;
// docs/distributed-notes.md section 2; docs/distributed.md).
//
// Groups (make_expert_parallel_groups): a world of W ranks with EP size R (R divides W) forms
//   EP groups of consecutive ranks  {0..R-1}, {R..2R-1}, ...   the experts are sharded here
//   EDP groups of strided ranks     {i, i+R, i+2R, ...}        hold the same experts (expert-DP)
// Expert e of a layer with E experts lives on EP rank e / (E/R) (contiguous shards).
//
// Forward of ExpertParallelMoE (rank-local tokens x [B, T, C], w [B, w_dim]):
//   1. route with the replicated router (nn::MoE::route): expert ids, probabilities, losses, and
//      the stable sort of the local tokens by global expert id, which groups them by owner rank;
//   2. count exchange: an alltoallv of the per-expert counts ([R, E/R] i64), so every rank knows
//      how many tokens of each of its experts each peer sends;
//   3. dispatch: alltoallv of the sorted tokens (times W1's gain); received rows are ordered by
//      (source rank, local expert) and regrouped by local expert (an index_select);
//   4. each local expert runs once on its segment (GegluExpert::forward_folded);
//   5. combine: the inverse regroup, the reverse alltoallv (send and receive counts swapped), the
//      inverse sort, and y = out * p_{e*} * W2's gain, exactly as nn::MoE::forward.
// The alltoallv steps are differentiable ops (dist::alltoallv below) whose backward is the
// alltoallv in the other direction with the counts saved in the forward: backward (and double
// backward) mirrors the forward with no new count exchange. Every rank joins every collective,
// also with zero tokens to send or receive: a rank whose experts receive nothing still links the
// (empty) combine input to the received tensor and to its expert parameters, so its autograd
// graph has the same collective nodes as every other rank's and backward issues the same
// collectives in the same order.
//
// Gradients (distributed-notes.md section 2.4): expert parameters are reduced over the EDP group
// only and divided by the world size, replicated ones over the world: register_with(dp) tells
// DataParallel exactly that. Experts of other EP ranks are materialised on every rank (nn::MoE
// holds all E) but never used here; their gradients are zeroed and never reduced.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/comm.h"
#include "dist/data_parallel.h"
#include "nn/moe.h"

namespace engine::dist {

struct ExpertParallelGroups {
  int ep_size = 1;
  std::unique_ptr<Comm> ep;   // this rank's EP group (consecutive ranks)
  std::unique_ptr<Comm> edp;  // this rank's expert-data-parallel group (strided ranks)
};

// Collective over `world` (every rank calls it). ep_size must divide world.size().
ExpertParallelGroups make_expert_parallel_groups(Comm& world, int ep_size);

// Differentiable alltoallv: rows of `in` go to ranks by send_counts, the result holds the rows
// received (recv_counts) in rank order. Backward: alltoallv(grad, recv_counts, send_counts) over
// the same communicator (which must outlive the autograd graph).
Tensor alltoallv(Comm& comm, const Tensor& in, const std::vector<int64_t>& send_counts,
                 const std::vector<int64_t>& recv_counts);

class ExpertParallelMoE {
 public:
  // `moe` holds all E experts (materialised); `ep` is this rank's EP group; E % ep.size() == 0.
  ExpertParallelMoE(nn::MoE& moe, Comm& ep);

  // Same contract as nn::MoE::forward on this rank's tokens. tokens_per_expert and
  // tokens_per_image_expert describe this rank's tokens (the routing decision); the losses are
  // over this rank's images (per-image groups: the mean of the ranks' losses, weighted by their
  // image counts, is the one-process loss of the whole batch).
  nn::MoEOutput forward(const Tensor& x, const Tensor& w) const;

  // Register the layer's parameter ranges with DataParallel: the whole expert block is not
  // reduced over the world; the locally owned experts are reduced over `edp` (divided by the
  // world size); the router stays with the world.
  void register_with(DataParallel& dp, Comm& edp) const;

  // Flat-buffer range [begin, end) of expert e's parameters.
  std::pair<int64_t, int64_t> expert_range(int64_t e) const;

  // Make every EP rank's copy of every expert of this layer current: expert e is broadcast from
  // its owner inside the EP group, for the flat buffer `flat` (the store's layout: the parameters,
  // or AdamW's moments). Collective over the EP group. Used before rank 0 writes a checkpoint:
  // its state dict then holds every expert under its global id (experts.{e}...), so a checkpoint
  // written under one EP layout loads under any other (each rank loads all and uses its shard).
  void gather_experts(const Tensor& flat) const;

  nn::MoE& moe;
  Comm& ep;
  int64_t num_experts, local_experts, first_local_expert;
};

// Expert parallelism for a whole model: finds every nn::MoE in the module tree (registration
// order, the same on every rank), makes the EP and EDP groups, and installs an
// ExpertParallelMoE as each layer's forward_hook, so the model code calls MoE::forward as before.
// The hooks are removed when this object is destroyed (it must outlive every forward/backward
// that uses them).
class ExpertParallel {
 public:
  ExpertParallel(nn::Module& root, Comm& world, int ep_size);
  ~ExpertParallel();
  ExpertParallel(const ExpertParallel&) = delete;
  ExpertParallel& operator=(const ExpertParallel&) = delete;

  // ExpertParallelMoE::register_with for every layer.
  void register_with(DataParallel& dp) const;
  // ExpertParallelMoE::gather_experts for every layer.
  void gather_experts(const Tensor& flat) const;

  int ep_size() const { return groups.ep_size; }
  ExpertParallelGroups groups;
  std::vector<std::unique_ptr<ExpertParallelMoE>> layers;
};

}  // namespace engine::dist
