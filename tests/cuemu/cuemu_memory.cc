/* cuemu_memory.cc — cuemu's device memory (CPU emulation of CUDA for tests: checks index
 * arithmetic, barriers and host orchestration; not the hardware, not speed).
 *
 * Device memory is host memory the emulator owns, in a range table. The driver's virtual
 * memory management works as on a GPU: a physical allocation (cuMemCreate) is a memfd; a
 * reservation (cuMemAddressReserve) is a PROT_NONE range with 2 MiB guards on both sides;
 * cuMemMap maps the memfd there with MAP_FIXED | MAP_SHARED, so one physical chunk can appear in
 * several ranges; nothing is accessible before cuMemSetAccess. cudaMalloc is an anonymous
 * mapping between guard pages. New device and pinned memory is filled with 0xff bytes (NaN as
 * float), not zeros, as a GPU gives no guarantee either.
 *
 * Device memory is accessible only while emulated device work runs (device_memory_access,
 * called by run_device_work); at any other time it is PROT_NONE, so host code that dereferences
 * a device pointer faults, as it would on a GPU machine.
 */
#include "cuemu_internal.h"

#include <cuda.h>
#include <cudaTypedefs.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <map>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

namespace cuemu {

enum : size_t { GRANULARITY = 2u << 20, RESERVE_GUARD = 2u << 20, PAGE = 4096 };

struct physical {
    int fd;
    size_t bytes;
    int maps;      /* live mappings of it */
    bool released; /* cuMemRelease called: freed when the last mapping goes */
    bool filled;   /* the 0xff pattern written (at the first mapping) */
};

struct reservation {
    uintptr_t base;
    size_t bytes;
    void *whole; /* the mmap, guards included */
    size_t whole_bytes;
};

/* A device range: a VMM mapping (handle != 0) or a cudaMalloc allocation (handle 0). */
struct device_range {
    uintptr_t base;
    size_t bytes;
    unsigned long long handle;
    int prot;     /* PROT_NONE until access is granted; PROT_READ or PROT_READ|PROT_WRITE */
    void *whole;  /* cudaMalloc: the mmap with its guard pages */
    size_t whole_bytes;
};

static std::map<unsigned long long, physical> physicals;
static unsigned long long next_handle = 1;
static std::map<uintptr_t, reservation> reservations;
static std::map<uintptr_t, device_range> ranges; /* by base */
static std::map<uintptr_t, size_t> pinned;       /* base -> bytes */
static size_t used_bytes;
static int access_depth;

size_t device_bytes_total(void)
{
    static size_t total;
    if (!total) {
        const char *env = getenv("NX_CUEMU_VRAM_MB");
        long mb = env ? atol(env) : 0;
        total = (size_t)(mb > 0 ? mb : 4096) << 20;
    }
    return total;
}

size_t device_bytes_used(void)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    return used_bytes;
}

/* ------------------------------------------------------------------------------------------
 * Lookups
 */
static const device_range *range_at(uintptr_t a)
{
    auto it = ranges.upper_bound(a);
    if (it == ranges.begin())
        return NULL;
    --it;
    return a < it->second.base + it->second.bytes ? &it->second : NULL;
}

mem_kind classify(const void *p, uintptr_t *lo_out, uintptr_t *hi_out)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    uintptr_t a = (uintptr_t)p;
    const device_range *r = range_at(a);
    if (r && r->prot != PROT_NONE) {
        uintptr_t lo = r->base, hi = r->base + r->bytes;
        if (r->handle) { /* join adjacent accessible mappings */
            for (const device_range *q = r; q && q->handle && q->prot != PROT_NONE;
                 q = lo ? range_at(lo - 1) : NULL)
                lo = q->base;
            for (const device_range *q = r; q && q->handle && q->prot != PROT_NONE;
                 q = range_at(hi))
                hi = q->base + q->bytes;
        }
        if (lo_out)
            *lo_out = lo;
        if (hi_out)
            *hi_out = hi;
        return MEM_DEVICE;
    }
    auto it = pinned.upper_bound(a);
    if (it != pinned.begin()) {
        --it;
        if (a < it->first + it->second) {
            if (lo_out)
                *lo_out = it->first;
            if (hi_out)
                *hi_out = it->first + it->second;
            return MEM_PINNED;
        }
    }
    return MEM_PAGEABLE;
}

