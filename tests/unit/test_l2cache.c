/*
 * Unit tests for l2cache.h: the value codec (round trip, TTL ageing, expiry by the stored
 * lifetime and by a record's TTL, short / oversized / corrupt / wrong-version / future values,
 * answers to another question, SERVFAIL, TC, queries), the backoff arithmetic, and the
 * connection's behaviour against a closed port (error, then skipped during the backoff; a
 * cancelled lookup never calls back). Messages are built byte by byte, without compression.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/l2cache.h"
#include "dohtest.h"

#define NOW 1700000000ull

static size_t put16(uint8_t *b, size_t n, uint16_t v)
{
    b[n] = (uint8_t)(v >> 8);
    b[n + 1] = (uint8_t)v;
    return n + 2;
}

static size_t put32(uint8_t *b, size_t n, uint32_t v)
{
    n = put16(b, n, (uint16_t)(v >> 16));
    return put16(b, n, (uint16_t)v);
}

static size_t make_query(uint8_t *q, uint16_t id, const char *name, uint16_t type)
{
    size_t n = put16(q, 0, id);
    q[n++] = 0x01;
    q[n++] = 0;
    n = put16(q, n, 1);
    n = put16(q, n, 0);
    n = put16(q, n, 0);
    n = put16(q, n, 0);
    n = dt_put_name(q, n, name);
    n = put16(q, n, type);
    return put16(q, n, 1);
}

/* An answer: rcode, A records for @p name with @p ttl (an), and one A in additional with
 * @p ar_ttl (ar_ttl 0: none). */
static size_t make_answer(uint8_t *a, uint16_t id, uint8_t f2, uint8_t rcode, const char *name,
                          uint16_t type, unsigned an, uint32_t ttl, uint32_t ar_ttl)
{
    size_t n = put16(a, 0, id);
    a[n++] = (uint8_t)(0x81 | f2);
    a[n++] = (uint8_t)(0x80 | rcode);
    n = put16(a, n, 1);
    n = put16(a, n, (uint16_t)an);
    n = put16(a, n, 0);
    n = put16(a, n, ar_ttl ? 1 : 0);
    n = dt_put_name(a, n, name);
    n = put16(a, n, type);
    n = put16(a, n, 1);
    for (unsigned i = 0; i < an + (ar_ttl ? 1 : 0); i++) {
        n = dt_put_name(a, n, i < an ? name : "ns.example");
        n = put16(a, n, 1);
        n = put16(a, n, 1);
        n = put32(a, n, i < an ? ttl + i : ar_ttl);
        n = put16(a, n, 4);
        a[n++] = 192;
        a[n++] = 0;
        a[n++] = 2;
        a[n++] = (uint8_t)(i + 1);
    }
    return n;
}

/* TTL of the i-th record after the question of a make_answer() message */
static uint32_t ttl_at(const uint8_t *a, size_t qend, size_t namelen, unsigned i)
{
    size_t off = qend + i * (namelen + 14) + namelen + 4;
    return (uint32_t)a[off] << 24 | (uint32_t)a[off + 1] << 16 | (uint32_t)a[off + 2] << 8 |
           a[off + 3];
}

struct fx {
    uint8_t q[512], a[512];
    size_t qlen, alen;
    struct dg_buf val, out;
};

static int setup(void **state)
{
    static struct fx f;
    memset(&f, 0, sizeof(f));
    f.qlen = make_query(f.q, 0x4242, "www.example.com", 1);
    f.alen = make_answer(f.a, 0x1111, 0, 0, "www.example.com", 1, 2, 300, 5);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    dg_buf_free(&f->val);
    dg_buf_free(&f->out);
    return 0;
}

static int decode(struct fx *f, uint64_t now, uint32_t *left)
{
    return l2_value_decode(f->val.data, f->val.len, f->q, f->qlen, now, &f->out, left);
}

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    assert_int_equal(l2_value_encode(f->a, f->alen, NOW, 300, &f->val), 0);
    assert_int_equal(f->val.len, L2_HDR_LEN + f->alen);
    assert_memory_equal(f->val.data, "DG\x01\x00", 4);
    uint32_t left = 0;
    assert_int_equal(decode(f, NOW, &left), 0);
    assert_int_equal(left, 300);
    assert_int_equal(f->out.len, f->alen);
    assert_int_equal(f->out.data[0], 0x42); /* the query's ID */
    assert_int_equal(f->out.data[1], 0x42);
    assert_memory_equal(f->out.data + 2, f->a + 2, f->alen - 2); /* nothing else changed */
}

