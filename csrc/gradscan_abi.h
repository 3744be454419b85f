// The scanner's data layout, shared by the host code (gcc), the CUDA kernel (nvcc, or NVRTC at first
// use) and the CPU emulation of the kernel in tests/cudaemu. Plain constants and constexpr functions only, no
// includes: NVRTC compiles the kernel with this header as its only one.
#pragma once

// The signature's hash functions are shared by the kernel and the host (gcc, cudaemu's g++).
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define BENCHSUITE_HD __host__ __device__
#else
#define BENCHSUITE_HD
#endif

namespace benchsuite {

// Dtype codes of the tensor table. Keep in sync with benchsuite/gradscan/_native.py.
enum DType : long long { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// The tensor table is a row-major int64 array [n][4]:
//   [0] address of the first element, [1] element count, [2] dtype code, [3] first chunk (CUDA only).
constexpr int kTableCols = 4;

// Outputs, per tensor i (zero-initialised, accumulated into):
//   counts[i*4 + 0..3] = NaN, +Inf, -Inf, exact zeros      (int64)
//   stats[i*2 + 0..1]  = sum of squares of finite values, max |x| of finite values (float64)
// The CUDA kernel writes both into one buffer of n*6 8-byte words: the n*4 counts, then the n*2 stats.
constexpr int kCountCols = 4;
constexpr int kStatCols = 2;
constexpr int kOutWords = kCountCols + kStatCols;

// Elements per unit of CUDA work; the caller uses it to fill column [3] of the table.
constexpr long long kCudaChunkElems = 1LL << 16;

// Threads per block of the CUDA kernel (the host needs it for the launch and the occupancy query).
constexpr int kCudaThreads = 256;

// The gradient signature (benchsuite/gradscan/signature.py has the definition and its reference): K
// float64 buckets per tensor, a signed count sketch of its finite values. Element i of a tensor:
//   chunk c = i >> 16 (kCudaChunkElems), group q = (i & 0xffff) >> 2, position p = i & 3,
//   slot s = q & 255, m = q >> 8, tile T = c * 256 + s;
//   sign: bit (m >> 1) of sig_word(T, m & 1) set gives -1;  bucket: 4 * sig_class(T) + ((p + s) & 3).
// The sketch is defined by the index alone, so any device and any launch give the same numbers (up to
// float rounding).
constexpr int kSigK = 128;
constexpr int kSigClasses = 32;
constexpr unsigned int kSigSeed = 0x5EEDB5C0u;
constexpr unsigned int kSigClassMul = 0x9E3779B1u;

// lowbias32 (a 32-bit integer finaliser): the sign words.
BENCHSUITE_HD constexpr unsigned int sig_mix32(unsigned int x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}
// Word `parity` (0 or 1) of tile T: bits 0..31 give the signs of m = 2 * bit + parity.
BENCHSUITE_HD constexpr unsigned int sig_word(long long tile, unsigned int parity) {
  return sig_mix32((unsigned int)(2 * tile + parity) ^ kSigSeed);
}
// The tile's class: 32 consecutive tiles (aligned) take the 32 classes in turn, from an offset that is a
// multiplicative hash of their block, so a tensor of up to 128 elements has one bucket per element.
BENCHSUITE_HD constexpr unsigned int sig_class(long long tile) {
  return ((unsigned int)tile + (((unsigned int)(tile >> 5) * kSigClassMul) >> 27)) & 31u;
}

}  // namespace benchsuite
