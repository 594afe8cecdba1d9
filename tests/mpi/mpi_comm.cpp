// mpi_comm.cpp: conformance of MpiComm (dist/mpi_comm.h) at np = 1, 2, 4: every collective on
// f32, f64 and i64 host tensors against values computed independently from the rank formulas,
// uneven and zero alltoallv counts, sub-communicators, the count exchange, and the errors raised
// before any message is sent. Also LocalComm's identities (rank-independent).
#include <cstdint>
#include <vector>

#include "dist/watchdog.h"
#include "mpi_test.h"
#include "tensor/error.h"
#include "tensor/ops.h"

using namespace engine;
using mpi_test::Context;

namespace {

// Element i of rank r's tensor: distinct per (rank, i), exactly representable.
double value(int r, int64_t i) { return double(r + 1) * 1000.0 + double(i); }

Tensor rank_tensor(int r, int64_t n, DType dt) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = value(r, i);
  if (dt == DType::i64) {
    std::vector<int64_t> iv(v.begin(), v.end());
    return from_vector_i64(iv, {n});
  }
  return from_vector(v, {n}, TensorOptions{dt});
}

void test_allreduce(Context& t) {
  const int R = t.comm.size();
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    for (dist::ReduceOp op : {dist::ReduceOp::sum, dist::ReduceOp::max, dist::ReduceOp::min}) {
      const int64_t n = 37;
      Tensor x = rank_tensor(t.comm.rank(), n, dt);
      t.comm.allreduce(x, op);
      const std::vector<double> got = x.to_vector();
      for (int64_t i = 0; i < n; ++i) {
        double want = 0;
        if (op == dist::ReduceOp::sum)
          for (int r = 0; r < R; ++r) want += value(r, i);
        else
          want = op == dist::ReduceOp::max ? value(R - 1, i) : value(0, i);
        MT_CHECK(t, got[size_t(i)] == want, "{} op {} element {}: {} vs {}", dtype_name(dt), int(op), i,
                 got[size_t(i)], want);
      }
    }
  }
  Tensor empty_t = zeros({0});
  t.comm.allreduce(empty_t);  // every rank joins with nothing
  MT_CHECK(t, empty_t.numel() == 0);
}

void test_broadcast(Context& t) {
  for (int root = 0; root < t.comm.size(); ++root) {
    for (DType dt : {DType::f32, DType::f64, DType::i64}) {
      Tensor x = rank_tensor(t.comm.rank(), 11, dt);
      t.comm.broadcast(x, root);
      const std::vector<double> got = x.to_vector();
      for (int64_t i = 0; i < 11; ++i)
        MT_CHECK(t, got[size_t(i)] == value(root, i), "root {} {} element {}", root, dtype_name(dt), i);
    }
  }
}

void test_allgather(Context& t) {
  const int R = t.comm.size();
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    const Tensor x = reshape(rank_tensor(t.comm.rank(), 6, dt), {2, 3});
    const Tensor y = t.comm.allgather(x);
    MT_CHECK(t, y.dim() == 2 && y.size(0) == 2 * R && y.size(1) == 3, "shape {}", y.sizes().str());
    const std::vector<double> got = y.to_vector();
    for (int r = 0; r < R; ++r)
      for (int64_t i = 0; i < 6; ++i)
        MT_CHECK(t, got[size_t(r * 6 + i)] == value(r, i), "{} rank {} element {}", dtype_name(dt), r, i);
  }
  // A 0-d tensor gathers to [R].
  const Tensor s = t.comm.allgather(full({}, double(t.comm.rank() * 2 + 1), TensorOptions{DType::f64}));
  MT_CHECK(t, s.dim() == 1 && s.size(0) == R);
  for (int r = 0; r < R; ++r) MT_CHECK(t, s.to_vector()[size_t(r)] == double(2 * r + 1));
}

// Rank s sends count(s, d) rows to rank d; row k of that message is (s, d, k, 7) in f64/f32/i64.
int64_t count(int s, int d) { return (s * 3 + d * 5) % 4; }  // 0..3, uneven, with zeros

void test_alltoallv(Context& t) {
  const int R = t.comm.size(), me = t.comm.rank();
  for (DType dt : {DType::f32, DType::f64, DType::i64}) {
    std::vector<int64_t> send(static_cast<size_t>(R)), recv(static_cast<size_t>(R));
    std::vector<double> rows;
    for (int d = 0; d < R; ++d) {
      send[size_t(d)] = count(me, d);
      recv[size_t(d)] = count(d, me);
      for (int64_t k = 0; k < count(me, d); ++k) rows.insert(rows.end(), {double(me), double(d), double(k), 7.0});
    }
    const int64_t n = int64_t(rows.size()) / 4;
    Tensor in = from_vector(rows, {n, 4}, TensorOptions{DType::f64});
    if (dt != DType::f64) in = to_dtype(in, dt);
    // The receive counts come from the count exchange, as the expert-parallel dispatch does it.
    const std::vector<int64_t> exchanged = t.comm.exchange_counts(send);
    for (int p = 0; p < R; ++p) MT_CHECK(t, exchanged[size_t(p)] == recv[size_t(p)], "count from rank {}", p);
    const Tensor out = t.comm.alltoallv(in, send, recv);
    int64_t total = 0;
    for (int64_t c : recv) total += c;
    MT_CHECK(t, out.dtype() == dt && out.dim() == 2 && out.size(0) == total && out.size(1) == 4, "out {}",
             out.sizes().str());
    if (out.size(0) != total) continue;
    const std::vector<double> got = out.to_vector();
    int64_t row = 0;
    for (int s = 0; s < R; ++s)
      for (int64_t k = 0; k < count(s, me); ++k, ++row) {
        const double* g = &got[size_t(row * 4)];
        MT_CHECK(t, g[0] == s && g[1] == me && g[2] == double(k) && g[3] == 7.0, "{} row {}: ({}, {}, {}, {})",
                 dtype_name(dt), row, g[0], g[1], g[2], g[3]);
      }
  }
  // Every rank sends nothing: still a collective everyone joins.
  const Tensor none = t.comm.alltoallv(zeros({0, 5}), std::vector<int64_t>(size_t(R), 0),
                                       std::vector<int64_t>(size_t(R), 0));
  MT_CHECK(t, none.dim() == 2 && none.size(0) == 0 && none.size(1) == 5);
}

