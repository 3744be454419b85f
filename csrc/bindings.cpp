// Python bindings of benchsuite._core. Every entry point takes integers (addresses, counts, a stream
// handle) and releases the GIL while it works.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "gradscan.h"

namespace py = pybind11;
using namespace benchsuite;

// The kernel's source and its one header, embedded at build time (CMakeLists.txt writes them) so that
// NVRTC compiles exactly what this build was made from.
extern const char* const kKernelSource;
extern const char* const kKernelAbiHeader;

namespace {

template <typename T>
T* as_ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

void check(const std::string& error) {
  if (!error.empty()) throw std::runtime_error("benchsuite._core: " + error);
}

py::dict build_info() {
  py::dict d;
  d["version"] = BENCHSUITE_VERSION;
  d["compiler"] =
#if defined(__clang__)
      std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
      std::string("gcc ") + __VERSION__;
#else
      std::string("unknown");
#endif
  // The CUDA host path is always built: it opens the driver at run time (csrc/cuda_driver.cpp).
  d["cuda_host"] = "driver API, opened at run time";
#ifdef BENCHSUITE_FATBIN_ARCHS
  d["fatbin_architectures"] = BENCHSUITE_FATBIN_ARCHS;
  d["fatbin_nvcc"] = BENCHSUITE_FATBIN_NVCC;
#else
  d["fatbin_architectures"] = py::none();
  d["fatbin_nvcc"] = py::none();
#endif
  d["cpu_chunk_threads"] = "std::thread";
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "benchsuite native core: fused per-tensor gradient statistics (no libtorch linked)";
  m.attr("CUDA_CHUNK_ELEMS") = kCudaChunkElems;
  m.attr("KERNEL_SOURCE") = kKernelSource;
  m.attr("KERNEL_ABI_HEADER") = kKernelAbiHeader;
  m.attr("CUDA_THREADS") = kCudaThreads;
  m.attr("SIG_K") = kSigK;

  m.def("build_info", &build_info, "Build facts: version, compiler, CUDA compiled or not, architectures.");

  m.def(
      "scan_cpu",
      [](uintptr_t table, int64_t n, uintptr_t counts, uintptr_t stats, int num_threads) {
        std::string err;
        {
          py::gil_scoped_release release;
          err = scan_cpu(as_ptr<const int64_t>(table), n, as_ptr<int64_t>(counts), as_ptr<double>(stats),
                         num_threads);
        }
        check(err);
      },
      py::arg("table"), py::arg("n"), py::arg("counts"), py::arg("stats"), py::arg("num_threads") = 1,
      "Scan n host tensors listed in an int64 [n,4] table; accumulate into int64 [n,4] counts and "
      "float64 [n,2] stats.");

  m.def(
      "check_table",
      [](uintptr_t table, int64_t n, int64_t total_chunks) { check(check_table(as_ptr<const int64_t>(table), n, total_chunks)); },
      py::arg("table"), py::arg("n"), py::arg("total_chunks"),
      "Check a host int64 [n,4] table (dtype codes, counts, pointers, the chunk column when total_chunks >= 0).");

  m.def(
      "cuda_driver",
      []() {
        CudaDriverFacts facts;
        std::string err;
        {
          py::gil_scoped_release release;
          err = cuda_driver(&facts);
        }
        check(err);
        py::list devices;
        for (const CudaDeviceFacts& d : facts.devices) {
          py::dict e;
          e["name"] = d.name;
          e["capability"] = py::make_tuple(d.major, d.minor);
          e["multiprocessors"] = d.multiprocessors;
          devices.append(e);
        }
        py::dict out;
        out["driver_version"] = facts.driver_version;
        out["devices"] = devices;
        return out;
      },
      "Open the NVIDIA driver (libcuda) and report its CUDA version and devices; RuntimeError says why not.");
  m.def(
      "cuda_load",
      [](int device, py::bytes image) {
        std::string data = image;  // a copy: the driver reads it while the GIL is released
        std::string err;
        {
          py::gil_scoped_release release;
          err = cuda_load(device, data.data(), data.size());
        }
        check(err);
      },
      py::arg("device"), py::arg("image"),
      "Load a kernel image (cubin, fatbin or PTX) for a device into its primary context.");
  m.def(
      "cuda_scan",
      [](int device, uintptr_t stream, uintptr_t table, int64_t n, int64_t total_chunks, uintptr_t acc,
         uintptr_t zero_next, int64_t zero_words, uintptr_t sig) {
        std::string err;
        {
          py::gil_scoped_release release;
          err = cuda_scan(device, stream, as_ptr<const int64_t>(table), n, total_chunks, as_ptr<uint64_t>(acc),
                          as_ptr<uint64_t>(zero_next), zero_words, as_ptr<double>(sig));
        }
        check(err);
      },
      py::arg("device"), py::arg("stream"), py::arg("table"), py::arg("n"), py::arg("total_chunks"), py::arg("acc"),
      py::arg("zero_next"), py::arg("zero_words"), py::arg("sig") = 0,
      "Enqueue the scan kernel on `stream` over a device table checked on the host first (check_table); it adds "
      "into `acc` (n*6 words) and zeroes `zero_words` words at `zero_next`. No host synchronisation. With `sig` "
      "(the address of n*SIG_K float64, zero), the signature pass instead, adding each tensor's buckets there.");

}
