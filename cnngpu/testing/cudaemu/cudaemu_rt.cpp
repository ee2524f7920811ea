// cudaemu_rt.cpp - the emulation runtime behind cudaemu.h: fibers, barriers, warp collectives,
// the shared-memory window, the PTX interpreter and the launch entry point the Python side calls.
//
// Execution model: one launch runs its blocks one after another (forward or reverse linear order);
// every thread of a block is a fiber (see "fiber contexts" below). A fiber runs until it reaches __syncthreads, a warp
// collective (shuffle, ldmatrix, mma) or its end; the scheduler sweeps the runnable fibers in
// forward or reverse thread order. Everything is deterministic for a given order.
#include "cudaemu.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#define CUDAEMU_RT_VERSION 4

// ---- fiber contexts -------------------------------------------------------------------------------
// x86-64: a hand-written switch of the callee-saved registers, MXCSR and the x87 control word
// (glibc's swapcontext also saves the signal mask with a system call at every switch, which made
// it a third of the run time). Elsewhere, or with -DCUDAEMU_UCONTEXT, ucontext.
#if defined(__x86_64__) && !defined(CUDAEMU_UCONTEXT)
#define CUDAEMU_FAST_SWITCH 1
extern "C" void cudaemu_ctx_switch(void** save_sp, void* new_sp);
asm(R"(
    .text
    .p2align 4
    .type cudaemu_ctx_switch,@function
cudaemu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $16, %rsp
    fnstcw (%rsp)
    stmxcsr 8(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    fldcw (%rsp)
    ldmxcsr 8(%rsp)
    addq $16, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size cudaemu_ctx_switch,.-cudaemu_ctx_switch
)");
#endif

namespace cudaemu {
namespace {
struct Ctx {
#ifdef CUDAEMU_FAST_SWITCH
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
};

void ctx_init(Ctx& c, char* stack, size_t size, void (*fn)()) {
#ifdef CUDAEMU_FAST_SWITCH
    uintptr_t top = ((uintptr_t)(stack + size)) & ~(uintptr_t)15;
    unsigned long long* sp = (unsigned long long*)top;
    *--sp = 0;                       // fake return address of fn (it never returns)
    *--sp = (unsigned long long)fn;  // popped by ret
    for (int i = 0; i < 6; ++i) *--sp = 0;  // rbp rbx r12 r13 r14 r15
    *--sp = 0x1F80;                  // mxcsr (at +8)
    *--sp = 0x037F;                  // x87 control word (at +0)
    c.sp = sp;
#else
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, fn, 0);
#endif
}

inline void ctx_switch(Ctx& from, Ctx& to) {
#ifdef CUDAEMU_FAST_SWITCH
    cudaemu_ctx_switch(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
}

// Leave a signal handler for context `to` (the fiber that faulted is abandoned).
[[noreturn]] void ctx_escape(Ctx& to) {
#ifdef CUDAEMU_FAST_SWITCH
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    sigaddset(&set, SIGBUS);
    sigprocmask(SIG_UNBLOCK, &set, nullptr);  // a handler left without sigreturn keeps them blocked
    void* dummy;
    cudaemu_ctx_switch(&dummy, to.sp);
#else
    setcontext(&to.uc);
#endif
    abort();
}
}  // namespace
}  // namespace cudaemu

namespace cudaemu {

ThreadView* g_cur = nullptr;
uint3 g_blockIdx;
dim3 g_blockDim, g_gridDim;

namespace {

struct Kernel {
    const char* name;
    void* fn;
    Invoker inv;
    int nparams;
    const ParamDesc* params;
    int max_threads;
};
std::vector<Kernel>& kernels() {
    static std::vector<Kernel> v;
    return v;
}

enum State { READY, WAIT_BAR, WAIT_WARP, EXITED };

// One cp.async copy in flight: its bytes were read from global memory at issue time (global
// memory does not change under a running kernel here) and land in shared memory at completion.
struct AsyncCopy {
    unsigned dst, bytes;
    unsigned char data[16];
};

struct Thread : ThreadView {
    int linear;
    State st;
    const char* site;        // barrier / collective site while waiting
    Ctx ctx;
    char* stack;
    // cp.async state: copies[landed..] are in flight; group_end[gdone..] are the ends (indices
    // into copies) of the committed groups not yet waited for; copies past the last end are not
    // committed yet.
    std::vector<AsyncCopy> copies;
    size_t landed = 0;
    std::vector<size_t> group_end;
    size_t gdone = 0;
};

struct WarpState;
typedef void (*WarpCompute)(WarpState&);
struct WarpState {
    unsigned arrived, mask, exited, present;
    const void* key;
    const char* site;
    WarpCompute compute;
    void* ctx;
    void* data[32];
};

const size_t STACK_BYTES = 256 * 1024;
const size_t WINDOW = 256 * 1024;         // emulated shared window (>= 227 KiB, the sm_90 maximum)
const size_t SGUARD = 32;                 // guard bytes after each shared variable / the dynamic area
const size_t STATIC_LIMIT = 48 * 1024;    // static + dynamic without the opt-in attribute
const size_t OPTIN_LIMIT = 227 * 1024;    // static + opt-in dynamic (sm_90's per-block maximum)

alignas(128) unsigned char g_smem[WINDOW];
struct SVar {
    const void* key;
    size_t off, size;
    const char* name;
    const char* site;
};
std::vector<SVar> g_svars;
size_t g_dyn = 0, g_static_base = 0, g_static_top = 0;
size_t g_dyn_max = 0;   // the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize, 0: not set

std::vector<Thread> g_threads;
std::vector<WarpState> g_warps;
int g_nthreads = 0;
Ctx g_sched;
bool g_in_fiber = false, g_failed = false;
bool g_async_eager = false;  // cp.async copies land at issue (reverse schedule) instead of at the wait
char g_fault_msg[768];
volatile bool g_fault = false;
std::string g_err;
const Kernel* g_kernel = nullptr;
void** g_args = nullptr;

Thread* cur() { return static_cast<Thread*>(g_cur); }

std::string where() {
    char buf[256];
    if (!g_kernel) return "cudaemu";
    if (g_in_fiber && g_cur)
        snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", g_kernel->name, g_blockIdx.x,
                 g_blockIdx.y, g_blockIdx.z, g_cur->tid.x, g_cur->tid.y, g_cur->tid.z);
    else
        snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u)", g_kernel->name, g_blockIdx.x, g_blockIdx.y,
                 g_blockIdx.z);
    return buf;
}

std::string vfmt(const char* fmt, va_list ap) {
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return buf;
}

std::string fmt(const char* f, ...) {
    va_list ap;
    va_start(ap, f);
    std::string s = vfmt(f, ap);
    va_end(ap);
    return s;
}

void sched_fail(const std::string& msg) {
    if (!g_failed) g_err = where() + ": " + msg;
    g_failed = true;
}

void yield(Thread* t) { ctx_switch(t->ctx, g_sched); }

char* stack_for(int i) {
    Thread& t = g_threads[i];
    if (!t.stack) {
        long pg = sysconf(_SC_PAGESIZE);
        void* p = mmap(nullptr, STACK_BYTES + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return nullptr;
        mprotect(p, pg, PROT_NONE);  // overflow of the fiber stack faults instead of corrupting
        t.stack = (char*)p + pg;
    }
    return t.stack;
}

void wg_reset(size_t nwarps);
const char* wg_in_flight(int warp);  // site of a wgmma.mma_async of the warp not yet retired, or null

void thread_exit(Thread* t) {
    if (t->landed < t->copies.size())
        fail("thread exits with %zu cp.async copies never waited for (cp.async.wait_group / wait_all): their "
             "shared-memory writes are unordered with everything the block did",
             t->copies.size() - t->landed);
    t->st = EXITED;
    const int w = t->linear >> 5, lane = t->linear & 31;
    if (const char* site = wg_in_flight(w))
        fail("lane %d exited with the results of the wgmma.mma_async at %s still in flight (a missing "
             "wgmma.wait_group: its accumulators are undefined)", lane, site);
    WarpState& W = g_warps[w];
    W.exited |= 1u << lane;
    if (W.arrived && (W.mask >> lane & 1u))
        fail("lane %d exited while lanes 0x%08x of its warp wait for it at the warp collective %s", lane, W.arrived,
             W.site);
    yield(t);
}

void fiber_main() {
    Thread* t = cur();
    g_kernel->inv(g_kernel->fn, g_args);
    thread_exit(t);
}

std::string thread_list(const std::vector<int>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size() && i < 8; ++i) {
        const Thread& t = g_threads[ids[i]];
        s += fmt("%s(%u,%u,%u)", i ? " " : "", t.tid.x, t.tid.y, t.tid.z);
    }
    if (ids.size() > 8) s += fmt(" ... (%zu threads)", ids.size());
    return s;
}

