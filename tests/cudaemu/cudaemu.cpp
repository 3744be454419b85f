// cudaemu runtime: fibers, the block scheduler, barriers, warp exchanges, the runtime API subset.
#include "include/cuda_runtime.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define CUDAEMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define CUDAEMU_TSAN 1
#endif

#if !defined(__x86_64__)
#error "cudaemu's fiber switch is written for x86-64"
#endif

// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack, stores
// the stack pointer in *from, and resumes the fiber whose stack pointer is `to`.
extern "C" void cudaemu_switch(void** from, void* to);
extern "C" void cudaemu_trampoline();
asm(R"(
  .text
  .globl cudaemu_switch
  .type cudaemu_switch, @function
cudaemu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size cudaemu_switch, .-cudaemu_switch

  .globl cudaemu_trampoline
  .type cudaemu_trampoline, @function
cudaemu_trampoline:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size cudaemu_trampoline, .-cudaemu_trampoline
)");

namespace cudaemu {
namespace {

enum State : int { kReady = 0, kAtBarrier = 1, kAtWarp = 2, kDone = 3 };

template <typename T>
T ld(const T& x) { return __atomic_load_n(&x, __ATOMIC_RELAXED); }
template <typename T>
void st(T& x, T v) { __atomic_store_n(&x, v, __ATOMIC_RELAXED); }

// Emulator bookkeeping shared by the fibers of a block is not the kernel's memory: TSan is told to
// ignore it (the kernel's own accesses stay checked).
#ifdef CUDAEMU_TSAN
extern "C" void AnnotateIgnoreReadsBegin(const char* file, int line);
extern "C" void AnnotateIgnoreReadsEnd(const char* file, int line);
extern "C" void AnnotateIgnoreWritesBegin(const char* file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char* file, int line);
struct Internal {
  Internal() { AnnotateIgnoreReadsBegin(__FILE__, __LINE__), AnnotateIgnoreWritesBegin(__FILE__, __LINE__); }
  ~Internal() { AnnotateIgnoreWritesEnd(__FILE__, __LINE__), AnnotateIgnoreReadsEnd(__FILE__, __LINE__); }
};
#else
struct Internal {
  Internal() {}  // user-provided: no unused-variable warning where TSan is off
};
#endif

inline void hb_release(void* addr) {
#ifdef CUDAEMU_TSAN
  __tsan_release(addr);
#else
  (void)addr;
#endif
}
inline void hb_acquire(void* addr) {
#ifdef CUDAEMU_TSAN
  __tsan_acquire(addr);
#else
  (void)addr;
#endif
}

struct Warp {
  uint64_t slots[2][32];
  int count = 0, gen = 0, line = -1;
  const char* what = nullptr;
  char tok[2];  // happens-before tokens, one per generation parity
};

struct Config {
  std::string schedule = "inorder";
  int workers = 1;
};
Config& config() {
  static Config c = [] {
    Config k;
    if (const char* s = std::getenv("CUDAEMU_SCHEDULE")) k.schedule = s;
    k.workers = env_int("CUDAEMU_WORKERS", 1);
    return k;
  }();
  return c;
}

enum Mode { kInOrder, kReverse, kRandom, kStarve };
struct Schedule {
  Mode mode = kInOrder;
  uint64_t seed = 0;
  unsigned int starved = 0;
};
Schedule parse_schedule(const std::string& s) {
  Schedule r;
  const auto colon = s.find(':');
  const std::string name = s.substr(0, colon);
  const std::string arg = colon == std::string::npos ? "" : s.substr(colon + 1);
  if (name == "inorder") r.mode = kInOrder;
  else if (name == "reverse") r.mode = kReverse;
  else if (name == "random") r.mode = kRandom, r.seed = arg.empty() ? 1 : std::stoull(arg);
  else if (name == "starve") r.mode = kStarve, r.starved = arg.empty() ? 0 : unsigned(std::stoul(arg));
  else fail("unknown schedule '%s' (inorder, reverse, random:SEED, starve:TID)", s.c_str());
  return r;
}

}  // namespace

struct Block {
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  unsigned int nthreads = 0, done = 0;
  int bar_count = 0, bar_gen = 0, bar_line = -1;
  char bar_tok[2];
  char start_tok, end_tok;
  uint3 idx{0, 0, 0};
  dim3 bdim, gdim;
  const std::function<void()>* body = nullptr;
  void* sched_sp = nullptr;
  void* sched_tsan = nullptr;
  const void* sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  Schedule sched;
  uint64_t rng = 0;
  char* stacks = nullptr;
  size_t stacks_bytes = 0, stack_size = 0;
  std::vector<unsigned int> pick_buf;
};

namespace {

thread_local Fiber* g_cur = nullptr;  // the running fiber of this OS thread
thread_local Block* g_block = nullptr;

uint64_t next_random(uint64_t& s) {  // splitmix64
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Switches from the running fiber back to its block's scheduler.
void to_scheduler(bool dying) {
  Block* b = g_block;
  Fiber* f = ld(g_cur);
#ifdef CUDAEMU_TSAN
  __tsan_switch_to_fiber(b->sched_tsan, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef CUDAEMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &f->asan_fake, b->sched_stack_bottom, b->sched_stack_size);
#else
  (void)dying;
#endif
  cudaemu_switch(&f->sp, b->sched_sp);
#ifdef CUDAEMU_ASAN
  __sanitizer_finish_switch_fiber(f->asan_fake, nullptr, nullptr);
#endif
}

void check_exit(Block* b, Fiber* f);

extern "C" void cudaemu_fiber_main(void* arg) {
  Fiber* f = static_cast<Fiber*>(arg);
  Block* b = f->block;
#ifdef CUDAEMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &b->sched_stack_bottom, &b->sched_stack_size);
#endif
  hb_acquire(&b->start_tok);
  (*b->body)();
  {
    Internal quiet;
    check_exit(b, f);
    st(f->state, int(kDone));
    ++b->done;
    hb_release(&b->end_tok);
  }
  to_scheduler(true);
  __builtin_trap();  // a finished fiber is never resumed
}

void init_fiber(Fiber& f) {
#ifdef CUDAEMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(f.stack, f.stack_size);  // redzones left by the block before
#endif
  // Initial frame popped by cudaemu_switch: [ctrl][r15][r14][r13=entry][r12=arg][rbx][rbp][ret].
  uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + f.stack_size) & ~uintptr_t(15);
  top -= 16;
  uint64_t* sp = reinterpret_cast<uint64_t*>(top - 64);
  sp[0] = 0x1f80u | (uint64_t(0x037fu) << 32);
  sp[1] = 0, sp[2] = 0;
  sp[3] = reinterpret_cast<uint64_t>(&cudaemu_fiber_main);
  sp[4] = reinterpret_cast<uint64_t>(&f);
  sp[5] = 0, sp[6] = 0;
  sp[7] = reinterpret_cast<uint64_t>(&cudaemu_trampoline);
  f.sp = sp;
}

void describe_and_fail(Block* b) {
  std::string at_bar, at_warp;
  int nb = 0, nw = 0;
  for (auto& f : b->fibers) {
    const int s = ld(f.state);
    if (s == kAtBarrier && nb++ < 4) at_bar += " " + std::to_string(f.linear);
    if (s == kAtWarp && nw++ < 4) at_warp += " " + std::to_string(f.linear);
  }
  fail("deadlock in block (%u,%u,%u): %d threads wait at __syncthreads (e.g.%s), %d at warp operations (e.g.%s), "
       "%u exited",
       b->idx.x, b->idx.y, b->idx.z, nb, at_bar.c_str(), nw, at_warp.c_str(), b->done);
}

void check_exit(Block* b, Fiber* f) {
  if (b->bar_count > 0)
    fail("thread %u of block %u exited while %d threads wait at the __syncthreads at line %d: a barrier not reached by "
         "the whole block",
         f->linear, b->idx.x, b->bar_count, b->bar_line);
  Warp& w = b->warps[f->linear / 32];
  if (w.count > 0)
    fail("lane %u of block %u exited while its warp waits in %s at line %d: the operation names an absent lane",
         f->linear % 32, b->idx.x, w.what, w.line);
}

// Picks the next fiber to run, or -1 when none is ready.
int pick(Block* b) {
  const int n = int(b->nthreads);
  switch (b->sched.mode) {
    case kInOrder:
      for (int i = 0; i < n; ++i)
        if (ld(b->fibers[i].state) == kReady) return i;
      return -1;
    case kReverse:
      for (int i = n - 1; i >= 0; --i)
        if (ld(b->fibers[i].state) == kReady) return i;
      return -1;
    case kStarve: {
      const int s = int(b->sched.starved % b->nthreads);
      for (int i = 0; i < n; ++i)
        if (i != s && ld(b->fibers[i].state) == kReady) return i;
      return ld(b->fibers[s].state) == kReady ? s : -1;
    }
    case kRandom: {
      b->pick_buf.clear();
      for (int i = 0; i < n; ++i)
        if (ld(b->fibers[i].state) == kReady) b->pick_buf.push_back(unsigned(i));
      if (b->pick_buf.empty()) return -1;
      return int(b->pick_buf[next_random(b->rng) % b->pick_buf.size()]);
    }
  }
  return -1;
}

void run_block(Block* b, unsigned int linear_block) {
  Internal quiet;
  b->idx = uint3{linear_block % b->gdim.x, (linear_block / b->gdim.x) % b->gdim.y, linear_block / (b->gdim.x * b->gdim.y)};
  b->done = 0;
  b->bar_count = 0, b->bar_gen = 0, b->bar_line = -1;
  for (auto& w : b->warps) w.count = 0, w.gen = 0, w.line = -1, w.what = nullptr;
  b->rng = b->sched.seed * 0x100000001b3ull + linear_block;
  for (auto& f : b->fibers) {
    st(f.state, int(kReady));
    f.block = b;
    f.block_idx = b->idx, f.block_dim = b->bdim, f.grid_dim = b->gdim;
    init_fiber(f);
  }
  hb_release(&b->start_tok);
  g_block = b;
  for (;;) {
    const int i = pick(b);
    if (i < 0) {
      if (b->done == b->nthreads) break;
      describe_and_fail(b);
    }
    Fiber* f = &b->fibers[i];
    st(g_cur, f);
#ifdef CUDAEMU_TSAN
    __tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);
#endif
#ifdef CUDAEMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f->stack, f->stack_size);
#endif
    cudaemu_switch(&b->sched_sp, f->sp);
#ifdef CUDAEMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
    st(g_cur, static_cast<Fiber*>(nullptr));
  }
  hb_acquire(&b->end_tok);
  g_block = nullptr;
}

// Suspends the running fiber (its state already set) until the scheduler resumes it.
void yield_now() { to_scheduler(false); }

std::mutex g_err_mu;
cudaError_t g_last_error = cudaSuccess;
int g_device = 0;

}  // namespace

