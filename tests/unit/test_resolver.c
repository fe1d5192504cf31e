/*
 * Unit tests of the resolver (cache → coalescing → upstream → cache) through its public header,
 * with everything below it real: an event_base, the upstream module, the cache, a config built
 * with config_set(). The upstream it talks to is a fake UDP DNS server on 127.0.0.1 run by the
 * test on the same event_base: it logs every query it receives (bytes, count per name) and
 * answers after a delay the test chooses, never, or with SERVFAIL.
 *
 * Time: the cache and the resolver read dg_now_ms(), a real monotonic clock, so the expiry tests
 * wait about a second of real time. Timing assertions are loose: libevent's timers run on
 * CLOCK_MONOTONIC_COARSE and may fire a few ms before dg_now_ms() says they are due.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/event.h>

#include "dohgate/cache.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/nameset.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

#define MAX_LOG     64
#define MAX_NAMES   32
#define MAX_RES     64
#define SLACK_MS    25
#define TYPE_A      1
#define TYPE_AAAA   28
#define TYPE_OPT    41
#define EDNS_DO     0x8000u
#define QUERY_TO_MS 300 /* query-timeout of the failure tests (fast_fail) */

/* ------------------------------------------------------------ DNS messages by hand */

struct msg {
    uint8_t b[512];
    size_t len;
};

struct qopts {
    uint16_t qtype; /* 0: A */
    bool edns;      /* an OPT record (implied by do_bit and ecs) */
    bool do_bit;
    bool cd;
    bool ecs; /* an EDNS Client Subnet option, 192.0.2.0/24 */
};

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* @p name dotted, no trailing dot, spelled as given. @return bytes written. */
static size_t put_name(uint8_t *out, const char *name)
{
    size_t p = 0;
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t l = dot ? (size_t)(dot - s) : strlen(s);
        out[p++] = (uint8_t)l;
        memcpy(out + p, s, l);
        p += l;
        s += l + (dot ? 1 : 0);
    }
    out[p++] = 0;
    return p;
}

/* A client query (RD=1) that passes dns_query_check(), as the resolver requires. */
static struct msg mkq(uint16_t id, const char *name, struct qopts o)
{
    struct msg m;
    memset(&m, 0, sizeof(m));
    uint8_t *b = m.b;
    dg_put16(b, id);
    b[2] = 0x01;
    b[3] = o.cd ? 0x10 : 0;
    dg_put16(b + 4, 1);
    size_t p = DNS_HEADER_LEN + put_name(b + DNS_HEADER_LEN, name);
    dg_put16(b + p, o.qtype ? o.qtype : TYPE_A);
    dg_put16(b + p + 2, 1);
    p += 4;
    if (o.edns || o.do_bit || o.ecs) {
        dg_put16(b + 10, 1);
        b[p++] = 0; /* root */
        dg_put16(b + p, TYPE_OPT);
        dg_put16(b + p + 2, 1232);
        put32(b + p + 4, o.do_bit ? EDNS_DO : 0);
        size_t rdlen_at = p + 8;
        p += 10;
        size_t rd = p;
        if (o.ecs) {
            static const uint8_t ecs[] = {0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2};
            memcpy(b + p, ecs, sizeof(ecs));
            p += sizeof(ecs);
        }
        dg_put16(b + rdlen_at, (uint16_t)(p - rd));
    }
    m.len = p;
    assert_int_equal(dns_query_check(m.b, m.len, NULL), DNS_QUERY_OK);
    return m;
}

static const struct qopts Q_A = {0};

/* What a logged query asked: type, EDNS, DO, CD, and the OPT RDATA length (-1: no OPT). */
struct qsig {
    uint16_t qtype;
    bool edns, do_bit, cd;
    long opt_rdlen;
};

static struct qsig query_sig(const uint8_t *q, size_t len)
{
    struct qsig s = {.opt_rdlen = -1};
    size_t qe = dns_question_end(q, len);
    assert_true(qe > 0);
    s.qtype = dg_get16(q + qe - 4);
    s.cd = (q[3] & 0x10) != 0;
    /* Our queries carry at most an OPT, right after the question. */
    if (dg_get16(q + 10) == 1 && len >= qe + 11 && q[qe] == 0 && dg_get16(q + qe + 1) == TYPE_OPT) {
        s.edns = true;
        s.do_bit = (dg_get32(q + qe + 5) & EDNS_DO) != 0;
        s.opt_rdlen = dg_get16(q + qe + 9);
    }
    return s;
}

static int rcode_of(const uint8_t *m)
{
    return m[3] & 0x0f;
}

/* Does the question of @p m spell @p name byte for byte (case included)? */
static bool question_spelled(const uint8_t *m, size_t len, const char *name)
{
    uint8_t wire[300];
    size_t n = put_name(wire, name);
    return len >= DNS_HEADER_LEN + n + 4 && memcmp(m + DNS_HEADER_LEN, wire, n) == 0;
}

/* TTL of the first answer record (the fake writes it right after the question). */
static uint32_t first_ttl(const uint8_t *m, size_t len)
{
    size_t qe = dns_question_end(m, len);
    assert_true(qe > 0);
    assert_true(dg_get16(m + 6) >= 1);
    assert_true(len >= qe + 10);
    return dg_get32(m + qe + 6);
}

/* ------------------------------------------------------------ fake upstream server */

enum fake_mode { FAKE_ANSWER, FAKE_SILENT, FAKE_SERVFAIL, FAKE_NXDOMAIN };

struct fake;

struct delayed {
    struct fake *f;
    struct event *ev;
    struct delayed *next;
    struct sockaddr_in to;
    uint8_t msg[600];
    size_t len;
};

struct fake {
    struct event_base *base;
    struct sockaddr_in addr;
    int fd;
    struct event *ev;
    enum fake_mode mode;
    unsigned delay_ms; /* 0: answer from the read callback */
    uint32_t ttl;      /* of the answer record */
    uint16_t pad;      /* a Padding option of this many zero bytes in the answer's OPT */
    bool keepalive;    /* and before it an edns-tcp-keepalive option (600 = 60 s, RFC 7828) */
    unsigned npadded;  /* answers sent with it */
    unsigned nqueries;
    struct msg log[MAX_LOG];
    struct {
        char name[256];
        unsigned count;
    } names[MAX_NAMES];
    size_t nnames;
    struct delayed *delayed;
    size_t ndelayed;
};