bool check_shared_guards() {
    for (size_t i = 0; i < SGUARD; ++i)
        if (g_smem[g_dyn + i] != 0xFF) {
            sched_fail(fmt("write past the end of the dynamic shared memory (%zu bytes requested at launch): "
                           "guard byte +%zu was modified",
                           g_dyn, i));
            return false;
        }
    for (const SVar& v : g_svars)
        for (size_t i = 0; i < SGUARD; ++i)
            if (g_smem[v.off + v.size + i] != 0xFF) {
                sched_fail(fmt("write past the end of __shared__ %s (%zu bytes, declared at %s): guard byte +%zu "
                               "was modified",
                               v.name, v.size, v.site, i));
                return false;
            }
    return true;
}

bool run_block(bool reverse) {
    const int n = g_nthreads;
    memset(g_smem, 0xFF, WINDOW);  // NaN in every float width, -1 in every integer width
    for (auto& W : g_warps) {
        W.arrived = W.exited = 0;
    }
    wg_reset(g_warps.size());
    for (int i = 0; i < n; ++i) {
        Thread& t = g_threads[i];
        t.linear = i;
        t.tid.x = i % g_blockDim.x;
        t.tid.y = (i / g_blockDim.x) % g_blockDim.y;
        t.tid.z = i / (g_blockDim.x * g_blockDim.y);
        t.st = READY;
        t.site = nullptr;
        t.copies.clear();
        t.group_end.clear();
        t.landed = t.gdone = 0;
        char* stk = stack_for(i);
        if (!stk) {
            sched_fail("out of memory for fiber stacks");
            return false;
        }
        ctx_init(t.ctx, stk, STACK_BYTES, fiber_main);
    }
    for (;;) {
        bool any = false;
        for (int k = 0; k < n; ++k) {
            Thread& t = g_threads[reverse ? n - 1 - k : k];
            if (t.st != READY) continue;
            any = true;
            g_cur = &t;
            g_in_fiber = true;
            ctx_switch(g_sched, t.ctx);
            g_in_fiber = false;
            if (g_fault) {
                g_fault = false;
                if (!g_failed) g_err = g_fault_msg;
                g_failed = true;
            }
            if (g_failed) return false;
        }
        if (any) continue;
        std::vector<int> bar, warp, exited;
        for (int i = 0; i < n; ++i) {
            if (g_threads[i].st == WAIT_BAR) bar.push_back(i);
            else if (g_threads[i].st == WAIT_WARP) warp.push_back(i);
            else if (g_threads[i].st == EXITED) exited.push_back(i);
        }
        if (bar.empty() && warp.empty()) break;  // every thread finished
        if (!warp.empty()) {
            const Thread& t = g_threads[warp[0]];
            std::string m = fmt("deadlock: threads %s wait at the warp collective %s", thread_list(warp).c_str(),
                                t.site);
            if (!bar.empty()) m += fmt(", threads %s at __syncthreads %s", thread_list(bar).c_str(),
                                       g_threads[bar[0]].site);
            if (!exited.empty()) m += fmt(", threads %s exited", thread_list(exited).c_str());
            sched_fail(m);
            return false;
        }
        // every live thread waits at a barrier: same site, nobody exited
        const char* site = g_threads[bar[0]].site;
        std::vector<int> other;
        for (int i : bar)
            if (strcmp(g_threads[i].site, site) != 0) other.push_back(i);
        if (!other.empty()) {
            sched_fail(fmt("__syncthreads reached from different places: threads %s at %s, threads %s at %s",
                           thread_list(std::vector<int>(1, bar[0])).c_str(), site, thread_list(other).c_str(),
                           g_threads[other[0]].site));
            return false;
        }
        if (!exited.empty()) {
            sched_fail(fmt("__syncthreads at %s reached by %zu threads while threads %s had exited (every thread of "
                           "the block must reach it)",
                           site, bar.size(), thread_list(exited).c_str()));
            return false;
        }
        for (int i : bar) g_threads[i].st = READY;
    }
    return check_shared_guards();
}

struct sigaction g_old_segv, g_old_bus;
char g_altstack[64 * 1024];

// A fault inside a kernel (an access outside every staged buffer hits the PROT_NONE guard regions
// the launcher maps around them) becomes a launch error, as CUDA's "illegal memory access": the
// fiber is abandoned and the scheduler resumes. Outside a kernel the previous handler runs.
void on_fault(int sig, siginfo_t* si, void*) {
    if (g_in_fiber && g_kernel && g_cur && !g_fault) {
        snprintf(g_fault_msg, sizeof g_fault_msg,
                 "kernel %s, block (%u,%u,%u), thread (%u,%u,%u): illegal memory access at address %p (signal %d): "
                 "outside every argument's buffer and the block's shared memory",
                 g_kernel->name, g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, g_cur->tid.x, g_cur->tid.y, g_cur->tid.z,
                 si->si_addr, sig);
        g_fault = true;
        static_cast<Thread*>(g_cur)->st = EXITED;
        ctx_escape(g_sched);
    }
    char buf[256];
    int len = snprintf(buf, sizeof buf, "\ncudaemu: fatal signal %d (address %p) outside a kernel\n", sig, si->si_addr);
    if (len > 0) {
        ssize_t r = write(2, buf, (size_t)len);
        (void)r;
    }
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
}

}  // namespace

// ---- device-side API ----------------------------------------------------------------------------
void fail(const char* f, ...) {
    va_list ap;
    va_start(ap, f);
    std::string m = vfmt(f, ap);
    va_end(ap);
    if (!g_failed) g_err = where() + ": " + m;
    g_failed = true;
    if (g_in_fiber && g_cur) {
        Thread* t = cur();
        t->st = EXITED;
        ctx_switch(t->ctx, g_sched);
    }
    fprintf(stderr, "%s\n", g_err.c_str());
    abort();
}

int add_kernel(const char* name, void* fn, Invoker inv, int nparams, const ParamDesc* params, int max_threads) {
    kernels().push_back(Kernel{name, fn, inv, nparams, params, max_threads});
    return (int)kernels().size();
}

void syncthreads(const char* site) {
    Thread* t = cur();
    t->st = WAIT_BAR;
    t->site = site;
    yield(t);
}

// One warp-collective step: every lane of `mask` deposits `data`; the last to arrive runs
// `compute` for all of them. Lanes must meet at the same site with the same mask.
static void warp_collective(const void* key, const char* site, unsigned mask, void* data, WarpCompute compute,
                            void* ctx) {
    Thread* t = cur();
    const int w = t->linear >> 5, lane = t->linear & 31;
    WarpState& W = g_warps[w];
    if (!(mask >> lane & 1u)) fail("warp collective %s with mask 0x%08x that excludes the calling lane %d", site, mask, lane);
    if (mask & ~W.present)
        fail("warp collective %s: mask 0x%08x names lanes that do not exist in this block (warp lanes 0x%08x)", site,
             mask, W.present);
    if (mask & W.exited)
        fail("warp collective %s after lanes 0x%08x of the mask exited", site, mask & W.exited);
    if (W.arrived == 0) {
        W.mask = mask;
        W.key = key;
        W.site = site;
        W.compute = compute;
        W.ctx = ctx;
    } else if (W.key != key || W.mask != mask) {
        fail("warp divergence: lane %d reaches the warp collective %s (mask 0x%08x) while lanes 0x%08x wait at %s "
             "(mask 0x%08x)",
             lane, site, mask, W.arrived, W.site, W.mask);
    }
    W.data[lane] = data;
    W.arrived |= 1u << lane;
    t->site = site;
    if (W.arrived == W.mask) {
        W.compute(W);
        g_cur = t;  // compute points g_cur at other lanes for its messages
        W.arrived = 0;
        for (int l = 0; l < 32; ++l)
            if ((W.mask >> l & 1u) && l != lane) g_threads[w * 32 + l].st = READY;
        return;
    }
    t->st = WAIT_WARP;
    yield(t);
}

namespace {
struct ShflData {
    unsigned long long in, out;
    int mode, arg, width;
};
void shfl_compute(WarpState& W) {
    for (int l = 0; l < 32; ++l) {
        if (!(W.mask >> l & 1u)) continue;
        ShflData* d = (ShflData*)W.data[l];
        const int w = d->width, base = l & ~(w - 1);
        int src;
        switch (d->mode) {
            case SHFL_XOR: src = l ^ d->arg; if (src >= base + w) src = l; break;
            case SHFL_DOWN: src = l + d->arg; if (src >= base + w) src = l; break;
            case SHFL_UP: src = l - d->arg; if (src < base) src = l; break;
            default: src = base + (d->arg & (w - 1)); break;
        }
        if (src < 0 || src > 31 || !(W.mask >> src & 1u)) {
            g_cur = &g_threads[(cur()->linear & ~31) + l];
            fail("shuffle at %s: lane %d reads lane %d, which is not in the mask 0x%08x", W.site, l, src, W.mask);
        }
        d->out = ((ShflData*)W.data[src])->in;
    }
}
}  // namespace

unsigned long long shfl(unsigned mask, unsigned long long bits, int mode, int arg, int width, const char* site) {
    if (width <= 0 || width > 32 || (width & (width - 1))) fail("shuffle at %s: width %d is not a power of 2 <= 32", site, width);
    ShflData d{bits, 0, mode, arg, width};
    warp_collective(site, site, mask, &d, shfl_compute, nullptr);
    return d.out;
}

