// The CUDA side of the scanner on the host, through the CUDA driver API loaded at run time.
//
// Nothing CUDA is linked: libcuda (the driver's own library, present wherever an NVIDIA driver is) is
// opened with dlopen the first time a CUDA scan is asked for, so the extension builds without a CUDA
// toolkit, imports on machines with no GPU, and has no CUDA runtime whose version the driver must
// support. The kernel image (a cubin compiled by NVRTC for the device, or the fatbin nvcc built at
// install time) comes from Python (benchsuite/gradscan/_cuda.py); it is loaded into the device's primary
// context, the one torch uses, so the kernel runs on torch's streams and reads torch's allocations.
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#include "gradscan.h"

namespace benchsuite {
namespace {

// The few driver API types and entry points used, as the driver's ABI defines them (cuda.h).
using CUresult = int;
using CUdevice = int;
using CUcontext = struct CUctx_st*;
using CUmodule = struct CUmod_st*;
using CUfunction = struct CUfunc_st*;
using CUstream = struct CUstream_st*;
constexpr CUresult kSuccess = 0;
constexpr int kAttrMultiprocessors = 16;     // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
constexpr int kAttrCapabilityMajor = 75;     // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrCapabilityMinor = 76;     // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

struct Driver {
  CUresult (*Init)(unsigned int);
  CUresult (*DriverGetVersion)(int*);
  CUresult (*DeviceGetCount)(int*);
  CUresult (*DeviceGet)(CUdevice*, int);
  CUresult (*DeviceGetAttribute)(int*, int, CUdevice);
  CUresult (*DeviceGetName)(char*, int, CUdevice);
  CUresult (*DevicePrimaryCtxRetain)(CUcontext*, CUdevice);
  CUresult (*CtxPushCurrent)(CUcontext);
  CUresult (*CtxPopCurrent)(CUcontext*);
  CUresult (*ModuleLoadData)(CUmodule*, const void*);
  CUresult (*ModuleUnload)(CUmodule);
  CUresult (*ModuleGetFunction)(CUfunction*, CUmodule, const char*);
  CUresult (*OccupancyMaxActiveBlocksPerMultiprocessor)(int*, CUfunction, int, size_t);
  CUresult (*LaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                           CUstream, void**, void**);
  CUresult (*GetErrorName)(CUresult, const char**);
  CUresult (*GetErrorString)(CUresult, const char**);
};

struct Loaded {
  CUcontext ctx = nullptr;
  CUmodule module = nullptr;
  CUfunction fn = nullptr;
  int64_t blocks = 0;  // one wave: multiprocessors x resident blocks of this kernel on each
  CUfunction fn_sig = nullptr;  // the signature pass (null in an image built before it)
  int64_t blocks_sig = 0;
};

std::mutex g_mu;
bool g_tried = false;
std::string g_open_error;  // why the driver could not be used ("" once it can)
Driver g_drv{};
std::vector<Loaded> g_loaded;

std::string describe(CUresult r) {
  const char* name = nullptr;
  const char* text = nullptr;
  if (g_drv.GetErrorName) g_drv.GetErrorName(r, &name);
  if (g_drv.GetErrorString) g_drv.GetErrorString(r, &text);
  std::string s = name ? name : ("CUDA error " + std::to_string(r));
  if (text) s += std::string(" (") + text + ")";
  return s;
}

void* open_library(std::string* error) {
#if defined(_WIN32)
  HMODULE h = LoadLibraryA("nvcuda.dll");
  if (!h) *error = "nvcuda.dll could not be loaded (no NVIDIA driver installed?)";
  return reinterpret_cast<void*>(h);
#else
  void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    *error = std::string("libcuda.so.1 could not be loaded (no NVIDIA driver on this machine?): ") + (e ? e : "");
  }
  return h;
#endif
}

void* symbol(void* lib, const char* name) {
#if defined(_WIN32)
  return reinterpret_cast<void*>(GetProcAddress(reinterpret_cast<HMODULE>(lib), name));
#else
  return dlsym(lib, name);
#endif
}

// Opens the driver once per process; "" when it is usable. Call with g_mu held.
const std::string& open_driver() {
  if (g_tried) return g_open_error;
  g_tried = true;
  void* lib = open_library(&g_open_error);
  if (!lib) return g_open_error;
  struct Entry { void** slot; const char* name; };
  const Entry entries[] = {
      {reinterpret_cast<void**>(&g_drv.Init), "cuInit"},
      {reinterpret_cast<void**>(&g_drv.DriverGetVersion), "cuDriverGetVersion"},
      {reinterpret_cast<void**>(&g_drv.DeviceGetCount), "cuDeviceGetCount"},
      {reinterpret_cast<void**>(&g_drv.DeviceGet), "cuDeviceGet"},
      {reinterpret_cast<void**>(&g_drv.DeviceGetAttribute), "cuDeviceGetAttribute"},
      {reinterpret_cast<void**>(&g_drv.DeviceGetName), "cuDeviceGetName"},
      {reinterpret_cast<void**>(&g_drv.DevicePrimaryCtxRetain), "cuDevicePrimaryCtxRetain"},
      {reinterpret_cast<void**>(&g_drv.CtxPushCurrent), "cuCtxPushCurrent_v2"},
      {reinterpret_cast<void**>(&g_drv.CtxPopCurrent), "cuCtxPopCurrent_v2"},
      {reinterpret_cast<void**>(&g_drv.ModuleLoadData), "cuModuleLoadData"},
      {reinterpret_cast<void**>(&g_drv.ModuleUnload), "cuModuleUnload"},
      {reinterpret_cast<void**>(&g_drv.ModuleGetFunction), "cuModuleGetFunction"},
      {reinterpret_cast<void**>(&g_drv.OccupancyMaxActiveBlocksPerMultiprocessor),
       "cuOccupancyMaxActiveBlocksPerMultiprocessor"},
      {reinterpret_cast<void**>(&g_drv.LaunchKernel), "cuLaunchKernel"},
      {reinterpret_cast<void**>(&g_drv.GetErrorName), "cuGetErrorName"},
      {reinterpret_cast<void**>(&g_drv.GetErrorString), "cuGetErrorString"},
  };
  for (const Entry& e : entries) {
    *e.slot = symbol(lib, e.name);
    if (!*e.slot) {
      g_open_error = std::string("the NVIDIA driver's library has no ") + e.name + " (a driver older than CUDA 9?)";
      return g_open_error;
    }
  }
  const CUresult r = g_drv.Init(0);
  if (r != kSuccess) g_open_error = "cuInit failed: " + describe(r);
  return g_open_error;
}

// Makes `device`'s primary context current for the lifetime of the object.
struct ContextScope {
  bool pushed = false;
  explicit ContextScope(CUcontext ctx) { pushed = g_drv.CtxPushCurrent(ctx) == kSuccess; }
  ~ContextScope() {
    CUcontext ignored = nullptr;
    if (pushed) g_drv.CtxPopCurrent(&ignored);
  }
};

}  // namespace

