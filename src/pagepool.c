/*
 * pagepool.c — see pagepool.h. Blocks are handed out from the stack of kept blocks (returned
 * with their pages, up to `keep`), then from a LIFO stack of returned indices whose pages went
 * back to the kernel, then from a bump index (both stacks kept apart from the blocks, so that
 * a free block's pages stay untouched and non-resident).
 */
#include "dohgate/pagepool.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sys/mman.h>
#include <unistd.h>

struct pagepool {
    uint8_t *base;
    size_t block;   /* bytes per block, whole pages */
    size_t max;     /* blocks reserved */
    size_t bump;    /* blocks never handed out start here */
    uint32_t *free; /* returned block indices, a stack */
    size_t n_free;
    uint32_t *kept; /* returned blocks that kept their pages (contents left as they were) */
    size_t n_kept, keep;
    size_t in_use;
};

static size_t page_size(void);

/* Give a block's pages back: zero-filled on the next touch; if the kernel refuses, zero by
 * hand so that the next user still gets zeroes. */
static void release_block(struct pagepool *p, uint8_t *b)
{
    if (madvise(b, p->block, MADV_DONTNEED) != 0)
        memset(b, 0, p->block);
}

struct pagepool *pagepool_new(size_t block_size, size_t max_blocks)
{
    size_t page = page_size();
    if (block_size == 0 || max_blocks == 0 || max_blocks > UINT32_MAX ||
        block_size > SIZE_MAX / 2 - page)
        return NULL;
    size_t block = (block_size + page - 1) / page * page;
    if (max_blocks > SIZE_MAX / 4 / block)
        return NULL;
    struct pagepool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->block = block;
    p->max = max_blocks;
    /* calloc'd pages the stack never reaches stay untouched too */
    p->free = calloc(max_blocks, sizeof(*p->free));
    void *base = mmap(NULL, block * max_blocks, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!p->free || base == MAP_FAILED) {
        free(p->free);
        free(p);
        return NULL;
    }
    p->base = base;
    return p;
}

void pagepool_free(struct pagepool *p)
{
    if (!p)
        return;
    munmap(p->base, p->block * p->max);
    free(p->free);
    free(p->kept);
    free(p);
}

int pagepool_set_keep(struct pagepool *p, size_t n)
{
    if (n > p->max)
        n = p->max;
    uint32_t *k = n ? calloc(n, sizeof(*k)) : NULL;
    if (n && !k)
        return -1;
    /* blocks kept beyond the new bound give their pages back now */
    size_t carry = p->n_kept < n ? p->n_kept : n;
    for (size_t i = carry; i < p->n_kept; i++) {
        uint8_t *b = p->base + (size_t)p->kept[i] * p->block;
        release_block(p, b);
        p->free[p->n_free++] = p->kept[i];
    }
    if (carry)
        memcpy(k, p->kept, carry * sizeof(*k));
    free(p->kept);
    p->kept = k;
    p->n_kept = carry;
    p->keep = n;
    return 0;
}

static void *take(struct pagepool *p, bool any)
{
    size_t i;
    bool dirty = false;
    if (p->n_kept) {
        i = p->kept[--p->n_kept];
        dirty = true;
    } else if (p->n_free) {
        /* given back, as non-resident as a fresh one, and its page-table pages exist already */
        i = p->free[--p->n_free];
    } else if (p->bump < p->max) {
        i = p->bump++;
    } else {
        return NULL;
    }
    p->in_use++;
    uint8_t *b = p->base + i * p->block;
    if (dirty && !any)
        memset(b, 0, p->block);
    return b;
}

void *pagepool_get(struct pagepool *p)
{
    return take(p, false);
}

void *pagepool_get_any(struct pagepool *p)
{
    return take(p, true);
}

void pagepool_put(struct pagepool *p, void *block)
{
    size_t i = (size_t)((uint8_t *)block - p->base) / p->block;
    p->in_use--;
    if (p->n_kept < p->keep) {
        /* no system call, no TLB shootdown (madvise in a threaded process interrupts the
         * other CPUs), and the next connection finds its pages resident */
        p->kept[p->n_kept++] = (uint32_t)i;
        return;
    }
    release_block(p, p->base + i * p->block);
    p->free[p->n_free++] = (uint32_t)i;
}

static size_t page_size(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    return pg > 0 ? (size_t)pg : 4096;
}

size_t pagepool_release(struct pagepool *p, void *block)
{
    /* a refusal leaves the pages resident: still correct, only not smaller */
    return madvise(block, p->block, MADV_DONTNEED) == 0 ? p->block : 0;
}

static bool page_is_zero(const uint8_t *b, size_t len)
{
    const uint64_t *w = (const uint64_t *)(const void *)b; /* pages are 8-byte aligned */
    uint64_t acc = 0;
    for (size_t i = 0; i < len / sizeof(*w); i++)
        acc |= w[i];
    return acc == 0;
}

size_t pagepool_release_zero_pages(struct pagepool *p, void *block)
{
    size_t page = page_size(), n = 0;
    uint8_t *b = block;
    for (size_t off = 0; off < p->block; off += page) {
        if (page_is_zero(b + off, page) && madvise(b + off, page, MADV_DONTNEED) == 0)
            n++;
    }
    return n * page;
}

bool pagepool_owns(const struct pagepool *p, const void *ptr)
{
    if (!p)
        return false;
    uintptr_t a = (uintptr_t)ptr, b = (uintptr_t)p->base;
    return a >= b && a - b < p->block * p->max;
}

size_t pagepool_block_size(const struct pagepool *p)
{
    return p->block;
}

size_t pagepool_in_use(const struct pagepool *p)
{
    return p->in_use;
}