void* shared_var(const void* key, size_t size, size_t align, const char* name, const char* site) {
    for (const SVar& v : g_svars)
        if (v.key == key) return g_smem + v.off;
    if (align < 1) align = 1;
    const size_t off = (g_static_top + align - 1) / align * align;
    const size_t top = off + size + SGUARD;
    const size_t static_bytes = off + size - g_static_base;
    if (!g_dyn_max && static_bytes + g_dyn > STATIC_LIMIT)
        fail("__shared__ %s (%s): %zu bytes of static plus %zu bytes of dynamic shared memory exceed the 48 KiB a "
             "launch gets without cudaFuncAttributeMaxDynamicSharedMemorySize",
             name, site, static_bytes, g_dyn);
    if (g_dyn_max && static_bytes + g_dyn_max > OPTIN_LIMIT)
        fail("__shared__ %s (%s): %zu bytes of static shared memory plus the %zu bytes of "
             "cudaFuncAttributeMaxDynamicSharedMemorySize exceed the 227 KiB per block of sm_90",
             name, site, static_bytes, g_dyn_max);
    if (top > WINDOW) fail("__shared__ %s (%s) does not fit the emulated shared window", name, site);
    g_svars.push_back(SVar{key, off, size, name, site});
    g_static_top = top;
    return g_smem + off;
}

void* dynamic_shared(size_t align, const char* site) {
    (void)site;
    (void)align;  // the window is 128-byte aligned and the dynamic area starts it
    return g_smem;
}

// ==================================================================================================
// PTX interpreter
// ==================================================================================================
namespace {

enum Op { OP_UNKNOWN, OP_CVT_F32_F16, OP_CVT_F16_F32, OP_CVT_BF16_F32, OP_CVT_INT, OP_CVTA_SHARED, OP_MOV,
          OP_LDMATRIX, OP_MMA, OP_MMA_TF32, OP_CVT_TF32, OP_CP_ASYNC, OP_CP_COMMIT, OP_CP_WAIT, OP_CP_WAIT_ALL,
          // sm_90a warpgroup MMA (see "wgmma" below)
          OP_SETP_NE, OP_FENCE_PROXY_ASYNC, OP_WG_FENCE, OP_WG_COMMIT, OP_WG_WAIT, OP_WGMMA };

struct PArg {
    int kind = 0;                 // 0 asm operand, 1 local register, 2 immediate, 3 vector, 4 address
    int idx = 0;
    long long imm = 0;
    std::vector<PArg> elems;      // vector elements / address base (elems[0])
};

struct Instr {
    Op op = OP_UNKNOWN;
    std::string text;
    std::vector<PArg> args;
    int dsize = 0, ssize = 0;     // cvt / mov sizes in bytes
    bool dsigned = false, ssigned = false;
    int nmat = 0;                 // ldmatrix .x1/.x2/.x4
    bool trans = false;
    bool bf16 = false;            // mma operand type
    int wg_n = 0;                 // wgmma: N of m64nNk16
};

}  // namespace

struct PtxProgram {
    std::vector<Instr> ins;
    std::vector<int> local_size;
    std::vector<std::string> local_name;
    std::string text, loc;
};