static void fake_count_name(struct fake *f, const uint8_t *q, size_t len)
{
    char name[256];
    size_t p = DNS_HEADER_LEN, o = 0;
    while (p < len && q[p] != 0 && o + q[p] + 2 < sizeof(name)) {
        if (o)
            name[o++] = '.';
        for (size_t i = 0; i < q[p]; i++) {
            uint8_t c = q[p + 1 + i];
            name[o++] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        p += 1u + q[p];
    }
    name[o] = 0;
    for (size_t i = 0; i < f->nnames; i++) {
        if (strcmp(f->names[i].name, name) == 0) {
            f->names[i].count++;
            return;
        }
    }
    assert_true(f->nnames < MAX_NAMES);
    strcpy(f->names[f->nnames].name, name);
    f->names[f->nnames++].count = 1;
}

/* Queries received for @p name (lower-case dotted). */
static unsigned fake_count(const struct fake *f, const char *name)
{
    for (size_t i = 0; i < f->nnames; i++)
        if (strcmp(f->names[i].name, name) == 0)
            return f->names[i].count;
    return 0;
}

/* The question echoed, QR RA, RD and CD copied; one A (or AAAA) record with f->ttl, or
 * SERVFAIL or NXDOMAIN (without SOA) with no records; an OPT echoing DO when the query had one. */
static size_t fake_make_answer(struct fake *f, const uint8_t *q, size_t qlen, uint8_t *out)
{
    size_t qe = dns_question_end(q, qlen);
    assert_true(qe > 0);
    memcpy(out, q, qe);
    out[2] = (uint8_t)(0x80 | (q[2] & 0x01));
    out[3] = (uint8_t)(0x80 | (q[3] & 0x10));
    memset(out + 6, 0, 6);
    size_t p = qe;
    if (f->mode == FAKE_SERVFAIL) {
        out[3] |= DNS_RCODE_SERVFAIL;
    } else if (f->mode == FAKE_NXDOMAIN) {
        out[3] |= DNS_RCODE_NXDOMAIN;
    } else {
        bool v6 = dg_get16(q + qe - 4) == TYPE_AAAA;
        dg_put16(out + 6, 1);
        out[p++] = 0xc0;
        out[p++] = 0x0c;
        dg_put16(out + p, v6 ? TYPE_AAAA : TYPE_A);
        dg_put16(out + p + 2, 1);
        put32(out + p + 4, f->ttl);
        dg_put16(out + p + 8, v6 ? 16 : 4);
        p += 10;
        if (v6) {
            static const uint8_t a6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};
            memcpy(out + p, a6, 16);
            p += 16;
        } else {
            memcpy(out + p, "\xc0\x00\x02\x01", 4);
            p += 4;
        }
    }
    struct qsig s = query_sig(q, qlen);
    if (s.edns) {
        dg_put16(out + 10, 1);
        out[p++] = 0;
        dg_put16(out + p, TYPE_OPT);
        dg_put16(out + p + 2, 1232);
        put32(out + p + 4, s.do_bit ? EDNS_DO : 0);
        dg_put16(out + p + 8, 0);
        p += 10;
        if (f->keepalive) {
            /* A DoT upstream grants our connection its idle timeout (RFC 7828). */
            dg_put16(out + p - 2, (uint16_t)(dg_get16(out + p - 2) + 6));
            dg_put16(out + p, DNS_EDNS_KEEPALIVE);
            dg_put16(out + p + 2, 2);
            dg_put16(out + p + 4, 600);
            p += 6;
        }
        if (f->pad) {
            /* An upstream that pads its answers (RFC 8467), as DoT/DoH resolvers do. */
            dg_put16(out + p - 2 - (f->keepalive ? 6 : 0),
                     (uint16_t)(4 + f->pad + (f->keepalive ? 6 : 0)));
            dg_put16(out + p, DNS_EDNS_PADDING);
            dg_put16(out + p + 2, f->pad);
            memset(out + p + 4, 0, f->pad);
            p += 4u + f->pad;
            f->npadded++;
        }
    }
    return p;
}

static void fake_send(struct fake *f, const struct sockaddr_in *to, const uint8_t *m, size_t len)
{
    /* The upstream's socket may be gone (query cancelled): that is fine, UDP does not care. */
    (void)sendto(f->fd, m, len, 0, (const struct sockaddr *)to, sizeof(*to));
}

static void on_delayed(evutil_socket_t fd, short what, void *arg)
{
    struct delayed *d = arg;
    struct fake *f = d->f;
    fake_send(f, &d->to, d->msg, d->len);
    for (struct delayed **pp = &f->delayed; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    f->ndelayed--;
    event_free(d->ev);
    free(d);
}

static void on_fake_read(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    for (;;) {
        uint8_t q[512];
        struct sockaddr_in from;
        socklen_t fl = sizeof(from);
        ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from, &fl);
        if (n <= 0)
            return;
        size_t len = (size_t)n;
        if (f->nqueries < MAX_LOG) {
            memcpy(f->log[f->nqueries].b, q, len);
            f->log[f->nqueries].len = len;
        }
        f->nqueries++;
        fake_count_name(f, q, len);
        if (f->mode == FAKE_SILENT)
            continue;
        struct delayed *d = calloc(1, sizeof(*d));
        assert_non_null(d);
        d->f = f;
        d->to = from;
        d->len = fake_make_answer(f, q, len, d->msg);
        if (f->delay_ms == 0) {
            fake_send(f, &d->to, d->msg, d->len);
            free(d);
            continue;
        }
        d->ev = evtimer_new(f->base, on_delayed, d);
        assert_non_null(d->ev);
        struct timeval tv = {.tv_sec = f->delay_ms / 1000,
                             .tv_usec = (suseconds_t)(f->delay_ms % 1000) * 1000};
        assert_int_equal(evtimer_add(d->ev, &tv), 0);
        d->next = f->delayed;
        f->delayed = d;
        f->ndelayed++;
    }
}

static struct fake *fake_new(struct event_base *base)
{
    struct fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = base;
    f->mode = FAKE_ANSWER;
    f->ttl = 300;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(f->fd >= 0);
    assert_int_equal(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&sa, &sl), 0);
    f->addr = sa;
    f->ev = event_new(base, f->fd, EV_READ | EV_PERSIST, on_fake_read, f);
    assert_non_null(f->ev);
    assert_int_equal(event_add(f->ev, NULL), 0);
    return f;
}

static void fake_free(struct fake *f)
{
    if (!f)
        return;
    while (f->delayed) {
        struct delayed *d = f->delayed;
        f->delayed = d->next;
        event_free(d->ev);
        free(d);
    }
    event_free(f->ev);
    close(f->fd);
    free(f);
}

/* ------------------------------------------------------------ test context */

struct res {
    int called;
    bool cancelled; /* the test cancelled this waiter: its callback must never run */
    uint8_t ans[1024];
    size_t len;
    uint32_t ttl;
    uint64_t at_ms;
};

struct tctx {
    struct event_base *base;
    struct fake *f;
    struct config *cfg, *cfg2;
    struct upstream *up;
    struct cache *cache;
    struct resolver *r, *r2;
    struct res res[MAX_RES];
    size_t nexpect;        /* for all_done(): res[0..nexpect) not cancelled must be called */
    unsigned want_queries; /* for fake_got() */
    uint64_t until_ms;     /* for time_reached() */
    bool fast_fail;        /* upstream-timeout 100, query-timeout 300 (else 1000 / 3000) */
};

