// cudaemu: executes CUDA C++ kernels on the CPU for tests. Test-only; never part of the wheel.
//
// Model: every CUDA thread is a fiber with its own stack; the fibers of one block run on one OS
// thread, switched by a scheduler at every synchronisation point (__syncthreads, warp shuffles and
// votes, and, in the random schedule, atomics). Blocks are handed out to 1-N OS threads. Block
// barriers and warp operations really wait for every participant; atomics are real (relaxed)
// atomics; `__shared__` variables are per OS thread, i.e. per running block.
//
// Faults abort with a message: misaligned vector loads through __ldg, a __syncthreads not reached
// by the whole block (or reached at different lines), a shuffle naming a lane that does not exist or
// has exited, a partial mask, deadlock. Schedules (cudaemu::set_schedule or CUDAEMU_SCHEDULE):
// "inorder", "reverse", "random:SEED", "starve:TID" (that thread only runs when nothing else can).
//
// Builds under ASan (+UBSan) and TSan: fiber switches are announced to the sanitizers, and TSan is
// told about happens-before only where CUDA promises it (block start/end, barriers, warp ops), so a
// missing barrier or a plain store racing another block's atomic is reported.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------------------------------------
// Vector and index types.
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 { unsigned int x, y, z; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
struct alignas(8) uint2 { unsigned int x, y; };
struct alignas(8) int2 { int x, y; };
struct alignas(8) float2 { float x, y; };

// ---------------------------------------------------------------------------------------------
// Qualifiers.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __constant__
// One OS thread runs one block at a time, so a thread-local static is the block's shared memory.
#define __shared__ static thread_local

constexpr int warpSize = 32;

namespace cudaemu {

struct Block;
struct Fiber {
  void* sp = nullptr;            // saved stack pointer while switched out
  char* stack = nullptr;         // lowest usable address
  size_t stack_size = 0;
  uint3 tid{0, 0, 0};
  uint3 block_idx{0, 0, 0};
  dim3 block_dim, grid_dim;
  unsigned int linear = 0;       // linear thread index within the block
  int state = 0;                 // see kReady... in cudaemu.cpp (touched with relaxed atomics)
  int wait_line = 0;
  Block* block = nullptr;
  void* tsan = nullptr;          // TSan fiber handle
  void* asan_fake = nullptr;     // ASan fake-stack save slot
};

Fiber& self();  // the running CUDA thread (aborts outside a kernel)

// Synchronisation points (implemented in cudaemu.cpp).
void syncthreads(int line);
// Exchanges one 64-bit value per lane of the caller's warp; returns the warp's 32 slots (valid until
// the warp's next exchange). Aborts on a partial mask, a divergent call site or an absent lane.
const uint64_t* warp_exchange(unsigned int mask, uint64_t value, int line, const char* what);
unsigned int warp_lanes();  // lanes that exist in the caller's warp
void maybe_yield();         // a scheduling point in the random schedule
[[noreturn]] void fail(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// Configuration: schedule name, OS threads for blocks, SM count and occupancy the runtime reports.
void set_schedule(const std::string& schedule);
void set_workers(int workers);
std::string schedule();
int workers();

// Runs body() once per CUDA thread of the grid.
void run_grid(dim3 grid, dim3 block, const std::function<void()>& body);

template <typename... P>
struct Launch {
  void (*kernel)(P...);
  dim3 grid, block;
  template <typename... A>
  void operator()(A&&... args) const {
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);  // copied once per thread
    auto k = kernel;
    run_grid(grid, block, [&]() { std::apply(k, params); });
  }
};
template <typename... P>
Launch<P...> launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t /*shmem*/ = 0, void* /*stream*/ = nullptr) {
  return Launch<P...>{kernel, grid, block};
}

template <typename T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}