namespace {

struct Frame {
    const Operand* ops;
    int nops;
    unsigned long long locals[16];
    const PtxProgram* prog;
    const Instr* ins;
};

[[noreturn]] void ptx_fail(const PtxProgram& p, const std::string& what) {
    fail("inline PTX at %s: %s\n    asm text: \"%s\"", p.loc.c_str(), what.c_str(), p.text.c_str());
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::vector<std::string> split_top(const std::string& s, char sep) {
    std::vector<std::string> out;
    int depth = 0;
    std::string curs;
    for (char c : s) {
        if (c == '{' || c == '[') ++depth;
        if (c == '}' || c == ']') --depth;
        if (c == sep && depth == 0) {
            out.push_back(trim(curs));
            curs.clear();
        } else {
            curs += c;
        }
    }
    if (!trim(curs).empty() || !out.empty()) out.push_back(trim(curs));
    return out;
}

int type_bytes(const std::string& t, bool* is_signed = nullptr) {
    if (is_signed) *is_signed = t[0] == 's';
    if (t == "u64" || t == "s64" || t == "b64" || t == "f64") return 8;
    if (t == "u32" || t == "s32" || t == "b32" || t == "f32") return 4;
    if (t == "u16" || t == "s16" || t == "b16" || t == "f16" || t == "bf16") return 2;
    if (t == "u8" || t == "s8" || t == "b8") return 1;
    if (t == "pred") return 1;
    return 0;
}

PArg parse_arg(PtxProgram& p, const std::string& s0, int nops) {
    std::string s = trim(s0);
    PArg a;
    if (s.empty()) ptx_fail(p, "empty operand");
    if (s[0] == '{') {
        if (s.back() != '}') ptx_fail(p, "unbalanced vector operand " + s);
        a.kind = 3;
        for (auto& e : split_top(s.substr(1, s.size() - 2), ',')) a.elems.push_back(parse_arg(p, e, nops));
        return a;
    }
    if (s[0] == '[') {
        if (s.back() != ']') ptx_fail(p, "unbalanced address operand " + s);
        std::string in = trim(s.substr(1, s.size() - 2));
        a.kind = 4;
        size_t plus = in.find('+');
        if (plus != std::string::npos) {
            a.imm = strtoll(trim(in.substr(plus + 1)).c_str(), nullptr, 0);
            in = trim(in.substr(0, plus));
        }
        a.elems.push_back(parse_arg(p, in, nops));
        return a;
    }
    if (s[0] == '%') {
        if (s.size() > 1 && isdigit((unsigned char)s[1])) {
            a.kind = 0;
            a.idx = atoi(s.c_str() + 1);
            if (a.idx >= nops) ptx_fail(p, fmt("operand %s but the asm statement has %d operands", s.c_str(), nops));
            return a;
        }
        ptx_fail(p, "special register " + s + " is not emulated");
    }
    if (isdigit((unsigned char)s[0]) || s[0] == '-') {
        a.kind = 2;
        a.imm = strtoll(s.c_str(), nullptr, 0);
        return a;
    }
    for (size_t i = 0; i < p.local_name.size(); ++i)
        if (p.local_name[i] == s) {
            a.kind = 1;
            a.idx = (int)i;
            return a;
        }
    ptx_fail(p, "unknown operand '" + s + "' (not %n, a declared .reg or an immediate)");
}

void parse_instr(PtxProgram& p, const std::string& stmt, int nops) {
    std::string s = trim(stmt);
    if (s.empty()) return;
    if (s[0] == '@') ptx_fail(p, "predicated instruction '" + s + "' is not emulated");
    size_t sp = s.find_first_of(" \t");
    std::string opc = s.substr(0, sp), rest = sp == std::string::npos ? "" : trim(s.substr(sp));
    std::vector<std::string> mods;
    {
        size_t b = 0;
        while (true) {
            size_t e = opc.find('.', b);
            mods.push_back(opc.substr(b, e == std::string::npos ? std::string::npos : e - b));
            if (e == std::string::npos) break;
            b = e + 1;
        }
    }
    if (mods[0] == ".reg" || (mods[0].empty() && mods.size() > 1 && mods[1] == "reg")) {
        // .reg .type a, b, c
        size_t tsp = rest.find_first_of(" \t");
        std::string ty = rest.substr(0, tsp);
        if (ty.empty() || ty[0] != '.') ptx_fail(p, "cannot parse register declaration '" + s + "'");
        const int bytes = type_bytes(ty.substr(1));
        if (!bytes) ptx_fail(p, "register type " + ty + " is not emulated");
        for (auto& n : split_top(trim(rest.substr(tsp)), ',')) {
            if (p.local_name.size() >= 16) ptx_fail(p, "more than 16 scoped registers");
            p.local_name.push_back(n);
            p.local_size.push_back(bytes);
        }
        return;
    }
    Instr in;
    in.text = s;
    for (auto& a : split_top(rest, ',')) in.args.push_back(parse_arg(p, a, nops));
    auto has = [&](const char* m) {
        for (auto& x : mods)
            if (x == m) return true;
        return false;
    };
    const std::string& o = mods[0];
    if (o == "cvt" && mods.size() == 3 && mods[1] == "f32" && mods[2] == "f16") {
        in.op = OP_CVT_F32_F16;
    } else if (o == "cvt" && mods.size() == 4 && mods[1] == "rn" && mods[2] == "f16" && mods[3] == "f32") {
        in.op = OP_CVT_F16_F32;
    } else if (o == "cvt" && mods.size() == 4 && mods[1] == "rn" && mods[2] == "bf16" && mods[3] == "f32") {
        in.op = OP_CVT_BF16_F32;
    } else if (o == "cvt" && mods.size() == 3 && (mods[1][0] == 'u' || mods[1][0] == 's') &&
               (mods[2][0] == 'u' || mods[2][0] == 's') && type_bytes(mods[1]) && type_bytes(mods[2])) {
        in.op = OP_CVT_INT;
        in.dsize = type_bytes(mods[1], &in.dsigned);
        in.ssize = type_bytes(mods[2], &in.ssigned);
    } else if (o == "cvta" && mods.size() == 4 && mods[1] == "to" && mods[2] == "shared" &&
               (mods[3] == "u64" || mods[3] == "u32")) {
        in.op = OP_CVTA_SHARED;
        in.dsize = type_bytes(mods[3]);
    } else if (o == "mov" && mods.size() == 2 && type_bytes(mods[1]) && mods[1] != "pred") {
        in.op = OP_MOV;
        in.dsize = type_bytes(mods[1]);
    } else if (o == "ldmatrix" && has("sync") && has("aligned") && has("m8n8") && has("shared") && has("b16") &&
               (has("x1") || has("x2") || has("x4"))) {
        in.op = OP_LDMATRIX;
        in.nmat = has("x4") ? 4 : has("x2") ? 2 : 1;
        in.trans = has("trans");
        size_t known = 7 + (in.trans ? 1 : 0);
        if (mods.size() != known) ptx_fail(p, "ldmatrix form '" + opc + "' is not emulated");
    } else if (o == "cvt" && opc == "cvt.rna.tf32.f32") {
        in.op = OP_CVT_TF32;
    } else if (o == "mma" && opc == "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32") {
        in.op = OP_MMA_TF32;
    } else if (o == "mma" && opc == "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32") {
        in.op = OP_MMA;
        in.bf16 = false;
    } else if (o == "mma" && opc == "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") {
        in.op = OP_MMA;
        in.bf16 = true;
    } else if (o == "setp" && mods.size() == 3 && mods[1] == "ne" &&
               (mods[2] == "b32" || mods[2] == "u32" || mods[2] == "s32")) {
        in.op = OP_SETP_NE;
        in.ssize = 4;
    } else if (opc == "fence.proxy.async.shared::cta" || opc == "fence.proxy.async") {
        in.op = OP_FENCE_PROXY_ASYNC;
    } else if (opc == "wgmma.fence.sync.aligned") {
        in.op = OP_WG_FENCE;
    } else if (opc == "wgmma.commit_group.sync.aligned") {
        in.op = OP_WG_COMMIT;
    } else if (opc == "wgmma.wait_group.sync.aligned") {
        in.op = OP_WG_WAIT;
    } else if (o == "wgmma" && mods.size() == 8 && mods[1] == "mma_async" && mods[2] == "sync" &&
               mods[3] == "aligned" && mods[5] == "f32" && mods[6] == mods[7] && (mods[6] == "f16" || mods[6] == "bf16")) {
        // wgmma.mma_async.sync.aligned.m64nNk16.f32.{f16,bf16}.{f16,bf16}: A and B from descriptors
        int n = 0;
        if (sscanf(mods[4].c_str(), "m64n%dk16", &n) != 1 || mods[4] != "m64n" + std::to_string(n) + "k16" ||
            n < 8 || n > 256 || n % 8)
            ptx_fail(p, "wgmma shape ." + mods[4] + " is not a valid m64nNk16 shape");
        in.op = OP_WGMMA;
        in.wg_n = n;
        in.bf16 = mods[6] == "bf16";
    } else if (o == "cp" && mods.size() >= 5 && mods[1] == "async" && (mods[2] == "ca" || mods[2] == "cg") &&
               (mods[3] == "shared" || mods[3] == "shared::cta") && mods[4] == "global") {
        // cp.async.{ca,cg}.shared{::cta}.global{.L2::{64,128,256}B} [dst], [src], cp-size{, src-size}
        for (size_t i = 5; i < mods.size(); ++i)
            if (mods[i] != "L2::64B" && mods[i] != "L2::128B" && mods[i] != "L2::256B")
                ptx_fail(p, "cp.async qualifier ." + mods[i] + " is not emulated");
        in.op = OP_CP_ASYNC;
        in.trans = mods[2] == "cg";  // .cg: 16 bytes only
        if (in.args.size() != 3 && in.args.size() != 4)
            ptx_fail(p, "'" + s + "': cp.async takes [dst], [src], cp-size and an optional src-size");
    } else if (opc == "cp.async.commit_group") {
        in.op = OP_CP_COMMIT;
    } else if (opc == "cp.async.wait_group") {
        in.op = OP_CP_WAIT;
    } else if (opc == "cp.async.wait_all") {
        in.op = OP_CP_WAIT_ALL;
    } else {
        ptx_fail(p, "instruction '" + s + "' is not emulated");
    }
    p.ins.push_back(in);
}

PtxProgram* parse_ptx(const char* text, const char* loc, int nops) {
    PtxProgram* p = new PtxProgram;
    p->text = text;
    p->loc = loc;
    std::string stmt;
    int vdepth = 0;
    const std::string t = text;
    for (size_t i = 0; i < t.size(); ++i) {
        const char c = t[i];
        if (c == '/' && i + 1 < t.size() && t[i + 1] == '/') {
            while (i < t.size() && t[i] != '\n') ++i;
            continue;
        }
        const bool at_start = trim(stmt).empty();
        if (c == '{' && at_start) continue;  // scope open
        if (c == '}' && at_start) continue;  // scope close
        if (c == '{') ++vdepth;
        if (c == '}') --vdepth;
        if (c == ';' && vdepth == 0) {
            parse_instr(*p, stmt, nops);
            stmt.clear();
            continue;
        }
        stmt += c;
    }
    if (!trim(stmt).empty()) parse_instr(*p, stmt, nops);  // a last instruction without ';'
    return p;
}

const char* cons_name(char c) {
    switch (c) {
        case 'h': return "h (16-bit)";
        case 'r': return "r (32-bit)";
        case 'l': return "l (64-bit)";
        case 'f': return "f (f32)";
        case 'd': return "d (f64)";
        default: return "?";
    }
}

int cons_bytes(char c) {
    switch (c) {
        case 'h': return 2;
        case 'r': case 'f': return 4;
        case 'l': case 'd': return 8;
        case 'n': return 0;
        default: return -1;
    }
}

unsigned long long rd(Frame& f, const PArg& a, int bytes) {
    const PtxProgram& p = *f.prog;
    if (a.kind == 2) return (unsigned long long)a.imm;
    if (a.kind == 1) {
        if (f.prog->local_size[a.idx] != bytes)
            ptx_fail(p, fmt("'%s': register %s is %d bytes, the instruction reads %d", f.ins->text.c_str(),
                            p.local_name[a.idx].c_str(), p.local_size[a.idx], bytes));
        return f.locals[a.idx];
    }
    if (a.kind != 0) ptx_fail(p, "'" + f.ins->text + "': operand is not a scalar");
    const Operand& o = f.ops[a.idx];
    if (o.mode == '=') ptx_fail(p, fmt("'%s' reads %%%d, an output-only operand (\"=%c\")", f.ins->text.c_str(), a.idx, o.cons));
    if (o.cons != 'n' && ((int)o.size != bytes || cons_bytes(o.cons) != bytes))
        ptx_fail(p, fmt("'%s': operand %%%d is constraint %s bound to a %u-byte object; the instruction reads %d bytes",
                        f.ins->text.c_str(), a.idx, cons_name(o.cons), o.size, bytes));
    unsigned long long v = 0;
    memcpy(&v, o.p, o.size < 8 ? o.size : 8);
    return v;
}

void wr(Frame& f, const PArg& a, unsigned long long v, int bytes) {
    const PtxProgram& p = *f.prog;
    if (a.kind == 1) {
        if (p.local_size[a.idx] != bytes)
            ptx_fail(p, fmt("'%s': register %s is %d bytes, the instruction writes %d", f.ins->text.c_str(),
                            p.local_name[a.idx].c_str(), p.local_size[a.idx], bytes));
        f.locals[a.idx] = bytes == 8 ? v : (v & ((1ull << (8 * bytes)) - 1));
        return;
    }
    if (a.kind != 0) ptx_fail(p, "'" + f.ins->text + "': destination is not a register");
    const Operand& o = f.ops[a.idx];
    if (o.mode == 'i') ptx_fail(p, fmt("'%s' writes %%%d, an input operand", f.ins->text.c_str(), a.idx));
    if ((int)o.size != bytes || cons_bytes(o.cons) != bytes)
        ptx_fail(p, fmt("'%s': operand %%%d is constraint %s bound to a %u-byte object; the instruction writes %d bytes",
                        f.ins->text.c_str(), a.idx, cons_name(o.cons), o.size, bytes));
    memcpy(o.p, &v, bytes);
}

}  // namespace

// ---- number formats (exact, round to nearest even) ----------------------------------------------
extern "C" CUDAEMU_API float cudaemu_f16_to_f32(unsigned short h) {
    const unsigned sign = (unsigned)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_to_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e == 0) {
        float v = (float)m * 5.9604644775390625e-08f;  // m * 2^-24, exact
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((e + 112u) << 23) | (m << 13));
}

