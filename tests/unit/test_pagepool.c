/*
 * Unit tests for pagepool.h: page-aligned zero-filled blocks, reuse, exhaustion, ownership, and
 * that a returned block's pages leave memory (mincore), which is the point of the pool.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dohgate/pagepool.h"

static size_t page(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

/* Pages of [p, p + len) resident now. */
static size_t resident(const void *p, size_t len)
{
    size_t n = len / page();
    unsigned char vec[64];
    assert_true(n <= sizeof(vec));
    assert_int_equal(mincore((void *)p, len, vec), 0);
    size_t r = 0;
    for (size_t i = 0; i < n; i++)
        r += vec[i] & 1;
    return r;
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_null(pagepool_new(0, 4));
    assert_null(pagepool_new(4096, 0));
    assert_null(pagepool_new(SIZE_MAX, 4));
    assert_false(pagepool_owns(NULL, &state));
    pagepool_free(NULL);
}

static void test_blocks(void **state)
{
    (void)state;
    struct pagepool *p = pagepool_new(16394, 3);
    assert_non_null(p);
    size_t bs = pagepool_block_size(p);
    assert_true(bs >= 16394 && bs % page() == 0 && bs < 16394 + page());
    uint8_t *a = pagepool_get(p), *b = pagepool_get(p), *c = pagepool_get(p);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_null(pagepool_get(p)); /* all three out: the caller falls back to malloc */
    assert_int_equal(pagepool_in_use(p), 3);
    assert_true(a != b && b != c && a != c);
    assert_int_equal((uintptr_t)a % page(), 0);
    assert_true(pagepool_owns(p, a) && pagepool_owns(p, c + bs - 1));
    int local;
    assert_false(pagepool_owns(p, &local));
    uint8_t *lowest = a < b ? (a < c ? a : c) : (b < c ? b : c);
    assert_false(pagepool_owns(p, lowest + 3 * bs)); /* just past the reservation */
    assert_false(pagepool_owns(p, lowest - 1));

    /* fresh blocks are zero and untouched */
    for (size_t i = 0; i < bs; i++)
        assert_int_equal(a[i], 0);
    memset(b, 0xab, bs);
    assert_int_equal(resident(b, bs), bs / page());

    /* a returned block leaves memory and comes back zero-filled */
    pagepool_put(p, b);
    assert_int_equal(pagepool_in_use(p), 2);
    assert_int_equal(resident(b, bs), 0);
    uint8_t *d = pagepool_get(p);
    assert_ptr_equal(d, b); /* LIFO reuse */
    /* writing one byte makes one page resident, not the block (checked before reading the
     * rest: reads map the shared zero page, which mincore counts) */
    d[10] = 1;
    assert_int_equal(resident(d, bs), 1);
    for (size_t i = 0; i < bs; i++)
        assert_int_equal(d[i], i == 10 ? 1 : 0);

    pagepool_put(p, a);
    pagepool_put(p, c);
    pagepool_put(p, d);
    assert_int_equal(pagepool_in_use(p), 0);
    pagepool_free(p);
}

/* Giving pages back from a block still out: all of them (contents dead), or those that hold
 * only zeroes (contents kept). */
static void test_release(void **state)
{
    (void)state;
    struct pagepool *p = pagepool_new(3 * page(), 2);
    assert_non_null(p);
    size_t bs = pagepool_block_size(p);
    assert_int_equal(bs, 3 * page());
    uint8_t *a = pagepool_get(p);
    assert_non_null(a);
    memset(a, 0x5a, bs);
    assert_int_equal(resident(a, bs), 3);
    assert_int_equal(pagepool_release(p, a), bs);
    assert_int_equal(resident(a, bs), 0);
    assert_int_equal(pagepool_in_use(p), 1); /* still out */
    a[0] = 7; /* usable again: one page back, the rest reads as zero */
    assert_int_equal(resident(a, bs), 1);
    for (size_t i = 1; i < bs; i++)
        assert_int_equal(a[i], 0);

    /* page 0: a non-zero byte at its very end; page 1: written, then zeroed; page 2: written */
    memset(a, 0, bs);
    a[page() - 1] = 1;
    a[2 * page() + 5] = 9;
    assert_int_equal(resident(a, bs), 3);
    assert_int_equal(pagepool_release_zero_pages(p, a), page());
    assert_int_equal(resident(a, bs), 2);
    assert_int_equal(a[page() - 1], 1);
    assert_int_equal(a[2 * page() + 5], 9);
    assert_int_equal(a[page()], 0);
    /* nothing left to give: the same again gives back only the page read as zero (mapped
     * to the shared zero page by the reads above, no memory) */
    assert_int_equal(pagepool_release_zero_pages(p, a), page());
    assert_int_equal(pagepool_in_use(p), 1);
    pagepool_put(p, a);
    assert_int_equal(pagepool_in_use(p), 0);
    pagepool_free(p);
}

/* Kept blocks: returned with their pages and reused first; pagepool_get() zeroes one,
 * pagepool_get_any() hands it over as it was; beyond the bound, or when it is lowered, the
 * pages go back to the kernel. */
static void test_keep(void **state)
{
    (void)state;
    struct pagepool *p = pagepool_new(2 * page(), 4);
    assert_non_null(p);
    size_t bs = pagepool_block_size(p);
    assert_int_equal(pagepool_set_keep(p, 1), 0);
    uint8_t *a = pagepool_get(p), *b = pagepool_get(p);
    assert_non_null(a);
    assert_non_null(b);
    a[0] = 0x11;
    b[0] = 0x22;
    pagepool_put(p, a); /* kept: pages and contents stay */
    pagepool_put(p, b); /* beyond the bound: given back */
    assert_int_equal(pagepool_in_use(p), 0);
    assert_int_equal(resident(a, bs), 1);
    assert_int_equal(resident(b, bs), 0);
    uint8_t *c = pagepool_get_any(p);
    assert_ptr_equal(c, a);       /* the kept block first */
    assert_int_equal(c[0], 0x11); /* as it was left */
    pagepool_put(p, c);
    uint8_t *d = pagepool_get(p);
    assert_ptr_equal(d, a);
    for (size_t i = 0; i < bs; i++) /* zeroed for a caller that wants zeroes */
        assert_int_equal(d[i], 0);
    d[1] = 0x33;
    pagepool_put(p, d);
    /* zeroing wrote the whole block (the pool's callers that want zeroes use one-page blocks) */
    assert_int_equal(resident(a, bs), 2);
    assert_int_equal(pagepool_set_keep(p, 0), 0); /* lowered: the kept block gives its pages back */
    assert_int_equal(resident(a, bs), 0);
    uint8_t *e = pagepool_get_any(p);
    assert_non_null(e);
    for (size_t i = 0; i < bs; i++) /* a block that was given back reads as zeroes */
        assert_int_equal(e[i], 0);
    pagepool_put(p, e);
    pagepool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_release),
        cmocka_unit_test(test_keep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
