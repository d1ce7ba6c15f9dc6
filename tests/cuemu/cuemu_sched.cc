/* cuemu_sched.cc — cuemu's block scheduler (CPU emulation of CUDA for tests: checks index
 * arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 * The blocks of a grid run one after another. Each CUDA thread of a block is a coroutine on
 * its own stack (allocated once, reused by every block, a guard page under each). A round
 * resumes every ready thread, in turn, until it blocks at a barrier or a warp collective or
 * exits; then the waits are resolved: first the warp collectives (each needs every lane its
 * mask names, all at the same kind of operation with the same mask), then __syncthreads (every
 * thread that has not exited, all at the same one). Anything else is a deadlock, reported with
 * the threads involved. See cuemu_device.h for the rules and what is not modelled.
 *
 * Context switches are a few instructions of assembly on x86-64 (callee-saved registers, the
 * stack pointer, MXCSR and the x87 control word); other machines use ucontext.
 */
#include "cuemu_device.h"
#include "cuemu_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

extern "C" char __start_cuemu_shared[] __attribute__((weak));
extern "C" char __stop_cuemu_shared[] __attribute__((weak));

namespace cuemu {

/* ------------------------------------------------------------------------------------------
 * Contexts
 */
#if defined(__x86_64__)
struct context {
    void *sp;
};
extern "C" void cuemu_ctx_switch(void **save_sp, void *load_sp);
asm(R"(
    .text
    .p2align 4
    .globl cuemu_ctx_switch
    .hidden cuemu_ctx_switch
    .type cuemu_ctx_switch, @function
cuemu_ctx_switch:
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
    .size cuemu_ctx_switch, .-cuemu_ctx_switch
)");

static void switch_context(context *from, context *to)
{
    cuemu_ctx_switch(&from->sp, to->sp);
}

/* A fresh context that starts in entry() on [stack, stack + bytes). */
static void make_context(context *c, char *stack, size_t bytes, void (*entry)(void))
{
    uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
    uint64_t *sp = (uint64_t *)top;
    *--sp = 0;                  /* entry's return address: it never returns */
    *--sp = (uint64_t)entry;    /* where cuemu_ctx_switch's ret goes */
    for (int i = 0; i < 6; i++) /* rbp rbx r12 r13 r14 r15 */
        *--sp = 0;
    *--sp = 0x1f80ull | (0x037full << 32); /* default MXCSR, x87 control word */
    c->sp = sp;
}
#else
struct context {
    ucontext_t uc;
};

static void switch_context(context *from, context *to)
{
    swapcontext(&from->uc, &to->uc);
}

static void make_context(context *c, char *stack, size_t bytes, void (*entry)(void))
{
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = bytes;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, entry, 0);
}
#endif

/* ------------------------------------------------------------------------------------------
 * Threads of the running block
 */
enum thread_state : uint8_t { T_READY, T_BARRIER, T_WARP, T_EXITED, T_FAILED };

struct warp_wait {
    int kind;
    unsigned mask;
    uint64_t value;
    int arg, width;
    const char *file;
    int line;
    uint64_t result;
};

struct block_wait {
    int kind, pred, result;
    const char *file;
    int line;
};

struct ethread {
    context ctx;
    thread_state state;
    unsigned linear;
    uint3 idx;
    warp_wait w;
    block_wait b;
};

enum { MAX_THREADS = 1024, GUARD = 4096 };

static ethread threads[MAX_THREADS];
static char *stacks;          /* MAX_THREADS stacks, each stack_bytes + a guard page under it */
static size_t stack_bytes;
static context sched_ctx;     /* the host side, while a thread runs */
static ethread *current;      /* the thread running, NULL in host code */
static const grid_desc *grid; /* the grid running, NULL when none */
static unsigned nthreads;
static bool failed;
static std::string fail_msg;
static long long stat_kernels, stat_blocks, stat_switches;

static void print_stats(void)
{
    fprintf(stderr, "cuemu: %lld kernels, %lld blocks, %lld thread switches\n", stat_kernels,
            stat_blocks, stat_switches);
}

static bool alloc_stacks(void)
{
    if (stacks)
        return true;
    const char *env = getenv("NX_CUEMU_STACK_KB");
    size_t kb = env && atoi(env) >= 16 ? (size_t)atoi(env) : 64;
    stack_bytes = kb << 10;
    size_t each = stack_bytes + GUARD, total = each * MAX_THREADS;
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return false;
    for (unsigned i = 0; i < MAX_THREADS; i++)
        mprotect((char *)p + i * each, GUARD, PROT_NONE);
    stacks = (char *)p;
    if (getenv("NX_CUEMU_STATS"))
        atexit(print_stats);
    return true;
}