extern "C" CUDAEMU_API unsigned short cudaemu_f32_to_f16_rn(float f) {
    const unsigned x = float_to_bits(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return 0x7fffu;                   // NaN -> canonical NaN
    if (ax >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // >= 65520 rounds to infinity
    if (ax >= 0x38800000u) {                                // normal: rebias, round 13 bits away
        const unsigned m = ax - (112u << 23);
        return (unsigned short)(sign | ((m + 0xfffu + ((m >> 13) & 1u)) >> 13));
    }
    if (ax <= 0x33000000u) return (unsigned short)sign;      // <= 2^-25: rounds to (signed) zero
    const unsigned e = ax >> 23, mant = (ax & 0x7fffffu) | 0x800000u;
    const int shift = 126 - (int)e;                         // value / 2^-24 = mant >> shift
    unsigned q = mant >> shift;
    const unsigned rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return (unsigned short)(sign | q);
}

extern "C" CUDAEMU_API unsigned short cudaemu_f32_to_bf16_rn(float f) {
    const unsigned x = float_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;    // NaN -> canonical NaN
    return (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// cvt.rna.tf32.f32: round to the 10 explicit mantissa bits of tf32, ties away from zero (the
// result is a .b32 whose low 13 bits are zero); overflow to infinity; NaN -> canonical 0x7fffffff.
extern "C" CUDAEMU_API unsigned cudaemu_f32_to_tf32_rna(float f) {
    const unsigned x = float_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fffffffu;
    if ((x & 0x7f800000u) == 0x7f800000u) return x;          // +-inf
    return (x + 0x1000u) & 0xffffe000u;                       // carries into the exponent: inf
}

static float bf16_to_f32(unsigned short b) { return bits_to_float((unsigned)b << 16); }

namespace {

// ---- warp-collective PTX ------------------------------------------------------------------------
struct LaneFrame {
    Frame* f;
};

unsigned smem_check(Frame& f, unsigned long long addr, unsigned bytes, unsigned align) {
    const PtxProgram& p = *f.prog;
    if (addr % align)
        ptx_fail(p, fmt("'%s': shared address 0x%llx is not %u-byte aligned", f.ins->text.c_str(), addr, align));
    const size_t used = g_svars.empty() ? g_dyn : g_static_top;
    if (addr + bytes > used || addr + bytes > WINDOW)
        ptx_fail(p, fmt("'%s': shared address 0x%llx + %u lies outside the block's shared memory (%zu bytes in use)",
                        f.ins->text.c_str(), addr, bytes, used));
    return (unsigned)addr;
}

unsigned long long addr_of(Frame& f, const PArg& a) {
    if (a.kind != 4) ptx_fail(*f.prog, "'" + f.ins->text + "': expected an address operand [..]");
    const PArg& b = a.elems[0];
    int bytes = 4;
    if (b.kind == 0) bytes = (int)f.ops[b.idx].size;
    else if (b.kind == 1) bytes = f.prog->local_size[b.idx];
    return rd(f, b, bytes) + (unsigned long long)a.imm;
}

void ldmatrix_compute(WarpState& W) {
    Frame* f0 = ((LaneFrame*)W.data[0])->f;
    const Instr& in = *f0->ins;
    unsigned short rows[4][8][8];
    for (int m = 0; m < in.nmat; ++m)
        for (int r = 0; r < 8; ++r) {
            Frame& f = *((LaneFrame*)W.data[8 * m + r])->f;
            g_cur = &g_threads[(cur()->linear & ~31) + 8 * m + r];
            const unsigned a = smem_check(f, addr_of(f, in.args[1]), 16, 16);
            memcpy(rows[m][r], g_smem + a, 16);
        }
    for (int l = 0; l < 32; ++l) {
        Frame& f = *((LaneFrame*)W.data[l])->f;
        const PArg& d = in.args[0];
        const int g = l >> 2, c = 2 * (l & 3);
        for (int m = 0; m < in.nmat; ++m) {
            unsigned lo, hi;
            if (!in.trans) {
                lo = rows[m][g][c];
                hi = rows[m][g][c + 1];
            } else {
                lo = rows[m][c][g];
                hi = rows[m][c + 1][g];
            }
            g_cur = &g_threads[(cur()->linear & ~31) + l];
            wr(f, d.elems[m], lo | (hi << 16), 4);
        }
    }
}

float half_of(unsigned reg, int h, bool bf16) {
    const unsigned short v = (unsigned short)(h ? reg >> 16 : reg & 0xffffu);
    return bf16 ? bf16_to_f32(v) : cudaemu_f16_to_f32(v);
}

void mma_compute(WarpState& W) {
    Frame* f0 = ((LaneFrame*)W.data[0])->f;
    const Instr& in = *f0->ins;
    const bool bf = in.bf16;
    double A[16][16], B[16][8], C[16][8];
    const int base = cur()->linear & ~31;
    for (int l = 0; l < 32; ++l) {   // gather every lane's fragments (C may alias D)
        Frame& f = *((LaneFrame*)W.data[l])->f;
        g_cur = &g_threads[base + l];
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; ++i) {
            const unsigned a = (unsigned)rd(f, in.args[1].elems[i], 4);
            for (int h = 0; h < 2; ++h) {   // element e = 2i + h: rows g | g+8, cols 2t (+8 for e >= 4)
                const int e = 2 * i + h;
                A[g + 8 * ((e >> 1) & 1)][2 * t + (e & 1) + 8 * (e >= 4)] = half_of(a, h, bf);
            }
        }
        for (int i = 0; i < 2; ++i) {
            const unsigned b = (unsigned)rd(f, in.args[2].elems[i], 4);
            for (int h = 0; h < 2; ++h) {   // element e = 2i + h: k = 2t + (e & 1) (+8 for e >= 2), n = g
                const int e = 2 * i + h;
                B[2 * t + (e & 1) + 8 * (e >= 2)][g] = half_of(b, h, bf);
            }
        }
        for (int i = 0; i < 4; ++i)
            C[g + 8 * (i >= 2)][2 * t + (i & 1)] = bits_to_float((unsigned)rd(f, in.args[3].elems[i], 4));
    }
    for (int l = 0; l < 32; ++l) {
        Frame& f = *((LaneFrame*)W.data[l])->f;
        g_cur = &g_threads[base + l];
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; ++i) {
            const int r = g + 8 * (i >= 2), c = 2 * t + (i & 1);
            double s = C[r][c];
            for (int k = 0; k < 16; ++k) s += A[r][k] * B[k][c];
            wr(f, in.args[0].elems[i], float_to_bits((float)s), 4);
        }
    }
}

// ---- wgmma (sm_90a warpgroup MMA) ----------------------------------------------------------------
// A warpgroup is 4 consecutive warps (warp w of the block is warp w % 4 of warpgroup w / 4). Warp
// j of a warpgroup owns rows 16j..16j+15 of the m64 accumulator, so each warp's share of
// wgmma.mma_async is computed by a warp collective of its own (the 4 warps' descriptors are
// checked to agree, issue by issue). Asynchrony: mma_async computes its result at issue (from the
// shared memory at that moment) into a pending list and writes NaN into the destination
// registers; commit_group closes the open list into a group; wait_group N retires the oldest
// groups until N remain: it checks that no byte of shared memory the retired ops read was
// modified since their issue, then writes their results into the registers. A later mma_async on
// registers still in flight accumulates onto the pending value (the hardware's in-order chaining
// of one accumulator). Errors: mma_async without a wgmma.fence since the warp's last wait_group;
// a lane exiting with results in flight (a missing wait_group); shared memory written under an
// op in flight; a warpgroup not entirely present or whose warps issue different descriptors.
struct WgRead {
    unsigned addr;
    unsigned char bytes[16];
};
struct WgOp {
    unsigned long long seq;
    std::string site;
    std::vector<std::pair<float*, float>> out;
    std::vector<WgRead> reads;   // 16-byte rows of A / B as read at issue
};
struct WgWarp {
    bool fenced = false;
    std::vector<WgOp> open;
    std::vector<std::vector<WgOp>> groups;     // committed, oldest first
    std::map<float*, unsigned long long> inflight;  // register -> seq of the last op writing it
    std::map<float*, float> pending_val;
    unsigned long long issued = 0;
};
std::vector<WgWarp> g_wg;                                       // per warp of the block
std::vector<std::vector<std::pair<unsigned long long, unsigned long long>>> g_wg_desc;  // per warpgroup
unsigned long long g_wg_seq = 0;

// Shared address of element (row, k) (row: M of A / N of B) of a 2-byte-element operand described
// by `desc` (PTX ISA "Matrix Descriptor"; the canonical layouts, T = 8 elements = 16 bytes,
// W-byte swizzle = Swizzle<log2(W/16),4,3> applied to the resulting address bits):
//   K-major  (trans 0): none ((8,m),(T,2k)):((1T,SBO),(1,LBO));
//                       W    ((8,m),(T,2k)):((W/2 el.,SBO),(1,T))   -- LBO unused
//   MN-major (trans 1): none ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO));
//                       W    ((T,W/16,m),(8,k)):((1,T,LBO),(W/2 el.,SBO))
unsigned wg_elem_addr(const PtxProgram& p, unsigned long long desc, int row, int k, bool mn_major) {
    const unsigned start = (unsigned)(desc & 0x3FFF) << 4, lbo = (unsigned)((desc >> 16) & 0x3FFF) << 4,
                   sbo = (unsigned)((desc >> 32) & 0x3FFF) << 4, base_off = (unsigned)((desc >> 49) & 7),
                   mode = (unsigned)(desc >> 62);
    if (base_off) ptx_fail(p, fmt("wgmma descriptor 0x%016llx: a non-zero matrix base offset is not emulated", desc));
    const unsigned r = (unsigned)row, kk = (unsigned)k;
    if (mode == 0) {
        if (!mn_major) return start + (r >> 3) * sbo + (kk >> 3) * lbo + (r & 7) * 16 + (kk & 7) * 2;
        return start + (r & 7) * 2 + (r >> 3) * sbo + (kk & 7) * 16 + (kk >> 3) * lbo;
    }
    const unsigned width = mode == 1 ? 128 : mode == 2 ? 64 : 32, chunks = width / 16;
    unsigned a;
    if (!mn_major)
        a = start + (r >> 3) * sbo + (r & 7) * width + kk * 2;
    else
        a = start + (r & 7) * 2 + ((r >> 3) % chunks) * 16 + ((r >> 3) / chunks) * lbo + (kk & 7) * width +
            (kk >> 3) * sbo;
    return a ^ (((a >> 7) & (chunks - 1)) << 4);
}

void wg_check_group(Frame& f) {
    const int nt = g_nthreads, w = cur()->linear >> 5;
    if ((w / 4 + 1) * 128 > nt)
        ptx_fail(*f.prog, fmt("'%s': warp %d belongs to warpgroup %d, which this %d-thread block does not fill "
                              "(wgmma needs 4 whole warps)", f.ins->text.c_str(), w, w / 4, nt));
}

void wg_fence_compute(WarpState& W) {
    Frame& f = *((LaneFrame*)W.data[0])->f;
    wg_check_group(f);
    g_wg[cur()->linear >> 5].fenced = true;
}

void wg_commit_compute(WarpState& W) {
    Frame& f = *((LaneFrame*)W.data[0])->f;
    wg_check_group(f);
    WgWarp& s = g_wg[cur()->linear >> 5];
    s.groups.push_back(std::move(s.open));
    s.open.clear();
}

void wg_retire(WgWarp& s, std::vector<WgOp>& grp, const PtxProgram& p) {
    for (WgOp& op : grp) {
        for (const WgRead& r : op.reads)
            if (memcmp(g_smem + r.addr, r.bytes, 16) != 0)
                ptx_fail(p, fmt("shared memory [0x%x, +16) read by the wgmma.mma_async at %s was modified before the "
                                "wgmma.wait_group that retires it (the hardware reads it asynchronously)",
                                r.addr, op.site.c_str()));
        for (auto& o : op.out) {
            auto it = s.inflight.find(o.first);
            if (it != s.inflight.end() && it->second == op.seq) {  // no later op pending on this register
                *o.first = o.second;
                s.inflight.erase(it);
                s.pending_val.erase(o.first);
            }
        }
    }
}

void wg_wait_compute(WarpState& W) {
    Frame& f = *((LaneFrame*)W.data[0])->f;
    wg_check_group(f);
    const long long n = (long long)rd(f, f.ins->args[0], 4);
    if (n < 0 || n > 7) ptx_fail(*f.prog, fmt("'%s': wait_group takes 0..7", f.ins->text.c_str()));
    WgWarp& s = g_wg[cur()->linear >> 5];
    while ((long long)s.groups.size() > n) {
        wg_retire(s, s.groups.front(), *f.prog);
        s.groups.erase(s.groups.begin());
    }
    s.fenced = false;  // registers may be touched again: the next batch needs a fresh wgmma.fence
}

void wgmma_compute(WarpState& W) {
    Frame* f0 = ((LaneFrame*)W.data[0])->f;
    const Instr& in = *f0->ins;
    const PtxProgram& p = *f0->prog;
    wg_check_group(*f0);
    const int w = cur()->linear >> 5, wq = w & 3, base = w * 32, N = in.wg_n, nreg = N / 2;
    WgWarp& s = g_wg[w];
    if (!s.fenced)
        ptx_fail(p, "wgmma.mma_async without a wgmma.fence since the warp's last wgmma.wait_group (the PTX ISA "
                    "requires the fence before the first wgmma.mma_async touching the accumulators)");
    unsigned long long da = 0, db = 0;
    long long scale_a = 1, scale_b = 1, ta = 0, tb = 0;
    bool scale_d = true;
    for (int l = 0; l < 32; ++l) {
        Frame& f = *((LaneFrame*)W.data[l])->f;
        g_cur = &g_threads[base + l];
        const unsigned long long a = rd(f, in.args[1], 8), b = rd(f, in.args[2], 8);
        const bool sd = rd(f, in.args[3], 1) != 0;
        if (l == 0) {
            da = a;
            db = b;
            scale_d = sd;
            scale_a = (long long)rd(f, in.args[4], 4);
            scale_b = (long long)rd(f, in.args[5], 4);
            ta = (long long)rd(f, in.args[6], 4);
            tb = (long long)rd(f, in.args[7], 4);
        } else if (a != da || b != db || sd != scale_d) {
            ptx_fail(p, fmt("'%s': lanes 0 and %d pass different descriptors or scale-d (0x%llx 0x%llx vs 0x%llx 0x%llx)",
                            in.text.c_str(), l, da, db, a, b));
        }
    }
    g_cur = &g_threads[base];
    if ((int)scale_a != 1 && (int)scale_a != -1) ptx_fail(p, "imm-scale-a must be 1 or -1");
    if ((int)scale_b != 1 && (int)scale_b != -1) ptx_fail(p, "imm-scale-b must be 1 or -1");
    if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1)) ptx_fail(p, "imm-trans-a/b must be 0 or 1");
    {   // the 4 warps of the warpgroup must issue the same sequence of descriptors
        auto& v = g_wg_desc[w / 4];
        const auto d = std::make_pair(da, db);
        if (s.issued < v.size()) {
            if (v[s.issued] != d)
                ptx_fail(p, fmt("'%s': warp %d of the warpgroup issues descriptors (0x%llx, 0x%llx) as its wgmma #%llu, "
                                "another warp issued (0x%llx, 0x%llx)", in.text.c_str(), wq, da, db, s.issued,
                                v[s.issued].first, v[s.issued].second));
        } else {
            v.push_back(d);
        }
        ++s.issued;
    }
    // operands: A rows 16*wq .. +16 of the m64 x k16 tile, B all N rows (K-major, n x k16)
    const unsigned used = (unsigned)(g_svars.empty() ? g_dyn : g_static_top);
    WgOp op;
    op.seq = ++g_wg_seq;
    op.site = p.loc;
    std::vector<unsigned> chunks;  // 16-byte chunks read (snapshot for the wait's check)
    auto load = [&](unsigned long long desc, int row, bool mn_major, double* dst) {
        for (int k = 0; k < 16; ++k) {
            const unsigned a = wg_elem_addr(p, desc, row, k, mn_major);
            if (a % 2 || a + 2 > used || a + 2 > WINDOW)
                ptx_fail(p, fmt("'%s': descriptor 0x%llx puts row %d, k %d at shared address 0x%x, outside the block's "
                                "shared memory (%u bytes in use) or misaligned",
                                in.text.c_str(), desc, row, k, a, used));
            chunks.push_back(a & ~15u);
            unsigned short h;
            memcpy(&h, g_smem + a, 2);
            dst[k] = in.bf16 ? bf16_to_f32(h) : cudaemu_f16_to_f32(h);
        }
    };
    double A[16][16];
    std::vector<double> B((size_t)N * 16);
    for (int r = 0; r < 16; ++r) {
        load(da, 16 * wq + r, ta != 0, A[r]);
        for (int k = 0; k < 16; ++k) A[r][k] *= (double)scale_a;
    }
    for (int n = 0; n < N; ++n) {
        load(db, n, tb != 0, &B[(size_t)n * 16]);
        for (int k = 0; k < 16; ++k) B[(size_t)n * 16 + k] *= (double)scale_b;
    }
    std::sort(chunks.begin(), chunks.end());
    chunks.erase(std::unique(chunks.begin(), chunks.end()), chunks.end());
    for (unsigned c : chunks) {
        if (c + 16 > WINDOW) continue;
        WgRead rd_;
        rd_.addr = c;
        memcpy(rd_.bytes, g_smem + c, 16);
        op.reads.push_back(rd_);
    }
    // D fragment (PTX ISA, wgmma .m64nNk16 accumulator layout): register i of lane l of warp wq
    // holds row 16*wq + l/4 + 8*((i/2)%2), column 8*(i/4) + 2*(l%4) + i%2
    const PArg& d = in.args[0];
    const float nan = bits_to_float(0x7fc00000u);
    for (int l = 0; l < 32; ++l) {
        Frame& f = *((LaneFrame*)W.data[l])->f;
        g_cur = &g_threads[base + l];
        for (int i = 0; i < nreg; ++i) {
            const PArg& a = d.elems[i];
            if (a.kind != 0 || f.ops[a.idx].cons != 'f' || f.ops[a.idx].size != 4 || f.ops[a.idx].mode != '+')
                ptx_fail(p, fmt("'%s': accumulator %d must be a \"+f\" operand of a float", in.text.c_str(), i));
            float* reg = (float*)f.ops[a.idx].p;
            const int r = (l >> 2) + 8 * ((i >> 1) & 1), c = 8 * (i >> 2) + 2 * (l & 3) + (i & 1);
            double acc = 0.0;
            if (scale_d) {
                auto pv = s.pending_val.find(reg);
                acc = pv != s.pending_val.end() ? (double)pv->second : (double)*reg;
            }
            for (int k = 0; k < 16; ++k) acc += A[r][k] * B[(size_t)c * 16 + k];
            const float v = (float)acc;
            op.out.push_back(std::make_pair(reg, v));
            s.inflight[reg] = op.seq;
            s.pending_val[reg] = v;
            *reg = nan;  // undefined until wgmma.wait_group retires the op
        }
    }
    g_cur = &g_threads[base];
    s.open.push_back(std::move(op));
}

void wg_reset(size_t nwarps) {
    g_wg.assign(nwarps, WgWarp{});
    g_wg_desc.assign((nwarps + 3) / 4, {});
}

const char* wg_in_flight(int warp) {
    const WgWarp& s = g_wg[warp];
    if (!s.open.empty()) return s.open.front().site.c_str();
    for (const auto& g : s.groups)
        if (!g.empty()) return g.front().site.c_str();
    return nullptr;
}

// ---- cp.async (per thread; copies complete at the wait, or at issue with g_async_eager) ---------
void land(Thread* t, size_t end) {
    for (; t->landed < end; ++t->landed) {
        const AsyncCopy& c = t->copies[t->landed];
        memcpy(g_smem + c.dst, c.data, c.bytes);
    }
    if (t->landed == t->copies.size() && t->gdone == t->group_end.size()) {
        t->copies.clear();
        t->group_end.clear();
        t->landed = t->gdone = 0;
    }
}

void cp_async(Frame& f, const Instr& in) {
    const PtxProgram& p = *f.prog;
    const PArg& cs = in.args[2];  // an immediate, or an "n" operand (nvcc prints it as one)
    if (cs.kind != 2 && !(cs.kind == 0 && f.ops[cs.idx].cons == 'n'))
        ptx_fail(p, "'" + in.text + "': cp-size must be an immediate");
    const unsigned n = (unsigned)rd(f, cs, 4);
    if (in.trans ? n != 16 : (n != 4 && n != 8 && n != 16))
        ptx_fail(p, fmt("'%s': cp-size %u is not allowed with .%s (.ca: 4, 8, 16; .cg: 16)", in.text.c_str(), n,
                        in.trans ? "cg" : "ca"));
    const unsigned dst = smem_check(f, addr_of(f, in.args[0]), n, n);
    const unsigned long long src = addr_of(f, in.args[1]);
    unsigned long long src_size = n;
    if (in.args.size() == 4) {
        const PArg& a = in.args[3];
        src_size = rd(f, a, a.kind == 1 ? p.local_size[a.idx] : a.kind == 0 ? (int)f.ops[a.idx].size : 4);
    }
    if (src_size > n)
        ptx_fail(p, fmt("'%s': src-size %llu exceeds cp-size %u", in.text.c_str(), src_size, n));
    AsyncCopy c;
    c.dst = dst;
    c.bytes = n;
    memset(c.data, 0, sizeof c.data);  // bytes past src-size are zero-filled
    if (src_size) {
        if (src % n)
            ptx_fail(p, fmt("'%s': global address 0x%llx is not %u-byte aligned", in.text.c_str(), src, n));
        memcpy(c.data, (const void*)(uintptr_t)src, (size_t)src_size);  // a wild address faults here
    }
    if (g_async_eager) {
        memcpy(g_smem + dst, c.data, n);
        return;
    }
    cur()->copies.push_back(c);
}

// mma.m16n8k8 .tf32: A 16x8 (a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)), B 8x8
// (b0 (k = t, n = g), b1 (k = t+4, n = g)), C/D as m16n8k16; g = lane >> 2, t = lane % 4. The
// hardware reads only the 19 tf32 bits of each operand register: the low 13 bits are dropped.
void mma_tf32_compute(WarpState& W) {
    Frame* f0 = ((LaneFrame*)W.data[0])->f;
    const Instr& in = *f0->ins;
    double A[16][8], B[8][8], C[16][8];
    const int base = cur()->linear & ~31;
    auto tf32 = [](unsigned u) { return (double)bits_to_float(u & 0xffffe000u); };
    for (int l = 0; l < 32; ++l) {
        Frame& f = *((LaneFrame*)W.data[l])->f;
        g_cur = &g_threads[base + l];
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; ++i)
            A[g + 8 * (i & 1)][t + 4 * (i >> 1)] = tf32((unsigned)rd(f, in.args[1].elems[i], 4));
        for (int i = 0; i < 2; ++i) B[t + 4 * i][g] = tf32((unsigned)rd(f, in.args[2].elems[i], 4));
        for (int i = 0; i < 4; ++i)
            C[g + 8 * (i >= 2)][2 * t + (i & 1)] = bits_to_float((unsigned)rd(f, in.args[3].elems[i], 4));
    }
    for (int l = 0; l < 32; ++l) {
        Frame& f = *((LaneFrame*)W.data[l])->f;
        g_cur = &g_threads[base + l];
        const int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; ++i) {
            const int r = g + 8 * (i >= 2), c = 2 * t + (i & 1);
            double s = C[r][c];
            for (int k = 0; k < 8; ++k) s += A[r][k] * B[k][c];
            wr(f, in.args[0].elems[i], float_to_bits((float)s), 4);
        }
    }
}