[[noreturn]] void fail(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "cudaemu: error: %s\n", buf);
  fflush(stderr);
  std::abort();
}

int env_int(const char* name, int fallback) {
  const char* s = std::getenv(name);
  return s && *s ? std::atoi(s) : fallback;
}

Fiber& self() {
  Fiber* f = ld(g_cur);
  if (!f) fail("a device built-in was used outside a kernel");
  return *f;
}

void set_schedule(const std::string& s) {
  parse_schedule(s);
  config().schedule = s;
}
void set_workers(int w) { config().workers = w < 1 ? 1 : w; }
std::string schedule() { return config().schedule; }
int workers() { return config().workers; }

void syncthreads(int line) {
  Fiber* f = &self();
  Internal quiet;
  Block* b = g_block;
  if (b->done > 0)
    fail("__syncthreads at line %d reached by thread %u of block %u after %u threads of the block exited: a barrier "
         "not reached by the whole block",
         line, f->linear, b->idx.x, b->done);
  if (b->bar_count == 0) b->bar_line = line;
  else if (b->bar_line != line)
    fail("thread %u of block %u waits at the __syncthreads at line %d while others wait at line %d", f->linear,
         b->idx.x, line, b->bar_line);
  const int gen = b->bar_gen;
  hb_release(&b->bar_tok[gen & 1]);
  if (++b->bar_count == int(b->nthreads)) {
    b->bar_count = 0, ++b->bar_gen;
    for (auto& o : b->fibers)
      if (ld(o.state) == kAtBarrier) st(o.state, int(kReady));
    st(f->state, int(kReady));
  } else {
    st(f->state, int(kAtBarrier));
  }
  yield_now();
  hb_acquire(&b->bar_tok[gen & 1]);
}

