// data_parallel.cpp: dist/data_parallel.h. Bucketed gradient allreduce in reverse registration
// order, the deterministic (ordered) reduction, the checksum consistency check and the
// expert-parallel range rules. The math of the gradient rules is in docs/distributed-notes.md
// sections 2.4 and 3.
#include "dist/data_parallel.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "autograd/grad_mode.h"
#include "tensor/ops.h"

namespace engine::dist {

namespace {

bool env_deterministic() {
  const char* v = std::getenv("AURORA_DETERMINISTIC_REDUCE");
  return v && *v && std::strcmp(v, "0") != 0;
}

// FNV-1a over the bytes of a contiguous host tensor: an exact fingerprint (a float sum would let
// differences cancel or drown in rounding).
int64_t fingerprint(const Tensor& t) {
  const Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const unsigned char*>(c.raw_data());
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < c.nbytes(); ++i) h = (h ^ p[i]) * 1099511628211ull;
  return int64_t(h);
}

}  // namespace

DataParallel::DataParallel(Comm& comm, nn::ParameterStore& store, nn::Module& root, int64_t bucket_bytes)
    : comm_(comm), store_(store), root_(root), bucket_bytes_(bucket_bytes), deterministic_(env_deterministic()) {
  ENGINE_CHECK(bucket_bytes > 0, "DataParallel: bucket_bytes must be positive, got {}", bucket_bytes);
  plan();
}

const DataParallel::Rule* DataParallel::rule_for(int64_t offset, int64_t numel) const {
  for (const Rule& r : rules_)
    if (offset >= r.offset && offset + numel <= r.offset + r.numel) return &r;
  return nullptr;
}

void DataParallel::shard_range(int64_t offset, int64_t numel, Comm* group) {
  ENGINE_CHECK(offset >= 0 && numel >= 0 && offset + numel <= store_.numel(),
               "DataParallel::shard_range: [{}, {}) outside the flat buffer of {} elements", offset, offset + numel,
               store_.numel());
  // Whole parameters only: a bucket never splits a parameter.
  for (const auto& [name, p] : store_.parameters()) {
    const int64_t b = p->offset, e = p->offset + p->shape.product();
    const bool inside = b >= offset && e <= offset + numel, outside = e <= offset || b >= offset + numel;
    ENGINE_CHECK(inside || outside, "DataParallel::shard_range: [{}, {}) cuts parameter '{}' [{}, {})", offset,
                 offset + numel, name, b, e);
  }
  // Later rules take precedence over earlier ones covering the same parameters (a layer's whole
  // expert block, then the locally owned part of it).
  rules_.insert(rules_.begin(), Rule{offset, numel, group});
  plan();
}

void DataParallel::plan() {
  buckets_.clear();
  const auto& params = store_.parameters();
  if (params.empty()) return;
  const int64_t esize = int64_t(dtype_size(store_.flat_grads().dtype()));
  // One pass per reducer: the world first, then every group in rule order. Each pass walks the
  // parameters in reverse registration order.
  std::vector<Comm*> reducers{&comm_};
  for (auto it = rules_.rbegin(); it != rules_.rend(); ++it)
    if (it->group && std::find(reducers.begin(), reducers.end(), it->group) == reducers.end())
      reducers.push_back(it->group);
  for (Comm* reducer : reducers) {
    Bucket cur;
    bool open = false;
    for (auto it = params.rbegin(); it != params.rend(); ++it) {
      const nn::Parameter& p = *it->second;
      const int64_t n = p.shape.product();
      const Rule* r = rule_for(p.offset, n);
      Comm* mine = r ? r->group : &comm_;
      if (mine != reducer) {
        if (open) buckets_.push_back(cur);  // contiguity broken
        open = false;
        continue;
      }
      if (open && p.offset + n == cur.offset && (cur.numel + n) * esize <= bucket_bytes_) {
        cur.offset = p.offset;
        cur.numel += n;
        cur.first = it->first;
        continue;
      }
      if (open) buckets_.push_back(cur);
      cur = Bucket{p.offset, n, reducer, it->first, it->first};
      open = true;
    }
    if (open) buckets_.push_back(cur);
  }
}

void DataParallel::broadcast_parameters() {
  if (comm_.size() == 1) return;
  autograd::NoGradGuard no_grad;
  Tensor p = store_.flat_params();
  comm_.broadcast(p, 0);
  for (auto& [name, b] : root_.named_buffers()) comm_.broadcast(b->value, 0);
}