static void on_done(void *arg, const uint8_t *ans, size_t len, uint32_t ttl)
{
    struct res *r = arg;
    assert_false(r->cancelled);
    r->called++;
    assert_non_null(ans);
    assert_true(len >= DNS_HEADER_LEN && len <= sizeof(r->ans));
    memcpy(r->ans, ans, len);
    r->len = len;
    r->ttl = ttl;
    r->at_ms = dg_now_ms();
}

static struct config *make_cfg(const struct tctx *t, bool serve_stale)
{
    const struct fake *f = t->f;
    char err[256], addr[64];
    struct config *cfg = config_new();
    assert_non_null(cfg);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(f->addr.sin_port));
    const char *opts[][2] = {
        {"upstream", addr},
        {"upstream-timeout", t->fast_fail ? "100" : "1000"},
        {"query-timeout", t->fast_fail ? "300" : "3000"},
        {"serve-stale", serve_stale ? "yes" : "no"},
        {"stale-answer-ttl", "30"},
    };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        int rc = config_set(cfg, opts[i][0], opts[i][1], "test", 0, err, sizeof(err));
        if (rc != 0)
            fail_msg("config_set %s: %s", opts[i][0], err);
    }
    if (config_finish(cfg, err, sizeof(err)) != 0)
        fail_msg("config_finish: %s", err);
    assert_int_equal(cfg->n_upstream, 1);
    return cfg;
}

static int setup(void **state)
{
    struct tctx *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->base = event_base_new();
    assert_non_null(t->base);
    t->f = fake_new(t->base);
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tctx *t = *state;
    /* Resolvers before the upstream (they cancel their upstream queries), the cache after. */
    resolver_free(t->r);
    resolver_free(t->r2);
    upstream_free(t->up);
    fake_free(t->f);
    cache_free(t->cache);
    config_free(t->cfg);
    config_free(t->cfg2);
    event_base_free(t->base);
    free(t);
    return 0;
}

/* Config, upstream, cache (unless @p with_cache is false) and resolver. */
static void env_start(struct tctx *t, bool with_cache, unsigned prefetch_percent)
{
    t->cfg = make_cfg(t, true);
    t->up = upstream_new(t->base, t->cfg);
    assert_non_null(t->up);
    /* Caching off is a cache of size 0: it stores nothing but still keys the in-flight table. */
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = with_cache ? 64 * 1024 : 0;
    cc.nshards = 4;
    cc.stale_answer_ttl = 30;
    cc.prefetch_percent = prefetch_percent;
    t->cache = cache_new(&cc);
    assert_non_null(t->cache);
    t->r = resolver_new(t->up, t->cache, t->cfg);
    assert_non_null(t->r);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Run the loop until @p cond holds or @p max_ms passed. @return whether cond holds. */
static bool run_until(struct tctx *t, bool (*cond)(struct tctx *), unsigned max_ms)
{
    bool expired = false;
    struct event *ev = evtimer_new(t->base, on_deadline, &expired);
    assert_non_null(ev);
    struct timeval tv = {.tv_sec = max_ms / 1000, .tv_usec = (suseconds_t)(max_ms % 1000) * 1000};
    assert_int_equal(evtimer_add(ev, &tv), 0);
    while (!(cond && cond(t)) && !expired)
        event_base_loop(t->base, EVLOOP_ONCE);
    event_free(ev);
    return cond && cond(t);
}

static void run_for(struct tctx *t, unsigned ms)
{
    run_until(t, NULL, ms);
}

static bool all_done(struct tctx *t)
{
    for (size_t i = 0; i < t->nexpect; i++)
        if (!t->res[i].cancelled && t->res[i].called == 0)
            return false;
    return true;
}

static bool fake_got(struct tctx *t)
{
    return t->f->nqueries >= t->want_queries;
}

static bool time_reached(struct tctx *t)
{
    return dg_now_ms() >= t->until_ms;
}

/* Nothing in flight anywhere: resolver, upstream module, fake's delayed answers. */
static bool idle(struct tctx *t)
{
    return (!t->r || resolver_inflight(t->r) == 0) && upstream_pending(t->up) == 0 &&
           t->f->ndelayed == 0;
}

/* Run the loop, real time, until dg_now_ms() reaches @p ms. */
static void wait_until_ms(struct tctx *t, uint64_t ms)
{
    t->until_ms = ms;
    assert_true(run_until(t, time_reached, (unsigned)(ms - dg_now_ms()) + 1000));
}

/* resolver_resolve() that must go PENDING, with no synchronous callback and @p out untouched. */
static struct resolver_waiter *resolve_pending(struct tctx *t, struct resolver *r, size_t slot,
                                               const struct msg *q)
{
    struct dg_buf out = {0};
    uint32_t ttl = 12345;
    struct resolver_waiter *w = NULL;
    assert_true(slot < MAX_RES);
    int rc = resolver_resolve(r, q->b, q->len, &out, &ttl, on_done, &t->res[slot], &w);
    assert_int_equal(rc, RESOLVER_PENDING);
    assert_non_null(w);
    assert_int_equal(out.len, 0);
    assert_int_equal(ttl, 12345);
    assert_int_equal(t->res[slot].called, 0);
    dg_buf_free(&out);
    return w;
}

/* resolver_resolve() that must answer synchronously (cache hit) into @p out. */
static void resolve_hit(struct tctx *t, struct resolver *r, const struct msg *q, struct dg_buf *out,
                        uint32_t *ttl)
{
    struct resolver_waiter *w = NULL;
    int rc = resolver_resolve(r, q->b, q->len, out, ttl, on_done, &t->res[MAX_RES - 1], &w);
    assert_int_equal(rc, RESOLVER_ANSWERED);
    assert_null(w);
    assert_true(out->len > DNS_HEADER_LEN);
    assert_int_equal(t->res[MAX_RES - 1].called, 0);
}

/* A real answer for this client: its ID, its spelling, QR, NOERROR, one record. */
static void assert_answer(const uint8_t *a, size_t len, uint16_t id, const char *spelled)
{
    assert_true(len > DNS_HEADER_LEN);
    assert_int_equal(dg_get16(a), id);
    assert_true(a[2] & 0x80);
    assert_int_equal(rcode_of(a), DNS_RCODE_NOERROR);
    assert_int_equal(dg_get16(a + 6), 1);
    assert_true(question_spelled(a, len, spelled));
}

static void assert_servfail(const struct res *r, uint16_t id, const char *spelled)
{
    assert_int_equal(r->called, 1);
    assert_int_equal(dg_get16(r->ans), id);
    assert_true(r->ans[2] & 0x80);
    assert_int_equal(rcode_of(r->ans), DNS_RCODE_SERVFAIL);
    assert_int_equal(dg_get16(r->ans + 6), 0);
    assert_true(question_spelled(r->ans, r->len, spelled));
    assert_int_equal(r->ttl, 0);
}

/* ------------------------------------------------------------ tests */

/* 1. A miss goes upstream; the same name again (other ID, other case) is a synchronous hit. */
static void test_miss_then_hit(void **state)
{
    struct tctx *t = *state;
    env_start(t, true, 10);
    struct msg q1 = mkq(0x1111, "example.com", Q_A);
    resolve_pending(t, t->r, 0, &q1);
    assert_int_equal(resolver_inflight(t->r), 1);
    t->nexpect = 1;
    assert_true(run_until(t, all_done, 2000));
    assert_int_equal(t->res[0].called, 1);
    assert_answer(t->res[0].ans, t->res[0].len, 0x1111, "example.com");
    assert_int_equal(t->res[0].ttl, 300);
    assert_int_equal(resolver_inflight(t->r), 0);

    struct msg q2 = mkq(0x2222, "ExAmPlE.CoM", Q_A);
    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &q2, &out, &ttl);
    assert_answer(out.data, out.len, 0x2222, "ExAmPlE.CoM");
    assert_true(ttl >= 299 && ttl <= 300);
    assert_int_equal(first_ttl(out.data, out.len), ttl);
    /* The same record data as the upstream's answer. */
    assert_int_equal(out.len, t->res[0].len);
    assert_memory_equal(out.data + out.len - 4, "\xc0\x00\x02\x01", 4);
    dg_buf_free(&out);

    assert_int_equal(t->f->nqueries, 1);
    assert_int_equal(fake_count(t->f, "example.com"), 1);
    const struct resolver_stats *st = resolver_get_stats(t->r);
    assert_int_equal(st->queries, 2);
    assert_int_equal(st->hits, 1);
    assert_int_equal(st->misses, 1);
    assert_int_equal(st->coalesced, 0);
    assert_int_equal(st->servfails, 0);
    run_for(t, 20);
    assert_int_equal(t->res[0].called, 1);
}

