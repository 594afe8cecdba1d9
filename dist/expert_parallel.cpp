// expert_parallel.cpp: dist/expert_parallel.h. The arithmetic is nn::MoE::forward's (moe.cpp,
// Note [dropless sorted dispatch]) with the dispatch and combine all-to-alls in between.
#include "dist/expert_parallel.h"

#include <string>

#include "autograd/node.h"
#include "autograd/grad_mode.h"
#include "tensor/memory/profiler.h"
#include "tensor/ops.h"

namespace engine::dist {

ExpertParallelGroups make_expert_parallel_groups(Comm& world, int ep_size) {
  const int W = world.size(), r = world.rank();
  ENGINE_CHECK(ep_size >= 1 && W % ep_size == 0,
               "make_expert_parallel_groups: EP size {} must be >= 1 and divide the world size {}", ep_size, W);
  ExpertParallelGroups g;
  g.ep_size = ep_size;
  // Both splits are collective over the world, in the same order on every rank.
  g.ep = world.split(r / ep_size, r);   // consecutive ranks
  g.edp = world.split(r % ep_size, r);  // strided ranks: the same EP rank in every EP group
  return g;
}

Tensor alltoallv(Comm& comm, const Tensor& in, const std::vector<int64_t>& send_counts,
                 const std::vector<int64_t>& recv_counts) {
  Tensor out;
  {
    autograd::NoGradGuard no_grad;
    out = comm.alltoallv(in, send_counts, recv_counts);
  }
  // The transpose of a permutation across ranks is the permutation the other way: backward sends
  // every gradient row back to where its forward row came from, with the saved counts.
  auto node = autograd::record("AlltoallvBackward", {in}, {out});
  if (node) {
    Comm* c = &comm;
    node->backward_fn = [c, send_counts, recv_counts](autograd::Node&, const TensorList& g) -> TensorList {
      return {alltoallv(*c, g[0].contiguous(), recv_counts, send_counts)};
    };
  }
  return out;
}

ExpertParallelMoE::ExpertParallelMoE(nn::MoE& m, Comm& ep_)
    : moe(m), ep(ep_), num_experts(m.config.num_experts), local_experts(0), first_local_expert(0) {
  ENGINE_CHECK(num_experts % ep.size() == 0,
               "ExpertParallelMoE: {} experts cannot be sharded evenly over an EP group of {} ranks", num_experts,
               ep.size());
  local_experts = num_experts / ep.size();
  first_local_expert = int64_t(ep.rank()) * local_experts;
}

std::pair<int64_t, int64_t> ExpertParallelMoE::expert_range(int64_t e) const {
  ENGINE_CHECK(e >= 0 && e < num_experts, "ExpertParallelMoE::expert_range: expert {} outside [0, {})", e,
               num_experts);
  int64_t begin = -1, end = -1, total = 0;
  for (auto& [name, p] : moe.experts.items[size_t(e)]->named_parameters()) {
    ENGINE_CHECK(p->offset >= 0, "ExpertParallelMoE: expert {} parameter '{}' is not materialised", e, name);
    const int64_t n = p->shape.product();
    begin = begin < 0 ? p->offset : std::min(begin, p->offset);
    end = std::max(end, p->offset + n);
    total += n;
  }
  ENGINE_CHECK(total == end - begin, "ExpertParallelMoE: expert {}'s parameters are not contiguous in the flat buffer",
               e);
  return {begin, end};
}

void ExpertParallelMoE::register_with(DataParallel& dp, Comm& edp) const {
  const int64_t block_begin = expert_range(0).first, block_end = expert_range(num_experts - 1).second;
  dp.shard_range(block_begin, block_end - block_begin, nullptr);
  const int64_t b = expert_range(first_local_expert).first;
  const int64_t e = expert_range(first_local_expert + local_experts - 1).second;
  dp.shard_range(b, e - b, &edp);
}

void ExpertParallelMoE::gather_experts(const Tensor& flat) const {
  if (ep.size() == 1) return;
  autograd::NoGradGuard no_grad;
  for (int64_t e = 0; e < num_experts; ++e) {
    const auto [b, end] = expert_range(e);
    Tensor part = narrow(flat, 0, b, end - b);  // contiguous: a slice of a 1-d buffer
    ep.broadcast(part, int(e / local_experts));
  }
}

namespace {
void find_moe(nn::Module& m, std::vector<nn::MoE*>& out) {
  if (auto* moe = dynamic_cast<nn::MoE*>(&m)) out.push_back(moe);
  for (auto& [name, child] : m.named_children()) find_moe(*child, out);
}
}  // namespace

ExpertParallel::ExpertParallel(nn::Module& root, Comm& world, int ep_size)
    : groups(make_expert_parallel_groups(world, ep_size)) {
  std::vector<nn::MoE*> found;
  find_moe(root, found);
  for (nn::MoE* m : found) {
    ENGINE_CHECK(!m->forward_hook, "ExpertParallel: an MoE layer already has a forward hook (attached twice?)");
    layers.push_back(std::make_unique<ExpertParallelMoE>(*m, *groups.ep));
    const ExpertParallelMoE* layer = layers.back().get();
    m->forward_hook = [layer](const Tensor& x, const Tensor& w) { return layer->forward(x, w); };
  }
}

ExpertParallel::~ExpertParallel() {
  for (auto& l : layers) l->moe.forward_hook = nullptr;
}

void ExpertParallel::register_with(DataParallel& dp) const {
  for (const auto& l : layers) l->register_with(dp, *groups.edp);
}

void ExpertParallel::gather_experts(const Tensor& flat) const {
  for (const auto& l : layers) l->gather_experts(flat);
}

nn::MoEOutput ExpertParallelMoE::forward(const Tensor& x, const Tensor& w) const {
  memory::ModuleScope scope("moe");
  const int64_t C = moe.config.channels, El = local_experts;
  ENGINE_CHECK(x.defined() && x.dim() == 3 && x.size(2) == C, "ExpertParallelMoE: expected tokens [B, T, {}], got {}",
               C, x.defined() ? x.sizes().str() : std::string("an undefined tensor"));
  ENGINE_CHECK(x.size(0) >= 1 && x.size(1) >= 1, "ExpertParallelMoE: empty batch or token axis {} on rank {}",
               x.sizes().str(), ep.rank());
  ENGINE_CHECK(w.defined() && w.dim() == 2 && w.size(0) == x.size(0) && w.size(1) == moe.config.w_dim,
               "ExpertParallelMoE: expected w [{}, {}], got {}", x.size(0), moe.config.w_dim,
               w.defined() ? w.sizes().str() : std::string("an undefined tensor"));
  const int64_t B = x.size(0), T = x.size(1), N = B * T;
  const int R = ep.size();

  // 1. Route (replicated router) and sort by global expert id = by owner rank, then expert.
  nn::MoERouting rt = moe.route(x, w);
  const TensorOptions iopts{DType::i64, x.device()};
  const Tensor perm = from_vector_i64(rt.perm, {N}, iopts);
  const Tensor inv_perm = from_vector_i64(rt.inv_perm, {N}, iopts);
  const Tensor xs = mul(index_select(reshape(x, {N, C}), 0, perm), moe.gain_in());

  // 2. Count exchange: row p of [R, El] = my token counts for peer p's experts.
  std::vector<int64_t> send_counts(static_cast<size_t>(R), 0), recv_counts(static_cast<size_t>(R), 0);
  for (int p = 0; p < R; ++p)
    for (int64_t le = 0; le < El; ++le) send_counts[size_t(p)] += rt.tokens_per_expert[size_t(p * El + le)];
  std::vector<int64_t> recv_cm(static_cast<size_t>(R * El));  // [src][local expert]
  {
    const Tensor cm = from_vector_i64(rt.tokens_per_expert, {int64_t(R), El});
    const std::vector<int64_t> ones(static_cast<size_t>(R), 1);
    const Tensor got = ep.alltoallv(cm, ones, ones);
    const int64_t* g = got.data<int64_t>();
    for (int s = 0; s < R; ++s)
      for (int64_t le = 0; le < El; ++le) {
        recv_cm[size_t(s * El + le)] = g[s * El + le];
        recv_counts[size_t(s)] += g[s * El + le];
      }
  }

  // 3. Dispatch, then regroup the received rows from (source, expert) to (expert, source) order.
  const Tensor recv = alltoallv(ep, xs, send_counts, recv_counts);
  const int64_t M = recv.size(0);
  std::vector<int64_t> seg(static_cast<size_t>(El), 0);  // tokens per local expert
  for (int s = 0; s < R; ++s)
    for (int64_t le = 0; le < El; ++le) seg[size_t(le)] += recv_cm[size_t(s * El + le)];
  Tensor xr = recv;
  Tensor unregroup;  // expert order -> (source, expert) order
  if (R > 1 && El > 1) {
    std::vector<int64_t> src_first(static_cast<size_t>(R) * size_t(El), 0);  // row of (s, le) block
    int64_t row = 0;
    for (int s = 0; s < R; ++s)
      for (int64_t le = 0; le < El; ++le) {
        src_first[size_t(s * El + le)] = row;
        row += recv_cm[size_t(s * El + le)];
      }
    std::vector<int64_t> regroup, inverse(static_cast<size_t>(M));
    regroup.reserve(size_t(M));
    for (int64_t le = 0; le < El; ++le)
      for (int s = 0; s < R; ++s)
        for (int64_t k = 0; k < recv_cm[size_t(s * El + le)]; ++k) {
          inverse[size_t(src_first[size_t(s * El + le)] + k)] = int64_t(regroup.size());
          regroup.push_back(src_first[size_t(s * El + le)] + k);
        }
    xr = index_select(recv, 0, from_vector_i64(regroup, {M}, iopts));
    unregroup = from_vector_i64(inverse, {M}, iopts);
  }

  // 4. The local experts, each on its segment.
  TensorList outs;
  int64_t off = 0;
  for (int64_t le = 0; le < El; ++le) {
    const int64_t n = seg[size_t(le)];
    if (n == 0) continue;
    const int64_t e = first_local_expert + le;
    memory::ModuleScope expert_scope("experts." + std::to_string(e));
    outs.push_back(moe.experts.items[size_t(e)]->forward_folded(narrow(xr, 0, off, n)));
    off += n;
  }
  Tensor ys;
  if (outs.empty()) {
    // Nothing arrived: an empty [0, C] output that still depends on the received rows and on a
    // local expert parameter, so this rank's graph holds the combine node like every other rank's
    // (its backward is a collective). The gradients through it are empty sums: zero.
    ys = add(xr, mul(sum(moe.experts.items[size_t(first_local_expert)]->w2.bias->value), 0.0));
  } else {
    ys = outs.size() == 1 ? outs[0] : cat(outs, 0);
  }
  if (unregroup.defined()) ys = index_select(ys, 0, unregroup);

  // 5. Combine: back to the source ranks, then token order, then the gate.
  const Tensor back = alltoallv(ep, ys, recv_counts, send_counts);  // [N, C], sorted order
  Tensor y = reshape(index_select(back, 0, inv_perm), {B, T, C});
  Tensor p_top = mul(gather(rt.probs, 2, unsqueeze(rt.expert_ids, 2)), moe.gain_out());
  if (p_top.dtype() != y.dtype()) p_top = to_dtype(p_top, y.dtype());

  nn::MoEOutput out;
  out.y = mul(y, p_top);
  auto [z, aux] = moe.losses(rt);
  out.z_loss = z;
  out.aux_loss = aux;
  out.loss = add(mul(z, moe.config.z_loss_weight), mul(aux, moe.config.aux_loss_weight));
  out.expert_ids = rt.expert_ids;
  out.tokens_per_expert = std::move(rt.tokens_per_expert);
  out.tokens_per_image_expert = std::move(rt.tokens_per_image_expert);
  return out;
}

}  // namespace engine::dist