static char *stack_of(unsigned i)
{
    return stacks + i * (stack_bytes + GUARD) + GUARD;
}

bool is_stack_guard(const void *addr)
{
    if (!stacks)
        return false;
    uintptr_t a = (uintptr_t)addr, base = (uintptr_t)stacks;
    size_t each = stack_bytes + GUARD;
    if (a < base || a >= base + each * MAX_THREADS)
        return false;
    return (a - base) % each < GUARD;
}

static std::string thread_name(const ethread *t)
{
    char buf[160];
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u), thread (%u,%u,%u)", grid->name,
             blockIdx.x, blockIdx.y, blockIdx.z, t->idx.x, t->idx.y, t->idx.z);
    return buf;
}

std::string where_in_kernel(void)
{
    if (!grid)
        return "";
    if (current)
        return thread_name(current);
    char buf[160];
    snprintf(buf, sizeof buf, "kernel %s, block (%u,%u,%u)", grid->name, blockIdx.x,
             blockIdx.y, blockIdx.z);
    return buf;
}

void abandon_grid(void)
{
    current = NULL;
    grid = NULL;
    failed = false;
}

/* Record the first kernel error; the scheduler stops the grid. */
static void fail(const ethread *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const ethread *t, const char *fmt, ...)
{
    if (failed)
        return;
    char what[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    failed = true;
    fail_msg = (t ? thread_name(t) : where_in_kernel()) + ": " + what;
}

/* ------------------------------------------------------------------------------------------
 * Thread side: the primitives park the thread and switch to the scheduler.
 */
[[noreturn]] static void host_misuse(const char *what)
{
    fprintf(stderr, "cuemu: %s called outside a kernel (host code)\n", what);
    abort();
}

static void park(ethread *self, thread_state state)
{
    self->state = state;
    switch_context(&self->ctx, &sched_ctx);
}

static void thread_entry(void)
{
    ethread *self = current;
    grid->thread();
    park(self, T_EXITED);
    abort(); /* never resumed */
}

uint64_t warp_op(int kind, unsigned mask, uint64_t value, int arg, int width, const char *file,
                 int line)
{
    ethread *self = current;
    if (!self)
        host_misuse("a warp collective");
    self->w = warp_wait{kind, mask, value, arg, width, file, line, 0};
    park(self, T_WARP);
    return self->w.result;
}

int block_barrier(int kind, int pred, const char *file, int line)
{
    ethread *self = current;
    if (!self)
        host_misuse("__syncthreads");
    self->b = block_wait{kind, pred, 0, file, line};
    park(self, T_BARRIER);
    return self->b.result;
}

void device_fail(const char *file, int line, const char *what)
{
    ethread *self = current;
    if (!self)
        host_misuse(what);
    fail(self, "%s (%s:%d)", what, file, line);
    park(self, T_FAILED);
    abort();
}

/* ------------------------------------------------------------------------------------------
 * Scheduler side
 */
static const char *warp_kind_name(int kind)
{
    switch (kind) {
    case WARP_SYNC: return "__syncwarp";
    case WARP_SHFL: return "__shfl_sync";
    case WARP_SHFL_XOR: return "__shfl_xor_sync";
    case WARP_SHFL_UP: return "__shfl_up_sync";
    case WARP_SHFL_DOWN: return "__shfl_down_sync";
    case WARP_BALLOT: return "__ballot_sync";
    case WARP_ANY: return "__any_sync";
    case WARP_ALL: return "__all_sync";
    }
    return "a warp collective";
}

static const char *block_kind_name(int kind)
{
    switch (kind) {
    case BLOCK_COUNT: return "__syncthreads_count";
    case BLOCK_AND: return "__syncthreads_and";
    case BLOCK_OR: return "__syncthreads_or";
    }
    return "__syncthreads";
}

static void resume(ethread *t)
{
    current = t;
    threadIdx = t->idx;
    stat_switches++;
    switch_context(&sched_ctx, &t->ctx);
    current = NULL;
}

/* The lane whose value lane `lane` receives, within its width-segment; -1: its own value. */
static int source_lane(const warp_wait &w, int lane)
{
    int seg = lane & ~(w.width - 1), in = lane - seg;
    switch (w.kind) {
    case WARP_SHFL: return seg + (int)((unsigned)w.arg % (unsigned)w.width);
    case WARP_SHFL_XOR: {
        int src = lane ^ w.arg;
        return src >= seg && src < seg + w.width ? src : -1;
    }
    case WARP_SHFL_UP: return in - w.arg >= 0 ? lane - w.arg : -1;
    case WARP_SHFL_DOWN: return in + w.arg < w.width ? lane + w.arg : -1;
    }
    return -1;
}

/* Complete the collective of the lanes in `mask` of warp `base`. */
static void complete_warp_op(ethread *lanes, unsigned mask)
{
    const warp_wait &w0 = lanes[__builtin_ctz(mask)].w;
    uint64_t ballot = 0;
    for (int l = 0; l < 32; l++)
        if ((mask >> l & 1) && lanes[l].w.value)
            ballot |= 1ull << l;
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1))
            continue;
        ethread *t = &lanes[l];
        switch (w0.kind) {
        case WARP_SHFL:
        case WARP_SHFL_XOR:
        case WARP_SHFL_UP:
        case WARP_SHFL_DOWN: {
            int src = source_lane(t->w, l);
            if (src >= 0 && !(mask >> src & 1)) {
                fail(t, "%s (%s:%d) reads lane %d, which is not in the mask 0x%08x (its "
                     "value is undefined)", warp_kind_name(w0.kind), t->w.file, t->w.line, src,
                     mask);
                return;
            }
            t->w.result = src >= 0 ? lanes[src].w.value : t->w.value;
            break;
        }
        case WARP_BALLOT: t->w.result = ballot; break;
        case WARP_ANY: t->w.result = ballot != 0; break;
        case WARP_ALL: t->w.result = ballot == mask; break;
        default: t->w.result = 0; break;
        }
    }
    for (int l = 0; l < 32; l++)
        if (mask >> l & 1)
            lanes[l].state = T_READY;
}