/* 2. 50 identical queries while the upstream is slow: one upstream query, 50 answers. */
static void test_coalescing(void **state)
{
    struct tctx *t = *state;
    t->f->delay_ms = 40;
    env_start(t, true, 10);
    char names[50][32];
    for (size_t i = 0; i < 50; i++) {
        /* Every other client spells the name differently: each gets its own spelling back. */
        snprintf(names[i], sizeof(names[i]), "%s", i % 2 ? "CoAlEsCe.Example" : "coalesce.example");
        struct msg q = mkq((uint16_t)(0x4000 + i), names[i], Q_A);
        resolve_pending(t, t->r, i, &q);
    }
    assert_int_equal(resolver_inflight(t->r), 1);
    assert_int_equal(upstream_pending(t->up), 1);
    t->nexpect = 50;
    assert_true(run_until(t, all_done, 2000));
    for (size_t i = 0; i < 50; i++) {
        assert_int_equal(t->res[i].called, 1);
        assert_answer(t->res[i].ans, t->res[i].len, (uint16_t)(0x4000 + i), names[i]);
        assert_int_equal(t->res[i].ttl, 300);
    }
    assert_int_equal(t->f->nqueries, 1);
    assert_int_equal(fake_count(t->f, "coalesce.example"), 1);
    const struct resolver_stats *st = resolver_get_stats(t->r);
    assert_int_equal(st->queries, 50);
    assert_int_equal(st->misses, 50);
    assert_int_equal(st->coalesced, 49);
    assert_int_equal(upstream_get_stats(t->up)->queries, 1);
    assert_int_equal(resolver_inflight(t->r), 0);
}

/* 3a. Three waiters, the middle one cancelled: the other two are answered, it never is. */
static void test_cancel_middle_waiter(void **state)
{
    struct tctx *t = *state;
    t->f->delay_ms = 40;
    env_start(t, true, 10);
    struct resolver_waiter *w[3];
    for (size_t i = 0; i < 3; i++) {
        struct msg q = mkq((uint16_t)(0x100 + i), "three.example", Q_A);
        w[i] = resolve_pending(t, t->r, i, &q);
    }
    resolver_cancel(w[1]);
    t->res[1].cancelled = true;
    assert_int_equal(resolver_inflight(t->r), 1);
    t->nexpect = 3;
    assert_true(run_until(t, all_done, 2000));
    assert_answer(t->res[0].ans, t->res[0].len, 0x100, "three.example");
    assert_answer(t->res[2].ans, t->res[2].len, 0x102, "three.example");
    assert_int_equal(t->res[0].called, 1);
    assert_int_equal(t->res[2].called, 1);
    assert_true(run_until(t, idle, 1000));
    run_for(t, 20);
    assert_int_equal(t->res[1].called, 0);
    assert_int_equal(t->f->nqueries, 1);
    assert_int_equal(resolver_get_stats(t->r)->coalesced, 2);
}

/* 3b. Every waiter cancelled before the answer: the query goes on and fills the cache. */
static void test_all_cancelled_still_cached(void **state)
{
    struct tctx *t = *state;
    t->f->delay_ms = 40;
    env_start(t, true, 10);
    struct msg q0 = mkq(0x0a01, "gone.example", Q_A);
    struct msg q1 = mkq(0x0a02, "GONE.example", Q_A);
    struct resolver_waiter *w0 = resolve_pending(t, t->r, 0, &q0);
    struct resolver_waiter *w1 = resolve_pending(t, t->r, 1, &q1);
    resolver_cancel(w1);
    resolver_cancel(w0);
    t->res[0].cancelled = t->res[1].cancelled = true;
    /* Documented: the upstream query outlives its last waiter. */
    assert_int_equal(resolver_inflight(t->r), 1);
    assert_int_equal(upstream_pending(t->up), 1);
    assert_true(run_until(t, idle, 2000));
    assert_int_equal(t->f->nqueries, 1);
    assert_int_equal(t->res[0].called + t->res[1].called, 0);

    struct msg q2 = mkq(0x0a03, "Gone.Example", Q_A);
    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &q2, &out, &ttl);
    assert_answer(out.data, out.len, 0x0a03, "Gone.Example");
    assert_true(ttl >= 299 && ttl <= 300);
    dg_buf_free(&out);
    assert_int_equal(t->f->nqueries, 1);
    assert_int_equal(resolver_get_stats(t->r)->hits, 1);
}

/* 4. Queries that differ in type, DO or CD (or EDNS at all) are separate upstream queries;
 * each is coalesced only with its twin. */
