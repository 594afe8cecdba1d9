// PyTorch parity of the indexing family (gather, index_select, scatter_add, index_add, one_hot,
// cat, stack, split, split_sizes, chunk, pad_into): forward, first gradients and double backward
// against tests/parity/ref_index.py (same case names, same compositions).
// Scheme and tolerances: tests/parity/parity.h and docs/testing.md.
#include "tests/parity/parity.h"

using namespace engine;
using parity::CaseFn;
using parity::CaseOptions;

namespace {

parity::Reference& ref() {
  static parity::Reference r("ref_index.py");
  return r;
}

const CaseOptions forward_only{std::nullopt, std::nullopt, false};

}  // namespace

TEST_CASE("parity index: gather and index_select (duplicate indices accumulate)") {
  ref().run("gather.dim1", [](const TensorList& x) { return TensorList{gather(x[0], 1, x[1])}; });
  ref().run("gather.dim0", [](const TensorList& x) { return TensorList{gather(x[0], 0, x[1])}; });
  ref().run("gather.3d", [](const TensorList& x) { return TensorList{gather(x[0], 2, x[1])}; });
  ref().run("gather.transposed",
            [](const TensorList& x) { return TensorList{gather(transpose(x[0], 0, 1), 1, x[1])}; });
  ref().run("gather.f64", [](const TensorList& x) { return TensorList{gather(x[0], 1, x[1])}; });
  ref().run("index_select.dim0", [](const TensorList& x) { return TensorList{index_select(x[0], 0, x[1])}; });
  ref().run("index_select.dim1", [](const TensorList& x) { return TensorList{index_select(x[0], 1, x[1])}; });
  ref().run("index_select.f64", [](const TensorList& x) { return TensorList{index_select(x[0], 0, x[1])}; });
}

TEST_CASE("parity index: scatter_add and index_add") {
  ref().run("scatter_add.dim1", [](const TensorList& x) { return TensorList{scatter_add(x[0], 1, x[1], x[2])}; });
  ref().run("scatter_add.dim0", [](const TensorList& x) { return TensorList{scatter_add(x[0], 0, x[1], x[2])}; });
  ref().run("scatter_add.f64", [](const TensorList& x) { return TensorList{scatter_add(x[0], 1, x[1], x[2])}; });
  ref().run("index_add.dim0", [](const TensorList& x) { return TensorList{index_add(x[0], 0, x[1], x[2])}; });
  ref().run("index_add.dim1", [](const TensorList& x) { return TensorList{index_add(x[0], 1, x[1], x[2])}; });
  ref().run("index_add.f64", [](const TensorList& x) { return TensorList{index_add(x[0], 0, x[1], x[2])}; });
}

TEST_CASE("parity index: one_hot") {
  ref().run("one_hot.1d", [](const TensorList& x) { return TensorList{one_hot(x[0], 5)}; }, forward_only);
  ref().run("one_hot.2d", [](const TensorList& x) { return TensorList{one_hot(x[0], 4)}; }, forward_only);
}

TEST_CASE("parity index: cat and stack") {
  ref().run("cat.dim0", [](const TensorList& x) { return TensorList{cat(x, 0)}; });
  ref().run("cat.dim1", [](const TensorList& x) { return TensorList{cat(x, 1)}; });
  ref().run("cat.neg_dim", [](const TensorList& x) { return TensorList{cat(x, -1)}; });
  ref().run("cat.transposed", [](const TensorList& x) { return TensorList{cat({transpose(x[0], 0, 1), x[1]}, 0)}; });
  ref().run("cat.f64", [](const TensorList& x) { return TensorList{cat(x, 0)}; });
  ref().run("stack.dim0", [](const TensorList& x) { return TensorList{stack(x, 0)}; });
  ref().run("stack.last", [](const TensorList& x) { return TensorList{stack(x, 2)}; });
  ref().run("stack.f64", [](const TensorList& x) { return TensorList{stack(x, 1)}; });
}

TEST_CASE("parity index: split, split_sizes and chunk") {
  ref().run("split.uneven", [](const TensorList& x) { return split(x[0], 3, 0); });
  ref().run("split.dim1", [](const TensorList& x) { return split(x[0], 2, 1); });
  ref().run("split_sizes", [](const TensorList& x) { return split_sizes(x[0], {2, 3, 4}, 1); });
  ref().run("chunk.uneven", [](const TensorList& x) { return chunk(x[0], 3, 0); });
  ref().run("chunk.fewer", [](const TensorList& x) { return chunk(x[0], 4, 0); });
  ref().run("chunk.dim1", [](const TensorList& x) { return chunk(x[0], 2, 1); });
  ref().run("split.f64", [](const TensorList& x) { return split(x[0], 2, 0); });
}

TEST_CASE("parity index: pad_into") {
  ref().run("pad_into", [](const TensorList& x) { return TensorList{pad_into(x[0], {4, 5}, {1, 2})}; });
  ref().run("pad_into.3d", [](const TensorList& x) { return TensorList{pad_into(x[0], {3, 2, 4}, {2, 0, 0})}; });
}

TEST_CASE("parity index: every reference case was compared") { ref().check_all_run(); }