std::string cuda_driver(CudaDriverFacts* facts) {
  std::lock_guard<std::mutex> lock(g_mu);
  const std::string& err = open_driver();
  if (!err.empty()) return err;
  int version = 0, count = 0;
  CUresult r = g_drv.DriverGetVersion(&version);
  if (r != kSuccess) return "cuDriverGetVersion: " + describe(r);
  r = g_drv.DeviceGetCount(&count);
  if (r != kSuccess) return "cuDeviceGetCount: " + describe(r);
  facts->driver_version = version;
  facts->devices.clear();
  for (int i = 0; i < count; ++i) {
    CUdevice dev = 0;
    CudaDeviceFacts d;
    char name[256] = {0};
    if (g_drv.DeviceGet(&dev, i) != kSuccess) continue;
    g_drv.DeviceGetAttribute(&d.major, kAttrCapabilityMajor, dev);
    g_drv.DeviceGetAttribute(&d.minor, kAttrCapabilityMinor, dev);
    g_drv.DeviceGetAttribute(&d.multiprocessors, kAttrMultiprocessors, dev);
    if (g_drv.DeviceGetName(name, int(sizeof name) - 1, dev) == kSuccess) d.name = name;
    facts->devices.push_back(d);
  }
  return "";
}

std::string cuda_load(int device, const void* image, size_t size) {
  std::lock_guard<std::mutex> lock(g_mu);
  const std::string& err = open_driver();
  if (!err.empty()) return err;
  if (image == nullptr || size == 0) return "empty kernel image";
  if (device < 0) return "negative device index";
  if (device >= int(g_loaded.size())) g_loaded.resize(device + 1);
  Loaded& L = g_loaded[device];
  CUdevice dev = 0;
  CUresult r = g_drv.DeviceGet(&dev, device);
  if (r != kSuccess) return "cuDeviceGet(" + std::to_string(device) + "): " + describe(r);
  if (L.ctx == nullptr) {
    r = g_drv.DevicePrimaryCtxRetain(&L.ctx, dev);
    if (r != kSuccess) return "cuDevicePrimaryCtxRetain: " + describe(r);
  }
  ContextScope scope(L.ctx);
  if (!scope.pushed) return "cuCtxPushCurrent failed";
  if (L.module != nullptr) {
    g_drv.ModuleUnload(L.module);
    L.module = nullptr, L.fn = nullptr, L.blocks = 0, L.fn_sig = nullptr, L.blocks_sig = 0;
  }
  // cuModuleLoadData reads cubin, fatbin and (null-terminated) PTX; copy so a PTX image ends in a zero.
  std::vector<char> buf(static_cast<const char*>(image), static_cast<const char*>(image) + size);
  buf.push_back('\0');
  CUmodule module = nullptr;
  r = g_drv.ModuleLoadData(&module, buf.data());
  if (r != kSuccess) return "cuModuleLoadData: " + describe(r);
  CUfunction fn = nullptr;
  r = g_drv.ModuleGetFunction(&fn, module, "benchsuite_gradscan");
  if (r != kSuccess) {
    g_drv.ModuleUnload(module);
    return "cuModuleGetFunction(benchsuite_gradscan): " + describe(r);
  }
  int sms = 0, per_sm = 0, per_sm_sig = 0;
  if (g_drv.DeviceGetAttribute(&sms, kAttrMultiprocessors, dev) != kSuccess || sms <= 0) sms = 108;
  if (g_drv.OccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kCudaThreads, 0) != kSuccess || per_sm <= 0)
    per_sm = 4;
  CUfunction fn_sig = nullptr;
  if (g_drv.ModuleGetFunction(&fn_sig, module, "benchsuite_gradscan_sig") != kSuccess) fn_sig = nullptr;
  if (fn_sig != nullptr &&
      (g_drv.OccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_sig, fn_sig, kCudaThreads, 0) != kSuccess ||
       per_sm_sig <= 0))
    per_sm_sig = 3;
  L.module = module, L.fn = fn, L.blocks = int64_t(sms) * per_sm;
  L.fn_sig = fn_sig, L.blocks_sig = int64_t(sms) * per_sm_sig;
  return "";
}

