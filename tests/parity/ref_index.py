"""ref_index.py: PyTorch references for the indexing family (tensor/ops_index.cpp): gather,
index_select, scatter_add, index_add, one_hot, cat, stack, split, split_sizes, chunk, pad_into.

Writes forward outputs, first gradients and double-backward gradients (layout: parity_lib.py);
the C++ side is tests/test_parity_index.cpp with the same case names and compositions. Index
tensors are i64 and contain duplicates on purpose (gradients must accumulate). Multi-output ops
(split, chunk) get one grad_output per piece.
"""
import torch
import torch.nn.functional as F

import parity_lib

F32 = torch.float32
F64 = torch.float64


def randn(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def idx(high, *shape):
    return torch.randint(0, high, shape)


def build(r):
    # ---- gather ----
    r.case("gather.dim1", lambda x, i: torch.gather(x, 1, i), [randn(3, 5), idx(5, 3, 4)])
    r.case("gather.dim0", lambda x, i: torch.gather(x, 0, i), [randn(4, 3), idx(4, 6, 3)])
    r.case("gather.3d", lambda x, i: torch.gather(x, 2, i), [randn(2, 3, 4), idx(4, 2, 3, 5)])
    r.case("gather.transposed", lambda x, i: torch.gather(x.t(), 1, i), [randn(5, 3), idx(5, 3, 2)])
    r.case("gather.f64", lambda x, i: torch.gather(x, 1, i), [randn(3, 4, dtype=F64), idx(4, 3, 4)])

    # ---- index_select ----
    r.case("index_select.dim0", lambda x, i: torch.index_select(x, 0, i), [randn(5, 3), idx(5, 7)])
    r.case("index_select.dim1", lambda x, i: torch.index_select(x, 1, i), [randn(2, 6, 3), idx(6, 4)])
    r.case("index_select.f64", lambda x, i: torch.index_select(x, 0, i), [randn(4, 2, dtype=F64), idx(4, 5)])

    # ---- scatter_add (index has src's shape) ----
    r.case("scatter_add.dim1", lambda x, i, s: torch.scatter_add(x, 1, i, s),
           [randn(3, 5), idx(5, 3, 4), randn(3, 4)])
    r.case("scatter_add.dim0", lambda x, i, s: torch.scatter_add(x, 0, i, s),
           [randn(4, 3), idx(4, 6, 3), randn(6, 3)])
    r.case("scatter_add.f64", lambda x, i, s: torch.scatter_add(x, 1, i, s),
           [randn(2, 3, dtype=F64), idx(3, 2, 5), randn(2, 5, dtype=F64)])

    # ---- index_add ----
    r.case("index_add.dim0", lambda x, i, s: torch.index_add(x, 0, i, s), [randn(5, 3), idx(5, 7), randn(7, 3)])
    r.case("index_add.dim1", lambda x, i, s: torch.index_add(x, 1, i, s),
           [randn(2, 4, 3), idx(4, 6), randn(2, 6, 3)])
    r.case("index_add.f64", lambda x, i, s: torch.index_add(x, 0, i, s),
           [randn(3, 2, dtype=F64), idx(3, 4), randn(4, 2, dtype=F64)])

    # ---- one_hot (no grad) ----
    r.case("one_hot.1d", lambda i: F.one_hot(i, 5), [idx(5, 6)], diff=[])
    r.case("one_hot.2d", lambda i: F.one_hot(i, 4), [idx(4, 2, 3)], diff=[])

    # ---- cat, stack ----
    r.case("cat.dim0", lambda a, b, c: torch.cat([a, b, c], 0), [randn(2, 3), randn(4, 3), randn(1, 3)])
    r.case("cat.dim1", lambda a, b: torch.cat([a, b], 1), [randn(2, 3, 2), randn(2, 1, 2)])
    r.case("cat.neg_dim", lambda a, b: torch.cat([a, b], -1), [randn(3, 2), randn(3, 4)])
    r.case("cat.transposed", lambda a, b: torch.cat([a.t(), b], 0), [randn(3, 2), randn(1, 3)])
    r.case("cat.f64", lambda a, b: torch.cat([a, b], 0), [randn(2, 2, dtype=F64), randn(3, 2, dtype=F64)])
    r.case("stack.dim0", lambda a, b, c: torch.stack([a, b, c], 0), [randn(2, 3), randn(2, 3), randn(2, 3)])
    r.case("stack.last", lambda a, b: torch.stack([a, b], 2), [randn(2, 3), randn(2, 3)])
    r.case("stack.f64", lambda a, b: torch.stack([a, b], 1), [randn(3, 2, dtype=F64), randn(3, 2, dtype=F64)])

    # ---- split, split_sizes, chunk (several outputs) ----
    r.case("split.uneven", lambda x: torch.split(x, 3, 0), [randn(7, 4)])
    r.case("split.dim1", lambda x: torch.split(x, 2, 1), [randn(2, 6)])
    r.case("split_sizes", lambda x: torch.split(x, [2, 3, 4], 1), [randn(2, 9)])
    r.case("chunk.uneven", lambda x: torch.chunk(x, 3, 0), [randn(7, 3)])
    r.case("chunk.fewer", lambda x: torch.chunk(x, 4, 0), [randn(6, 2)])  # 3 chunks of 2, as PyTorch
    r.case("chunk.dim1", lambda x: torch.chunk(x, 2, 1), [randn(2, 5)])
    r.case("split.f64", lambda x: torch.split(x, 2, 0), [randn(5, 2, dtype=F64)])

    # ---- pad_into (zero padding by offsets; the backward of narrow) ----
    r.case("pad_into", lambda x: F.pad(x, (2, 5 - 3 - 2, 1, 4 - 2 - 1)), [randn(2, 3)])
    r.case("pad_into.3d", lambda x: F.pad(x, (0, 1, 0, 0, 2, 0)), [randn(1, 2, 3)])


if __name__ == "__main__":
    parity_lib.main(__file__, 1003, build)
