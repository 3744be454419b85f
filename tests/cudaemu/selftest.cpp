// Checks of cudaemu itself: warp operations, barriers, shared memory and atomics give CUDA's results,
// and each fault the emulator promises to catch aborts with a message. `selftest MODE`.
#include <cuda_runtime.h>

#include <cstdio>
#include <string>

namespace {

unsigned long long g_count = 0;
unsigned int g_errors = 0;

void expect(bool ok) {
  if (!ok) atomicAdd(&g_errors, 1u);
}

__global__ void ok_kernel(unsigned long long* sums) {
  __shared__ unsigned long long partial[8];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  expect(__shfl_sync(0xffffffffu, lane * 3, 7) == 21);
  expect(__shfl_down_sync(0xffffffffu, lane, 5) == (lane + 5 < 32 ? lane + 5 : lane));
  expect(__shfl_up_sync(0xffffffffu, lane, 2) == (lane >= 2 ? lane - 2 : lane));
  expect(__shfl_xor_sync(0xffffffffu, lane, 1) == (lane ^ 1));
  expect(__shfl_down_sync(0xffffffffu, lane, 2, 8) == ((lane & 7) + 2 < 8 ? lane + 2 : lane));
  expect(__shfl_sync(0xffffffffu, 1.5 * lane, 31) == 46.5);
  expect(__ballot_sync(0xffffffffu, lane & 1) == 0xaaaaaaaau);
  expect(__any_sync(0xffffffffu, lane == 9) && !__all_sync(0xffffffffu, lane != 9));
  unsigned long long v = threadIdx.x + 1;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long s = 0;
    for (int w = 0; w < int(blockDim.x / 32); ++w) s += partial[w];
    sums[blockIdx.x] = s;
  }
  __syncthreads();
  atomicAdd(&g_count, 1ull);
  atomicMax(&sums[gridDim.x], (unsigned long long)(blockIdx.x * 1000 + threadIdx.x));
}

__global__ void misaligned_kernel(const char* p) { (void)__ldg(reinterpret_cast<const uint4*>(p + 4)); }
__global__ void partial_barrier_kernel() {
  if (threadIdx.x < 10) return;
  __syncthreads();
}
__global__ void divergent_barrier_kernel() {
  if (threadIdx.x & 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}
__global__ void absent_lane_kernel() {
  if (threadIdx.x == 5) return;
  (void)__shfl_down_sync(0xffffffffu, 1, 1);
}
__global__ void partial_warp_kernel() { (void)__shfl_down_sync(0xffffffffu, 1, 1); }
__global__ void partial_mask_kernel() { (void)__shfl_down_sync(0x0000ffffu, 1, 1); }
__global__ void deadlock_kernel() {
  if ((threadIdx.x & 31) == 0) __syncthreads();
  else (void)__shfl_down_sync(0xffffffffu, 1, 1);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "ok";
  if (argc > 2) cudaemu::set_schedule(argv[2]);
  if (argc > 3) cudaemu::set_workers(std::stoi(argv[3]));
  if (mode == "ok") {
    const unsigned int blocks = 37, threads = 256;
    unsigned long long sums[blocks + 1] = {};
    BENCHSUITE_LAUNCH(ok_kernel, dim3(blocks), dim3(threads), 0, nullptr)(sums);
    for (unsigned int b = 0; b < blocks; ++b)
      if (sums[b] != threads * (threads + 1) / 2) ++g_errors;
    if (sums[blocks] != (blocks - 1) * 1000 + threads - 1 || g_count != blocks * threads) ++g_errors;
    BENCHSUITE_LAUNCH(ok_kernel, dim3(1), dim3(2048), 0, nullptr)(sums);  // too many threads: an error, no run
    if (cudaGetLastError() != cudaErrorInvalidConfiguration || g_count != blocks * threads) ++g_errors;
    printf("%s %u\n", g_errors ? "FAILED" : "ok", g_errors);
    return g_errors ? 1 : 0;
  }
  alignas(16) static char buf[64] = {};
  if (mode == "misaligned") BENCHSUITE_LAUNCH(misaligned_kernel, dim3(1), dim3(32), 0, nullptr)(buf);
  else if (mode == "partial_barrier") BENCHSUITE_LAUNCH(partial_barrier_kernel, dim3(2), dim3(64), 0, nullptr)();
  else if (mode == "divergent_barrier") BENCHSUITE_LAUNCH(divergent_barrier_kernel, dim3(1), dim3(64), 0, nullptr)();
  else if (mode == "absent_lane") BENCHSUITE_LAUNCH(absent_lane_kernel, dim3(1), dim3(64), 0, nullptr)();
  else if (mode == "partial_warp") BENCHSUITE_LAUNCH(partial_warp_kernel, dim3(1), dim3(48), 0, nullptr)();
  else if (mode == "partial_mask") BENCHSUITE_LAUNCH(partial_mask_kernel, dim3(1), dim3(32), 0, nullptr)();
  else if (mode == "deadlock") BENCHSUITE_LAUNCH(deadlock_kernel, dim3(1), dim3(64), 0, nullptr)();
  else {
    fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
  }
  printf("no fault detected\n");
  return 0;
}
