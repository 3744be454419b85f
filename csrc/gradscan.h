// Shared declarations of the gradient scanner. Everything here is plain C++: no torch types, so one
// build of the extension serves every torch version (the caller passes pointers and dtype codes).
#pragma once

#include <cstdint>
#include <string>

namespace benchsuite {

// Dtype codes of the tensor table. Keep in sync with benchsuite/gradscan/_native.py.
enum DType : int64_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// The tensor table is a row-major int64 array [n][4]:
//   [0] address of the first element, [1] element count, [2] dtype code, [3] first chunk (CUDA only).
constexpr int kTableCols = 4;

// Outputs, per tensor i (zero-initialised by the caller, accumulated into):
//   counts[i*4 + 0..3] = NaN, +Inf, -Inf, exact zeros      (int64)
//   stats[i*2 + 0..1]  = sum of squares of finite values, max |x| of finite values (float64)
constexpr int kCountCols = 4;
constexpr int kStatCols = 2;

// Elements per unit of CUDA work; the caller uses it to fill column [3] of the table.
constexpr int64_t kCudaChunkElems = int64_t(1) << 16;

// Checks a host copy of the table: dtype codes, element counts, data pointers and, when
// `total_chunks` >= 0, the CUDA chunk column [3] and its total. Returns "" or an error message.
std::string check_table(const int64_t* table, int64_t n, int64_t total_chunks);

// Scans n tensors on the CPU with up to num_threads threads. Returns "" or an error message.
std::string scan_cpu(const int64_t* table, int64_t n, int64_t* counts, double* stats, int num_threads);

#ifdef BENCHSUITE_WITH_CUDA
// Enqueues one kernel on `stream` (a cudaStream_t given as an integer) over a table already in device
// memory, after checking `host_table`, a host copy of the same rows (check_table). No host
// synchronisation. Returns "" or an error message (a bad table or the CUDA error).
std::string scan_cuda(const int64_t* host_table, const int64_t* device_table, int64_t n, int64_t total_chunks,
                      int64_t* counts, double* stats, int device, uintptr_t stream);
// Number of CUDA devices the driver reports, or a negative value with `error` set.
int cuda_device_count(std::string* error);
#endif

}  // namespace benchsuite
