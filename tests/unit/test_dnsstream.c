/*
 * DNS stream session tests (dnsstream.c) without sockets: length-prefixed queries go into
 * dnsstream_session_recv(), answers come out of dnsstream_session_send(), as conn.c drives it
 * for dns-listen TCP and dot-listen. Queries run the real path: dns_serve → resolver (with a
 * cache) → upstream module → the fake UDP DNS server of support/dohtest.c on 127.0.0.1, which
 * answers at once or holds queries until the test releases them (in any order). Synchronous
 * answers come from minimal ANY (RFC 8482), which dns_serve makes without the resolver and
 * which keeps the query's OPT record (the fake upstream's answers carry none, so the EDNS
 * keepalive option is tested on those).
 *
 * The lifetime case (the session freed with queries in flight, their answers arriving later)
 * is meant to run under ASan; here it asserts that no callback ran (no wake).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <event2/event.h>

#include "dohgate/acl.h"
#include "dohgate/cache.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnsstream.h"
#include "dohgate/dnswire.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

#include "dohtest.h"

#define TICK_MS  5
#define MAX_WAIT 2000 /* ms: generous bound for what takes a few ms */
#define LATE     40   /* ms to let answers that must not be processed arrive */
#define MAX_ANS  4096

static const struct client_id peer = {
    .addr = {192, 0, 2, 7}, .len = 4, .key = {.b = {192, 0, 2, 7}, .len = 4}, .text = "192.0.2.7"};

struct ans {
    uint16_t id;
    int rcode;
    size_t len;
    int keepalive; /* the option's value, -1: none, -2: present with a length other than 2 */
    bool padded;
};

struct t {
    struct event_base *base;
    struct event *tick;
    struct dt_fake *fake;
    struct config *cfg;
    struct upstream *up;
    struct cache *cache;
    struct resolver *res;
    struct acl dns_acl;
    struct dg_observer obs;
    struct handler_ctx hctx;
    struct dnsstream_session *s;
    struct dg_buf out; /* what the session sent, not parsed yet */
    struct ans *ans;   /* parsed answers, in the order they came out */
    size_t n_ans;
    unsigned wakes;
    unsigned dropped[DG_NDROP];
    unsigned answers[DG_NTRANSPORT][16];
};

static void on_wake(void *owner)
{
    ((struct t *)owner)->wakes++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
}

static void on_event(void *arg, enum dg_event ev, unsigned idx, uint64_t value)
{
    struct t *t = arg;
    if (ev == DG_EV_DNS_DROPPED && idx < DG_NDROP)
        t->dropped[idx] += (unsigned)value;
    if (ev == DG_EV_DNS_ANSWER && DG_DNS_KEY_TRANSPORT(idx) < DG_NTRANSPORT)
        t->answers[DG_DNS_KEY_TRANSPORT(idx)][DG_DNS_KEY_RCODE(idx)] += (unsigned)value;
}

static int setup(void **state)
{
    struct t *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    dg_log_set_level(DG_LOG_ERR);
    t->base = event_base_new();
    assert_non_null(t->base);
    t->tick = event_new(t->base, -1, EV_PERSIST, on_tick, t);
    assert_non_null(t->tick);
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    assert_int_equal(event_add(t->tick, &tv), 0);
    t->fake = dt_fake_new(t->base);
    t->ans = calloc(MAX_ANS, sizeof(*t->ans));
    assert_non_null(t->ans);
    t->obs = (struct dg_observer){.event = on_event, .arg = t};
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct t *t = *state;
    dnsstream_session_free(t->s);
    resolver_free(t->res);
    cache_free(t->cache);
    upstream_free(t->up);
    config_free(t->cfg);
    dt_fake_free(t->fake);
    event_free(t->tick);
    event_base_free(t->base);
    dg_buf_free(&t->out);
    free(t->ans);
    free(t);
    return 0;
}

/* The resolver stack and a session with @p transport, options @p opts (name/value, NULL-ended). */
static size_t ready_max; /* the next start()'s settings: 0 = the default */