void exec(Frame& f, const PtxProgram& p) {
    for (const Instr& in : p.ins) {
        f.ins = &in;
        auto nargs = [&](size_t n) {
            if (in.args.size() != n) ptx_fail(p, fmt("'%s' takes %zu operands", in.text.c_str(), n));
        };
        switch (in.op) {
            case OP_CVT_F32_F16:
                nargs(2);
                wr(f, in.args[0], float_to_bits(cudaemu_f16_to_f32((unsigned short)rd(f, in.args[1], 2))), 4);
                break;
            case OP_CVT_F16_F32:
                nargs(2);
                wr(f, in.args[0], cudaemu_f32_to_f16_rn(bits_to_float((unsigned)rd(f, in.args[1], 4))), 2);
                break;
            case OP_CVT_BF16_F32:
                nargs(2);
                wr(f, in.args[0], cudaemu_f32_to_bf16_rn(bits_to_float((unsigned)rd(f, in.args[1], 4))), 2);
                break;
            case OP_CVT_INT: {
                nargs(2);
                unsigned long long v = rd(f, in.args[1], in.ssize);
                if (in.ssigned && in.ssize < 8 && (v >> (8 * in.ssize - 1) & 1)) v |= ~0ull << (8 * in.ssize);
                wr(f, in.args[0], v, in.dsize);
                break;
            }
            case OP_CVTA_SHARED: {
                nargs(2);
                const unsigned long long a = rd(f, in.args[1], in.dsize);
                const unsigned long long lo = (unsigned long long)(uintptr_t)g_smem;
                if (a < lo || a >= lo + WINDOW)
                    ptx_fail(p, fmt("'%s': address 0x%llx is not in shared memory", in.text.c_str(), a));
                wr(f, in.args[0], a - lo, in.dsize);
                break;
            }
            case OP_MOV:
                nargs(2);
                wr(f, in.args[0], rd(f, in.args[1], in.dsize), in.dsize);
                break;
            case OP_LDMATRIX: {
                nargs(2);
                if (in.args[0].kind != 3 || (int)in.args[0].elems.size() != in.nmat)
                    ptx_fail(p, fmt("'%s': destination must be a vector of %d registers", in.text.c_str(), in.nmat));
                LaneFrame lf{&f};
                warp_collective(&in, p.loc.c_str(), 0xffffffffu, &lf, ldmatrix_compute, nullptr);
                break;
            }
            case OP_MMA: {
                nargs(4);
                const size_t want[4] = {4, 4, 2, 4};
                for (int i = 0; i < 4; ++i)
                    if (in.args[i].kind != 3 || in.args[i].elems.size() != want[i])
                        ptx_fail(p, fmt("'%s': operand %d must be a vector of %zu registers", in.text.c_str(), i, want[i]));
                LaneFrame lf{&f};
                warp_collective(&in, p.loc.c_str(), 0xffffffffu, &lf, mma_compute, nullptr);
                break;
            }
            case OP_SETP_NE:
                nargs(3);
                wr(f, in.args[0], rd(f, in.args[1], 4) != rd(f, in.args[2], 4) ? 1 : 0, 1);
                break;
            case OP_FENCE_PROXY_ASYNC:  // generic -> async proxy ordering: the emulation has one proxy
                nargs(0);
                break;
            case OP_WG_FENCE:
            case OP_WG_COMMIT:
            case OP_WG_WAIT:
            case OP_WGMMA: {
                const WarpCompute fn = in.op == OP_WG_FENCE ? wg_fence_compute : in.op == OP_WG_COMMIT ? wg_commit_compute
                                       : in.op == OP_WG_WAIT ? wg_wait_compute : wgmma_compute;
                nargs(in.op == OP_WGMMA ? 8 : in.op == OP_WG_WAIT ? 1 : 0);
                if (in.op == OP_WGMMA && (in.args[0].kind != 3 || (int)in.args[0].elems.size() != in.wg_n / 2))
                    ptx_fail(p, fmt("'%s': the accumulator must be a vector of %d registers", in.text.c_str(), in.wg_n / 2));
                LaneFrame lf{&f};
                warp_collective(&in, p.loc.c_str(), 0xffffffffu, &lf, fn, nullptr);
                break;
            }
            case OP_CVT_TF32:
                nargs(2);
                wr(f, in.args[0], cudaemu_f32_to_tf32_rna(bits_to_float((unsigned)rd(f, in.args[1], 4))), 4);
                break;
            case OP_MMA_TF32: {
                nargs(4);
                const size_t want[4] = {4, 4, 2, 4};
                for (int i = 0; i < 4; ++i)
                    if (in.args[i].kind != 3 || in.args[i].elems.size() != want[i])
                        ptx_fail(p, fmt("'%s': operand %d must be a vector of %zu registers", in.text.c_str(), i, want[i]));
                LaneFrame lf{&f};
                warp_collective(&in, p.loc.c_str(), 0xffffffffu, &lf, mma_tf32_compute, nullptr);
                break;
            }
            case OP_CP_ASYNC:
                cp_async(f, in);
                break;
            case OP_CP_COMMIT: {
                nargs(0);
                Thread* t = cur();
                t->group_end.push_back(t->copies.size());
                break;
            }
            case OP_CP_WAIT:
            case OP_CP_WAIT_ALL: {
                Thread* t = cur();
                size_t keep = 0;  // wait_all = commit_group + wait_group 0
                if (in.op == OP_CP_WAIT_ALL) {
                    nargs(0);
                    t->group_end.push_back(t->copies.size());
                } else {
                    nargs(1);
                    if (in.args[0].kind != 2 && !(in.args[0].kind == 0 && f.ops[in.args[0].idx].cons == 'n'))
                        ptx_fail(p, "'" + in.text + "': the group count must be an immediate");
                    keep = (size_t)rd(f, in.args[0], 4);
                }
                const size_t pending = t->group_end.size() - t->gdone;
                if (pending > keep) {  // complete every group but the `keep` most recent
                    t->gdone = t->group_end.size() - keep;
                    land(t, t->group_end[t->gdone - 1]);
                }
                break;
            }
            default:
                ptx_fail(p, "instruction '" + in.text + "' is not emulated");
        }
    }
}

}  // namespace