bool is_device_range(const void *p, size_t bytes)
{
    uintptr_t lo, hi, a = (uintptr_t)p;
    if (classify(p, &lo, &hi) == MEM_DEVICE)
        return a + bytes <= hi;
    return bytes == 0 && a && classify((const char *)p - 1, NULL, NULL) == MEM_DEVICE;
}

bool is_pinned_range(const void *p, size_t bytes)
{
    uintptr_t lo, hi;
    return classify(p, &lo, &hi) == MEM_PINNED && (uintptr_t)p + bytes <= hi;
}

bool is_device_address(const void *addr)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    return range_at((uintptr_t)addr) != NULL;
}

std::string describe_address(const void *addr)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    uintptr_t a = (uintptr_t)addr;
    char buf[200];
    if (const device_range *r = range_at(a)) {
        snprintf(buf, sizeof buf, "device memory [%#lx, +%zu) that is not accessible (no "
                 "cuMemSetAccess, or read-only)", (unsigned long)r->base, r->bytes);
        return buf;
    }
    auto next = ranges.upper_bound(a);
    if (next != ranges.begin()) {
        const device_range &below = std::prev(next)->second;
        uintptr_t end = below.base + below.bytes;
        if (a >= end && a - end < RESERVE_GUARD) {
            snprintf(buf, sizeof buf, "%zu bytes past the end of device memory [%#lx, +%zu)",
                     (size_t)(a - end), (unsigned long)below.base, below.bytes);
            return buf;
        }
    }
    if (next != ranges.end() && next->first > a && next->first - a <= RESERVE_GUARD) {
        snprintf(buf, sizeof buf, "%zu bytes before device memory [%#lx, +%zu)",
                 (size_t)(next->first - a), (unsigned long)next->first, next->second.bytes);
        return buf;
    }
    return "not device memory";
}

/* ------------------------------------------------------------------------------------------
 * Host access while device work runs
 */
static void apply_protection(const device_range &r)
{
    int prot = access_depth > 0 ? r.prot : PROT_NONE;
    if (mprotect((void *)r.base, r.bytes, prot) != 0)
        say("mprotect(%p, %zu) failed: %s", (void *)r.base, r.bytes, strerror(errno));
}

void device_memory_access(bool on)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    int before = access_depth;
    access_depth += on ? 1 : -1;
    if ((before == 0) != (access_depth == 0))
        for (const auto &it : ranges)
            if (it.second.prot != PROT_NONE)
                apply_protection(it.second);
}

/* ------------------------------------------------------------------------------------------
 * Pinned host memory and cudaMalloc
 */
void *pinned_alloc(size_t bytes)
{
    size_t len = (bytes + PAGE - 1) / PAGE * PAGE;
    void *p = mmap(NULL, len ? len : PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 0xff, len);
    std::lock_guard<std::recursive_mutex> g(lock);
    pinned[(uintptr_t)p] = len ? len : PAGE;
    return p;
}

bool pinned_free(void *p)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    auto it = pinned.find((uintptr_t)p);
    if (it == pinned.end())
        return false;
    munmap(p, it->second);
    pinned.erase(it);
    return true;
}

cudaError_t device_malloc(void **out, size_t bytes)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    size_t len = (bytes + PAGE - 1) / PAGE * PAGE;
    len = len ? len : PAGE;
    if (used_bytes + len > device_bytes_total())
        return cudaErrorMemoryAllocation;
    size_t whole = len + 2 * PAGE;
    void *w = mmap(NULL, whole, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (w == MAP_FAILED)
        return cudaErrorMemoryAllocation;
    uintptr_t base = (uintptr_t)w + PAGE;
    mprotect((void *)base, len, PROT_READ | PROT_WRITE);
    memset((void *)base, 0xff, len);
    device_range r = {base, len, 0, PROT_READ | PROT_WRITE, w, whole};
    ranges[base] = r;
    apply_protection(r);
    used_bytes += len;
    *out = (void *)base;
    return cudaSuccess;
}