static void test_key_separates(void **state)
{
    struct tctx *t = *state;
    t->f->delay_ms = 30;
    env_start(t, true, 10);
    const struct qopts v[5] = {
        {0}, {.qtype = TYPE_AAAA}, {.edns = true}, {.edns = true, .do_bit = true}, {.cd = true},
    };
    for (size_t i = 0; i < 10; i++) {
        struct msg q = mkq((uint16_t)(0x500 + i), "keys.example", v[i % 5]);
        resolve_pending(t, t->r, i, &q);
    }
    assert_int_equal(resolver_inflight(t->r), 5);
    t->nexpect = 10;
    assert_true(run_until(t, all_done, 2000));
    assert_int_equal(t->f->nqueries, 5);
    assert_int_equal(resolver_get_stats(t->r)->coalesced, 5);

    /* Upstream saw each variant exactly once. */
    for (size_t k = 0; k < 5; k++) {
        unsigned seen = 0;
        for (size_t i = 0; i < t->f->nqueries; i++) {
            struct qsig s = query_sig(t->f->log[i].b, t->f->log[i].len);
            uint16_t want_type = v[k].qtype ? v[k].qtype : TYPE_A;
            bool want_edns = v[k].edns || v[k].do_bit;
            if (s.qtype == want_type && s.edns == want_edns && s.do_bit == v[k].do_bit &&
                s.cd == v[k].cd)
                seen++;
        }
        assert_int_equal(seen, 1);
    }
    /* Each client got the answer to its own variant. */
    for (size_t i = 0; i < 10; i++) {
        const struct qopts *o = &v[i % 5];
        const struct res *r = &t->res[i];
        assert_int_equal(r->called, 1);
        assert_answer(r->ans, r->len, (uint16_t)(0x500 + i), "keys.example");
        struct qsig s = query_sig(r->ans, r->len);
        assert_int_equal(s.qtype, o->qtype ? o->qtype : TYPE_A);
        assert_int_equal(s.cd, o->cd);
        bool has_opt = dg_get16(r->ans + 10) == 1;
        assert_int_equal(has_opt, o->edns || o->do_bit);
    }
}

/* 5. Silent upstream: SERVFAIL with the client's ID after query-timeout; nothing cached. */
static void test_upstream_silent_servfail(void **state)
{
    struct tctx *t = *state;
    t->f->mode = FAKE_SILENT;
    t->fast_fail = true;
    env_start(t, true, 10);
    struct msg q = mkq(0xdead, "Silent.Example", Q_A);
    uint64_t t0 = dg_now_ms();
    resolve_pending(t, t->r, 0, &q);
    t->nexpect = 1;
    assert_true(run_until(t, all_done, 3000));
    uint64_t took = t->res[0].at_ms - t0;
    assert_true(took >= QUERY_TO_MS - SLACK_MS);
    assert_true(took < QUERY_TO_MS + 1500);
    assert_servfail(&t->res[0], 0xdead, "Silent.Example");
    assert_true(t->f->nqueries >= 2); /* tries of 100 ms within the 300 ms budget */
    const struct resolver_stats *st = resolver_get_stats(t->r);
    assert_int_equal(st->servfails, 1);
    assert_int_equal(st->stale_hits, 0);
    assert_int_equal(resolver_inflight(t->r), 0);

    /* Nothing cached: not the synthesized SERVFAIL, not anything else. */
    struct cache_stats cs;
    cache_get_stats(t->cache, &cs);
    assert_int_equal(cs.entries, 0);
    assert_int_equal(cs.inserts, 0);
    struct msg again = mkq(0xbeef, "silent.example", Q_A);
    resolve_pending(t, t->r, 1, &again); /* left pending: teardown frees it */
    assert_int_equal(resolver_inflight(t->r), 1);
}

/* Put a TTL-1 answer for @p name into the cache through t->r and wait until it expired. */
static void cache_short_ttl_then_expire(struct tctx *t, const char *name, size_t slot)
{
    t->f->ttl = 1;
    struct msg q = mkq(0x7000, name, Q_A);
    resolve_pending(t, t->r, slot, &q);
    t->nexpect = slot + 1;
    assert_true(run_until(t, all_done, 2000));
    assert_answer(t->res[slot].ans, t->res[slot].len, 0x7000, name);
    assert_int_equal(first_ttl(t->res[slot].ans, t->res[slot].len), 1);
    /* Fresh for a moment: a synchronous hit. */
    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &q, &out, &ttl);
    dg_buf_free(&out);
    /* The entry was stored just before the callback ran; its lifetime is 1 s. */
    wait_until_ms(t, t->res[slot].at_ms + 1100);
}

/* 6. Serve-stale: an expired entry answers (TTL stale-answer-ttl) when the upstream is silent;
 * with serve-stale off the client gets SERVFAIL. Both resolvers share cache and upstream. */
static void test_serve_stale_on_timeout(void **state)
{
    struct tctx *t = *state;
    t->fast_fail = true;
    env_start(t, true, 10);
    t->cfg2 = make_cfg(t, false);
    t->r2 = resolver_new(t->up, t->cache, t->cfg2);
    assert_non_null(t->r2);
    cache_short_ttl_then_expire(t, "stale.example", 0);
    unsigned before = t->f->nqueries;
    assert_int_equal(before, 1);

    t->f->mode = FAKE_SILENT;
    struct msg qa = mkq(0x0a0a, "Stale.Example", Q_A);
    struct msg qb = mkq(0x0b0b, "STALE.example", Q_A);
    /* Expired: not a synchronous hit, the upstream is asked first (by each resolver). */
    resolve_pending(t, t->r, 1, &qa);
    resolve_pending(t, t->r2, 2, &qb);
    t->nexpect = 3;
    assert_true(run_until(t, all_done, 3000));

    assert_int_equal(t->res[1].called, 1);
    assert_answer(t->res[1].ans, t->res[1].len, 0x0a0a, "Stale.Example");
    assert_int_equal(first_ttl(t->res[1].ans, t->res[1].len), 30);
    assert_int_equal(t->res[1].ttl, 30);
    assert_int_equal(resolver_get_stats(t->r)->stale_hits, 1);
    assert_int_equal(resolver_get_stats(t->r)->servfails, 0);

    assert_servfail(&t->res[2], 0x0b0b, "STALE.example");
    assert_int_equal(resolver_get_stats(t->r2)->servfails, 1);
    assert_int_equal(resolver_get_stats(t->r2)->stale_hits, 0);
    assert_true(t->f->nqueries >= before + 2);
    assert_int_equal(t->res[0].called, 1);
}

/* 7. The upstream answers SERVFAIL while a stale entry exists: the stale answer is served at
 * once (no waiting for the timeout) and the entry is kept, not replaced by the SERVFAIL. */