void ptx_exec(PtxSite* site, const char* text, const char* loc, std::initializer_list<Operand> ops) {
    for (const Operand& o : ops)
        if (cons_bytes(o.cons) < 0)
            fail("inline PTX at %s: operand constraint '%c' is not emulated\n    asm text: \"%s\"", loc, o.cons, text);
    if (!site->prog) site->prog = parse_ptx(text, loc, (int)ops.size());
    Frame f;
    f.ops = ops.begin();
    f.nops = (int)ops.size();
    f.prog = site->prog;
    f.ins = nullptr;
    memset(f.locals, 0, sizeof f.locals);
    exec(f, *site->prog);
}

}  // namespace cudaemu

// ==================================================================================================
// C API for the Python launcher
// ==================================================================================================
using namespace cudaemu;

extern "C" CUDAEMU_API int cudaemu_rt_version() { return CUDAEMU_RT_VERSION; }
extern "C" CUDAEMU_API int cudaemu_num_kernels() { return (int)kernels().size(); }
extern "C" CUDAEMU_API const char* cudaemu_kernel_name(int i) { return kernels()[i].name; }
extern "C" CUDAEMU_API int cudaemu_kernel_nparams(int i) { return kernels()[i].nparams; }
extern "C" CUDAEMU_API const ParamDesc* cudaemu_kernel_params(int i) { return kernels()[i].params; }
extern "C" CUDAEMU_API int cudaemu_kernel_max_threads(int i) { return kernels()[i].max_threads; }

