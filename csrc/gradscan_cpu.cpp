// CPU gradient scanner: chunks of every tensor are spread over a few threads; each chunk runs a
// branch-free loop that the compiler vectorises (`omp simd`, plus an AVX2 clone on x86-64).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>
#include <vector>

#include "gradscan.h"

namespace benchsuite {
namespace {

// Chunks are small enough to balance two cores on a 124M-parameter model and large enough that the
// per-chunk bookkeeping vanishes; 32-bit counters inside a chunk cannot overflow.
constexpr int64_t kChunk = int64_t(1) << 16;
// Below this many elements in total a thread costs more than it saves.
constexpr int64_t kSerialBelow = int64_t(1) << 18;

struct Partial {
  int64_t nan = 0, posinf = 0, neginf = 0, zero = 0;
  double sumsq = 0.0, absmax = 0.0;
};

// Not under TSan: an ifunc resolver runs before the TSan runtime is up and crashes (the sanitizer
// builds of tests/cudaemu compile this file).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define BS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define BS_CLONES
#endif

template <typename To, typename From>
inline To bits_as(From x) {
  static_assert(sizeof(To) == sizeof(From), "size mismatch");
  return __builtin_bit_cast(To, x);
}

inline float bf16_to_float(uint16_t h) { return bits_as<float>(uint32_t(h) << 16); }

// IEEE half to float without F16C: the 15 low bits placed in a float's exponent/mantissa and
// rebiased by 2^112 give every finite magnitude exactly (subnormals included); Inf/NaN are rebuilt.
inline float half_to_float(uint16_t h) {
  const uint32_t em = h & 0x7fffu;
  const uint32_t mag = bits_as<uint32_t>(bits_as<float>(em << 13) * 0x1p112f);
  const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);
  return bits_as<float>((em >= 0x7c00u ? special : mag) | (uint32_t(h & 0x8000u) << 16));
}

inline float f32_load(float x) { return x; }

// Squares are taken and summed in double. Float squares overflow for finite values >= ~1.8e19 and
// fall into float's subnormal range below ~1e-19; float running sums drift by ~n * 2^-24 relative (the
// CPU and CUDA sums must agree within 1e-6). Double is exact for every square of a float, half or
// bfloat16 and keeps the sum's error near n * 1e-16. It costs about a third of the float loop's speed.
#define BS_DEFINE_SCAN(NAME, T, LOAD)                                                             \
  BS_CLONES void NAME(const T* p, int64_t n, Partial& out) {                                     \
    const float inf = std::numeric_limits<float>::infinity();                                    \
    int32_t zero = 0, bad = 0;                                                                    \
    double ss = 0.0;                                                                              \
    float am = 0.0f;                                                                              \
    _Pragma("omp simd reduction(+ : zero, bad, ss) reduction(max : am)")                         \
    for (int64_t i = 0; i < n; ++i) {                                                             \
      const float a = std::fabs(LOAD(p[i]));                                                      \
      const bool fin = a < inf; /* NaN fails the comparison too */                                \
      const float f = fin ? a : 0.0f;                                                             \
      bad += !fin;                                                                                \
      zero += (a == 0.0f);                                                                        \
      ss += double(f) * double(f);                                                                \
      am = am > f ? am : f;                                                                       \
    }                                                                                             \
    if (bad) {                                                                                    \
      int32_t nan = 0, pinf = 0;                                                                  \
      _Pragma("omp simd reduction(+ : nan, pinf)")                                               \
      for (int64_t i = 0; i < n; ++i) {                                                           \
        const float v = LOAD(p[i]);                                                               \
        nan += (v != v);                                                                          \
        pinf += (v == inf);                                                                       \
      }                                                                                           \
      out.nan += nan, out.posinf += pinf, out.neginf += bad - nan - pinf;                         \
    }                                                                                             \
    out.zero += zero;                                                                             \
    out.sumsq += ss;                                                                              \
    out.absmax = std::max(out.absmax, double(am));                                                \
  }

BS_DEFINE_SCAN(scan_f32, float, f32_load)
BS_DEFINE_SCAN(scan_f16, uint16_t, half_to_float)
BS_DEFINE_SCAN(scan_bf16, uint16_t, bf16_to_float)

// float64 stays in float64 throughout: squares and sums.
BS_CLONES void scan_f64(const double* p, int64_t n, Partial& out) {
  int32_t nan = 0, pinf = 0, ninf = 0, zero = 0;
  double ss = 0.0, am = 0.0;
  const double inf = std::numeric_limits<double>::infinity();
#pragma omp simd reduction(+ : nan, pinf, ninf, zero, ss) reduction(max : am)
  for (int64_t i = 0; i < n; ++i) {
    const double v = p[i];
    const double a = std::fabs(v);
    nan += (v != v);
    pinf += (v == inf);
    ninf += (v == -inf);
    zero += (v == 0.0);
    const double f = a < inf ? a : 0.0;
    ss += f * f;
    am = am > f ? am : f;
  }
  out.nan += nan, out.posinf += pinf, out.neginf += ninf, out.zero += zero;
  out.sumsq += ss;
  out.absmax = std::max(out.absmax, am);
}

struct Chunk {
  int64_t tensor, begin, count;
};

void scan_chunk(const int64_t* table, const Chunk& c, Partial& out) {
  const int64_t* row = table + c.tensor * kTableCols;
  const char* base = reinterpret_cast<const char*>(static_cast<uintptr_t>(row[0]));
  switch (row[2]) {
    case kFloat32: scan_f32(reinterpret_cast<const float*>(base) + c.begin, c.count, out); break;
    case kFloat64: scan_f64(reinterpret_cast<const double*>(base) + c.begin, c.count, out); break;
    case kFloat16: scan_f16(reinterpret_cast<const uint16_t*>(base) + c.begin, c.count, out); break;
    case kBFloat16: scan_bf16(reinterpret_cast<const uint16_t*>(base) + c.begin, c.count, out); break;
  }
}

}  // namespace

