/**
 * @file failmalloc.h
 * Test-only allocator interposer (nghttp2's failmalloc idea, at the symbol level): the test
 * executable defines malloc, calloc, realloc, free and the aligned allocators, so every
 * allocation of the process goes through here: ours, nghttp2's, libevent's, ldns', OpenSSL's
 * and glibc's own (glibc routes its internal malloc calls through the interposable symbols).
 * Each call forwards to the next definition, found with dlsym(RTLD_NEXT): glibc's allocator in
 * the plain build, ASan's in the ASan build, so the same hook runs in both.
 *
 * A run: fm_start(n, persistent) counts every allocation from then on; the n-th one returns
 * NULL (errno ENOMEM), and with @p persistent every later one too. Every block allocated while
 * the run is on is remembered until it is freed, whenever that is, so fm_live() after the run's
 * teardown is the number of blocks it leaked. fm_pause()/fm_resume() bracket test scaffolding:
 * its allocations are neither counted nor failed, but still remembered (they must be freed too).
 *
 * Debugging a failure: FM_TRACE_FAIL=1 prints a backtrace where the allocation fails,
 * FM_TRACE_SEQ=k where the k-th remembered allocation of the run (as fm_dump_live() numbers
 * them) is made.
 *
 * Single-threaded use only (the tests run one event loop; nothing here spawns a thread).
 * strdup and strndup are defined too (on top of malloc), so that ASan's interceptors for them
 * do not bypass the hook. Allocations that still bypass the symbols (other ASan interceptors
 * that allocate, such as realpath) are neither counted nor remembered.
 */
#ifndef DOHGATE_TEST_FAILMALLOC_H
#define DOHGATE_TEST_FAILMALLOC_H

#include <stdbool.h>
#include <stddef.h>

/** Start a run: count and remember allocations; fail the @p fail_at-th (1-based; 0 = none). */
void fm_start(unsigned long fail_at, bool persistent);
/** End the run: nothing is counted, failed or remembered any more (frees still forget). */
void fm_stop(void);
/** Allocations counted since fm_start() (the candidates for failing). */
unsigned long fm_count(void);
/** Whether an allocation was made to fail in this run. */
bool fm_injected(void);
/** Blocks allocated since fm_start() and not freed yet. */
size_t fm_live(void);
/** Print the blocks still live to stderr, with their number in the run (for FM_TRACE_SEQ). */
void fm_dump_live(void);
/**
 * Live blocks not allocated directly by a function named in @p sites (NULL-terminated list of
 * exported symbol names, found with dladdr()); @p excused receives the others' count.
 */
size_t fm_live_except(const char *const *sites, size_t *excused);
/** Whether the injected failure of this run happened inside a function named in @p names
 * (NULL-terminated; exported symbols only, found with dladdr()). */
bool fm_fail_stack_has(const char *const *names);
/** Scaffolding: allocations in between are not counted or failed (still remembered). Nests. */
void fm_pause(void);
void fm_resume(void);

/** The real allocator, never failed, never remembered (for the test's own client side). */
void *fm_real_malloc(size_t size);
void *fm_real_calloc(size_t n, size_t size);
void *fm_real_realloc(void *p, size_t size);
void fm_real_free(void *p);

#endif