static void start(struct t *t, enum dg_transport transport, const char *const *opts)
{
    char err[256] = "", addr[64];
    t->cfg = config_new();
    assert_non_null(t->cfg);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(t->fake->addr.sin_port));
    assert_int_equal(config_set(t->cfg, "upstream", addr, "t", 0, err, sizeof(err)), 0);
    for (size_t i = 0; opts && opts[i]; i += 2) {
        if (config_set(t->cfg, opts[i], opts[i + 1], "t", 0, err, sizeof(err)) != 0)
            fail_msg("config_set(%s): %s", opts[i], err);
    }
    if (config_finish(t->cfg, err, sizeof(err)) != 0)
        fail_msg("config_finish: %s", err);
    t->up = upstream_new(t->base, t->cfg);
    assert_non_null(t->up);
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = 1 << 20;
    t->cache = cache_new(&cc);
    assert_non_null(t->cache);
    t->res = resolver_new(t->up, t->cache, t->cfg);
    assert_non_null(t->res);
    t->hctx = (struct handler_ctx){.cfg = t->cfg, .resolver = t->res, .obs = &t->obs};
    const struct dnsstream_settings st = {
        .client = &peer, .transport = transport, .ready_max = ready_max};
    t->s = dnsstream_session_new(&st, &t->hctx, on_wake, t);
    assert_non_null(t->s);
}

/* ------------------------------------------------------------ messages */

enum { Q_OPT = 1, Q_KEEPALIVE = 2, Q_PADDING = 4 };

/* A query for @p name, type @p qtype, with an OPT record and options as @p flags say, framed
 * with its 2-byte length, appended to @p b. */
static void add_query(struct dg_buf *b, uint16_t id, const char *name, uint16_t qtype,
                      unsigned flags)
{
    uint8_t q[512];
    size_t n = dt_build_query(q, sizeof(q), id, name);
    dg_put16(q + n - 4, qtype);
    if (flags & (Q_OPT | Q_KEEPALIVE | Q_PADDING)) {
        static const uint8_t opt[] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0};
        memcpy(q + n, opt, sizeof(opt));
        size_t rdlen_at = n + sizeof(opt);
        n = rdlen_at + 2;
        if (flags & Q_KEEPALIVE) { /* RFC 7828 §3.2.1: a query's option has no TIMEOUT */
            dg_put16(q + n, DNS_EDNS_KEEPALIVE);
            dg_put16(q + n + 2, 0);
            n += 4;
        }
        if (flags & Q_PADDING) {
            dg_put16(q + n, DNS_EDNS_PADDING);
            dg_put16(q + n + 2, 8);
            memset(q + n + 4, 0, 8);
            n += 12;
        }
        dg_put16(q + rdlen_at, (uint16_t)(n - rdlen_at - 2));
        dg_put16(q + 10, 1);
    }
    uint8_t len[2];
    dg_put16(len, (uint16_t)n);
    assert_int_equal(dg_buf_append(b, len, 2), 0);
    assert_int_equal(dg_buf_append(b, q, n), 0);
}

/* Parse whole answers from t->out into t->ans. */
static void parse_out(struct t *t)
{
    size_t off = 0;
    while (t->out.len - off >= 2) {
        size_t n = dg_get16(t->out.data + off);
        if (t->out.len - off - 2 < n)
            break;
        const uint8_t *m = t->out.data + off + 2;
        assert_true(n >= DNS_HEADER_LEN);
        assert_true(t->n_ans < MAX_ANS);
        struct ans *a = &t->ans[t->n_ans++];
        a->id = dg_get16(m);
        a->rcode = dns_rcode(m, n);
        a->len = n;
        size_t vo, vl;
        a->keepalive = -1;
        if (dnswire_edns_option(m, n, DNS_EDNS_KEEPALIVE, &vo, &vl))
            a->keepalive = vl == 2 ? dg_get16(m + vo) : -2;
        a->padded = dns_has_padding(m, n);
        assert_true(m[2] & 0x80); /* QR */
        off += 2 + n;
    }
    dg_buf_consume(&t->out, off);
}