enum ShflKind { kIdx, kUp, kDown, kXor };
template <typename T>
inline T shfl(unsigned int mask, T var, int arg, int width, ShflKind kind, int line, const char* what) {
  if (width <= 0 || width > 32 || (width & (width - 1))) fail("%s at line %d: width %d is not a power of two <= 32", what, line, width);
  const unsigned int lane = self().linear & 31u;
  const unsigned int seg = lane & ~unsigned(width - 1), in = lane & unsigned(width - 1);
  long src = lane;
  switch (kind) {
    case kIdx: src = seg + (unsigned(arg) & unsigned(width - 1)); break;
    case kUp: src = (long(in) - arg >= 0) ? long(lane) - arg : long(lane); break;
    case kDown: src = (long(in) + arg < width) ? long(lane) + arg : long(lane); break;
    case kXor: {
      const unsigned int x = lane ^ unsigned(arg);
      src = (x & ~unsigned(width - 1)) == seg || unsigned(arg) >= unsigned(width) ? long(x) : long(lane);
      break;
    }
  }
  if (src < 0 || src >= long(warp_lanes()))
    fail("%s at line %d: lane %u reads lane %ld, which does not exist (its warp has %u lanes)", what, line, lane, src,
         warp_lanes());
  const uint64_t* slots = warp_exchange(mask, to_bits(var), line, what);
  return from_bits<T>(__atomic_load_n(&slots[src], __ATOMIC_RELAXED));
}

template <typename T>
inline T atomic_cas_loop(T* p, T v, T (*op)(T, T)) {
  maybe_yield();
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "atomic size");
  using U = std::conditional_t<sizeof(T) == 8, uint64_t, uint32_t>;
  U* q = reinterpret_cast<U*>(p);
  U old = __atomic_load_n(q, __ATOMIC_RELAXED);
  for (;;) {
    T o;
    std::memcpy(&o, &old, sizeof(T));
    const T n = op(o, v);
    U nb;
    std::memcpy(&nb, &n, sizeof(T));
    if (__atomic_compare_exchange_n(q, &old, nb, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return o;
  }
}

template <typename T>
constexpr size_t vector_alignment() {
  return (std::is_same<T, uint4>::value || std::is_same<T, int4>::value || std::is_same<T, float4>::value ||
          std::is_same<T, double2>::value)
             ? 16
             : (std::is_same<T, uint2>::value || std::is_same<T, int2>::value || std::is_same<T, float2>::value)
                   ? 8
                   : alignof(T);
}

}  // namespace cudaemu

// ---------------------------------------------------------------------------------------------
// Built-in variables.
#define threadIdx (::cudaemu::self().tid)
#define blockIdx (::cudaemu::self().block_idx)
#define blockDim (::cudaemu::self().block_dim)
#define gridDim (::cudaemu::self().grid_dim)

// ---------------------------------------------------------------------------------------------
// Synchronisation and warp operations (full masks only: what this project's kernels use).
inline void __syncthreads(int line_ = __builtin_LINE()) { ::cudaemu::syncthreads(line_); }
inline void __syncwarp(unsigned int mask = 0xffffffffu, int line_ = __builtin_LINE()) {
  ::cudaemu::warp_exchange(mask, 0, line_, "__syncwarp");
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline unsigned int __activemask() { return 0xffffffffu; }

template <typename T>
inline T __shfl_sync(unsigned int mask, T var, int src, int width = warpSize, int line_ = __builtin_LINE()) {
  return ::cudaemu::shfl(mask, var, src, width, ::cudaemu::kIdx, line_, "__shfl_sync");
}
template <typename T>
inline T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize, int line_ = __builtin_LINE()) {
  return ::cudaemu::shfl(mask, var, int(delta), width, ::cudaemu::kUp, line_, "__shfl_up_sync");
}
template <typename T>
inline T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize,
                          int line_ = __builtin_LINE()) {
  return ::cudaemu::shfl(mask, var, int(delta), width, ::cudaemu::kDown, line_, "__shfl_down_sync");
}
template <typename T>
inline T __shfl_xor_sync(unsigned int mask, T var, int lane_mask, int width = warpSize, int line_ = __builtin_LINE()) {
  return ::cudaemu::shfl(mask, var, lane_mask, width, ::cudaemu::kXor, line_, "__shfl_xor_sync");
}
inline unsigned int __ballot_sync(unsigned int mask, int pred, int line_ = __builtin_LINE()) {
  const uint64_t* s = ::cudaemu::warp_exchange(mask, pred != 0, line_, "__ballot_sync");
  unsigned int b = 0;
  for (unsigned int l = 0; l < ::cudaemu::warp_lanes(); ++l)
    if (__atomic_load_n(&s[l], __ATOMIC_RELAXED)) b |= 1u << l;
  return b;
}
inline int __any_sync(unsigned int mask, int pred, int line_ = __builtin_LINE()) {
  return __ballot_sync(mask, pred, line_) != 0;
}
inline int __all_sync(unsigned int mask, int pred, int line_ = __builtin_LINE()) {
  const unsigned int n = ::cudaemu::warp_lanes();
  return __ballot_sync(mask, pred, line_) == (n == 32 ? 0xffffffffu : ((1u << n) - 1));
}