std::string check_table(const int64_t* table, int64_t n, int64_t total_chunks) {
  if (n < 0) return "negative tensor count";
  if (n > 0 && table == nullptr) return "null table";
  int64_t chunks = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t* row = table + t * kTableCols;
    const int64_t numel = row[1];
    if (row[2] < kFloat32 || row[2] > kFloat64)
      return "tensor " + std::to_string(t) + " has unknown dtype code " + std::to_string(row[2]);
    if (numel < 0) return "tensor " + std::to_string(t) + " has a negative element count";
    if (numel > 0 && row[0] == 0) return "tensor " + std::to_string(t) + " has a null data pointer";
    if (total_chunks >= 0) {
      if (row[3] != chunks)
        return "tensor " + std::to_string(t) + " has first chunk " + std::to_string(row[3]) + ", expected " +
               std::to_string(chunks);
      chunks += numel / kCudaChunkElems + (numel % kCudaChunkElems != 0);
    }
  }
  if (total_chunks >= 0 && total_chunks != chunks)
    return "total_chunks is " + std::to_string(total_chunks) + ", the table holds " + std::to_string(chunks);
  return "";
}

std::string scan_cpu(const int64_t* table, int64_t n, int64_t* counts, double* stats, int num_threads) {
  const std::string bad = check_table(table, n, -1);
  if (!bad.empty()) return bad;
  std::vector<Chunk> chunks;
  int64_t total = 0;
  for (int64_t t = 0; t < n; ++t) {
    const int64_t* row = table + t * kTableCols;
    const int64_t numel = row[1];
    for (int64_t b = 0; b < numel; b += kChunk) chunks.push_back({t, b, std::min(kChunk, numel - b)});
    total += numel;
  }
  std::vector<Partial> partial(chunks.size());
  int workers = std::max(1, num_threads);
  if (total < kSerialBelow) workers = 1;
  workers = int(std::min<int64_t>(workers, int64_t(chunks.size())));

  if (workers <= 1) {
    for (size_t i = 0; i < chunks.size(); ++i) scan_chunk(table, chunks[i], partial[i]);
  } else {
    // Dynamic hand-out of chunks: tensors of very different sizes still balance.
    std::atomic<size_t> next{0};
    auto work = [&]() {
      for (size_t i = next.fetch_add(1); i < chunks.size(); i = next.fetch_add(1))
        scan_chunk(table, chunks[i], partial[i]);
    };
    std::vector<std::thread> pool;
    pool.reserve(workers - 1);
    for (int w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto& th : pool) th.join();
  }
  // Merge in chunk order, so the result does not depend on which thread ran what.
  for (size_t i = 0; i < chunks.size(); ++i) {
    const int64_t t = chunks[i].tensor;
    int64_t* c = counts + t * kCountCols;
    double* s = stats + t * kStatCols;
    c[0] += partial[i].nan, c[1] += partial[i].posinf, c[2] += partial[i].neginf, c[3] += partial[i].zero;
    s[0] += partial[i].sumsq;
    s[1] = std::max(s[1], partial[i].absmax);
  }
  return "";
}

}  // namespace benchsuite