unsigned int warp_lanes() {
  Fiber* f = &self();
  Internal quiet;
  const unsigned int first = f->linear & ~31u;
  const unsigned int n = g_block->nthreads - first;
  return n < 32 ? n : 32;
}

const uint64_t* warp_exchange(unsigned int mask, uint64_t value, int line, const char* what) {
  Fiber* f = &self();
  Internal quiet;
  Block* b = g_block;
  const unsigned int lane = f->linear & 31u, lanes = warp_lanes();
  if (mask != 0xffffffffu) fail("%s at line %d: mask 0x%08x (cudaemu emulates full masks only)", what, line, mask);
  if (lanes < 32) fail("%s at line %d: the full mask names lanes %u-31, which do not exist in this warp", what, line, lanes);
  Warp& w = b->warps[f->linear / 32];
  for (unsigned int l = 0; l < lanes; ++l)
    if (ld(b->fibers[(f->linear & ~31u) + l].state) == kDone)
      fail("%s at line %d: lane %u has exited, the mask names an absent lane", what, line, l);
  if (w.count == 0) w.line = line, w.what = what;
  else if (w.line != line)
    fail("lane %u of warp %u is in %s at line %d while other lanes are in %s at line %d (divergent warp operation)",
         lane, f->linear / 32, what, line, w.what, w.line);
  const int gen = w.gen;
  __atomic_store_n(&w.slots[gen & 1][lane], value, __ATOMIC_RELAXED);
  hb_release(&w.tok[gen & 1]);
  if (++w.count == int(lanes)) {
    w.count = 0, ++w.gen;
    for (unsigned int l = 0; l < lanes; ++l) {
      Fiber& o = b->fibers[(f->linear & ~31u) + l];
      if (ld(o.state) == kAtWarp) st(o.state, int(kReady));
    }
    st(f->state, int(kReady));
  } else {
    st(f->state, int(kAtWarp));
  }
  yield_now();
  hb_acquire(&w.tok[gen & 1]);
  return w.slots[gen & 1];
}

