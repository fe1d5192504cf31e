/* Allocator interposer for the failmalloc test (see failmalloc.h). */
#define _GNU_SOURCE /* RTLD_NEXT */
#include "failmalloc.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Our definitions of the allocator: declared here because the C library's headers declare
 * some of them only under feature macros. */
void *malloc(size_t size);
void *calloc(size_t n, size_t size);
void *realloc(void *p, size_t size);
void free(void *p);
int posix_memalign(void **out, size_t align, size_t size);
void *aligned_alloc(size_t align, size_t size);
void *memalign(size_t align, size_t size);
void *valloc(size_t size);
void *pvalloc(size_t size);
char *strdup(const char *s);
char *strndup(const char *s, size_t n);

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);
static void *(*real_aligned_alloc)(size_t, size_t);
static void *(*real_memalign)(size_t, size_t);

/* dlsym() itself may allocate (its error state) before the real functions are known: those
 * few early blocks come from here and are never given back. */
static _Alignas(16) unsigned char boot_arena[16384];
static size_t boot_used;
static int resolving;

static void *boot_alloc(size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size > sizeof(boot_arena) - boot_used)
        return NULL;
    void *p = boot_arena + boot_used;
    boot_used += size;
    return p;
}

static int is_boot(const void *p)
{
    return (const unsigned char *)p >= boot_arena &&
           (const unsigned char *)p < boot_arena + sizeof(boot_arena);
}

static void die(const char *msg)
{
    ssize_t w = write(2, msg, strlen(msg));
    (void)w;
    abort();
}

static void resolve(void)
{
    if (real_malloc)
        return;
    resolving = 1;
    real_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
    real_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
    real_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
    real_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
    real_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
    real_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
    real_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
    resolving = 0;
    if (!real_malloc || !real_calloc || !real_realloc || !real_free || !real_posix_memalign ||
        !real_aligned_alloc || !real_memalign)
        die("failmalloc: the real allocator was not found\n");
}

/* ------------------------------------------------------------ run state */

static atomic_flag lock = ATOMIC_FLAG_INIT;
static int running;           /* between fm_start() and fm_stop() */
static int paused;            /* fm_pause() depth */
static unsigned long fail_at; /* 0: never */
static int fail_persistent;
static unsigned long counted;
static int injected;

/* The blocks of the run, by address, in an open-addressing table (linear probing, deletion by
 * backward shift). Addresses are stored masked so that LeakSanitizer, scanning this table, does
 * not take a leaked block for a reachable one. */
#define SLOTS_BITS 20
#define SLOTS      (1u << SLOTS_BITS)
#define ADDR_MASK  ((uintptr_t)0xa5a5a5a5a5a5a5a5u)
static uintptr_t slots[SLOTS];
static unsigned long slot_seq[SLOTS];
static const void *slot_caller[SLOTS];
/* the code that asked for the block */ /* which allocation of the run (fm_dump_live()) */
static size_t live;
static unsigned long seq;       /* allocations of the run, paused ones included */
static unsigned long trace_seq; /* FM_TRACE_SEQ: print where this allocation is made */

static void take(void)
{
    while (atomic_flag_test_and_set_explicit(&lock, memory_order_acquire))
        ;
}

static void give(void)
{
    atomic_flag_clear_explicit(&lock, memory_order_release);
}

static size_t slot_of(uintptr_t a)
{
    return (size_t)(((uint64_t)a * 0x9e3779b97f4a7c15u) >> (64 - SLOTS_BITS));
}

static void remember(void *p, const void *caller)
{
    uintptr_t v = (uintptr_t)p ^ ADDR_MASK;
    if (live >= SLOTS - SLOTS / 4)
        die("failmalloc: too many live blocks to track\n");
    size_t i = slot_of((uintptr_t)p);
    while (slots[i] != 0) {
        if (slots[i] == v)
            die("failmalloc: a block was handed out twice\n");
        i = (i + 1) & (SLOTS - 1);
    }
    slots[i] = v;
    slot_seq[i] = seq;
    slot_caller[i] = caller;
    live++;
}