static void test_ageing(void **state)
{
    struct fx *f = *state;
    size_t qend = 12 + 17 + 4, nl = 17;
    assert_int_equal(l2_value_encode(f->a, f->alen, NOW, 300, &f->val), 0);
    uint32_t left = 0;
    assert_int_equal(decode(f, NOW + 10, &left), 0);
    assert_int_equal(left, 290);
    assert_int_equal(ttl_at(f->out.data, qend, nl, 0), 290);
    assert_int_equal(ttl_at(f->out.data, qend, nl, 1), 291);
    /* the additional record (TTL 5, other name: "ns.example" is 12 octets) went down to 0 */
    size_t ar = qend + 2 * (nl + 14);
    const uint8_t *t = f->out.data + ar + 12 + 4;
    assert_int_equal(t[0] | t[1] | t[2] | t[3], 0);
    /* a value stored a little "in the future" (another machine's clock) has age 0 */
    f->out.len = 0;
    assert_int_equal(decode(f, NOW - L2_CLOCK_SKEW_S, &left), 0);
    assert_int_equal(left, 300);
}

static void test_expiry(void **state)
{
    struct fx *f = *state;
    uint32_t left = 7;
    assert_int_equal(l2_value_encode(f->a, f->alen, NOW, 300, &f->val), 0);
    assert_int_equal(decode(f, NOW + 300, &left), 1);
    assert_int_equal(f->out.len, 0);
    assert_int_equal(left, 7);
    /* a stored lifetime longer than a record's TTL: the record decides */
    f->val.len = 0;
    assert_int_equal(l2_value_encode(f->a, f->alen, NOW, 3600, &f->val), 0);
    assert_int_equal(decode(f, NOW + 300, &left), 1);
    assert_int_equal(decode(f, NOW + 299, &left), 0);
    assert_int_equal(left, 3301);
}

static void test_corrupt(void **state)
{
    struct fx *f = *state;
    uint32_t left;
    assert_int_equal(l2_value_encode(f->a, f->alen, NOW, 300, &f->val), 0);
    uint8_t v[L2_HDR_LEN + 512];
    size_t vl = f->val.len;
    memcpy(v, f->val.data, vl);
    /* short: every length below header + DNS header, and every cut of the answer */
    for (size_t n = 0; n < vl; n++) {
        int rc = l2_value_decode(v, n, f->q, f->qlen, NOW, &f->out, &left);
        assert_true(rc < 0);
        assert_int_equal(f->out.len, 0);
    }
    /* each header byte wrong */
    for (size_t i = 0; i < 4; i++) {
        v[i] ^= 0x40;
        assert_int_equal(l2_value_decode(v, vl, f->q, f->qlen, NOW, &f->out, &left), -EINVAL);
        v[i] ^= 0x40;
    }
    v[2] = L2_VERSION + 1; /* a later format */
    assert_int_equal(l2_value_decode(v, vl, f->q, f->qlen, NOW, &f->out, &left), -EINVAL);
    v[2] = L2_VERSION;
    memset(v + 12, 0, 4); /* lifetime 0: never stored so */
    assert_int_equal(l2_value_decode(v, vl, f->q, f->qlen, NOW, &f->out, &left), -EINVAL);
    memcpy(v, f->val.data, vl);
    /* stored far in the future */
    assert_int_equal(
        l2_value_decode(v, vl, f->q, f->qlen, NOW - L2_CLOCK_SKEW_S - 1, &f->out, &left), -EINVAL);
    /* oversized */
    uint8_t *big = calloc(1, L2_MAX_VALUE + 1);
    assert_non_null(big);
    memcpy(big, v, vl);
    assert_int_equal(l2_value_decode(big, L2_MAX_VALUE + 1, f->q, f->qlen, NOW, &f->out, &left),
                     -EINVAL);
    free(big);
    /* a record count that lies */
    v[L2_HDR_LEN + 7] = 9;
    assert_int_equal(l2_value_decode(v, vl, f->q, f->qlen, NOW, &f->out, &left), -EINVAL);
    assert_int_equal(f->out.len, 0);
}

static void test_question_mismatch(void **state)
{
    struct fx *f = *state;
    uint32_t left;
    uint8_t a[512];
    size_t al = make_answer(a, 1, 0, 0, "www.example.org", 1, 1, 300, 0);
    assert_int_equal(l2_value_encode(a, al, NOW, 300, &f->val), 0);
    assert_int_equal(decode(f, NOW, &left), -EINVAL); /* another name */
    f->val.len = 0;
    al = make_answer(a, 1, 0, 0, "www.example.com", 28, 1, 300, 0);
    assert_int_equal(l2_value_encode(a, al, NOW, 300, &f->val), 0);
    assert_int_equal(decode(f, NOW, &left), -EINVAL); /* another type */
    f->val.len = 0;
    al = make_answer(a, 1, 0, 0, "WWW.Example.COM", 1, 1, 300, 0);
    assert_int_equal(l2_value_encode(a, al, NOW, 300, &f->val), 0);
    assert_int_equal(decode(f, NOW, &left), 0); /* names compare case-insensitively */
}