void maybe_yield() {
  Internal quiet;
  Block* b = g_block;
  Fiber* f = ld(g_cur);
  if (!b || b->sched.mode != kRandom || !f) return;
  if (next_random(b->rng) & 1) {
    st(f->state, int(kReady));
    yield_now();
  }
}

void set_last_error(cudaError_t e) {
  std::lock_guard<std::mutex> lock(g_err_mu);
  if (g_last_error == cudaSuccess) g_last_error = e;
}

cudaError_t check_launch(dim3 grid, dim3 block) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64) return cudaErrorInvalidConfiguration;
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return cudaErrorInvalidConfiguration;
  return cudaSuccess;
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& body) {
  const cudaError_t e = check_launch(grid, block);
  if (e != cudaSuccess) {
    set_last_error(e);
    return;
  }
  const Schedule sched = parse_schedule(config().schedule);
  const unsigned int nthreads = block.x * block.y * block.z;
  const uint64_t nblocks = uint64_t(grid.x) * grid.y * grid.z;
  std::vector<unsigned int> order(nblocks);
  for (uint64_t i = 0; i < nblocks; ++i) order[i] = unsigned(i);
  if (sched.mode == kReverse) std::reverse(order.begin(), order.end());
  if (sched.mode == kRandom) {
    uint64_t s = sched.seed ^ 0x5eedull;
    for (uint64_t i = nblocks; i > 1; --i) std::swap(order[i - 1], order[next_random(s) % i]);
  }
  const int nworkers = int(std::min<uint64_t>(uint64_t(std::max(1, config().workers)), nblocks));
  std::atomic<uint64_t> next{0};
#if defined(CUDAEMU_ASAN) || defined(CUDAEMU_TSAN)
  const size_t stack_size = size_t(env_int("CUDAEMU_STACK_KB", 256)) * 1024;
#else
  const size_t stack_size = size_t(env_int("CUDAEMU_STACK_KB", 64)) * 1024;
#endif
  auto worker = [&]() {
    Block b;
    b.nthreads = nthreads;
    b.bdim = block, b.gdim = grid;
    b.body = &body;
    b.sched = sched;
    b.fibers.resize(nthreads);
    b.warps.resize((nthreads + 31) / 32);
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
    const size_t slot = stack_size + page;  // a guard page below every stack
    b.stacks_bytes = slot * nthreads;
    void* mem = mmap(nullptr, b.stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) fail("cannot map %zu bytes of fiber stacks", b.stacks_bytes);
    b.stacks = static_cast<char*>(mem);
#ifdef CUDAEMU_TSAN
    b.sched_tsan = __tsan_get_current_fiber();
#endif
    for (unsigned int t = 0; t < nthreads; ++t) {
      Fiber& f = b.fibers[t];
      mprotect(b.stacks + t * slot, page, PROT_NONE);
      f.stack = b.stacks + t * slot + page;
      f.stack_size = stack_size;
      f.linear = t;
      f.tid = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
#ifdef CUDAEMU_TSAN
      f.tsan = __tsan_create_fiber(0);
#endif
    }
    for (uint64_t i = next.fetch_add(1, std::memory_order_relaxed); i < nblocks;
         i = next.fetch_add(1, std::memory_order_relaxed))
      run_block(&b, order[i]);
#ifdef CUDAEMU_TSAN
    for (auto& f : b.fibers) __tsan_destroy_fiber(f.tsan);
#endif
    munmap(b.stacks, b.stacks_bytes);
  };
  std::vector<std::thread> pool;
  for (int w = 0; w < nworkers; ++w) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
}

}  // namespace cudaemu

// ---------------------------------------------------------------------------------------------
// Runtime API subset. One device by default (CUDAEMU_DEVICES), CUDAEMU_SMS multiprocessors (4).
using cudaemu::env_int;

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
  }
  return "unknown error";
}
cudaError_t cudaGetLastError() {
  std::lock_guard<std::mutex> lock(cudaemu::g_err_mu);
  const cudaError_t e = cudaemu::g_last_error;
  cudaemu::g_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() {
  std::lock_guard<std::mutex> lock(cudaemu::g_err_mu);
  return cudaemu::g_last_error;
}
cudaError_t cudaGetDeviceCount(int* count) {
  *count = env_int("CUDAEMU_DEVICES", 1);
  return *count > 0 ? cudaSuccess : cudaErrorNoDevice;
}
cudaError_t cudaGetDevice(int* device) {
  *device = cudaemu::g_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= env_int("CUDAEMU_DEVICES", 1)) return cudaErrorInvalidDevice;
  cudaemu::g_device = device;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device < 0 || device >= env_int("CUDAEMU_DEVICES", 1)) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = env_int("CUDAEMU_SMS", 4); return cudaSuccess;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }  // launches run to completion
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  return *p ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