cudaError_t device_free(void *p)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    auto it = ranges.find((uintptr_t)p);
    if (it == ranges.end() || it->second.handle)
        return cudaErrorInvalidValue;
    munmap(it->second.whole, it->second.whole_bytes);
    used_bytes -= it->second.bytes;
    ranges.erase(it);
    return cudaSuccess;
}

/* ------------------------------------------------------------------------------------------
 * The driver API (reached through cudaGetDriverEntryPointByVersion only)
 */
static CUresult drv_fail(CUresult r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static CUresult drv_fail(CUresult r, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    say("%s", msg);
    return r;
}

static CUresult sticky_driver_error(void)
{
    cudaError_t e = sticky();
    if (e == cudaSuccess)
        return CUDA_SUCCESS;
    return e == cudaErrorIllegalAddress      ? CUDA_ERROR_ILLEGAL_ADDRESS
           : e == cudaErrorMisalignedAddress ? CUDA_ERROR_MISALIGNED_ADDRESS
                                             : CUDA_ERROR_LAUNCH_FAILED;
}

static CUresult CUDAAPI drv_init(unsigned int flags)
{
    return flags ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_driver_version(int *v)
{
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = 13000;
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_get_error_name(CUresult r, const char **out)
{
    static const struct {
        CUresult r;
        const char *name, *text;
    } names[] = {
        {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
        {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
        {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
        {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
        {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
        {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
        {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS",
         "an illegal memory access was encountered"},
        {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
        {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    };
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    for (const auto &n : names)
        if (n.r == r) {
            *out = n.name;
            return CUDA_SUCCESS;
        }
    *out = NULL;
    return CUDA_ERROR_INVALID_VALUE;
}

static CUresult CUDAAPI drv_get_error_string(CUresult r, const char **out)
{
    const char *name = NULL;
    CUresult rc = drv_get_error_name(r, &name);
    if (rc != CUDA_SUCCESS || !out) {
        if (out)
            *out = NULL;
        return CUDA_ERROR_INVALID_VALUE;
    }
    switch (r) {
    case CUDA_SUCCESS: *out = "no error"; break;
    case CUDA_ERROR_INVALID_VALUE: *out = "invalid argument"; break;
    case CUDA_ERROR_OUT_OF_MEMORY: *out = "out of memory"; break;
    case CUDA_ERROR_NOT_INITIALIZED: *out = "initialization error"; break;
    case CUDA_ERROR_INVALID_DEVICE: *out = "invalid device ordinal"; break;
    case CUDA_ERROR_NOT_SUPPORTED: *out = "operation not supported"; break;
    case CUDA_ERROR_ILLEGAL_ADDRESS: *out = "an illegal memory access was encountered"; break;
    case CUDA_ERROR_LAUNCH_FAILED: *out = "unspecified launch failure"; break;
    default: *out = "named symbol not found"; break;
    }
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_device_get(CUdevice *dev, int ordinal)
{
    if (!dev)
        return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0)
        return CUDA_ERROR_INVALID_DEVICE;
    *dev = 0;
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_device_get_count(int *count)
{
    if (!count)
        return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_device_get_name(char *name, int len, CUdevice dev)
{
    if (!name || len <= 0)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev != 0)
        return CUDA_ERROR_INVALID_DEVICE;
    snprintf(name, (size_t)len, "cuemu (CPU emulation)");
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_device_total_mem(size_t *bytes, CUdevice dev)
{
    if (!bytes)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev != 0)
        return CUDA_ERROR_INVALID_DEVICE;
    *bytes = device_bytes_total();
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_device_get_attribute(int *v, CUdevice_attribute attr, CUdevice dev)
{
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev != 0)
        return CUDA_ERROR_INVALID_DEVICE;
    switch (attr) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 0x7fffffff; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 48 << 10; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 132; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = 9; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = 0; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *v = 1; break;
    default: *v = 0; break;
    }
    return CUDA_SUCCESS;
}

static CUresult check_prop(const CUmemAllocationProp *prop)
{
    if (!prop || prop->type != CU_MEM_ALLOCATION_TYPE_PINNED ||
        prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "driver: allocation properties are not "
                        "pinned memory on a device");
    if (prop->location.id != 0)
        return drv_fail(CUDA_ERROR_INVALID_DEVICE, "driver: device %d does not exist",
                        prop->location.id);
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_granularity(size_t *out, const CUmemAllocationProp *prop,
                                        CUmemAllocationGranularity_flags option)
{
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    CUresult r = check_prop(prop);
    if (r != CUDA_SUCCESS)
        return r;
    *out = GRANULARITY;
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_mem_create(CUmemGenericAllocationHandle *handle, size_t bytes,
                                       const CUmemAllocationProp *prop, unsigned long long flags)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (CUresult s = sticky_driver_error())
        return s;
    CUresult r = check_prop(prop);
    if (r != CUDA_SUCCESS)
        return r;
    if (!handle || flags || bytes == 0 || bytes % GRANULARITY)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemCreate: %zu bytes is not a positive "
                        "multiple of the granularity (%zu), or a bad handle or flags",
                        bytes, (size_t)GRANULARITY);
    if (used_bytes + bytes > device_bytes_total())
        return CUDA_ERROR_OUT_OF_MEMORY;
    int fd = memfd_create("cuemu-vram", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0) {
        if (fd >= 0)
            close(fd);
        return drv_fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate: memfd: %s", strerror(errno));
    }
    *handle = next_handle++;
    physicals[*handle] = physical{fd, bytes, 0, false, false};
    used_bytes += bytes;
    return CUDA_SUCCESS;
}

static void free_physical(std::map<unsigned long long, physical>::iterator it)
{
    close(it->second.fd);
    used_bytes -= it->second.bytes;
    physicals.erase(it);
}

static CUresult CUDAAPI drv_mem_release(CUmemGenericAllocationHandle handle)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    auto it = physicals.find(handle);
    if (it == physicals.end() || it->second.released)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemRelease: %llu is not a live allocation "
                        "handle", (unsigned long long)handle);
    it->second.released = true;
    if (it->second.maps == 0)
        free_physical(it);
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_address_reserve(CUdeviceptr *ptr, size_t bytes, size_t alignment,
                                            CUdeviceptr addr, unsigned long long flags)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (CUresult s = sticky_driver_error())
        return s;
    if (!ptr || bytes == 0 || bytes % GRANULARITY || flags ||
        (alignment && (alignment & (alignment - 1))))
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemAddressReserve: %zu bytes (a positive "
                        "multiple of %zu), alignment %zu, flags %llu", bytes,
                        (size_t)GRANULARITY, alignment, (unsigned long long)flags);
    size_t align = alignment > GRANULARITY ? alignment : GRANULARITY;
    size_t whole = bytes + 2 * RESERVE_GUARD + align;
    void *w = mmap(NULL, whole, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (w == MAP_FAILED)
        return CUDA_ERROR_OUT_OF_MEMORY;
    uintptr_t base = ((uintptr_t)w + RESERVE_GUARD + align - 1) & ~(uintptr_t)(align - 1);
    reservations[base] = reservation{base, bytes, w, whole};
    *ptr = (CUdeviceptr)base;
    return CUDA_SUCCESS;
}

static const reservation *reservation_of(uintptr_t a, size_t bytes)
{
    auto it = reservations.upper_bound(a);
    if (it == reservations.begin())
        return NULL;
    --it;
    const reservation &r = it->second;
    return a >= r.base && a + bytes <= r.base + r.bytes && a + bytes >= a ? &r : NULL;
}

static CUresult CUDAAPI drv_address_free(CUdeviceptr ptr, size_t bytes)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    auto it = reservations.find((uintptr_t)ptr);
    if (it == reservations.end() || it->second.bytes != bytes)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemAddressFree(%#llx, %zu): not a "
                        "reservation of that size", (unsigned long long)ptr, bytes);
    uintptr_t a = (uintptr_t)ptr;
    auto m = ranges.lower_bound(a);
    if (m != ranges.end() && m->first < a + bytes)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemAddressFree(%#llx, %zu): %#llx is "
                        "still mapped (cuMemUnmap first)", (unsigned long long)ptr, bytes,
                        (unsigned long long)m->first);
    munmap(it->second.whole, it->second.whole_bytes);
    reservations.erase(it);
    return CUDA_SUCCESS;
}

static void fill_physical(physical &ph)
{
    void *p = mmap(NULL, ph.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, ph.fd, 0);
    if (p == MAP_FAILED)
        return;
    memset(p, 0xff, ph.bytes);
    munmap(p, ph.bytes);
    ph.filled = true;
}

static CUresult CUDAAPI drv_map(CUdeviceptr ptr, size_t bytes, size_t offset,
                                CUmemGenericAllocationHandle handle, unsigned long long flags)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (CUresult s = sticky_driver_error())
        return s;
    uintptr_t a = (uintptr_t)ptr;
    auto ph = physicals.find(handle);
    if (ph == physicals.end() || ph->second.released)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemMap: handle %llu is not a live "
                        "allocation", (unsigned long long)handle);
    if (flags || bytes == 0 || bytes % GRANULARITY || offset % GRANULARITY ||
        offset + bytes > ph->second.bytes || a % GRANULARITY)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemMap(%#llx, %zu, offset %zu): sizes "
                        "and offsets must be multiples of %zu within the %zu-byte allocation",
                        (unsigned long long)ptr, bytes, offset, (size_t)GRANULARITY,
                        ph->second.bytes);
    if (!reservation_of(a, bytes))
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemMap(%#llx, %zu): not inside a "
                        "reservation", (unsigned long long)ptr, bytes);
    auto next = ranges.lower_bound(a);
    if (range_at(a) || (next != ranges.end() && next->first < a + bytes))
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemMap(%#llx, %zu): overlaps a mapping",
                        (unsigned long long)ptr, bytes);
    if (!ph->second.filled)
        fill_physical(ph->second);
    if (mmap((void *)a, bytes, PROT_NONE, MAP_SHARED | MAP_FIXED, ph->second.fd,
             (off_t)offset) == MAP_FAILED)
        return drv_fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemMap: mmap: %s", strerror(errno));
    ranges[a] = device_range{a, bytes, handle, PROT_NONE, NULL, 0};
    ph->second.maps++;
    return CUDA_SUCCESS;
}

/* The mappings covering [a, a + bytes) exactly, in order; false when there is a hole or a
 * mapping sticks out. */
static bool covering(uintptr_t a, size_t bytes, std::vector<device_range *> *out)
{
    uintptr_t at = a;
    while (at < a + bytes) {
        auto it = ranges.find(at);
        if (it == ranges.end() || !it->second.handle || at + it->second.bytes > a + bytes)
            return false;
        out->push_back(&it->second);
        at += it->second.bytes;
    }
    return bytes > 0;
}

static CUresult CUDAAPI drv_set_access(CUdeviceptr ptr, size_t bytes,
                                       const CUmemAccessDesc *desc, size_t count)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    if (CUresult s = sticky_driver_error())
        return s;
    if (!desc || count != 1)
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemSetAccess: one descriptor (the one "
                        "device) expected, got %zu", count);
    if (desc->location.type != CU_MEM_LOCATION_TYPE_DEVICE || desc->location.id != 0)
        return drv_fail(CUDA_ERROR_INVALID_DEVICE, "cuMemSetAccess: location is not device 0");
    int prot;
    switch (desc->flags) {
    case CU_MEM_ACCESS_FLAGS_PROT_NONE: prot = PROT_NONE; break;
    case CU_MEM_ACCESS_FLAGS_PROT_READ: prot = PROT_READ; break;
    case CU_MEM_ACCESS_FLAGS_PROT_READWRITE: prot = PROT_READ | PROT_WRITE; break;
    default:
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemSetAccess: flags %d", (int)desc->flags);
    }
    std::vector<device_range *> maps;
    if (!covering((uintptr_t)ptr, bytes, &maps))
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemSetAccess(%#llx, %zu): the range is "
                        "not exactly covered by mappings", (unsigned long long)ptr, bytes);
    for (device_range *r : maps) {
        r->prot = prot;
        apply_protection(*r);
    }
    return CUDA_SUCCESS;
}

static CUresult CUDAAPI drv_unmap(CUdeviceptr ptr, size_t bytes)
{
    std::lock_guard<std::recursive_mutex> g(lock);
    std::vector<device_range *> maps;
    if (!covering((uintptr_t)ptr, bytes, &maps))
        return drv_fail(CUDA_ERROR_INVALID_VALUE, "cuMemUnmap(%#llx, %zu): the range is not "
                        "exactly covered by mappings", (unsigned long long)ptr, bytes);
    for (device_range *r : maps) {
        uintptr_t base = r->base;
        mmap((void *)base, r->bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED |
             MAP_NORESERVE, -1, 0);
        auto ph = physicals.find(r->handle);
        ranges.erase(base);
        if (ph != physicals.end() && --ph->second.maps == 0 && ph->second.released)
            free_physical(ph);
    }
    return CUDA_SUCCESS;
}

void *driver_symbol(const char *symbol, unsigned version, int *status_out)
{
    static const struct {
        const char *name;
        unsigned since; /* the ABI version the entry point has had since */
        void *fn;
    } table[] = {
        {"cuInit", 2000, (void *)(PFN_cuInit_v2000)drv_init},
        {"cuDriverGetVersion", 2020, (void *)(PFN_cuDriverGetVersion_v2020)drv_driver_version},
        {"cuGetErrorName", 6000, (void *)(PFN_cuGetErrorName_v6000)drv_get_error_name},
        {"cuGetErrorString", 6000, (void *)(PFN_cuGetErrorString_v6000)drv_get_error_string},
        {"cuDeviceGet", 2000, (void *)(PFN_cuDeviceGet_v2000)drv_device_get},
        {"cuDeviceGetCount", 2000, (void *)(PFN_cuDeviceGetCount_v2000)drv_device_get_count},
        {"cuDeviceGetName", 2000, (void *)(PFN_cuDeviceGetName_v2000)drv_device_get_name},
        {"cuDeviceTotalMem", 3020, (void *)(PFN_cuDeviceTotalMem_v3020)drv_device_total_mem},
        {"cuDeviceGetAttribute", 2000,
         (void *)(PFN_cuDeviceGetAttribute_v2000)drv_device_get_attribute},
        {"cuMemGetAllocationGranularity", 10020,
         (void *)(PFN_cuMemGetAllocationGranularity_v10020)drv_granularity},
        {"cuMemCreate", 10020, (void *)(PFN_cuMemCreate_v10020)drv_mem_create},
        {"cuMemRelease", 10020, (void *)(PFN_cuMemRelease_v10020)drv_mem_release},
        {"cuMemAddressReserve", 10020,
         (void *)(PFN_cuMemAddressReserve_v10020)drv_address_reserve},
        {"cuMemAddressFree", 10020, (void *)(PFN_cuMemAddressFree_v10020)drv_address_free},
        {"cuMemMap", 10020, (void *)(PFN_cuMemMap_v10020)drv_map},
        {"cuMemUnmap", 10020, (void *)(PFN_cuMemUnmap_v10020)drv_unmap},
        {"cuMemSetAccess", 10020, (void *)(PFN_cuMemSetAccess_v10020)drv_set_access},
    };
    for (const auto &t : table)
        if (strcmp(t.name, symbol) == 0) {
            if (version < t.since || version > 13000) {
                *status_out = cudaDriverEntryPointVersionNotSufficent;
                return NULL;
            }
            *status_out = cudaDriverEntryPointSuccess;
            return t.fn;
        }
    *status_out = cudaDriverEntryPointSymbolNotFound;
    return NULL;
}

} /* namespace cuemu */
