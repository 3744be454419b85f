// Test driver: runs csrc/'s CPU core and csrc/gradscan_kernel.cu (compiled as C++ against cudaemu)
// over the same tensors, and writes both results for tests/gradscan/test_cudaemu.py to compare.
//
//   driver --cases FILE --out FILE [--schedules inorder,reverse,...] [--workers N] [--cpu-threads N]
//   driver --huge NUMEL --out FILE ...      (an fp16 tensor of NUMEL elements and its 1-element offset view)
//   --chunks-delta N   hand the host check a total chunk count off by N (it must refuse it)
//   --raw-kernel       launch the kernel itself, one chunk per block, without the host's table check
//   --sig              launch the signature pass (benchsuite_gradscan_sig) instead, and write each tensor's
//                      kSigK buckets after the backend's rows ("sig I v0 ... v127")
//
// Each launch goes the way csrc/cuda_driver.cpp launches it: the host check (check_table), the grid from
// cuda_geometry() over the emulated multiprocessors and occupancy, and the second accumulator, filled
// with garbage first, which the launch must leave all zero (the host's alternating buffers rely on it).
// Case file (little endian): "BSCASES1", int64 n, then per tensor int64 dtype, numel, offset (elements
// before the data, so the data pointer is misaligned by offset * element size), nbytes, raw bytes.
#include <cuda_runtime.h>  // cudaemu's stand-ins (tests/cudaemu/include)
#include <cuda_fp16.h>
#define BENCHSUITE_HALF_TO_FLOAT(h) ::cudaemu::half_bits_to_float(h)
#include "gradscan_kernel.cu"  // the kernel source, unchanged
#include "gradscan.h"

#include <sys/mman.h>

#include <cinttypes>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