static void test_not_usable(void **state)
{
    struct fx *f = *state;
    uint32_t left;
    uint8_t a[512];
    size_t al = make_answer(a, 1, 0, 2, "www.example.com", 1, 0, 0, 0); /* SERVFAIL */
    assert_int_equal(l2_value_encode(a, al, NOW, 5, &f->val), 0);
    assert_int_equal(decode(f, NOW, &left), -EINVAL);
    f->val.len = 0;
    al = make_answer(a, 1, 0x02, 0, "www.example.com", 1, 1, 300, 0); /* TC */
    assert_int_equal(l2_value_encode(a, al, NOW, 300, &f->val), 0);
    assert_int_equal(decode(f, NOW, &left), -EINVAL);
    f->val.len = 0;
    al = make_query(a, 1, "www.example.com", 1); /* a query, QR clear */
    assert_int_equal(l2_value_encode(a, al, NOW, 300, &f->val), 0);
    assert_int_equal(decode(f, NOW, &left), -EINVAL);
    f->val.len = 0;
    assert_int_equal(l2_value_encode(a, 70000, NOW, 300, &f->val), -EINVAL);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(l2_backoff_next(0), 1000);
    assert_int_equal(l2_backoff_next(1000), 2000);
    assert_int_equal(l2_backoff_next(2000), 4000);
    assert_int_equal(l2_backoff_next(8000), 16000);
    assert_int_equal(l2_backoff_next(16000), 30000);
    assert_int_equal(l2_backoff_next(30000), 30000);
    unsigned b = 0, n = 0;
    while (b < L2_BACKOFF_MAX_MS && n < 100) {
        b = l2_backoff_next(b);
        n++;
    }
    assert_int_equal(n, 6); /* 1, 2, 4, 8, 16, 30 s */
}

/* ---- against a closed port ------------------------------------------------------------- */

struct got {
    int calls;
    enum l2_result res;
};

static void on_got(void *arg, enum l2_result res, const uint8_t *val, size_t len)
{
    struct got *g = arg;
    (void)val;
    (void)len;
    g->calls++;
    g->res = res;
}

static int closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&sin, &sl), 0);
    close(s);
    return ntohs(sin.sin_port);
}

static void test_closed_port(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    assert_non_null(base);
    assert_null(l2_new(base, "localhost:6379", 20));
    assert_null(l2_new(base, "127.0.0.1", 20));
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", closed_port());
    struct l2cache *l2 = l2_new(base, addr, 200);
    assert_non_null(l2);
    assert_false(l2_in_backoff(l2));
    struct got got = {0}, cancelled = {0};
    const uint8_t key[] = {3, 'w', 'w', 'w', 0, 0, 1, 0, 1};
    struct l2_get *g = l2_get(l2, key, sizeof(key), on_got, &got);
    if (g) {
        /* refused asynchronously: the callback says so, from the loop */
        struct l2_get *g2 = l2_get(l2, key, sizeof(key), on_got, &cancelled);
        assert_non_null(g2);
        l2_cancel(g2);
        assert_int_equal(got.calls, 0);
        for (int i = 0; i < 100 && !got.calls; i++)
            event_base_loop(base, EVLOOP_ONCE);
        assert_int_equal(got.calls, 1);
        assert_int_equal(got.res, L2_ERROR);
    }
    /* refused (synchronously or not): resting now, lookups not even asked */
    assert_true(l2_in_backoff(l2));
    assert_null(l2_get(l2, key, sizeof(key), on_got, &got));
    l2_put(l2, key, sizeof(key), (const uint8_t *)"0123456789abcdef", 16, 60);
    assert_int_equal(cancelled.calls, 0);
    l2_free(l2);
    event_base_free(base);
}

/* A lookup cancelled before the loop runs, then the cache freed: no callback, no leak. */
static void test_cancel_then_free(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", closed_port());
    struct l2cache *l2 = l2_new(base, addr, 20);
    struct got got = {0};
    const uint8_t key[] = {0, 0, 1, 0, 1};
    struct l2_get *g = l2_get(l2, key, sizeof(key), on_got, &got);
    l2_cancel(g);
    l2_free(l2);
    event_base_loop(base, EVLOOP_NONBLOCK);
    assert_int_equal(got.calls, 0);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ageing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_question_mismatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_usable, setup, teardown),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_closed_port),
        cmocka_unit_test(test_cancel_then_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