/* Check the lanes that lane `first` waits for, then complete its collective. */
static void resolve_group(ethread *lanes, int nlanes, int first)
{
    ethread *t = &lanes[first];
    const warp_wait &w = t->w;
    const char *op = warp_kind_name(w.kind);
    unsigned mask = w.mask;
    if (!(mask >> first & 1))
        return fail(t, "%s (%s:%d) with mask 0x%08x does not include the calling lane %d", op,
                    w.file, w.line, mask, first);
    if (w.width < 1 || w.width > 32 || (w.width & (w.width - 1)))
        return fail(t, "%s (%s:%d) with width %d (a power of two up to 32)", op, w.file,
                    w.line, w.width);
    if (nlanes < 32 && (mask >> nlanes))
        return fail(t, "%s (%s:%d) with mask 0x%08x names lanes %d..31, which do not exist "
                    "(the block has %u threads: its last warp has %d lanes)", op, w.file,
                    w.line, mask, nlanes, nthreads, nlanes);
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1))
            continue;
        const ethread *u = &lanes[l];
        switch (u->state) {
        case T_EXITED:
            return fail(t, "%s (%s:%d) with mask 0x%08x: lane %d has exited, so it never "
                        "arrives (every lane in the mask must execute it)", op, w.file, w.line,
                        mask, l);
        case T_BARRIER:
            return fail(t, "%s (%s:%d) with mask 0x%08x: lane %d waits at %s (%s:%d) "
                        "instead: deadlock", op, w.file, w.line, mask, l,
                        block_kind_name(u->b.kind), u->b.file, u->b.line);
        case T_WARP:
            if (u->w.kind != w.kind)
                return fail(t, "%s (%s:%d) with mask 0x%08x: lane %d is at %s (%s:%d) instead",
                            op, w.file, w.line, mask, l, warp_kind_name(u->w.kind), u->w.file,
                            u->w.line);
            if (u->w.mask != mask)
                return fail(t, "%s (%s:%d) with mask 0x%08x: lane %d passed mask 0x%08x (%s:%d)",
                            op, w.file, w.line, mask, l, u->w.mask, u->w.file, u->w.line);
            if (u->w.width != w.width)
                return fail(t, "%s (%s:%d): lanes pass widths %d and %d", op, w.file, w.line,
                            w.width, u->w.width);
            break;
        default:
            return fail(t, "%s (%s:%d): lane %d is in an unexpected state", op, w.file, w.line,
                        l);
        }
    }
    complete_warp_op(lanes, mask);
}

/* Complete every warp collective whose lanes have all arrived; true when one did. A lane at a
 * collective that can never complete is an error. */
static bool resolve_warps(void)
{
    bool progress = false;
    for (unsigned base = 0; base < nthreads && !failed; base += 32) {
        int nlanes = nthreads - base < 32 ? (int)(nthreads - base) : 32;
        ethread *lanes = &threads[base];
        for (int l = 0; l < nlanes && !failed; l++) {
            if (lanes[l].state != T_WARP)
                continue;
            resolve_group(lanes, nlanes, l);
            progress = true;
        }
    }
    return progress;
}

