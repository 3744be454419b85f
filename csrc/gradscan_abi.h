// The scanner's data layout, shared by the host code (gcc), the CUDA kernel (nvcc, or NVRTC at first
// use) and the CPU emulation of the kernel in tests/cudaemu. Plain constants only, no includes: NVRTC
// compiles the kernel with this header as its only one.
#pragma once

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

}  // namespace benchsuite
