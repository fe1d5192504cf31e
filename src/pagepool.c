/*
 * pagepool.c — see pagepool.h. Blocks are handed out from a bump index first, then from a
 * LIFO stack of returned indices (kept apart from the blocks, so that a free block's pages
 * stay untouched and non-resident).
 */
#include "dohgate/pagepool.h"

#include <stdint.h>
#include <stdlib.h>

#include <sys/mman.h>
#include <unistd.h>

struct pagepool {
    uint8_t *base;
    size_t block;   /* bytes per block, whole pages */
    size_t max;     /* blocks reserved */
    size_t bump;    /* blocks never handed out start here */
    uint32_t *free; /* returned block indices, a stack */
    size_t n_free;
    size_t in_use;
};

struct pagepool *pagepool_new(size_t block_size, size_t max_blocks)
{
    long pg = sysconf(_SC_PAGESIZE);
    size_t page = pg > 0 ? (size_t)pg : 4096;
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
    free(p);
}

void *pagepool_get(struct pagepool *p)
{
    size_t i;
    if (p->n_free)
        i = p->free[--p->n_free];
    else if (p->bump < p->max)
        i = p->bump++;
    else
        return NULL;
    p->in_use++;
    return p->base + i * p->block;
}

void pagepool_put(struct pagepool *p, void *block)
{
    size_t i = (size_t)((uint8_t *)block - p->base) / p->block;
    /* Zero-filled on the next touch; if the kernel refuses, zero by hand so that the next
     * user still gets zeroes. */
    if (madvise(p->base + i * p->block, p->block, MADV_DONTNEED) != 0) {
        uint8_t *b = p->base + i * p->block;
        for (size_t k = 0; k < p->block; k++)
            b[k] = 0;
    }
    p->free[p->n_free++] = (uint32_t)i;
    p->in_use--;
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