/* Take everything the session has (as conn.c's flush does) and parse it. */
static void drain(struct t *t)
{
    for (int i = 0; i < 100000; i++) {
        size_t before = t->out.len;
        assert_int_equal(dnsstream_session_send(t->s, &t->out, 64 * 1024), 0);
        parse_out(t);
        if (t->out.len == before && t->out.len == 0)
            break;
        if (t->out.len == before)
            break;
    }
}

static void feed(struct t *t, const uint8_t *p, size_t n)
{
    assert_int_equal(dnsstream_session_recv(t->s, p, n), 0);
}

typedef bool (*pred_fn)(struct t *t, long arg);

static bool run_until(struct t *t, pred_fn done, long arg, unsigned max_ms)
{
    uint64_t end = dg_now_ms() + max_ms;
    for (;;) {
        drain(t);
        if (done && done(t, arg))
            return true;
        if (dg_now_ms() >= end)
            return false;
        assert_true(event_base_loop(t->base, EVLOOP_ONCE) >= 0);
    }
}

static bool have_answers(struct t *t, long n)
{
    return t->n_ans >= (size_t)n;
}

static bool fake_has(struct t *t, long n)
{
    return t->fake->queries >= (unsigned)n;
}

static const struct ans *answer_for(struct t *t, uint16_t id)
{
    for (size_t i = 0; i < t->n_ans; i++)
        if (t->ans[i].id == id)
            return &t->ans[i];
    return NULL;
}

/* Release the held query whose question names @p label (its first label). */
static void release_name(struct t *t, const char *label)
{
    size_t l = strlen(label);
    for (size_t i = 0; i < t->fake->n_held; i++) {
        const struct dt_held *h = &t->fake->held[i];
        if (h->len > DNS_HEADER_LEN + 1 + l && h->msg[DNS_HEADER_LEN] == l &&
            memcmp(h->msg + DNS_HEADER_LEN + 1, label, l) == 0) {
            dt_fake_release(t->fake, i, i + 1);
            return;
        }
    }
    fail_msg("no held query for %s", label);
}

/* ------------------------------------------------------------ tests */

static void test_one_query(void **state)
{
    struct t *t = *state;
    start(t, DG_TR_DNS_TCP, NULL);
    struct dg_buf in = {0};
    add_query(&in, 0x1234, "www.example", 1, 0);
    feed(t, in.data, in.len);
    assert_int_equal(dnsstream_session_inflight(t->s), 1);
    assert_true(run_until(t, have_answers, 1, MAX_WAIT));
    assert_int_equal(t->ans[0].id, 0x1234);
    assert_int_equal(t->ans[0].rcode, DNS_RCODE_NOERROR);
    assert_int_equal(t->ans[0].keepalive, -1); /* not asked for */
    assert_true(t->wakes > 0);
    assert_int_equal(dnsstream_session_inflight(t->s), 0);
    assert_false(dnsstream_session_done(t->s));
    assert_true(dnsstream_session_want_read(t->s));
    assert_int_equal(t->answers[DG_TR_DNS_TCP][0], 1);
    dg_buf_free(&in);
}

/* Three queries cut at every byte boundary, and once byte by byte: every answer, every ID,
 * and the partial-message clock. */