static void test_upstream_servfail_serves_stale(void **state)
{
    struct tctx *t = *state;
    t->fast_fail = true;
    env_start(t, true, 10);
    cache_short_ttl_then_expire(t, "sf.example", 0);

    t->f->mode = FAKE_SERVFAIL;
    struct msg q = mkq(0x0c0c, "SF.example", Q_A);
    uint64_t t0 = dg_now_ms();
    resolve_pending(t, t->r, 1, &q);
    t->nexpect = 2;
    assert_true(run_until(t, all_done, 3000));
    assert_true(t->res[1].at_ms - t0 < QUERY_TO_MS - 50);
    assert_int_equal(t->f->nqueries, 2); /* the SERVFAIL was an answer: no retry */
    assert_answer(t->res[1].ans, t->res[1].len, 0x0c0c, "SF.example");
    assert_int_equal(first_ttl(t->res[1].ans, t->res[1].len), 30);
    assert_int_equal(t->res[1].ttl, 30);
    const struct resolver_stats *st = resolver_get_stats(t->r);
    assert_int_equal(st->stale_hits, 1);
    assert_int_equal(st->servfails, 0);

    /* The cache still holds the old answer, as stale data, not the SERVFAIL. */
    struct msg probe = mkq(0x0d0d, "sf.example", Q_A);
    struct cache_key k;
    assert_int_equal(cache_key_make(t->cache, probe.b, probe.len, &k), 0);
    struct dg_buf out = {0};
    struct cache_hit_info info;
    assert_int_equal(
        cache_lookup(t->cache, &k, probe.b, probe.len, dg_now_ms(), false, &out, &info),
        CACHE_MISS);
    assert_int_equal(cache_lookup(t->cache, &k, probe.b, probe.len, dg_now_ms(), true, &out, &info),
                     CACHE_STALE);
    assert_answer(out.data, out.len, 0x0d0d, "sf.example");
    dg_buf_free(&out);
    struct cache_stats cs;
    cache_get_stats(t->cache, &cs);
    assert_int_equal(cs.inserts, 1);
}

/* 8. ECS is stripped before forwarding and does not split the cache. */
static void test_ecs_stripped(void **state)
{
    struct tctx *t = *state;
    env_start(t, true, 10);
    struct msg with = mkq(0x0e0e, "ecs.example", (struct qopts){.ecs = true});
    struct msg without = mkq(0x0f0f, "ecs.example", (struct qopts){.edns = true});
    assert_true(with.len == without.len + 11);
    resolve_pending(t, t->r, 0, &with);
    t->nexpect = 1;
    assert_true(run_until(t, all_done, 2000));
    assert_answer(t->res[0].ans, t->res[0].len, 0x0e0e, "ecs.example");

    /* What the upstream got: the query with an empty OPT, byte for byte (but the ID). */
    assert_int_equal(t->f->nqueries, 1);
    const struct msg *got = &t->f->log[0];
    assert_int_equal(got->len, without.len);
    assert_memory_equal(got->b + 2, without.b + 2, without.len - 2);
    struct qsig s = query_sig(got->b, got->len);
    assert_true(s.edns);
    assert_int_equal(s.opt_rdlen, 0);

    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &without, &out, &ttl);
    assert_answer(out.data, out.len, 0x0f0f, "ecs.example");
    dg_buf_free(&out);
    assert_int_equal(t->f->nqueries, 1);
}

/* 9. Prefetch: with prefetch_percent 100 the first hit signals a refresh; the client is
 * answered from the cache at once and the upstream sees a second query in the background. */
static void test_prefetch(void **state)
{
    struct tctx *t = *state;
    t->f->ttl = 20;
    env_start(t, true, 100);
    struct msg q = mkq(0x0901, "pre.example", Q_A);
    resolve_pending(t, t->r, 0, &q);
    t->nexpect = 1;
    assert_true(run_until(t, all_done, 2000));
    assert_int_equal(t->f->nqueries, 1);
    /* An entry is never prefetched in the millisecond it was stored. */
    run_for(t, 5);

    struct msg q2 = mkq(0x0902, "PRE.example", Q_A);
    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &q2, &out, &ttl);
    assert_answer(out.data, out.len, 0x0902, "PRE.example");
    assert_true(ttl >= 19 && ttl <= 20);
    dg_buf_free(&out);
    const struct resolver_stats *st = resolver_get_stats(t->r);
    assert_int_equal(st->prefetches, 1);
    assert_int_equal(st->hits, 1);
    assert_int_equal(resolver_inflight(t->r), 1);

    t->want_queries = 2;
    assert_true(run_until(t, fake_got, 2000));
    assert_true(run_until(t, idle, 2000));
    assert_int_equal(fake_count(t->f, "pre.example"), 2);
    assert_int_equal(t->res[0].called, 1); /* no waiter on the prefetch */
    assert_int_equal(t->res[MAX_RES - 1].called, 0);
    struct cache_stats cs;
    cache_get_stats(t->cache, &cs);
    assert_int_equal(cs.inserts, 2); /* the refreshed answer replaced the entry */
    assert_int_equal(cs.entries, 1);
}

/* 10. resolver_free() with waiters and in-flight queries (one without waiters): no callback,
 * the upstream queries are cancelled, no leak (ASan). */
static void test_free_with_pending(void **state)
{
    struct tctx *t = *state;
    t->f->delay_ms = 50;
    env_start(t, true, 10);
    size_t slot = 0;
    for (int i = 0; i < 3; i++) {
        struct msg q = mkq((uint16_t)(0x1000 + i), "a.example", Q_A);
        resolve_pending(t, t->r, slot++, &q);
    }
    struct msg qb = mkq(0x2000, "b.example", Q_A);
    resolve_pending(t, t->r, slot++, &qb);
    struct msg qc = mkq(0x3000, "c.example", Q_A);
    struct resolver_waiter *wc = resolve_pending(t, t->r, slot++, &qc);
    resolver_cancel(wc);
    t->res[slot - 1].cancelled = true;
    assert_int_equal(resolver_inflight(t->r), 3);
    assert_int_equal(upstream_pending(t->up), 3);
    t->want_queries = 3;
    assert_true(run_until(t, fake_got, 2000));

    resolver_free(t->r);
    t->r = NULL;
    assert_int_equal(upstream_pending(t->up), 0);
    /* The delayed answers arrive at closed sockets. */
    assert_true(run_until(t, idle, 1000));
    run_for(t, 30);
    for (size_t i = 0; i < slot; i++)
        assert_int_equal(t->res[i].called, 0);
}

/* 11. Caching off (cache-size 0): coalescing still works, every answer goes upstream. */
static void test_no_cache(void **state)
{
    struct tctx *t = *state;
    t->f->delay_ms = 30;
    t->fast_fail = true;
    env_start(t, false, 0);
    for (size_t i = 0; i < 5; i++) {
        struct msg q = mkq((uint16_t)(0x600 + i), "nocache.example", Q_A);
        resolve_pending(t, t->r, i, &q);
    }
    assert_int_equal(resolver_inflight(t->r), 1);
    t->nexpect = 5;
    assert_true(run_until(t, all_done, 2000));
    for (size_t i = 0; i < 5; i++)
        assert_answer(t->res[i].ans, t->res[i].len, (uint16_t)(0x600 + i), "nocache.example");
    assert_int_equal(t->f->nqueries, 1);
    assert_int_equal(resolver_get_stats(t->r)->coalesced, 4);

    /* No cache: the same name again goes upstream again. */
    struct msg q = mkq(0x0700, "nocache.example", Q_A);
    resolve_pending(t, t->r, 5, &q);
    t->nexpect = 6;
    assert_true(run_until(t, all_done, 2000));
    assert_answer(t->res[5].ans, t->res[5].len, 0x0700, "nocache.example");
    assert_int_equal(t->f->nqueries, 2);

    /* Silent upstream, nothing to serve stale from: SERVFAIL. */
    t->f->mode = FAKE_SILENT;
    struct msg qs = mkq(0x0800, "nocache.example", Q_A);
    resolve_pending(t, t->r, 6, &qs);
    t->nexpect = 7;
    assert_true(run_until(t, all_done, 3000));
    assert_servfail(&t->res[6], 0x0800, "nocache.example");
    assert_int_equal(resolver_get_stats(t->r)->hits, 0);
}