/* Release __syncthreads when every live thread waits at the same one. False: none live. */
static bool resolve_barrier(void)
{
    const ethread *first = NULL;
    int count = 0, all = 1, any = 0;
    for (unsigned i = 0; i < nthreads; i++) {
        const ethread *t = &threads[i];
        if (t->state == T_EXITED)
            continue;
        if (t->state != T_BARRIER) {
            fail(t, "thread in an unexpected state at a barrier (internal)");
            return false;
        }
        if (!first) {
            first = t;
        } else if (t->b.line != first->b.line || t->b.kind != first->b.kind ||
                   strcmp(t->b.file, first->b.file) != 0) {
            fail(first, "waits at %s (%s:%d) while thread (%u,%u,%u) waits at %s (%s:%d): "
                 "the threads of a block must reach the same barrier (undefined behaviour, "
                 "a hang or corrupted shared memory on the GPU)", block_kind_name(first->b.kind),
                 first->b.file, first->b.line, t->idx.x, t->idx.y, t->idx.z,
                 block_kind_name(t->b.kind), t->b.file, t->b.line);
            return false;
        }
        count += t->b.pred;
        all &= t->b.pred;
        any |= t->b.pred;
    }
    if (!first)
        return false;
    int result = first->b.kind == BLOCK_COUNT ? count : first->b.kind == BLOCK_AND ? all : any;
    for (unsigned i = 0; i < nthreads; i++)
        if (threads[i].state == T_BARRIER) {
            threads[i].b.result = result;
            threads[i].state = T_READY;
        }
    return true;
}

static bool reverse_order(uint64_t block_number)
{
    static int mode = -1; /* 0 forward, 1 reverse, 2 mixed */
    if (mode < 0) {
        const char *env = getenv("NX_CUEMU_ORDER");
        mode = env && strcmp(env, "forward") == 0 ? 0 : env && strcmp(env, "reverse") == 0 ? 1
                                                                                          : 2;
    }
    return mode == 1 || (mode == 2 && (block_number & 1));
}

static void run_block(uint64_t block_number)
{
    char *shared_lo = __start_cuemu_shared, *shared_hi = __stop_cuemu_shared;
    if (shared_lo && shared_hi > shared_lo)
        memset(shared_lo, 0xff, (size_t)(shared_hi - shared_lo));
    unsigned bx = blockDim.x, by = blockDim.y;
    for (unsigned i = 0; i < nthreads; i++) {
        ethread *t = &threads[i];
        t->state = T_READY;
        t->linear = i;
        t->idx = make_uint3(i % bx, i / bx % by, i / (bx * by));
        make_context(&t->ctx, stack_of(i), stack_bytes, thread_entry);
    }
    bool reverse = reverse_order(block_number);
    stat_blocks++;
    for (;;) {
        for (unsigned k = 0; k < nthreads; k++) {
            ethread *t = &threads[reverse ? nthreads - 1 - k : k];
            if (t->state != T_READY)
                continue;
            resume(t);
            if (failed)
                return;
        }
        if (resolve_warps())
            continue;
        if (failed || !resolve_barrier())
            return;
    }
}

/* A pointer argument that is neither NULL, device memory (or one past its end) nor pinned. */
static bool check_pointer_args(const grid_desc &g)
{
    for (const auto &arg : g.pointer_args) {
        const char *p = (const char *)arg.second;
        if (!p || classify(p, NULL, NULL) != MEM_PAGEABLE ||
            classify(p - 1, NULL, NULL) == MEM_DEVICE)
            continue;
        fail(NULL, "pointer argument %d is %p, which is neither device memory nor pinned host "
             "memory (a host pointer given to a kernel faults on a GPU)", arg.first, (void *)p);
        return false;
    }
    return true;
}

cudaError_t run_grid(const grid_desc &g)
{
    if (!alloc_stacks()) {
        say("kernel %s: no memory for the emulated threads' stacks", g.name);
        return cudaErrorMemoryAllocation;
    }
    grid = &g;
    failed = false;
    stat_kernels++;
    gridDim = g.grid;
    blockDim = g.block;
    nthreads = g.block.x * g.block.y * g.block.z;
    blockIdx = make_uint3(0, 0, 0);
    if (inject_kernel_failure())
        fail(NULL, "injected failure (NX_CUEMU_INJECT)");
    else if (check_pointer_args(g)) {
        uint64_t number = 0;
        for (unsigned z = 0; z < g.grid.z && !failed; z++)
            for (unsigned y = 0; y < g.grid.y && !failed; y++)
                for (unsigned x = 0; x < g.grid.x && !failed; x++, number++) {
                    blockIdx = make_uint3(x, y, z);
                    run_block(number);
                }
    }
    bool bad = failed;
    std::string msg = fail_msg;
    abandon_grid();
    if (!bad)
        return cudaSuccess;
    say("ERROR: %s", msg.c_str());
    return cudaErrorLaunchFailure;
}

} /* namespace cuemu */