static void test_split_every_byte(void **state)
{
    struct t *t = *state;
    start(t, DG_TR_DNS_TCP, NULL);
    struct dg_buf in = {0};
    size_t ends[3];
    add_query(&in, 1, "a1", 255, Q_OPT);
    ends[0] = in.len;
    add_query(&in, 2, "a2", 255, 0);
    ends[1] = in.len;
    add_query(&in, 3, "a3", 255, Q_KEEPALIVE);
    ends[2] = in.len;
    for (size_t cut = 0; cut <= in.len; cut++) {
        size_t before = t->n_ans;
        feed(t, in.data, cut);
        feed(t, in.data + cut, in.len - cut);
        drain(t);
        assert_int_equal(t->n_ans - before, 3);
        for (uint16_t id = 1; id <= 3; id++)
            assert_int_equal(t->ans[before + id - 1].id, id); /* synchronous: in order */
        assert_int_equal(dnsstream_session_partial_since(t->s), 0);
    }
    size_t before = t->n_ans;
    for (size_t i = 0; i < in.len; i++) {
        feed(t, in.data + i, 1);
        bool at_end = i + 1 == ends[0] || i + 1 == ends[1] || i + 1 == ends[2];
        if (at_end)
            assert_int_equal(dnsstream_session_partial_since(t->s), 0);
        else
            assert_true(dnsstream_session_partial_since(t->s) > 0);
    }
    drain(t);
    assert_int_equal(t->n_ans - before, 3);
    assert_int_equal(t->ans[before + 2].keepalive, 600); /* idle-timeout 60 s */
    assert_false(dnsstream_session_done(t->s));
    dg_buf_free(&in);
}

/* 50 queries in one read: all answered, each with its own ID. */
static void test_many_in_one_read(void **state)
{
    struct t *t = *state;
    start(t, DG_TR_DNS_TCP, NULL);
    struct dg_buf in = {0};
    char name[32];
    for (uint16_t i = 0; i < 50; i++) {
        snprintf(name, sizeof(name), "n%u.example", i);
        add_query(&in, (uint16_t)(100 + i), name, 1, 0);
    }
    feed(t, in.data, in.len);
    assert_int_equal(dnsstream_session_inflight(t->s), 50);
    assert_true(run_until(t, have_answers, 50, MAX_WAIT));
    for (uint16_t i = 0; i < 50; i++) {
        const struct ans *a = answer_for(t, (uint16_t)(100 + i));
        assert_non_null(a);
        assert_int_equal(a->rcode, DNS_RCODE_NOERROR);
    }
    assert_int_equal(t->n_ans, 50);
    dg_buf_free(&in);
}

/* RFC 7766 §7: a slow query sent first does not hold back a fast one sent after it. */
static void test_out_of_order(void **state)
{
    struct t *t = *state;
    t->fake->mode = DT_FAKE_HOLD;
    start(t, DG_TR_DOT, NULL);
    struct dg_buf in = {0};
    add_query(&in, 0xaaaa, "slow.example", 1, 0);
    add_query(&in, 0xbbbb, "fast.example", 1, 0);
    add_query(&in, 0xcccc, "any.example", 255, 0); /* answered at once */
    feed(t, in.data, in.len);
    assert_true(run_until(t, fake_has, 2, MAX_WAIT));
    assert_int_equal(t->n_ans, 1);
    assert_int_equal(t->ans[0].id, 0xcccc);
    release_name(t, "fast");
    assert_true(run_until(t, have_answers, 2, MAX_WAIT));
    assert_int_equal(t->ans[1].id, 0xbbbb);
    assert_int_equal(dnsstream_session_inflight(t->s), 1);
    release_name(t, "slow");
    assert_true(run_until(t, have_answers, 3, MAX_WAIT));
    assert_int_equal(t->ans[2].id, 0xaaaa);
    assert_int_equal(t->answers[DG_TR_DOT][0], 3);
    dg_buf_free(&in);
}

/* dns-tcp-pipeline 2: the third query waits (reading stops), and goes once a slot frees. */
static void test_pipeline_limit(void **state)
{
    struct t *t = *state;
    static const char *const opts[] = {"dns-tcp-pipeline", "2", NULL};
    t->fake->mode = DT_FAKE_HOLD;
    start(t, DG_TR_DNS_TCP, opts);
    struct dg_buf in = {0};
    add_query(&in, 1, "p1.example", 1, 0);
    add_query(&in, 2, "p2.example", 1, 0);
    add_query(&in, 3, "p3.example", 1, 0);
    feed(t, in.data, in.len);
    assert_int_equal(dnsstream_session_inflight(t->s), 2);
    assert_false(dnsstream_session_want_read(t->s));
    assert_true(run_until(t, fake_has, 2, MAX_WAIT));
    assert_false(run_until(t, fake_has, 3, LATE)); /* the third waits */
    assert_int_equal(t->n_ans, 0);
    release_name(t, "p2");
    assert_true(run_until(t, fake_has, 3, MAX_WAIT));
    assert_int_equal(t->n_ans, 1);
    assert_int_equal(t->ans[0].id, 2);
    assert_int_equal(dnsstream_session_inflight(t->s), 2);
    assert_false(dnsstream_session_want_read(t->s));
    release_name(t, "p1");
    release_name(t, "p3");
    assert_true(run_until(t, have_answers, 3, MAX_WAIT));
    assert_true(dnsstream_session_want_read(t->s));
    assert_int_equal(dnsstream_session_inflight(t->s), 0);
    dg_buf_free(&in);
}