/* 12. One max-age rule: the answer a client gets through the cache and the same answer with
 * caching off (cache-size 0) carry the same Cache-Control TTL, for a positive answer, a
 * negative one without SOA (cache-nosoa-ttl) and an upstream SERVFAIL (cache-servfail-ttl). */
static void test_max_age_cached_uncached_agree(void **state)
{
    struct tctx *t = *state;
    env_start(t, true, 0);
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = 0;
    cc.stale_answer_ttl = 30;
    struct cache *off = cache_new(&cc);
    assert_non_null(off);
    t->r2 = resolver_new(t->up, off, t->cfg);
    assert_non_null(t->r2);

    static const struct {
        enum fake_mode mode;
        uint32_t ttl; /* of the fake's record */
        const char *name;
        uint32_t want;
    } cases[] = {
        {FAKE_ANSWER, 300, "pos.example", 300},
        {FAKE_NXDOMAIN, 300, "nosoa.example", 30}, /* cache_config_defaults(): nosoa 30 */
        {FAKE_SERVFAIL, 300, "fail.example", 5},   /* servfail 5 */
    };
    size_t slot = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t->f->mode = cases[i].mode;
        t->f->ttl = cases[i].ttl;
        struct resolver *rs[2] = {t->r, t->r2};
        for (size_t j = 0; j < 2; j++) {
            struct msg q = mkq((uint16_t)(0x900 + slot), cases[i].name, Q_A);
            resolve_pending(t, rs[j], slot, &q);
            t->nexpect = slot + 1;
            assert_true(run_until(t, all_done, 2000));
            assert_int_equal(t->res[slot].called, 1);
            assert_int_equal(rcode_of(t->res[slot].ans),
                             cases[i].mode == FAKE_ANSWER     ? DNS_RCODE_NOERROR
                             : cases[i].mode == FAKE_NXDOMAIN ? DNS_RCODE_NXDOMAIN
                                                              : DNS_RCODE_SERVFAIL);
            slot++;
        }
        /* cached, then uncached: the same number */
        assert_int_equal(t->res[slot - 2].ttl, cases[i].want);
        assert_int_equal(t->res[slot - 1].ttl, cases[i].want);
    }
    /* the cached path did store them (a second query is a hit), the other did not */
    struct cache_stats st;
    cache_get_stats(t->cache, &st);
    assert_int_equal(st.inserts, 3);
    cache_get_stats(off, &st);
    assert_int_equal(st.inserts, 0);
    resolver_free(t->r2);
    t->r2 = NULL;
    cache_free(off);
}

/* 13. An upstream's padding and keepalive never reach the cache nor a client (cached or not):
 * the answer is delivered and stored without them, its OPT otherwise intact (DO echoed, no
 * options left). The keepalive case failed before (review of issue 16: a DoT upstream's
 * keepalive reached UDP clients and doubled the stream clients' own). */
static void check_upstream_padding_stripped(struct tctx *t, bool with_cache)
{
    t->f->pad = 200;
    t->f->keepalive = true;
    env_start(t, with_cache, 0);
    const struct qopts qo = {.edns = true, .do_bit = true};
    struct msg q = mkq(0x0a0a, "padded.example", qo);
    resolve_pending(t, t->r, 0, &q);
    t->nexpect = 1;
    assert_true(run_until(t, all_done, 2000));
    assert_int_equal(t->f->npadded, 1);
    const struct res *r = &t->res[0];
    assert_answer(r->ans, r->len, 0x0a0a, "padded.example");
    assert_false(dns_has_padding(r->ans, r->len));
    /* question, the A record (16 bytes), an empty OPT (11) with DO: nothing else */
    size_t qe = dns_question_end(r->ans, r->len);
    assert_int_equal(r->len, qe + 16 + 11);
    assert_int_equal(dg_get16(r->ans + 10), 1);
    assert_int_equal(dg_get16(r->ans + qe + 16 + 1), TYPE_OPT);
    assert_true(dg_get32(r->ans + qe + 16 + 5) & EDNS_DO);
    assert_int_equal(dg_get16(r->ans + qe + 16 + 9), 0);
    assert_true(dns_wire_check(r->ans, r->len));
    assert_int_equal(r->ttl, 300);

    struct msg q2 = mkq(0x0b0b, "padded.example", qo);
    if (!with_cache) {
        resolve_pending(t, t->r, 1, &q2);
        t->nexpect = 2;
        assert_true(run_until(t, all_done, 2000));
        assert_int_equal(t->f->npadded, 2);
        assert_int_equal(t->res[1].len, r->len);
        assert_false(dns_has_padding(t->res[1].ans, t->res[1].len));
        return;
    }
    /* The stored entry holds no padding either. */
    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &q2, &out, &ttl);
    assert_answer(out.data, out.len, 0x0b0b, "padded.example");
    assert_int_equal(out.len, r->len);
    assert_memory_equal(out.data + 2, r->ans + 2, 4);
    assert_false(dns_has_padding(out.data, out.len));
    dg_buf_free(&out);
    assert_int_equal(t->f->nqueries, 1);
}

static void test_upstream_padding_stripped(void **state)
{
    check_upstream_padding_stripped(*state, true);
}

static void test_upstream_padding_stripped_no_cache(void **state)
{
    check_upstream_padding_stripped(*state, false);
}

/* ------------------------------------------------------------ forward zones (split horizon) */

struct zones_env {
    struct fake *fz, *fs; /* corp.example's server, sub.corp.example's */
    struct upstream *up[2];
    struct nameset *ns;
};

static bool zone_all_done(struct tctx *t)
{
    return all_done(t);
}