// ---------------------------------------------------------------------------------------------
// Loads: __ldg checks the alignment the GPU would fault on.
template <typename T>
inline T __ldg(const T* p) {
  constexpr size_t a = ::cudaemu::vector_alignment<T>();
  if (reinterpret_cast<uintptr_t>(p) % a != 0)
    ::cudaemu::fail("misaligned %zu-byte load through __ldg at address %p (needs %zu-byte alignment; thread %u)",
                    sizeof(T), static_cast<const void*>(p), a, ::cudaemu::self().linear);
  return *p;
}

// ---------------------------------------------------------------------------------------------
// Atomics: real atomics, relaxed like CUDA's.
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  ::cudaemu::maybe_yield();
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
  ::cudaemu::maybe_yield();
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline int atomicAdd(int* p, int v) {
  ::cudaemu::maybe_yield();
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}
inline double atomicAdd(double* p, double v) {
  return ::cudaemu::atomic_cas_loop<double>(p, v, [](double a, double b) { return a + b; });
}
inline float atomicAdd(float* p, float v) {
  return ::cudaemu::atomic_cas_loop<float>(p, v, [](float a, float b) { return a + b; });
}
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
  return ::cudaemu::atomic_cas_loop<unsigned long long>(p, v, [](unsigned long long a, unsigned long long b) {
    return a > b ? a : b;
  });
}
inline unsigned int atomicMax(unsigned int* p, unsigned int v) {
  return ::cudaemu::atomic_cas_loop<unsigned int>(p, v, [](unsigned int a, unsigned int b) { return a > b ? a : b; });
}
inline int atomicMax(int* p, int v) {
  return ::cudaemu::atomic_cas_loop<int>(p, v, [](int a, int b) { return a > b ? a : b; });
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  return ::cudaemu::atomic_cas_loop<unsigned long long>(p, v, [](unsigned long long a, unsigned long long b) {
    return a < b ? a : b;
  });
}
inline unsigned int atomicOr(unsigned int* p, unsigned int v) {
  ::cudaemu::maybe_yield();
  return __atomic_fetch_or(p, v, __ATOMIC_RELAXED);
}
inline unsigned long long atomicExch(unsigned long long* p, unsigned long long v) {
  ::cudaemu::maybe_yield();
  return __atomic_exchange_n(p, v, __ATOMIC_RELAXED);
}
inline unsigned long long atomicCAS(unsigned long long* p, unsigned long long cmp, unsigned long long v) {
  ::cudaemu::maybe_yield();
  __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}

// ---------------------------------------------------------------------------------------------
// Bit casts and math.
inline float __uint_as_float(unsigned int x) { return ::cudaemu::from_bits<float>(x); }
inline unsigned int __float_as_uint(float x) { return uint32_t(::cudaemu::to_bits(x)); }
inline float __int_as_float(int x) { return ::cudaemu::from_bits<float>(uint32_t(x)); }
inline int __float_as_int(float x) { return int(uint32_t(::cudaemu::to_bits(x))); }
inline long long __double_as_longlong(double x) { return (long long)::cudaemu::to_bits(x); }
inline double __longlong_as_double(long long x) { return ::cudaemu::from_bits<double>(uint64_t(x)); }
inline double __hiloint2double(int hi, int lo) {
  return ::cudaemu::from_bits<double>((uint64_t(uint32_t(hi)) << 32) | uint32_t(lo));
}
inline int __double2hiint(double x) { return int(uint32_t(::cudaemu::to_bits(x) >> 32)); }
inline int __double2loint(double x) { return int(uint32_t(::cudaemu::to_bits(x))); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }

// CUDA's integer min/max overloads (floating point goes to fmin/fmax: NaN-ignoring like the GPU's).
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point<C>::value) return std::fmin(C(a), C(b));
  else return C(a) < C(b) ? C(a) : C(b);
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point<C>::value) return std::fmax(C(a), C(b));
  else return C(a) > C(b) ? C(a) : C(b);
}
