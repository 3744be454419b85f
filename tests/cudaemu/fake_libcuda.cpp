// A libcuda.so.1 for tests: the driver API entry points csrc/cuda_driver.cpp opens, answered on the CPU.
// cuLaunchKernel runs csrc/gradscan_kernel.cu compiled as C++ against cudaemu, with the arguments
// unpacked the way the driver unpacks them for that kernel's signature, so the extension's real host
// code (dlopen, symbol lookup, contexts, module loading, occupancy, grid and argument marshalling) runs
// end to end. "Device memory" is host memory here. Nothing here is in the wheel.
//
// Environment: FAKE_CUDA_DRIVER_VERSION (default 12040), FAKE_CUDA_CC (default 80), CUDAEMU_SMS.
// cuModuleLoadData accepts what a driver would be given (an ELF cubin, a fatbin or PTX text) and records
// which; fake_cuda_report() returns what was seen, for the test to check.
#include <cuda_runtime.h>  // cudaemu's stand-ins (tests/cudaemu/include)
#include <cuda_fp16.h>
#define BENCHSUITE_HALF_TO_FLOAT(h) ::cudaemu::half_bits_to_float(h)
#include "gradscan_kernel.cu"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace {
std::mutex mu;
int depth = 0;             // contexts pushed and not popped
int launches = 0, bad_context_launches = 0, sig_launches = 0;
std::string loaded_kind = "none", last_function;
int ctx_token = 0, module_token = 0, function_token = 0, sig_function_token = 0;

int env(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}
}  // namespace

extern "C" {
int cuInit(unsigned int) { return 0; }
int cuDriverGetVersion(int* v) { *v = env("FAKE_CUDA_DRIVER_VERSION", 12040); return 0; }
int cuDeviceGetCount(int* n) { *n = 1; return 0; }
int cuDeviceGet(int* dev, int ordinal) { if (ordinal != 0) return 101; *dev = 0; return 0; }
int cuDeviceGetAttribute(int* value, int attr, int) {
  const int cc = env("FAKE_CUDA_CC", 80);
  if (attr == 16) *value = env("CUDAEMU_SMS", 4);
  else if (attr == 75) *value = cc / 10;
  else if (attr == 76) *value = cc % 10;
  else return 1;
  return 0;
}
int cuDeviceGetName(char* name, int len, int) { std::snprintf(name, size_t(len), "cudaemu fake GPU"); return 0; }
int cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = &ctx_token; return 0; }
int cuCtxPushCurrent_v2(void* ctx) {
  if (ctx != &ctx_token) return 201;  // CUDA_ERROR_INVALID_CONTEXT
  std::lock_guard<std::mutex> l(mu);
  ++depth;
  return 0;
}
int cuCtxPopCurrent_v2(void** ctx) {
  std::lock_guard<std::mutex> l(mu);
  if (depth == 0) return 201;
  --depth;
  if (ctx) *ctx = &ctx_token;
  return 0;
}
int cuModuleLoadData(void** module, const void* image) {
  const unsigned char* p = static_cast<const unsigned char*>(image);
  std::lock_guard<std::mutex> l(mu);
  if (depth == 0) return 201;
  uint32_t magic = 0;
  std::memcpy(&magic, p, 4);
  if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F') loaded_kind = "cubin";
  else if (magic == 0xba55ed50u) loaded_kind = "fatbin";
  else if (std::strncmp(reinterpret_cast<const char*>(p), "//", 2) == 0) loaded_kind = "ptx";
  else return 200;  // CUDA_ERROR_INVALID_IMAGE
  *module = &module_token;
  return 0;
}
int cuModuleUnload(void*) { return 0; }
int cuModuleGetFunction(void** fn, void* module, const char* name) {
  if (module != &module_token) return 400;
  if (std::strcmp(name, "benchsuite_gradscan") == 0) *fn = &function_token, last_function = name;
  else if (std::strcmp(name, "benchsuite_gradscan_sig") == 0) *fn = &sig_function_token;
  else return 500;  // CUDA_ERROR_NOT_FOUND
  return 0;
}
int cuOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void* fn, int block_size, size_t smem) {
  if (fn == &sig_function_token)
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, benchsuite_gradscan_sig, block_size, smem) ==
                   cudaSuccess ? 0 : 1;
  if (fn != &function_token) return 400;
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, benchsuite_gradscan, block_size, smem) == cudaSuccess
             ? 0 : 1;
}
int cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shmem, void* stream, void** params, void** extra) {
  {
    std::lock_guard<std::mutex> l(mu);
    ++launches;
    if (depth == 0) { ++bad_context_launches; return 201; }
  }
  if ((fn != &function_token && fn != &sig_function_token) || params == nullptr || extra != nullptr || gy != 1 ||
      gz != 1 || by != 1 || bz != 1)
    return 1;  // CUDA_ERROR_INVALID_VALUE
  // The kernel's parameters, in its order and types (csrc/gradscan_kernel.cu: benchsuite_gradscan).
  const long long* table = *static_cast<const long long* const*>(params[0]);
  const long long n = *static_cast<const long long*>(params[1]);
  const long long total = *static_cast<const long long*>(params[2]);
  const long long per_block = *static_cast<const long long*>(params[3]);
  unsigned long long* acc = *static_cast<unsigned long long* const*>(params[4]);
  unsigned long long* next = *static_cast<unsigned long long* const*>(params[5]);
  const long long zero_words = *static_cast<const long long*>(params[6]);
  if (fn == &sig_function_token) {  // benchsuite_gradscan_sig: one more parameter
    double* sig = *static_cast<double* const*>(params[7]);
    {
      std::lock_guard<std::mutex> l(mu);
      ++sig_launches;
    }
    BENCHSUITE_LAUNCH(benchsuite_gradscan_sig, dim3(gx), dim3(bx), shmem, static_cast<cudaStream_t>(stream))(
        table, n, total, per_block, acc, next, zero_words, sig);
  } else {
    BENCHSUITE_LAUNCH(benchsuite_gradscan, dim3(gx), dim3(bx), shmem, static_cast<cudaStream_t>(stream))(
        table, n, total, per_block, acc, next, zero_words);
  }
  return cudaGetLastError() == cudaSuccess ? 0 : 1;
}
// NVRTC itself opens libcuda and asks for the driver's private export tables; a real driver has them,
// this one says it has none (CUDA_ERROR_NOT_SUPPORTED), which NVRTC takes as "no driver features".
int cuGetExportTable(const void** table, const void*) { *table = nullptr; return 801; }

int cuGetErrorName(int code, const char** s) {
  static thread_local std::string name;
  name = "FAKE_CUDA_ERROR_" + std::to_string(code);
  *s = name.c_str();
  return 0;
}
int cuGetErrorString(int, const char** s) { *s = "an error of the fake driver"; return 0; }

// For the test: what the extension did.
const char* fake_cuda_report() {
  static std::string r;
  std::lock_guard<std::mutex> l(mu);
  r = "loaded=" + loaded_kind + " function=" + last_function + " launches=" + std::to_string(launches) +
      " sig_launches=" + std::to_string(sig_launches) +
      " bad_context_launches=" + std::to_string(bad_context_launches) + " depth=" + std::to_string(depth);
  return r.c_str();
}
}  // extern "C"