std::string cuda_scan(int device, uintptr_t stream, const int64_t* device_table, int64_t n, int64_t total_chunks,
                      uint64_t* acc, uint64_t* zero_next, int64_t zero_words, double* sig) {
  if (n <= 0 || total_chunks <= 0) {
    if (zero_words > 0) return "nothing to scan but words to zero";  // the caller never asks this
    return "";
  }
  CUfunction fn = nullptr;
  CUcontext ctx = nullptr;
  int64_t want = 0;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (device < 0 || device >= int(g_loaded.size()) || g_loaded[device].fn == nullptr)
      return "no kernel loaded for device " + std::to_string(device);
    const Loaded& L = g_loaded[device];
    if (sig != nullptr && L.fn_sig == nullptr)
      return "the kernel image loaded for device " + std::to_string(device) + " has no signature pass";
    fn = sig != nullptr ? L.fn_sig : L.fn, ctx = L.ctx, want = sig != nullptr ? L.blocks_sig : L.blocks;
  }
  const CudaGeometry geo = cuda_geometry(total_chunks, want);
  const long long* a_table = reinterpret_cast<const long long*>(device_table);
  long long a_n = n, a_total = total_chunks;
  long long a_per = geo.per_block, a_zero_words = zero_words;
  unsigned long long* a_acc = reinterpret_cast<unsigned long long*>(acc);
  unsigned long long* a_next = reinterpret_cast<unsigned long long*>(zero_next);
  double* a_sig = sig;
  void* args[] = {&a_table, &a_n, &a_total, &a_per, &a_acc, &a_next, &a_zero_words, &a_sig};  // the last: sig only
  ContextScope scope(ctx);
  if (!scope.pushed) return "cuCtxPushCurrent failed";
  const CUresult r = g_drv.LaunchKernel(fn, unsigned(geo.blocks), 1, 1, unsigned(kCudaThreads), 1, 1, 0,
                                        reinterpret_cast<CUstream>(stream), args, nullptr);
  if (r != kSuccess) return "cuLaunchKernel: " + describe(r);
  return "";
}

}  // namespace benchsuite
