// Shared declarations of the gradient scanner. Everything here is plain C++: no torch types, so one
// build of the extension serves every torch version (the caller passes pointers and dtype codes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "gradscan_abi.h"

namespace benchsuite {

// Checks a host copy of the table: dtype codes, element counts, data pointers and, when
// `total_chunks` >= 0, the CUDA chunk column [3] and its total. Returns "" or an error message.
std::string check_table(const int64_t* table, int64_t n, int64_t total_chunks);

// Scans n tensors on the CPU with up to num_threads threads. Returns "" or an error message.
std::string scan_cpu(const int64_t* table, int64_t n, int64_t* counts, double* stats, int num_threads);

// ---- CUDA, through the driver API opened at run time (csrc/cuda_driver.cpp) ----------------------
struct CudaDeviceFacts {
  int major = 0, minor = 0, multiprocessors = 0;
  std::string name;
};
struct CudaDriverFacts {
  int driver_version = 0;  // cuDriverGetVersion: the newest CUDA version the driver supports, e.g. 12040
  std::vector<CudaDeviceFacts> devices;
};
// Opens libcuda (once per process) and reads the driver's version and devices. "" or why not.
std::string cuda_driver(CudaDriverFacts* facts);
// Loads a kernel image (cubin, fatbin or PTX) for `device` into its primary context (replacing one
// loaded before) and sizes the grid from the multiprocessor count and the kernel's occupancy.
std::string cuda_load(int device, const void* image, size_t size);
// Enqueues the kernel on `stream` (a CUstream/cudaStream_t as an integer) over a table already in device
// memory and checked on the host (check_table): it adds into `acc` (n*6 words, zero on entry) and sets
// the `zero_words` words at `zero_next` to zero. No host synchronisation. "" or the error. With `sig`
// (n*kSigK float64 in device memory, zero on entry) the signature pass runs instead and adds each tensor's
// signature buckets there as well.
std::string cuda_scan(int device, uintptr_t stream, const int64_t* device_table, int64_t n, int64_t total_chunks,
                      uint64_t* acc, uint64_t* zero_next, int64_t zero_words, double* sig = nullptr);

// The launch geometry: at most `want` blocks (one wave), each with a contiguous run of chunks.
struct CudaGeometry {
  int64_t blocks, per_block;
};
inline CudaGeometry cuda_geometry(int64_t total_chunks, int64_t want) {
  if (want < 1) want = 1;
  const int64_t per_block = (total_chunks + want - 1) / want;
  return {(total_chunks + per_block - 1) / per_block, per_block};
}

}  // namespace benchsuite
