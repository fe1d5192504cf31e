/**
 * @file pagepool.h
 * Fixed-size, page-aligned blocks for large per-connection buffers that are mostly untouched
 * (nghttp2's 16 KiB frame buffer: an idle connection writes a few hundred bytes into it).
 *
 * A pool reserves one range of address space (max_blocks x block size, MAP_NORESERVE) up front,
 * so every block is page-aligned and only the pages a connection really writes become resident.
 * A returned block gives its pages back to the kernel (madvise MADV_DONTNEED): memory does not
 * stay behind after connections come and go, which the C heap cannot promise for 16 KiB chunks
 * interleaved with small ones. Blocks come back zero-filled.
 *
 * One pool per worker; not thread-safe. Costs: one madvise() per returned block beyond the kept
 * ones, a page fault per page written in a fresh block, and address space (not memory) for
 * max_blocks.
 */
#ifndef DOHGATE_PAGEPOOL_H
#define DOHGATE_PAGEPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct pagepool;

/**
 * Reserve room for @p max_blocks blocks of at least @p block_size bytes (rounded up to whole
 * pages). @return NULL if either is 0, too large, or the reservation fails.
 */
struct pagepool *pagepool_new(size_t block_size, size_t max_blocks);

/** Unmap everything. Blocks still out become invalid. NULL is fine. */
void pagepool_free(struct pagepool *p);

/** A zero-filled block, or NULL when all max_blocks are out (the caller falls back to malloc). */
void *pagepool_get(struct pagepool *p);

/** A block whose contents are undefined (a kept block as its last user left it, else a
 * zero-filled one), or NULL when all are out: for callers that write before they read. */
void *pagepool_get_any(struct pagepool *p);

/**
 * Up to @p n returned blocks keep their pages, for the next pagepool_get*() (default 0: every
 * returned block gives its pages back at once). Memory: at most n blocks' written pages; saved:
 * an madvise per closing connection (a TLB shootdown on every CPU of a threaded process) and the
 * page faults of the next one. Lowering it gives back the excess now. @return 0, -1 (no memory:
 * nothing changed)
 */
int pagepool_set_keep(struct pagepool *p, size_t n);

/** Give back a block from pagepool_get*() of this pool: kept (up to the keep bound, pages and
 * contents as they are), else its pages return to the kernel. */
void pagepool_put(struct pagepool *p, void *block);

/**
 * The contents of a block that is still out are dead (the caller knows nobody will read them
 * before writing): give its pages back to the kernel now; the block stays out and reads as
 * zeroes until written again (each page written faults in afresh). @return the bytes given
 * back (the block size; 0 if the kernel refused, which changes nothing else).
 */
size_t pagepool_release(struct pagepool *p, void *block);

/**
 * Give back those pages of a block still out that hold only zero bytes (reading such a page
 * afterwards gives the same zeroes: nothing changes for the block's owner). Reads the whole
 * block. @return the bytes given back (whole pages).
 */
size_t pagepool_release_zero_pages(struct pagepool *p, void *block);

/** Did @p ptr come from this pool? (Any pointer; NULL pool: false.) */
bool pagepool_owns(const struct pagepool *p, const void *ptr);

/** The usable size of a block (block_size rounded up to pages). */
size_t pagepool_block_size(const struct pagepool *p);

/** Blocks out now. */
size_t pagepool_in_use(const struct pagepool *p);

#endif
