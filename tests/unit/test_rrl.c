/* rrl: the dns-rate-limit token buckets on a fake clock: burst, refill, slip counting, the
 * /24 and /56 grouping, unknown clients, and the bound on tracked networks (LRU eviction). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dohgate/rrl.h"

static struct client_id id_of(const char *s)
{
    struct client_id id;
    assert_int_equal(client_id_from_string(&id, s), 0);
    return id;
}

/* How many of @p n checks at @p now get each verdict. */
static void count(struct rrl *r, const char *who, int n, uint64_t now, int *pass, int *slip,
                  int *drop)
{
    struct client_id id = id_of(who);
    *pass = *slip = *drop = 0;
    for (int i = 0; i < n; i++) {
        enum rrl_verdict v = rrl_check(r, &id, now);
        *pass += v == RRL_PASS;
        *slip += v == RRL_SLIP;
        *drop += v == RRL_DROP;
    }
}

static void test_burst_and_refill(void **state)
{
    (void)state;
    struct rrl_config cfg = {.rate = 10, .slip = 0, .max_entries = 1000};
    struct rrl *r = rrl_new(&cfg);
    assert_non_null(r);
    int pass, slip, drop;
    /* a new network has a full bucket: one second's worth, then nothing */
    count(r, "192.0.2.1", 25, 1000, &pass, &slip, &drop);
    assert_int_equal(pass, 10);
    assert_int_equal(slip, 0);
    assert_int_equal(drop, 15);
    /* 100 ms later: one more (rate 10/s) */
    count(r, "192.0.2.1", 5, 1100, &pass, &slip, &drop);
    assert_int_equal(pass, 1);
    /* 350 ms later: 3 more (3.5 tokens: the half stays) */
    count(r, "192.0.2.1", 5, 1450, &pass, &slip, &drop);
    assert_int_equal(pass, 3);
    count(r, "192.0.2.1", 5, 1500, &pass, &slip, &drop);
    assert_int_equal(pass, 1); /* 0.5 + 0.5 */
    /* a long pause refills to the burst, never more */
    count(r, "192.0.2.1", 50, 100000, &pass, &slip, &drop);
    assert_int_equal(pass, 10);
    /* a clock read that went backwards (another worker) adds nothing and breaks nothing */
    count(r, "192.0.2.1", 5, 99000, &pass, &slip, &drop);
    assert_int_equal(pass, 0);
    rrl_free(r);
    /* rate 0 is "off": no table */
    struct rrl_config off = {.rate = 0, .max_entries = 10};
    assert_null(rrl_new(&off));
}

static void test_slip(void **state)
{
    (void)state;
    for (unsigned s = 0; s <= 3; s++) {
        struct rrl_config cfg = {.rate = 5, .slip = s, .max_entries = 100};
        struct rrl *r = rrl_new(&cfg);
        assert_non_null(r);
        int pass, slip, drop;
        count(r, "198.51.100.7", 5 + 12, 0, &pass, &slip, &drop);
        assert_int_equal(pass, 5);
        /* every s-th limited answer slips: 12 limited → 12 / s slipped */
        assert_int_equal(slip, s ? 12 / (int)s : 0);
        assert_int_equal(drop, 12 - slip);
        /* the order: with slip 2, limited answers go drop, slip, drop, slip... */
        if (s == 2) {
            struct client_id id = id_of("198.51.100.7");
            assert_int_equal(rrl_check(r, &id, 0), RRL_DROP);
            assert_int_equal(rrl_check(r, &id, 0), RRL_SLIP);
        }
        rrl_free(r);
    }
}

static void test_grouping(void **state)
{
    (void)state;
    struct rrl_config cfg = {.rate = 4, .slip = 0, .max_entries = 1000};
    struct rrl *r = rrl_new(&cfg);
    assert_non_null(r);
    int pass, slip, drop;
    /* one IPv4 /24: .1 uses up the bucket that .200 then finds empty */
    count(r, "192.0.2.1", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 4);
    count(r, "192.0.2.200", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 0);
    /* an IPv4-mapped address is the IPv4 client */
    count(r, "::ffff:192.0.2.9", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 0);
    /* the next /24 is another network */
    count(r, "192.0.3.1", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 4);
    /* IPv6: one /56 ... */
    count(r, "2001:db8:0:100::1", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 4);
    count(r, "2001:db8:0:1ff:ffff::9", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 0);
    /* ... and the next /56 is another */
    count(r, "2001:db8:0:200::1", 4, 0, &pass, &slip, &drop);
    assert_int_equal(pass, 4);
    /* an IPv6 prefix never shares a bucket with an IPv4 /24 of the same first bytes */
    count(r, "c000:200::1", 4, 0, &pass, &slip, &drop); /* c0 00 02 00 = 192.0.2.0 */
    assert_int_equal(pass, 4);
    assert_int_equal(rrl_entries(r), 5);
    /* unknown clients are not limited (nobody to answer) and not tracked */
    struct client_id none;
    memset(&none, 0, sizeof(none));
    for (int i = 0; i < 20; i++)
        assert_int_equal(rrl_check(r, &none, 0), RRL_PASS);
    assert_int_equal(rrl_entries(r), 5);
    rrl_free(r);
}

static void test_bounded(void **state)
{
    (void)state;
    size_t max = 4 * RRL_SHARDS;
    struct rrl_config cfg = {.rate = 1, .slip = 0, .max_entries = max};
    struct rrl *r = rrl_new(&cfg);
    assert_non_null(r);
    /* a flood of random sources: the table never holds more than its bound */
    char a[64];
    for (int i = 0; i < 20000; i++) {
        snprintf(a, sizeof(a), "10.%d.%d.1", (i >> 8) & 255, i & 255);
        struct client_id id = id_of(a);
        assert_int_equal(rrl_check(r, &id, 0), RRL_PASS); /* each new: a full bucket */
        assert_true(rrl_entries(r) <= max);
    }
    assert_int_equal(rrl_entries(r), max); /* every shard full */
    /* an evicted network starts afresh (its old bucket was forgotten): 10.0.0.1 was used up
     * at the start and long evicted since */
    struct client_id first = id_of("10.0.0.1");
    assert_int_equal(rrl_check(r, &first, 0), RRL_PASS);
    /* ... and the most recently seen one was kept: its bucket is still empty */
    assert_int_equal(rrl_check(r, &first, 0), RRL_DROP);
    /* the least recently seen goes first: keep one network busy while others flood in;
     * it stays tracked (its empty bucket stays empty) */
    struct client_id busy = id_of("192.0.2.1");
    assert_int_equal(rrl_check(r, &busy, 0), RRL_PASS);
    for (int i = 0; i < 5000; i++) {
        snprintf(a, sizeof(a), "172.16.%d.1", i & 255);
        struct client_id id = id_of(a);
        (void)rrl_check(r, &id, 0);
        if (i % 2 == 0)
            assert_int_equal(rrl_check(r, &busy, 0), RRL_DROP);
    }
    rrl_free(r);
    /* a bound below one per shard still keeps one per shard */
    struct rrl_config tiny = {.rate = 1, .max_entries = 1};
    r = rrl_new(&tiny);
    assert_non_null(r);
    for (int i = 0; i < 100; i++) {
        snprintf(a, sizeof(a), "10.0.%d.1", i);
        struct client_id id = id_of(a);
        (void)rrl_check(r, &id, 0);
    }
    assert_true(rrl_entries(r) <= RRL_SHARDS);
    rrl_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_and_refill),
        cmocka_unit_test(test_slip),
        cmocka_unit_test(test_grouping),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