void DataParallel::reduce(Tensor& t, Comm& group) {
  if (group.size() == 1) return;
  if (!deterministic_) {
    group.allreduce(t);
    return;
  }
  // Gather every rank's copy, then a pairwise tree in rank order: level s adds copy i + s into
  // copy i for i a multiple of 2s. The result is copy 0.
  const int R = group.size();
  const int64_t n = t.numel();
  const Tensor all = group.allgather(reshape(t, {1, n}));  // [R, n]
  for (int s = 1; s < R; s *= 2)
    for (int i = 0; i + s < R; i += 2 * s) add_(select(all, 0, i), select(all, 0, i + s));
  copy_(t, reshape(select(all, 0, 0), t.sizes()));
}

void DataParallel::end_micro_batch() {
  if (!deterministic_) return;
  autograd::NoGradGuard no_grad;
  Tensor g = clone(store_.flat_grads());
  store_.zero_grad();
  int level = 0;
  while (!tree_.empty() && tree_.back().first == level) {
    Tensor earlier = tree_.back().second;
    tree_.pop_back();
    add_(earlier, g);  // earlier + later
    g = earlier;
    ++level;
  }
  tree_.emplace_back(level, g);
}

void DataParallel::allreduce_gradients() {
  autograd::NoGradGuard no_grad;
  // A DataParallel made before ParameterStore::materialize has an empty plan: make it now.
  if (buckets_.empty() && store_.numel() > 0) plan();
  Tensor flat = store_.flat_grads();
  if (!tree_.empty()) {
    // The local micro-batch tree (one entry for a power-of-two count; otherwise the partial trees
    // are added latest first, a fixed order too).
    Tensor acc = tree_.back().second;
    for (int i = int(tree_.size()) - 2; i >= 0; --i) {
      add_(tree_[size_t(i)].second, acc);
      acc = tree_[size_t(i)].second;
    }
    copy_(flat, acc);
    tree_.clear();
  }
  // Gradients of experts this rank does not own: zero (they were not used here).
  if (!rules_.empty())
    for (const auto& [name, p] : store_.parameters()) {
      const Rule* r = rule_for(p->offset, p->shape.product());
      if (r && !r->group) zero_(narrow(flat, 0, p->offset, p->shape.product()));
    }
  if (comm_.size() == 1) return;
  const double inv_world = 1.0 / comm_.size();
  for (const Bucket& b : buckets_) {
    Tensor g = narrow(flat, 0, b.offset, b.numel);
    reduce(g, *b.group);
    mul_(g, inv_world);  // 1/world for every parameter, experts included (section 2.4)
  }
}

void DataParallel::check_consistency() {
  if (comm_.size() == 1) return;
  autograd::NoGradGuard no_grad;
  // One fingerprint per parameter, gathered over its reducer. A non-owned expert (group null)
  // is not compared.
  std::vector<Comm*> groups{&comm_};
  for (auto it = rules_.rbegin(); it != rules_.rend(); ++it)
    if (it->group && std::find(groups.begin(), groups.end(), it->group) == groups.end()) groups.push_back(it->group);
  for (Comm* group : groups) {
    std::vector<int64_t> prints;
    std::vector<const std::string*> names;
    for (const auto& [name, p] : store_.parameters()) {
      const Rule* r = rule_for(p->offset, p->shape.product());
      if ((r ? r->group : &comm_) != group) continue;
      prints.push_back(fingerprint(p->value));
      names.push_back(&name);
    }
    if (group->size() == 1) continue;
    const int64_t n = int64_t(prints.size());
    const Tensor all = group->allgather(from_vector_i64(prints, {1, n}));  // [R, n]
    const int64_t* a = all.data<int64_t>();
    for (int64_t i = 0; i < n; ++i)
      for (int r = 1; r < group->size(); ++r)
        ENGINE_CHECK(a[r * n + i] == a[i],
                     "DataParallel::check_consistency: parameter '{}' differs between rank 0 and rank {} of the '{}' "
                     "group of {} ranks (world rank {} reporting); the ranks have diverged",
                     *names[size_t(i)], r, group == &comm_ ? "world" : "expert-data-parallel", group->size(),
                     comm_.rank());
  }
}

void DataParallel::average_buffer(Tensor& t) {
  if (comm_.size() == 1) return;
  autograd::NoGradGuard no_grad;
  ENGINE_CHECK(t.is_contiguous(), "DataParallel::average_buffer: buffer {} must be contiguous", t.sizes().str());
  reduce(t, comm_);
  mul_(t, 1.0 / comm_.size());
}

}  // namespace engine::dist