/* The default fake, corp.example -> fz, sub.corp.example -> fs; a resolver routing by zone. */
static void zones_start(struct tctx *t, struct zones_env *z)
{
    z->fz = fake_new(t->base);
    z->fs = fake_new(t->base);
    char err[256], a0[64], zc[128], zs[128];
    snprintf(a0, sizeof(a0), "127.0.0.1:%u", ntohs(t->f->addr.sin_port));
    snprintf(zc, sizeof(zc), "Corp.Example. 127.0.0.1:%u", ntohs(z->fz->addr.sin_port));
    snprintf(zs, sizeof(zs), "sub.corp.example 127.0.0.1:%u", ntohs(z->fs->addr.sin_port));
    t->cfg = config_new();
    assert_non_null(t->cfg);
    const char *opts[][2] = {
        {"upstream", a0},          {"forward-zone", zc},
        {"forward-zone", zs},      {"upstream-timeout", "1000"},
        {"query-timeout", "3000"},
    };
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
        if (config_set(t->cfg, opts[i][0], opts[i][1], "test", 0, err, sizeof(err)) != 0)
            fail_msg("config_set %s: %s", opts[i][0], err);
    if (config_finish(t->cfg, err, sizeof(err)) != 0)
        fail_msg("config_finish: %s", err);
    assert_int_equal(t->cfg->n_forward_zone, 2);
    t->up = upstream_new(t->base, t->cfg);
    assert_non_null(t->up);
    z->ns = nameset_new(2);
    assert_non_null(z->ns);
    for (size_t i = 0; i < 2; i++) {
        const struct dg_fwd_zone *fz = &t->cfg->fwd[i];
        z->up[i] =
            upstream_new_servers(t->base, t->cfg, fz->up, fz->n_up, upstream_obs_base(t->cfg, i));
        assert_non_null(z->up[i]);
        assert_int_equal(nameset_add(z->ns, fz->name, fz->name_len, (uint32_t)i + 1), 0);
    }
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = 64 * 1024;
    cc.nshards = 4;
    cc.prefetch_percent = 10;
    t->cache = cache_new(&cc);
    assert_non_null(t->cache);
    t->r = resolver_new(t->up, t->cache, t->cfg);
    assert_non_null(t->r);
    resolver_set_zones(t->r, z->ns, z->up, 2);
}

/* The resolver first (it cancels its queries on every set), then the zone sets. */
static void zones_stop(struct tctx *t, struct zones_env *z)
{
    resolver_free(t->r);
    t->r = NULL;
    upstream_free(z->up[0]);
    upstream_free(z->up[1]);
    nameset_free(z->ns);
    fake_free(z->fz);
    fake_free(z->fs);
}

/* 14. Forward zones: each question goes to the upstream set of the longest zone at or above
 * its name (any case), everything else to the default set; coalescing and the cache work as
 * ever for zone names. */
static void test_forward_zones(void **state)
{
    struct tctx *t = *state;
    struct zones_env z = {0};
    zones_start(t, &z);
    static const struct {
        const char *name;
        int where; /* 0 default, 1 corp.example, 2 sub.corp.example */
    } cases[] = {
        {"www.example.com", 0},      {"HOST.corp.EXAMPLE", 1},  {"corp.example", 1},
        {"a.b.corp.example", 1},     {"x.Sub.Corp.example", 2}, {"sub.corp.example", 2},
        {"notcorp.example", 0},      {"corp.example.org", 0},   {"example", 0},
        {"sub.corp.example.net", 0}, {"subx.corp.example", 1},
    };
    size_t n = sizeof(cases) / sizeof(cases[0]);
    for (size_t i = 0; i < n; i++) {
        struct msg q = mkq((uint16_t)(0x4000 + i), cases[i].name, Q_A);
        resolve_pending(t, t->r, i, &q);
    }
    /* the same corp name again while in flight: coalesced, not sent twice */
    struct msg again = mkq(0x5000, "host.corp.example", Q_A);
    resolve_pending(t, t->r, n, &again);
    t->nexpect = n + 1;
    assert_true(run_until(t, zone_all_done, 3000));
    for (size_t i = 0; i < n; i++)
        assert_answer(t->res[i].ans, t->res[i].len, (uint16_t)(0x4000 + i), cases[i].name);
    assert_answer(t->res[n].ans, t->res[n].len, 0x5000, "host.corp.example");
    struct fake *f[3] = {t->f, z.fz, z.fs};
    unsigned want[3] = {0};
    for (size_t i = 0; i < n; i++) {
        char lc[64];
        size_t k = 0;
        for (; cases[i].name[k]; k++) {
            char c = cases[i].name[k];
            lc[k] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
        }
        lc[k] = 0;
        want[cases[i].where]++;
        for (int j = 0; j < 3; j++)
            if (fake_count(f[j], lc) != (j == cases[i].where ? 1u : 0u))
                fail_msg("%s: %u queries at server %d", cases[i].name, fake_count(f[j], lc), j);
    }
    for (int j = 0; j < 3; j++)
        assert_int_equal(f[j]->nqueries, want[j]);
    assert_int_equal(upstream_get_stats(t->up)->queries, want[0]);
    assert_int_equal(upstream_get_stats(z.up[0])->queries, want[1]);
    assert_int_equal(upstream_get_stats(z.up[1])->queries, want[2]);
    assert_int_equal(resolver_get_stats(t->r)->coalesced, 1);

    /* cached: a zone name again is a hit, nothing sent */
    struct msg q2 = mkq(0x6000, "x.sub.corp.example", Q_A);
    struct dg_buf out = {0};
    uint32_t ttl = 0;
    resolve_hit(t, t->r, &q2, &out, &ttl);
    assert_answer(out.data, out.len, 0x6000, "x.sub.corp.example");
    dg_buf_free(&out);
    assert_int_equal(z.fs->nqueries, want[2]);
    zones_stop(t, &z);
}

/* 15. A silent zone server: its names get SERVFAIL after query-timeout, the default set keeps
 * answering the others; no zones set (n = 0): everything goes to the default set. */
static void test_forward_zone_down(void **state)
{
    struct tctx *t = *state;
    struct zones_env z = {0};
    zones_start(t, &z);
    z.fz->mode = FAKE_SILENT;
    struct msg qc = mkq(0x7001, "db.corp.example", Q_A);
    struct msg qd = mkq(0x7002, "www.example.com", Q_A);
    resolve_pending(t, t->r, 0, &qc);
    resolve_pending(t, t->r, 1, &qd);
    t->nexpect = 2;
    assert_true(run_until(t, zone_all_done, 5000));
    assert_servfail(&t->res[0], 0x7001, "db.corp.example");
    assert_answer(t->res[1].ans, t->res[1].len, 0x7002, "www.example.com");
    assert_true(fake_count(z.fz, "db.corp.example") >= 1);
    assert_int_equal(fake_count(t->f, "db.corp.example"), 0);

    resolver_set_zones(t->r, NULL, NULL, 0);
    struct msg qe = mkq(0x7003, "other.corp.example", Q_A);
    resolve_pending(t, t->r, 2, &qe);
    t->nexpect = 3;
    assert_true(run_until(t, zone_all_done, 3000));
    assert_answer(t->res[2].ans, t->res[2].len, 0x7003, "other.corp.example");
    assert_int_equal(fake_count(t->f, "other.corp.example"), 1);
    assert_int_equal(fake_count(z.fz, "other.corp.example"), 0);
    zones_stop(t, &z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_miss_then_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_coalescing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_middle_waiter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_cancelled_still_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_separates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_silent_servfail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_serve_stale_on_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_servfail_serves_stale, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ecs_stripped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_age_cached_uncached_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_padding_stripped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upstream_padding_stripped_no_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward_zones, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forward_zone_down, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
