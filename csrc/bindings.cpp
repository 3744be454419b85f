// Python bindings of benchsuite._core. Every entry point takes integers (addresses, counts, a stream
// handle) and releases the GIL while it works.
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "gradscan.h"

namespace py = pybind11;
using namespace benchsuite;

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
#ifdef BENCHSUITE_WITH_CUDA
  d["cuda"] = true;
  d["cuda_version"] = BENCHSUITE_CUDA_VERSION;
  d["cuda_architectures"] = BENCHSUITE_CUDA_ARCHS;
#else
  d["cuda"] = false;
  d["cuda_version"] = py::none();
  d["cuda_architectures"] = py::none();
#endif
  d["cpu_chunk_threads"] = "std::thread";
  return d;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "benchsuite native core: fused per-tensor gradient statistics (no libtorch linked)";
  m.attr("CUDA_CHUNK_ELEMS") = kCudaChunkElems;
  m.attr("HAS_CUDA") =
#ifdef BENCHSUITE_WITH_CUDA
      true;
#else
      false;
#endif

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

#ifdef BENCHSUITE_WITH_CUDA
  m.def(
      "scan_cuda",
      [](uintptr_t host_table, uintptr_t table, int64_t n, int64_t total_chunks, uintptr_t counts, uintptr_t stats,
         int device, uintptr_t stream) {
        std::string err;
        {
          py::gil_scoped_release release;
          err = scan_cuda(as_ptr<const int64_t>(host_table), as_ptr<const int64_t>(table), n, total_chunks,
                          as_ptr<int64_t>(counts), as_ptr<double>(stats), device, stream);
        }
        check(err);
      },
      py::arg("host_table"), py::arg("table"), py::arg("n"), py::arg("total_chunks"), py::arg("counts"),
      py::arg("stats"), py::arg("device"), py::arg("stream"),
      "Check `host_table`, then enqueue one scan kernel on `stream` over the same rows already in device "
      "memory (`table`); no host synchronisation.");
  m.def(
      "cuda_device_count",
      []() {
        std::string err;
        const int c = cuda_device_count(&err);
        if (c < 0) throw std::runtime_error("benchsuite._core: " + err);
        return c;
      },
      "CUDA devices the driver reports to the extension's own (static) runtime.");
#endif
}