void test_split(Context& t) {
  const int R = t.comm.size(), me = t.comm.rank();
  // Strided groups (the expert-data-parallel pattern): colour = rank % 2, ordered by rank.
  auto sub = t.comm.split(me % 2, me);
  const int expected_size = R == 1 ? 1 : (R + 1 - me % 2) / 2;
  MT_CHECK(t, sub->size() == expected_size, "size {} vs {}", sub->size(), expected_size);
  MT_CHECK(t, sub->rank() == me / 2, "rank {} vs {}", sub->rank(), me / 2);
  Tensor x = full({3}, double(me), TensorOptions{DType::f64});
  sub->allreduce(x);
  double want = 0;
  for (int r = me % 2; r < R; r += 2) want += r;
  MT_CHECK(t, x.to_vector()[0] == want, "{} vs {}", x.to_vector()[0], want);
  sub->barrier();
}

void test_errors(Context& t) {
  const int R = t.comm.size();
  // Caught before any message: every rank raises the same error, no collective is left open.
  bool threw = false;
  try {
    t.comm.alltoallv(zeros({2, 3}), std::vector<int64_t>(size_t(R) + 1, 0), std::vector<int64_t>(size_t(R), 0));
  } catch (const Error& e) {
    threw = std::string(e.what()).find("alltoallv") != std::string::npos;
  }
  MT_CHECK(t, threw, "alltoallv with a wrong count vector must raise an error naming alltoallv");
  threw = false;
  try {
    std::vector<int64_t> c(size_t(R), 0);
    c[0] = 1;  // sums to 1, the input has 2 rows
    t.comm.alltoallv(zeros({2, 3}), c, std::vector<int64_t>(size_t(R), 0));
  } catch (const Error& e) {
    threw = std::string(e.what()).find("2 rows") != std::string::npos;
  }
  MT_CHECK(t, threw, "alltoallv counts that do not cover the input must raise an error");
  threw = false;
  try {
    Tensor x = transpose(zeros({2, 3}), 0, 1);
    t.comm.allreduce(x);
  } catch (const Error& e) {
    threw = std::string(e.what()).find("contiguous") != std::string::npos;
  }
  MT_CHECK(t, threw, "allreduce of a non-contiguous view must raise an error");
  threw = false;
  try {
    Tensor x = zeros({2});
    t.comm.broadcast(x, R);
  } catch (const Error&) {
    threw = true;
  }
  MT_CHECK(t, threw, "broadcast from a root outside the communicator must raise an error");
  t.comm.barrier();
}

void test_local_comm(Context& t) {
  auto local = dist::make_local_comm();
  MT_CHECK(t, local->rank() == 0 && local->size() == 1 && local->name() == "local");
  Tensor x = rank_tensor(t.comm.rank(), 4, DType::f32);
  const std::vector<double> before = x.to_vector();
  local->allreduce(x);
  local->broadcast(x, 0);
  MT_CHECK(t, x.to_vector() == before);
  MT_CHECK(t, local->allgather(x).to_vector() == before);
  MT_CHECK(t, local->alltoallv(reshape(x, {4, 1}), {4}, {4}).to_vector() == before);
  MT_CHECK(t, local->exchange_counts({5})[0] == 5);
  MT_CHECK(t, local->split(3, 0)->size() == 1);
}

void test_timeout_env(Context& t) {
  setenv("AURORA_COLLECTIVE_TIMEOUT_S", "12.5", 1);
  MT_CHECK(t, dist::collective_timeout_from_env() == 12.5);
  setenv("AURORA_COLLECTIVE_TIMEOUT_S", "soon", 1);
  bool threw = false;
  try {
    dist::collective_timeout_from_env();
  } catch (const Error& e) {
    threw = std::string(e.what()).find("AURORA_COLLECTIVE_TIMEOUT_S='soon'") != std::string::npos;
  }
  MT_CHECK(t, threw);
  unsetenv("AURORA_COLLECTIVE_TIMEOUT_S");
  MT_CHECK(t, dist::collective_timeout_from_env() == 600.0);
}

}  // namespace

int main(int argc, char** argv) {
  return mpi_test::run(argc, argv,
                       {{"allreduce", test_allreduce},
                        {"broadcast", test_broadcast},
                        {"allgather", test_allgather},
                        {"alltoallv", test_alltoallv},
                        {"split", test_split},
                        {"errors", test_errors},
                        {"local_comm", test_local_comm},
                        {"timeout_env", test_timeout_env}});
}