namespace {

int64_t elem_size(int64_t dtype) {
  switch (dtype) {
    case benchsuite::kFloat64: return 8;
    case benchsuite::kFloat16:
    case benchsuite::kBFloat16: return 2;
    default: return 4;
  }
}

struct Tensors {
  std::vector<int64_t> table;  // [n][4]
  std::vector<void*> owned;
  int64_t n = 0, total_chunks = 0;
  void add(const void* data, int64_t numel, int64_t dtype) {
    const int64_t chunks = (numel + benchsuite::kCudaChunkElems - 1) / benchsuite::kCudaChunkElems;
    table.insert(table.end(), {int64_t(reinterpret_cast<uintptr_t>(data)), numel, dtype, total_chunks});
    total_chunks += chunks;
    ++n;
  }
};

bool read_cases(const std::string& path, Tensors& t) {
  std::ifstream in(path, std::ios::binary);
  char magic[8];
  int64_t n = 0;
  if (!in.read(magic, 8) || std::memcmp(magic, "BSCASES1", 8) != 0 || !in.read(reinterpret_cast<char*>(&n), 8)) return false;
  for (int64_t i = 0; i < n; ++i) {
    int64_t h[4];
    if (!in.read(reinterpret_cast<char*>(h), sizeof h)) return false;
    const int64_t dtype = h[0], numel = h[1], offset = h[2], nbytes = h[3];
    const int64_t pre = offset * elem_size(dtype);
    // Exactly the bytes the tensor owns (ASan flags any read past them); 64-byte aligned base.
    void* base = nullptr;
    if (posix_memalign(&base, 64, size_t(pre + nbytes > 0 ? pre + nbytes : 1)) != 0) return false;
    t.owned.push_back(base);
    char* data = static_cast<char*>(base) + pre;
    if (nbytes && !in.read(data, nbytes)) return false;
    t.add(numel ? data : nullptr, numel, dtype);
  }
  return true;
}

void write_result(std::ostream& out, const std::string& name, const std::string& err, const Tensors& t,
                  const std::vector<int64_t>& counts, const std::vector<double>& stats) {
  out << "backend " << name << " " << (err.empty() ? "ok" : "error " + err) << "\n";
  char line[256];
  for (int64_t i = 0; i < t.n; ++i) {
    snprintf(line, sizeof line, "%" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %.17g %.17g\n", counts[i * 4 + 0],
             counts[i * 4 + 1], counts[i * 4 + 2], counts[i * 4 + 3], stats[i * 2 + 0], stats[i * 2 + 1]);
    out << line;
  }
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> r;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep))
    if (!item.empty()) r.push_back(item);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cases, out_path, schedules = "inorder";
  int workers = 1, cpu_threads = 2;
  int64_t huge = 0;
  bool skip_cpu = false, raw_kernel = false, sig_pass = false;
  int64_t chunks_delta = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::cerr << "missing value for " << a << "\n"; std::exit(2); }
      return argv[++i];
    };
    if (a == "--cases") cases = next();
    else if (a == "--out") out_path = next();
    else if (a == "--schedules") schedules = next();
    else if (a == "--workers") workers = std::stoi(next());
    else if (a == "--cpu-threads") cpu_threads = std::stoi(next());
    else if (a == "--huge") huge = std::stoll(next());
    else if (a == "--skip-cpu") skip_cpu = true;
    else if (a == "--raw-kernel") raw_kernel = true;
    else if (a == "--sig") sig_pass = true;
    else if (a == "--chunks-delta") chunks_delta = std::stoll(next());
    else { std::cerr << "unknown argument " << a << "\n"; return 2; }
  }
  Tensors t;
  if (huge > 0) {
    // Untouched anonymous pages read as zeros without using memory.
    const size_t bytes = size_t(huge) * 2 + 64;
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) { std::cerr << "mmap failed\n"; return 3; }
    uint16_t* p = static_cast<uint16_t*>(mem);
    const int64_t k31 = int64_t(1) << 31;
    p[5] = 0xfc00u;          // -inf
    p[k31 - 1] = 0x7bffu;    // 65504
    p[k31 + 1] = 0x4000u;    // 2.0
    p[huge - 1] = 0x7e00u;   // NaN
    t.add(p, huge, benchsuite::kFloat16);
    t.add(p + 1, huge - 1, benchsuite::kFloat16);  // 2-byte misaligned view
  } else if (cases.empty() || !read_cases(cases, t)) {
    std::cerr << "cannot read cases from '" << cases << "'\n";
    return 2;
  }
  std::ofstream out(out_path);
  if (!skip_cpu) {
    std::vector<int64_t> counts(t.n * 4, 0);
    std::vector<double> stats(t.n * 2, 0.0);
    const std::string err = benchsuite::scan_cpu(t.table.data(), t.n, counts.data(), stats.data(), cpu_threads);
    write_result(out, "cpu", err, t, counts, stats);
  }
  cudaemu::set_workers(workers);
  int sms = 0, per_sm = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, benchsuite_gradscan, benchsuite::kCudaThreads, 0);
  for (const std::string& s : split(schedules, ',')) {
    cudaemu::set_schedule(s);
    const int64_t words = t.n * benchsuite::kOutWords;
    std::vector<uint64_t> acc(size_t(words > 0 ? words : 1), 0), other(acc.size(), 0xa5a5a5a5a5a5a5a5ull);
    std::vector<double> sig(size_t(t.n > 0 ? t.n * benchsuite::kSigK : 1), 0.0);
    std::string err;
    if (raw_kernel) {
      if (t.total_chunks > 0)
        BENCHSUITE_LAUNCH(benchsuite_gradscan, dim3(unsigned(t.total_chunks)), dim3(benchsuite::kCudaThreads), 0,
                          nullptr)(reinterpret_cast<const long long*>(t.table.data()), t.n, t.total_chunks, 1LL,
                                   reinterpret_cast<unsigned long long*>(acc.data()),
                                   reinterpret_cast<unsigned long long*>(other.data()), (long long)words);
    } else {
      err = benchsuite::check_table(t.table.data(), t.n, t.total_chunks + chunks_delta);
      if (err.empty() && t.n > 0 && t.total_chunks > 0) {
        const benchsuite::CudaGeometry geo = benchsuite::cuda_geometry(t.total_chunks, int64_t(sms) * per_sm);
        if (sig_pass)
          BENCHSUITE_LAUNCH(benchsuite_gradscan_sig, dim3(unsigned(geo.blocks)), dim3(benchsuite::kCudaThreads), 0,
                            nullptr)(reinterpret_cast<const long long*>(t.table.data()), t.n, t.total_chunks,
                                     (long long)geo.per_block, reinterpret_cast<unsigned long long*>(acc.data()),
                                     reinterpret_cast<unsigned long long*>(other.data()), (long long)words, sig.data());
        else
          BENCHSUITE_LAUNCH(benchsuite_gradscan, dim3(unsigned(geo.blocks)), dim3(benchsuite::kCudaThreads), 0,
                            nullptr)(reinterpret_cast<const long long*>(t.table.data()), t.n, t.total_chunks,
                                     (long long)geo.per_block, reinterpret_cast<unsigned long long*>(acc.data()),
                                     reinterpret_cast<unsigned long long*>(other.data()), (long long)words);
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) err = std::string("launch: ") + cudaGetErrorString(e);
      }
    }
    if (err.empty() && t.total_chunks > 0)
      for (int64_t i = 0; i < words; ++i)
        if (other[size_t(i)] != 0) { err = "zero_next word " + std::to_string(i) + " was not cleared"; break; }
    std::vector<int64_t> counts(size_t(t.n * 4), 0);
    std::vector<double> stats(size_t(t.n * 2), 0.0);
    if (t.n > 0) {
      std::memcpy(counts.data(), acc.data(), size_t(t.n) * 4 * 8);
      std::memcpy(stats.data(), acc.data() + t.n * 4, size_t(t.n) * 2 * 8);
    }
    write_result(out, (raw_kernel ? "cuda-raw:" : sig_pass ? "cuda-sig:" : "cuda:") + s, err, t, counts, stats);
    if (sig_pass)
      for (int64_t i = 0; i < t.n; ++i) {
        out << "sig " << i;
        char num[32];
        for (int b = 0; b < benchsuite::kSigK; ++b) {
          snprintf(num, sizeof num, " %.17g", sig[size_t(i * benchsuite::kSigK + b)]);
          out << num;
        }
        out << "\n";
      }
  }
  for (void* p : t.owned) free(p);
  return out ? 0 : 4;
}