static void forget(void *p)
{
    uintptr_t v = (uintptr_t)p ^ ADDR_MASK;
    size_t i = slot_of((uintptr_t)p);
    while (slots[i] != v) {
        if (slots[i] == 0)
            return; /* not a block of a run */
        i = (i + 1) & (SLOTS - 1);
    }
    /* Backward shift: move later entries of the cluster into the hole where their probe
     * sequence allows it. */
    size_t hole = i;
    for (size_t j = (i + 1) & (SLOTS - 1); slots[j] != 0; j = (j + 1) & (SLOTS - 1)) {
        size_t home = slot_of(slots[j] ^ ADDR_MASK);
        /* slots[j] may move to hole if home is not cyclically in (hole, j] */
        if (hole <= j ? (home <= hole || home > j) : (home <= hole && home > j)) {
            slots[hole] = slots[j];
            slot_seq[hole] = slot_seq[j];
            slot_caller[hole] = slot_caller[j];
            hole = j;
        }
    }
    slots[hole] = 0;
    live--;
}

static int want_fail_trace;
static int want_fail_stack;
static void *fail_stack[48]; /* where the first injected failure of the run happened */
static int fail_depth;

static void fail_traced(void)
{
    if (want_fail_stack) {
        want_fail_stack = 0;
        fail_depth = backtrace(fail_stack, 48);
    }
    if (!want_fail_trace)
        return;
    want_fail_trace = 0;
    void *bt[32];
    dprintf(2, "failmalloc: allocation %lu fails at:\n", fail_at);
    backtrace_symbols_fd(bt, backtrace(bt, 32), 2);
}

/* Whether this allocation must fail; counts it. Called with the lock held. */
static int should_fail(void)
{
    if (!running || paused)
        return 0;
    counted++;
    if (fail_at && (counted == fail_at || (fail_persistent && counted > fail_at))) {
        if (!injected && getenv("FM_TRACE_FAIL"))
            want_fail_trace = 1;
        if (!injected)
            want_fail_stack = 1;
        injected = 1;
        return 1;
    }
    return 0;
}

static int want_trace;

/* Call without the lock: backtrace() may allocate. */
static void traced(void)
{
    if (!want_trace)
        return;
    want_trace = 0;
    void *bt[32];
    dprintf(2, "failmalloc: allocation %lu of the run made at:\n", trace_seq);
    backtrace_symbols_fd(bt, backtrace(bt, 32), 2);
}

static void track(void *p, const void *caller)
{
    if (p && running) {
        seq++;
        remember(p, caller);
        if (seq == trace_seq)
            want_trace = 1; /* printed by traced() once the lock is given back */
    }
}

/* Whether this allocation is the one to fail (reported and traced as such). */
static bool inject(void)
{
    take();
    bool fail = should_fail();
    give();
    if (fail)
        fail_traced();
    return fail;
}

/* Record a block the real allocator returned (@p old: the block realloc() replaced). */
static void *adopt(void *p, void *old, const void *caller)
{
    take();
    if (old)
        forget(old);
    track(p, caller);
    give();
    traced();
    return p;
}

/* ------------------------------------------------------------ the interposed symbols */

void *malloc(size_t size)
{
    if (resolving)
        return boot_alloc(size);
    resolve();
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return adopt(real_malloc(size), NULL, __builtin_return_address(0));
}

void *calloc(size_t n, size_t size)
{
    if (resolving) {
        if (size && n > SIZE_MAX / size)
            return NULL;
        return boot_alloc(n * size); /* static storage: zeroed */
    }
    resolve();
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return adopt(real_calloc(n, size), NULL, __builtin_return_address(0));
}

void *realloc(void *old, size_t size)
{
    resolve();
    if (is_boot(old)) {
        /* Rare enough (dlsym's own state) to copy what is left of the arena. */
        void *p = malloc(size);
        if (p) {
            size_t avail = (size_t)(boot_arena + sizeof(boot_arena) - (unsigned char *)old);
            memcpy(p, old, size < avail ? size : avail);
        }
        return p;
    }
    if (old && size == 0) {
        free(old);
        return NULL;
    }
    if (inject()) {
        errno = ENOMEM;
        return NULL; /* the old block stays valid */
    }
    void *p = real_realloc(old, size);
    return p ? adopt(p, old, __builtin_return_address(0)) : NULL;
}

void free(void *p)
{
    if (!p || is_boot(p))
        return;
    resolve();
    take();
    forget(p);
    give();
    real_free(p);
}