/* Freed with queries in flight: cancelled synchronously, the late answers call nothing. */
static void test_cancel_on_free(void **state)
{
    struct t *t = *state;
    t->fake->mode = DT_FAKE_HOLD;
    start(t, DG_TR_DOT, NULL);
    struct dg_buf in = {0};
    for (uint16_t i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "c%u.example", i);
        add_query(&in, i, name, 1, 0);
    }
    feed(t, in.data, in.len);
    assert_true(run_until(t, fake_has, 5, MAX_WAIT));
    assert_int_equal(dnsstream_session_inflight(t->s), 5);
    unsigned wakes = t->wakes;
    dnsstream_session_free(t->s);
    t->s = NULL;
    dt_fake_release(t->fake, 0, t->fake->n_held);
    uint64_t end = dg_now_ms() + LATE;
    while (dg_now_ms() < end)
        assert_true(event_base_loop(t->base, EVLOOP_ONCE) >= 0);
    assert_int_equal(t->wakes, wakes);
    assert_int_equal(resolver_inflight(t->res), 0);
    dg_buf_free(&in);
}

/* Answers not taken past DNSSTREAM_OUT_HIGH: no more reading, no more queries started; taking
 * them, a little at a time as a slow socket would, starts the rest, in order. */
static void test_backpressure(void **state)
{
    struct t *t = *state;
    start(t, DG_TR_DNS_TCP, NULL);
    enum { N = 3000 };
    struct dg_buf in = {0};
    for (unsigned i = 0; i < N; i++)
        add_query(&in, (uint16_t)i, "big.any.example", 255, Q_OPT);
    feed(t, in.data, in.len);
    unsigned made = t->answers[DG_TR_DNS_TCP][0];
    assert_true(made > 0 && made < N / 2); /* stopped at the high-water mark */
    assert_false(dnsstream_session_want_read(t->s));
    for (int i = 0; i < 10 * N && t->n_ans < N; i++) {
        assert_int_equal(dnsstream_session_send(t->s, &t->out, t->out.len + 1000), 0);
        parse_out(t);
    }
    assert_int_equal(t->n_ans, N);
    for (unsigned i = 0; i < N; i++)
        assert_int_equal(t->ans[i].id, i); /* synchronous answers keep their order */
    assert_int_equal(t->answers[DG_TR_DNS_TCP][0], N);
    assert_true(dnsstream_session_want_read(t->s));
    dg_buf_free(&in);
}

/* Review of issue 16: a client whose socket is full and that let answers pile up past the
 * bound is cut (the answers freed at once, send fails with -EMSGSIZE); the same burst for a
 * client that reads is delivered whole. */
