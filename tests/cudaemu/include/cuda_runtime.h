// cudaemu's stand-in for the CUDA runtime header: the API subset this project's host code calls.
#pragma once
#include "../cudaemu.h"

typedef struct CUstream_st* cudaStream_t;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
};
typedef cudaError_t cudaError;

enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxThreadsPerMultiProcessor = 39,
};

namespace cudaemu {
void set_last_error(cudaError_t e);
int env_int(const char* name, int fallback);
// The launch check the runtime does: returns the error a real launch would record.
cudaError_t check_launch(dim3 grid, dim3 block);
}  // namespace cudaemu

const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t);
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);

// Blocks of `block_size` threads one multiprocessor holds: 2048 threads, at most 32 blocks
// (CUDAEMU_OCCUPANCY overrides). Registers and shared memory are not modelled.
template <typename K>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, K /*kernel*/, int block_size, size_t /*smem*/) {
  if (!blocks || block_size <= 0 || block_size > 1024) return cudaErrorInvalidValue;
  const int fallback = 2048 / block_size < 32 ? 2048 / block_size : 32;
  *blocks = ::cudaemu::env_int("CUDAEMU_OCCUPANCY", fallback);
  return cudaSuccess;
}

// The project's kernels launch through this macro; with nvcc it is the <<<...>>> syntax.
#define BENCHSUITE_LAUNCH(kernel, grid, block, shmem, stream) \
  ::cudaemu::launch(kernel, grid, block, shmem, static_cast<void*>(stream))