int posix_memalign(void **out, size_t align, size_t size)
{
    resolve();
    if (inject())
        return ENOMEM;
    int rc = real_posix_memalign(out, align, size);
    if (rc == 0)
        adopt(*out, NULL, __builtin_return_address(0));
    return rc;
}

static void *aligned(void *(*fn)(size_t, size_t), size_t align, size_t size, const void *caller)
{
    resolve();
    if (inject()) {
        errno = ENOMEM;
        return NULL;
    }
    return adopt(fn(align, size), NULL, caller);
}

void *aligned_alloc(size_t align, size_t size)
{
    resolve();
    return aligned(real_aligned_alloc, align, size, __builtin_return_address(0));
}

void *memalign(size_t align, size_t size)
{
    resolve();
    return aligned(real_memalign, align, size, __builtin_return_address(0));
}

void *valloc(size_t size)
{
    resolve();
    return aligned(real_memalign, (size_t)sysconf(_SC_PAGESIZE), size, __builtin_return_address(0));
}

void *pvalloc(size_t size)
{
    resolve();
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return aligned(real_memalign, pg, (size + pg - 1) & ~(pg - 1), __builtin_return_address(0));
}

/* Defined here too so that they allocate through malloc above in the ASan build as well,
 * where ASan's own strdup interceptor would bypass it (glibc's call malloc anyway). */
char *strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

char *strndup(const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* ------------------------------------------------------------ control */

void fm_start(unsigned long n, bool persistent)
{
    resolve();
    const char *t = getenv("FM_TRACE_SEQ");
    void *bt[4];
    (void)backtrace(bt, 4); /* loads libgcc_s now (once), not inside a run */
    take();
    fail_depth = 0;
    trace_seq = t ? strtoul(t, NULL, 10) : 0;
    if (live) {
        /* what a failed run left: start from an empty table */
        memset(slots, 0, sizeof(slots));
        live = 0;
    }
    seq = 0;
    running = 1;
    paused = 0;
    fail_at = n;
    fail_persistent = persistent;
    counted = 0;
    injected = 0;
    give();
}

void fm_stop(void)
{
    take();
    running = 0;
    paused = 0;
    fail_at = 0;
    give();
}

unsigned long fm_count(void)
{
    return counted;
}

bool fm_injected(void)
{
    return injected != 0;
}

size_t fm_live(void)
{
    return live;
}

static const char *caller_name(const void *caller)
{
    Dl_info info;
    if (caller && dladdr(caller, &info) && info.dli_sname)
        return info.dli_sname;
    return "?";
}

void fm_dump_live(void)
{
    for (size_t i = 0; i < SLOTS; i++) {
        if (slots[i])
            dprintf(2,
                    "failmalloc: live block %p from %s, allocation %lu of the run "
                    "(FM_TRACE_SEQ)\n",
                    (void *)(slots[i] ^ ADDR_MASK), caller_name(slot_caller[i]), slot_seq[i]);
    }
}

bool fm_fail_stack_has(const char *const *names)
{
    for (int i = 0; i < fail_depth; i++) {
        const char *fn = caller_name(fail_stack[i]);
        for (size_t k = 0; names[k]; k++) {
            if (strcmp(fn, names[k]) == 0)
                return true;
        }
    }
    return false;
}

size_t fm_live_except(const char *const *sites, size_t *excused)
{
    size_t other = 0;
    *excused = 0;
    for (size_t i = 0; i < SLOTS; i++) {
        if (!slots[i])
            continue;
        const char *name = caller_name(slot_caller[i]);
        bool known = false;
        for (size_t k = 0; sites && sites[k]; k++)
            known = known || strcmp(name, sites[k]) == 0;
        if (known)
            (*excused)++;
        else
            other++;
    }
    return other;
}

void fm_pause(void)
{
    take();
    paused++;
    give();
}

void fm_resume(void)
{
    take();
    if (paused > 0)
        paused--;
    give();
}

void *fm_real_malloc(size_t size)
{
    resolve();
    return real_malloc(size);
}

void *fm_real_calloc(size_t n, size_t size)
{
    resolve();
    return real_calloc(n, size);
}

void *fm_real_realloc(void *p, size_t size)
{
    resolve();
    return real_realloc(p, size);
}

void fm_real_free(void *p)
{
    resolve();
    real_free(p);
}