static void run_pileup(struct t *t, bool blocked)
{
    ready_max = 600;
    t->fake->mode = DT_FAKE_HOLD;
    start(t, DG_TR_DNS_TCP, NULL);
    ready_max = 0;
    struct dg_buf in = {0};
    enum { N = 20 };
    for (uint16_t i = 0; i < N; i++) {
        char name[32];
        snprintf(name, sizeof(name), "pile%u.example", i);
        add_query(&in, i, name, 1, 0);
    }
    feed(t, in.data, in.len);
    assert_true(run_until(t, fake_has, N, MAX_WAIT));
    dnsstream_session_blocked(t->s, blocked);
    dt_fake_release(t->fake, 0, t->fake->n_held);
    uint64_t end = dg_now_ms() + LATE;
    while (dg_now_ms() < end && dnsstream_session_inflight(t->s) > 0)
        assert_true(event_base_loop(t->base, EVLOOP_ONCE) >= 0);
    assert_int_equal(dnsstream_session_inflight(t->s), 0);
    if (blocked) {
        assert_int_equal(dnsstream_session_send(t->s, &t->out, 1 << 20), -EMSGSIZE);
        assert_int_equal(t->out.len, 0); /* nothing of the pile is left to send */
        assert_false(dnsstream_session_want_read(t->s));
    } else {
        assert_int_equal(dnsstream_session_send(t->s, &t->out, 1 << 20), 0);
        parse_out(t);
        assert_int_equal(t->n_ans, N); /* 20 answers of ~40 bytes: more than 600, all sent */
    }
    dg_buf_free(&in);
}

static void test_pileup_blocked(void **state)
{
    run_pileup(*state, true);
}

static void test_pileup_reading(void **state)
{
    run_pileup(*state, false);
}

/* RFC 7828: the answer carries the idle timeout (100 ms units) when the query asked; 0 once
 * shutting down; a padded DoT answer stays on the 468-byte block. */
static void test_keepalive(void **state)
{
    struct t *t = *state;
    static const char *const opts[] = {"idle-timeout", "7", "dns-tcp-pipeline", "1", NULL};
    t->fake->mode = DT_FAKE_HOLD;
    start(t, DG_TR_DOT, opts);
    struct dg_buf in = {0};
    add_query(&in, 1, "k1.example", 255, Q_KEEPALIVE);
    add_query(&in, 2, "k2.example", 255, Q_OPT);
    add_query(&in, 3, "k3.example", 255, Q_KEEPALIVE | Q_PADDING);
    feed(t, in.data, in.len);
    drain(t);
    assert_int_equal(t->n_ans, 3);
    assert_int_equal(t->ans[0].keepalive, 70);
    assert_int_equal(t->ans[1].keepalive, -1);
    assert_int_equal(t->ans[2].keepalive, 70);
    assert_true(t->ans[2].padded);
    assert_int_equal(t->ans[2].len % DNS_PAD_BLOCK_RESPONSE, 0);
    assert_false(t->ans[0].padded);

    /* Shutting down: a held query, a whole one waiting behind it (pipeline 1). */
    in.len = 0;
    add_query(&in, 4, "held.example", 1, 0);
    add_query(&in, 5, "k5.example", 255, Q_KEEPALIVE);
    feed(t, in.data, in.len);
    assert_true(run_until(t, fake_has, 1, MAX_WAIT));
    dnsstream_session_shutdown(t->s);
    assert_false(dnsstream_session_want_read(t->s));
    assert_false(dnsstream_session_done(t->s));
    in.len = 0;
    add_query(&in, 6, "late.example", 255, Q_KEEPALIVE); /* after the stop: not read */
    feed(t, in.data, in.len);
    release_name(t, "held");
    assert_true(run_until(t, have_answers, 5, MAX_WAIT));
    assert_int_equal(t->ans[3].id, 4);
    assert_int_equal(t->ans[4].id, 5);
    assert_int_equal(t->ans[4].keepalive, 0);
    assert_true(dnsstream_session_done(t->s));
    assert_false(run_until(t, have_answers, 6, LATE));
    dg_buf_free(&in);
}

/* Lengths under a header, and a message dns_serve cannot answer: done once what is in flight
 * is answered; nothing after it is served. */