// Launch kernel k on grid x block with `shmem` bytes of dynamic shared memory. args[i] points to
// the value of parameter i; dyn_max: the kernel's max_dynamic_shared_size_bytes (0: not set).
// flags bit 0: reverse thread and block order. Returns 0, or 1 with a
// message in err.
extern "C" CUDAEMU_API int cudaemu_launch(int k, const unsigned* grid, const unsigned* block, unsigned long long shmem,
                                          unsigned long long dyn_max, void** args, int flags, char* err, int errlen) {
    const bool reverse = flags & 1;
    g_async_eager = reverse;
    g_failed = false;
    g_err.clear();
    g_kernel = &kernels()[k];
    g_args = args;
    g_blockIdx = uint3{0, 0, 0};
    auto out = [&](const std::string& m) {
        snprintf(err, (size_t)errlen, "%s", m.c_str());
        g_kernel = nullptr;
        return 1;
    };
    const unsigned long long nt = (unsigned long long)block[0] * block[1] * block[2];
    if (!grid[0] || !grid[1] || !grid[2] || !nt)
        return out(fmt("kernel %s: invalid launch configuration (a zero grid or block dimension)", g_kernel->name));
    if (block[0] > 1024 || block[1] > 1024 || block[2] > 64 || nt > 1024)
        return out(fmt("kernel %s: block (%u,%u,%u) exceeds CUDA's limits (1024 threads, z <= 64)", g_kernel->name,
                       block[0], block[1], block[2]));
    if (grid[0] > 2147483647u || grid[1] > 65535u || grid[2] > 65535u)
        return out(fmt("kernel %s: grid (%u,%u,%u) exceeds CUDA's limits", g_kernel->name, grid[0], grid[1], grid[2]));
    if (g_kernel->max_threads > 0 && nt > (unsigned long long)g_kernel->max_threads)
        return out(fmt("kernel %s: %llu threads per block exceed its __launch_bounds__(%d) (a GPU refuses the launch)",
                       g_kernel->name, nt, g_kernel->max_threads));
    if (!dyn_max && shmem > STATIC_LIMIT)
        return out(fmt("kernel %s: %llu bytes of dynamic shared memory exceed 48 KiB (set "
                       "max_dynamic_shared_size_bytes to opt in to more)", g_kernel->name, shmem));
    if (dyn_max > OPTIN_LIMIT)
        return out(fmt("kernel %s: max_dynamic_shared_size_bytes %llu exceeds 227 KiB", g_kernel->name, dyn_max));
    if (dyn_max && shmem > dyn_max)
        return out(fmt("kernel %s: %llu bytes of dynamic shared memory exceed its max_dynamic_shared_size_bytes %llu",
                       g_kernel->name, shmem, dyn_max));
    g_dyn_max = dyn_max;
    g_blockDim = dim3{block[0], block[1], block[2]};
    g_gridDim = dim3{grid[0], grid[1], grid[2]};
    g_nthreads = (int)nt;
    if (g_threads.size() < nt) g_threads.resize(nt);  // Thread holds no owning pointers but its stack
    g_warps.assign((nt + 31) / 32, WarpState{});
    for (size_t w = 0; w < g_warps.size(); ++w) {
        const unsigned long long n = nt - 32 * w;
        g_warps[w].present = n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
    }
    g_dyn = shmem;
    g_static_base = g_static_top = (shmem + SGUARD + 127) / 128 * 128;
    g_svars.clear();

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    stack_t ss, old_ss;
    ss.ss_sp = g_altstack;
    ss.ss_size = sizeof g_altstack;
    ss.ss_flags = 0;
    sigaltstack(&ss, &old_ss);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);

    const unsigned long long nb = (unsigned long long)grid[0] * grid[1] * grid[2];
    bool ok = true;
    for (unsigned long long b = 0; b < nb && ok; ++b) {
        const unsigned long long lb = reverse ? nb - 1 - b : b;
        g_blockIdx = uint3{(unsigned)(lb % grid[0]), (unsigned)((lb / grid[0]) % grid[1]),
                           (unsigned)(lb / ((unsigned long long)grid[0] * grid[1]))};
        ok = run_block(reverse);
    }
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    sigaltstack(&old_ss, nullptr);
    g_cur = nullptr;
    if (!ok) return out(g_err);
    g_kernel = nullptr;
    return 0;
}