static void test_malformed(void **state)
{
    struct t *t = *state;
    t->fake->mode = DT_FAKE_HOLD;
    start(t, DG_TR_DNS_TCP, NULL);
    struct dg_buf in = {0};
    add_query(&in, 1, "m1.example", 1, 0);
    static const uint8_t zero[] = {0, 0};
    assert_int_equal(dg_buf_append(&in, zero, 2), 0);
    add_query(&in, 2, "m2.example", 255, 0);
    feed(t, in.data, in.len);
    assert_int_equal(t->dropped[DG_DROP_MALFORMED], 1);
    assert_false(dnsstream_session_want_read(t->s));
    assert_false(dnsstream_session_done(t->s)); /* m1 in flight */
    assert_true(run_until(t, fake_has, 1, MAX_WAIT));
    release_name(t, "m1");
    assert_true(run_until(t, have_answers, 1, MAX_WAIT));
    assert_int_equal(t->ans[0].id, 1);
    assert_true(dnsstream_session_done(t->s));
    assert_int_equal(t->n_ans, 1); /* m2 never served */
    dg_buf_free(&in);
}

static void test_malformed_short(void **state)
{
    struct t *t = *state;
    start(t, DG_TR_DNS_TCP, NULL);
    /* length 5: decided on the prefix, before the 5 bytes */
    static const uint8_t five[] = {0, 5, 1, 2};
    feed(t, five, sizeof(five));
    assert_true(dnsstream_session_done(t->s));
    assert_int_equal(t->dropped[DG_DROP_MALFORMED], 1);
    drain(t);
    assert_int_equal(t->n_ans, 0);
}

static void test_malformed_message(void **state)
{
    struct t *t = *state;
    start(t, DG_TR_DOT, NULL);
    /* QR=1: a response is not a query (DNS_SERVE_MALFORMED), then a good one that is ignored */
    static const uint8_t bad[] = {0, 17, 0xab, 0xcd, 0x80, 0, 0, 1, 0, 0,
                                  0, 0,  0,    0,    0,    0, 1, 0, 1};
    struct dg_buf in = {0};
    assert_int_equal(dg_buf_append(&in, bad, sizeof(bad)), 0);
    add_query(&in, 9, "x.example", 255, 0);
    feed(t, in.data, in.len);
    drain(t);
    assert_int_equal(t->n_ans, 0);
    assert_true(dnsstream_session_done(t->s));
    assert_int_equal(t->dropped[DG_DROP_MALFORMED], 1);
    dg_buf_free(&in);
}

/* dns-allow covers plain DNS only: REFUSED over TCP, the connection stays; DoT is served. */
static void test_refused(void **state)
{
    struct t *t = *state;
    char *allow[] = {"10.0.0.0/8"};
    assert_int_equal(acl_build(&t->dns_acl, allow, 1, NULL, 0), 0);
    start(t, DG_TR_DNS_TCP, NULL);
    t->hctx.dns_acl = &t->dns_acl;
    struct dg_buf in = {0};
    add_query(&in, 0x4242, "r.example", 1, Q_KEEPALIVE);
    add_query(&in, 0x4343, "r2.example", 1, 0);
    feed(t, in.data, in.len);
    drain(t);
    assert_int_equal(t->n_ans, 2);
    assert_int_equal(t->ans[0].id, 0x4242);
    assert_int_equal(t->ans[0].rcode, DNS_RCODE_REFUSED);
    assert_true(t->ans[0].keepalive > 0);
    assert_int_equal(t->ans[1].rcode, DNS_RCODE_REFUSED);
    assert_int_equal(t->fake->queries, 0);
    assert_false(dnsstream_session_done(t->s));
    assert_true(dnsstream_session_want_read(t->s));
    assert_int_equal(t->answers[DG_TR_DNS_TCP][DNS_RCODE_REFUSED], 2);

    dnsstream_session_free(t->s);
    const struct dnsstream_settings st = {.client = &peer, .transport = DG_TR_DOT};
    t->s = dnsstream_session_new(&st, &t->hctx, on_wake, t);
    assert_non_null(t->s);
    feed(t, in.data, in.len);
    assert_true(run_until(t, have_answers, 4, MAX_WAIT));
    assert_int_equal(t->ans[2].rcode, DNS_RCODE_NOERROR);
    assert_int_equal(t->ans[3].rcode, DNS_RCODE_NOERROR);
    dg_buf_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_one_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_every_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_in_one_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_on_free, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_short, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_message, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pileup_blocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pileup_reading, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
