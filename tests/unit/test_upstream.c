/*
 * Unit tests of the upstream module against fake upstream servers run by the test itself: UDP
 * sockets and TCP listeners on 127.0.0.1, their events on the same event_base as the module
 * under test, answering in ways each test chooses (right, wrong ID, wrong question, garbage,
 * silence, TC=1, held and released on demand, closing the TCP connection).
 *
 * Timing assertions are deliberately loose: libevent's default clock is CLOCK_MONOTONIC_COARSE,
 * so a timer may fire a few ms before our CLOCK_MONOTONIC says it is due.
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

#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/observer.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

#define MAX_FAKES   3
#define MAX_HELD    8
#define MAX_TCONN   8
#define MAX_RESULTS 4
#define SLACK_MS    25 /* coarse-clock tolerance for ">= timeout" checks */

/* ------------------------------------------------------------ DNS messages by hand */

/* Query for @p name (dotted, no trailing dot), type A, class IN, RD=1. */
static size_t make_query(uint8_t *out, uint16_t id, const char *name)
{
    memset(out, 0, DNS_HEADER_LEN);
    dg_put16(out, id);
    out[2] = 0x01; /* RD */
    dg_put16(out + 4, 1);
    size_t p = DNS_HEADER_LEN;
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
    dg_put16(out + p, 1); /* A */
    dg_put16(out + p + 2, 1);
    return p + 4;
}

static size_t qend(const uint8_t *m, size_t len)
{
    size_t p = DNS_HEADER_LEN;
    while (p < len && m[p] != 0)
        p += 1u + m[p];
    return p + 5 <= len ? p + 5 : 0;
}

static size_t put_rr_head(uint8_t *p, uint16_t type, uint16_t rdlen)
{
    p[0] = 0xc0; /* name: pointer to the question's name */
    p[1] = 0x0c;
    dg_put16(p + 2, type);
    dg_put16(p + 4, 1);
    p[6] = 0;
    p[7] = 0;
    dg_put16(p + 8, 300);
    dg_put16(p + 10, rdlen);
    return 12;
}

/*
 * Answer to @p q: the question echoed, QR=1 RA=1, then one A record, or (big) four 255-byte TXT
 * records (> 1000 bytes), or (tc) no records and TC=1.
 */
static size_t make_answer(const uint8_t *q, size_t qlen, uint8_t *out, bool big, bool tc)
{
    size_t qe = qend(q, qlen);
    assert_true(qe > 0);
    memcpy(out, q, qe);
    out[2] = (uint8_t)(0x80 | (q[2] & 0x01) | (tc ? 0x02 : 0));
    out[3] = 0x80;
    memset(out + 6, 0, 6);
    size_t p = qe;
    if (tc)
        return p;
    if (!big) {
        dg_put16(out + 6, 1);
        p += put_rr_head(out + p, 1, 4);
        memcpy(out + p, "\xc0\x00\x02\x01", 4);
        return p + 4;
    }
    dg_put16(out + 6, 4);
    for (int i = 0; i < 4; i++) {
        p += put_rr_head(out + p, 16, 256);
        out[p++] = 255;
        memset(out + p, 'a' + i, 255);
        p += 255;
    }
    return p;
}

/* Name of the question as dotted text, for checking which query an answer belongs to. */
static void qname_text(const uint8_t *m, size_t len, char *out, size_t cap)
{
    size_t p = DNS_HEADER_LEN, o = 0;
    out[0] = 0;
    while (p < len && m[p] != 0 && o + m[p] + 2 < cap) {
        if (o)
            out[o++] = '.';
        memcpy(out + o, m + p + 1, m[p]);
        o += m[p];
        p += 1u + m[p];
    }
    out[o] = 0;
}

/* ------------------------------------------------------------ fake upstream servers */

enum udp_mode {
    UDP_ANSWER,
    UDP_SILENT,
    UDP_HOLD, /* keep the query; fake_udp_release() answers it */
    UDP_WRONG_ID_FIRST,
    UDP_WRONG_QUESTION_FIRST,
    UDP_GARBAGE_FIRST,
    UDP_TC,
};

enum tcp_mode {
    TCP_ANSWER,
    TCP_HOLD,        /* keep queries; answer all in reverse order once hold_n arrived (if hold_n) */
    TCP_CLOSE,       /* close the connection when a query arrives */
    TCP_WRONG_FIRST, /* a wrong-question frame with the right ID and one with an unknown ID,
                        then the answer */
    TCP_NONE,        /* no listener: connect is refused */
};

struct fake;

struct fake_tconn {
    struct fake *f;
    int fd;
    struct event *ev;
    uint8_t in[70000];
    size_t len;
};

struct held {
    struct fake_tconn *c;
    uint8_t msg[512];
    size_t len;
};

struct fake {
    struct event_base *base;
    struct sockaddr_in addr;
    int udp_fd, lfd;
    struct event *udp_ev, *lev;
    enum udp_mode udp_mode;
    enum tcp_mode tcp_mode;
    unsigned udp_queries, tcp_conns, tcp_queries;
    uint8_t last[512];
    size_t last_len;
    struct sockaddr_in last_from;
    struct held held[MAX_HELD];
    size_t n_held, hold_n;
    struct fake_tconn *conns[MAX_TCONN];
};

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        p += w;
        n -= (size_t)w;
    }
}

static void fake_udp_reply(struct fake *f, const uint8_t *m, size_t len)
{
    ssize_t w =
        sendto(f->udp_fd, m, len, 0, (const struct sockaddr *)&f->last_from, sizeof(f->last_from));
    assert_int_equal(w, (ssize_t)len);
}

static void on_fake_udp(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    socklen_t fl = sizeof(f->last_from);
    ssize_t n = recvfrom(fd, f->last, sizeof(f->last), 0, (struct sockaddr *)&f->last_from, &fl);
    if (n <= 0)
        return;
    f->last_len = (size_t)n;
    f->udp_queries++;
    uint8_t a[2048], b[2048];
    size_t alen = make_answer(f->last, f->last_len, a, false, false), blen;
    switch (f->udp_mode) {
    case UDP_ANSWER:
        fake_udp_reply(f, a, alen);
        break;
    case UDP_SILENT:
    case UDP_HOLD:
        break;
    case UDP_WRONG_ID_FIRST:
        memcpy(b, a, alen);
        dg_put16(b, (uint16_t)(dg_get16(a) ^ 0x5555));
        fake_udp_reply(f, b, alen);
        fake_udp_reply(f, a, alen);
        break;
    case UDP_WRONG_QUESTION_FIRST: {
        uint8_t other[512];
        size_t olen = make_query(other, dg_get16(f->last), "other.example");
        blen = make_answer(other, olen, b, false, false);
        fake_udp_reply(f, b, blen);
        fake_udp_reply(f, a, alen);
        break;
    }
    case UDP_GARBAGE_FIRST:
        /* Right ID and QR=1, so only the parse can reject it. */
        memcpy(b, a, 4);
        dg_put16(b + 4, 1);
        memset(b + 6, 0xff, 20);
        fake_udp_reply(f, b, 26);
        fake_udp_reply(f, a, alen);
        break;
    case UDP_TC:
        alen = make_answer(f->last, f->last_len, a, false, true);
        fake_udp_reply(f, a, alen);
        break;
    }
}

/* Answer the last UDP query now (for UDP_HOLD). */
static void fake_udp_release(struct fake *f)
{
    uint8_t a[2048];
    size_t alen = make_answer(f->last, f->last_len, a, false, false);
    fake_udp_reply(f, a, alen);
}

static void fake_tconn_free(struct fake_tconn *c)
{
    for (size_t i = 0; i < MAX_TCONN; i++)
        if (c->f->conns[i] == c)
            c->f->conns[i] = NULL;
    for (size_t i = 0; i < c->f->n_held; i++)
        if (c->f->held[i].c == c)
            c->f->held[i].c = NULL;
    event_free(c->ev);
    close(c->fd);
    free(c);
}

static void tcp_send_answer(struct fake_tconn *c, const uint8_t *q, size_t qlen)
{
    uint8_t a[2048 + 2];
    size_t alen = make_answer(q, qlen, a + 2, true, false);
    dg_put16(a, (uint16_t)alen);
    send_all(c->fd, a, alen + 2);
}

/* Answer every held TCP query, last received first (out of order on purpose). */
static void fake_tcp_release(struct fake *f)
{
    for (size_t i = f->n_held; i-- > 0;)
        if (f->held[i].c)
            tcp_send_answer(f->held[i].c, f->held[i].msg, f->held[i].len);
    f->n_held = 0;
}

static void on_fake_tcp_read(evutil_socket_t fd, short what, void *arg)
{
    struct fake_tconn *c = arg;
    struct fake *f = c->f;
    ssize_t n = recv(fd, c->in + c->len, sizeof(c->in) - c->len, 0);
    if (n <= 0) {
        fake_tconn_free(c);
        return;
    }
    c->len += (size_t)n;
    size_t off = 0;
    while (c->len - off >= 2) {
        size_t fl = dg_get16(c->in + off);
        if (c->len - off - 2 < fl)
            break;
        const uint8_t *m = c->in + off + 2;
        off += 2 + fl;
        f->tcp_queries++;
        if (f->tcp_mode == TCP_CLOSE) {
            fake_tconn_free(c);
            return;
        }
        if (f->tcp_mode == TCP_ANSWER) {
            tcp_send_answer(c, m, fl);
            continue;
        }
        if (f->tcp_mode == TCP_WRONG_FIRST) {
            uint8_t other[512];
            size_t olen = make_query(other, dg_get16(m), "other.example");
            tcp_send_answer(c, other, olen);
            dg_put16(other, (uint16_t)(dg_get16(m) ^ 0x0101));
            tcp_send_answer(c, other, olen);
            tcp_send_answer(c, m, fl);
            continue;
        }
        assert_true(f->n_held < MAX_HELD && fl <= sizeof(f->held[0].msg));
        f->held[f->n_held].c = c;
        memcpy(f->held[f->n_held].msg, m, fl);
        f->held[f->n_held].len = fl;
        f->n_held++;
        if (f->hold_n && f->n_held == f->hold_n)
            fake_tcp_release(f);
    }
    memmove(c->in, c->in + off, c->len - off);
    c->len -= off;
}

static void on_fake_accept(evutil_socket_t fd, short what, void *arg)
{
    struct fake *f = arg;
    int cfd = accept(fd, NULL, NULL);
    if (cfd < 0)
        return;
    assert_int_equal(evutil_make_socket_nonblocking(cfd), 0);
    struct fake_tconn *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->f = f;
    c->fd = cfd;
    c->ev = event_new(f->base, cfd, EV_READ | EV_PERSIST, on_fake_tcp_read, c);
    assert_non_null(c->ev);
    assert_int_equal(event_add(c->ev, NULL), 0);
    size_t i = 0;
    while (i < MAX_TCONN && f->conns[i])
        i++;
    assert_true(i < MAX_TCONN);
    f->conns[i] = c;
    f->tcp_conns++;
}

/* UDP socket and TCP listener on the same 127.0.0.1 port, as a real resolver has. */
static struct fake *fake_new(struct event_base *base, enum udp_mode um, enum tcp_mode tm)
{
    struct fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = base;
    f->udp_mode = um;
    f->tcp_mode = tm;
    for (int attempt = 0; attempt < 20; attempt++) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        f->udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(f->udp_fd >= 0);
        assert_int_equal(bind(f->udp_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        socklen_t sl = sizeof(sa);
        assert_int_equal(getsockname(f->udp_fd, (struct sockaddr *)&sa, &sl), 0);
        f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(f->lfd >= 0);
        int one = 1;
        setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(f->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(f->lfd, 16) == 0) {
            f->addr = sa;
            break;
        }
        close(f->lfd);
        close(f->udp_fd);
        f->lfd = f->udp_fd = -1;
    }
    assert_true(f->lfd >= 0);
    f->udp_ev = event_new(base, f->udp_fd, EV_READ | EV_PERSIST, on_fake_udp, f);
    f->lev = event_new(base, f->lfd, EV_READ | EV_PERSIST, on_fake_accept, f);
    assert_non_null(f->udp_ev);
    assert_non_null(f->lev);
    assert_int_equal(event_add(f->udp_ev, NULL), 0);
    assert_int_equal(event_add(f->lev, NULL), 0);
    if (tm == TCP_NONE) {
        /* Keep the fd number out of reuse until fake_free(); just stop listening on it. */
        assert_int_equal(shutdown(f->lfd, SHUT_RDWR), 0);
        event_del(f->lev);
    }
    return f;
}

static void fake_free(struct fake *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < MAX_TCONN; i++)
        if (f->conns[i])
            fake_tconn_free(f->conns[i]);
    event_free(f->udp_ev);
    event_free(f->lev);
    close(f->udp_fd);
    close(f->lfd);
    free(f);
}

/* A 127.0.0.1 port with nothing behind it (UDP answers ICMP port unreachable, TCP RST). */
static struct sockaddr_in closed_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    return sa;
}

/* ------------------------------------------------------------ test context */

struct result {
    int called;
    int status;
    uint8_t ans[4096];
    size_t len;
    uint64_t at_ms;
};

struct tctx {
    struct event_base *base;
    struct config *cfg;
    struct upstream *u;
    struct fake *fake[MAX_FAKES];
    struct result res[MAX_RESULTS];
    uint64_t t0;
};

static void on_done(void *arg, int status, const uint8_t *ans, size_t len)
{
    struct result *r = arg;
    r->called++;
    r->status = status;
    r->at_ms = dg_now_ms();
    if (status == 0) {
        assert_non_null(ans);
        assert_true(len <= sizeof(r->ans));
        memcpy(r->ans, ans, len);
    } else {
        assert_null(ans);
    }
    r->len = len;
}

static void cfg_add_upstream(struct config *cfg, struct sockaddr_in sa)
{
    struct dg_upstream *up = &cfg->upstream[cfg->n_upstream++];
    memset(up, 0, sizeof(*up));
    struct dg_addr *a = &up->addr;
    memcpy(&a->ss, &sa, sizeof(sa));
    a->len = sizeof(sa);
    snprintf(a->text, sizeof(a->text), "127.0.0.1:%u", ntohs(sa.sin_port));
    memcpy(up->text, a->text, sizeof(a->text));
}

static int setup(void **state)
{
    struct tctx *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->base = event_base_new();
    assert_non_null(t->base);
    /* Built by hand so this test depends on nothing but the struct's fields. */
    t->cfg = calloc(1, sizeof(*t->cfg));
    assert_non_null(t->cfg);
    t->cfg->upstream_timeout_ms = 1500;
    t->cfg->query_timeout_ms = 4000;
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    struct tctx *t = *state;
    upstream_free(t->u);
    for (int i = 0; i < MAX_FAKES; i++)
        fake_free(t->fake[i]);
    free(t->cfg);
    event_base_free(t->base);
    free(t);
    return 0;
}

/* Add fake server @p i as the next upstream. */
static struct fake *add_fake(struct tctx *t, int i, enum udp_mode um, enum tcp_mode tm)
{
    t->fake[i] = fake_new(t->base, um, tm);
    cfg_add_upstream(t->cfg, t->fake[i]->addr);
    return t->fake[i];
}

static void make_upstream(struct tctx *t)
{
    t->u = upstream_new(t->base, t->cfg);
    assert_non_null(t->u);
}

static struct upstream_query *start(struct tctx *t, int r, uint16_t id, const char *name)
{
    uint8_t q[512];
    size_t len = make_query(q, id, name);
    struct upstream_query *h = upstream_query_start(t->u, q, len, on_done, &t->res[r]);
    assert_non_null(h);
    /* Never synchronously. */
    assert_int_equal(t->res[r].called, 0);
    return h;
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
    struct timeval tv = {.tv_sec = max_ms / 1000, .tv_usec = (max_ms % 1000) * 1000};
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

static bool r0_done(struct tctx *t)
{
    return t->res[0].called > 0;
}
static bool r01_done(struct tctx *t)
{
    return t->res[0].called > 0 && t->res[1].called > 0;
}
static bool r2_done(struct tctx *t)
{
    return t->res[2].called > 0;
}

static void assert_answer(const struct result *r, uint16_t id, const char *name)
{
    char got[256];
    assert_int_equal(r->called, 1);
    assert_int_equal(r->status, 0);
    assert_true(r->len > DNS_HEADER_LEN);
    assert_int_equal(dg_get16(r->ans), id);
    assert_true(r->ans[2] & 0x80);
    qname_text(r->ans, r->len, got, sizeof(got));
    assert_string_equal(got, name);
}

/* ------------------------------------------------------------ tests */

static void test_bad_args(void **state)
{
    struct tctx *t = *state;
    uint8_t q[512];
    size_t len = make_query(q, 1, "example.com");

    /* No upstream configured: NULL, and no callback ever. */
    make_upstream(t);
    assert_null(upstream_query_start(t->u, q, len, on_done, &t->res[0]));
    upstream_free(t->u);
    t->u = NULL;

    add_fake(t, 0, UDP_ANSWER, TCP_ANSWER);
    make_upstream(t);
    assert_null(upstream_query_start(t->u, q, 11, on_done, &t->res[0]));
    assert_null(upstream_query_start(t->u, q, len, NULL, NULL));
    assert_int_equal(upstream_pending(t->u), 0);
    run_for(t, 50);
    assert_int_equal(t->res[0].called, 0);
    assert_int_equal(upstream_get_stats(t->u)->queries, 0);
}

static void test_udp_answer(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_ANSWER, TCP_ANSWER);
    make_upstream(t);
    start(t, 0, 0, "example.com");
    start(t, 1, 0xbeef, "www.example.org");
    assert_int_equal(upstream_pending(t->u), 2);
    assert_true(run_until(t, r01_done, 3000));
    assert_answer(&t->res[0], 0, "example.com");
    assert_answer(&t->res[1], 0xbeef, "www.example.org");
    assert_int_equal(f->udp_queries, 2);
    assert_int_equal(f->tcp_conns, 0);
    const struct upstream_stats *st = upstream_get_stats(t->u);
    assert_int_equal(st->queries, 2);
    assert_int_equal(st->answers, 2);
    assert_int_equal(st->dropped_mismatch, 0);
    assert_int_equal(upstream_pending(t->u), 0);
}

/* The fake sends a bad message first, then the right answer; the bad one must be dropped and
 * the query must keep waiting for the right one. */
static void check_dropped_then_answered(struct tctx *t, enum udp_mode mode)
{
    struct fake *f = add_fake(t, 0, mode, TCP_ANSWER);
    make_upstream(t);
    start(t, 0, 0x1234, "example.com");
    assert_true(run_until(t, r0_done, 3000));
    assert_answer(&t->res[0], 0x1234, "example.com");
    assert_int_equal(f->udp_queries, 1);
    assert_int_equal(upstream_get_stats(t->u)->dropped_mismatch, 1);
    assert_int_equal(upstream_get_stats(t->u)->answers, 1);
}

static void test_wrong_id_dropped(void **state)
{
    check_dropped_then_answered(*state, UDP_WRONG_ID_FIRST);
}

static void test_wrong_question_dropped(void **state)
{
    check_dropped_then_answered(*state, UDP_WRONG_QUESTION_FIRST);
}

static void test_garbage_dropped(void **state)
{
    check_dropped_then_answered(*state, UDP_GARBAGE_FIRST);
}

static void test_silent_timeout(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_SILENT, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 200;
    t->cfg->query_timeout_ms = 300; /* 2 tries: 200 ms, then the 100 ms left */
    make_upstream(t);
    uint64_t t0 = dg_now_ms();
    start(t, 0, 7, "example.com");
    assert_true(run_until(t, r0_done, 5000));
    assert_int_equal(t->res[0].status, -ETIMEDOUT);
    uint64_t took = t->res[0].at_ms - t0;
    assert_true(took >= 300 - SLACK_MS);
    assert_true(took < 300 + 2000);
    assert_int_equal(f->udp_queries, 2);
    assert_int_equal(upstream_get_stats(t->u)->timeouts, 2);
    assert_int_equal(upstream_pending(t->u), 0);
}

static void test_failover_to_second(void **state)
{
    struct tctx *t = *state;
    struct fake *f0 = add_fake(t, 0, UDP_SILENT, TCP_ANSWER);
    struct fake *f1 = add_fake(t, 1, UDP_ANSWER, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 200;
    make_upstream(t);
    uint64_t t0 = dg_now_ms();
    start(t, 0, 0xbeef, "example.com");
    assert_true(run_until(t, r0_done, 5000));
    assert_answer(&t->res[0], 0xbeef, "example.com");
    assert_true(t->res[0].at_ms - t0 >= 200 - SLACK_MS);
    assert_int_equal(f0->udp_queries, 1);
    assert_int_equal(f1->udp_queries, 1);
    assert_int_equal(upstream_get_stats(t->u)->timeouts, 1);
}

static void test_tc_fallback_tcp(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_TC, TCP_ANSWER);
    make_upstream(t);
    start(t, 0, 0, "big.example");
    assert_true(run_until(t, r0_done, 3000));
    assert_answer(&t->res[0], 0, "big.example");
    assert_true(t->res[0].len > 512);
    assert_false(t->res[0].ans[2] & 0x02);
    assert_int_equal(f->udp_queries, 1);
    assert_int_equal(f->tcp_conns, 1);
    assert_int_equal(f->tcp_queries, 1);
    assert_int_equal(upstream_get_stats(t->u)->tcp_fallbacks, 1);
}

static void test_tcp_pipelined_out_of_order(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_TC, TCP_HOLD);
    f->hold_n = 2; /* answer once both are in, the second first */
    make_upstream(t);
    start(t, 0, 0x1111, "a.example");
    start(t, 1, 0x2222, "b.example");
    assert_true(run_until(t, r01_done, 3000));
    assert_answer(&t->res[0], 0x1111, "a.example");
    assert_answer(&t->res[1], 0x2222, "b.example");
    assert_true(t->res[0].len > 512 && t->res[1].len > 512);
    assert_int_equal(f->tcp_conns, 1);
    assert_int_equal(f->tcp_queries, 2);
    assert_int_equal(upstream_get_stats(t->u)->tcp_fallbacks, 2);

    /* The connection stays open and is reused by a later query. */
    f->tcp_mode = TCP_ANSWER;
    start(t, 2, 0x3333, "c.example");
    assert_true(run_until(t, r2_done, 3000));
    assert_answer(&t->res[2], 0x3333, "c.example");
    assert_int_equal(f->tcp_conns, 1);
    assert_int_equal(f->tcp_queries, 3);
}

static void test_icmp_refused_failover(void **state)
{
    struct tctx *t = *state;
    cfg_add_upstream(t->cfg, closed_port());
    struct fake *f = add_fake(t, 1, UDP_ANSWER, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 3000;
    make_upstream(t);
    uint64_t t0 = dg_now_ms();
    start(t, 0, 42, "example.com");
    assert_true(run_until(t, r0_done, 5000));
    assert_answer(&t->res[0], 42, "example.com");
    /* Far below the 3 s try timeout: the refusal was noticed, not waited out. */
    assert_true(t->res[0].at_ms - t0 < 1000);
    assert_int_equal(f->udp_queries, 1);
    assert_true(upstream_get_stats(t->u)->errors >= 1);
    assert_int_equal(upstream_get_stats(t->u)->timeouts, 0);
}

static void test_all_refused(void **state)
{
    struct tctx *t = *state;
    cfg_add_upstream(t->cfg, closed_port());
    cfg_add_upstream(t->cfg, closed_port());
    t->cfg->upstream_timeout_ms = 3000;
    make_upstream(t);
    uint64_t t0 = dg_now_ms();
    start(t, 0, 42, "example.com");
    assert_true(run_until(t, r0_done, 5000));
    assert_int_equal(t->res[0].status, -ECONNREFUSED);
    assert_true(t->res[0].at_ms - t0 < 1000);
    assert_int_equal(upstream_get_stats(t->u)->errors, 4); /* 2 tries per upstream */
}

/* A server that refuses every try is marked down after 3 failures in a row; later queries go
 * straight to the healthy one, and the refusing one is probed again after its backoff. */
static void test_health_down_and_probe(void **state)
{
    struct tctx *t = *state;
    cfg_add_upstream(t->cfg, closed_port());
    struct fake *f = add_fake(t, 1, UDP_ANSWER, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 3000;
    make_upstream(t);
    for (int i = 0; i < 8; i++) {
        memset(&t->res[0], 0, sizeof(t->res[0]));
        start(t, 0, (uint16_t)(100 + i), "example.com");
        assert_true(run_until(t, r0_done, 5000));
        assert_answer(&t->res[0], (uint16_t)(100 + i), "example.com");
    }
    assert_int_equal(f->udp_queries, 8);
    /* the refusing one was tried while its three failures accumulated, then no more */
    assert_int_equal(upstream_get_stats(t->u)->errors, 3);

    /* after the 1 s backoff one query probes it (and fails over to the good one) */
    uint64_t until = dg_now_ms() + 1100;
    while (dg_now_ms() < until)
        event_base_loop(t->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    memset(&t->res[0], 0, sizeof(t->res[0]));
    start(t, 0, 200, "example.com");
    assert_true(run_until(t, r0_done, 5000));
    assert_answer(&t->res[0], 200, "example.com");
    assert_int_equal(upstream_get_stats(t->u)->errors, 4);
    /* the failed probe doubled the backoff: the next query does not probe */
    memset(&t->res[0], 0, sizeof(t->res[0]));
    start(t, 0, 201, "example.com");
    assert_true(run_until(t, r0_done, 5000));
    assert_int_equal(upstream_get_stats(t->u)->errors, 4);
}

static bool f0_has_udp(struct tctx *t)
{
    return t->fake[0]->udp_queries > 0;
}

static void test_cancel_udp(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_HOLD, TCP_ANSWER);
    make_upstream(t);
    struct upstream_query *h = start(t, 0, 1, "example.com");
    assert_true(run_until(t, f0_has_udp, 3000));
    upstream_query_cancel(h);
    assert_int_equal(upstream_pending(t->u), 0);
    fake_udp_release(f); /* the answer now goes to a closed socket */
    run_for(t, 100);
    assert_int_equal(t->res[0].called, 0);
    assert_int_equal(upstream_get_stats(t->u)->answers, 0);
}

static bool f0_two_tcp(struct tctx *t)
{
    return t->fake[0]->tcp_queries >= 2;
}

static bool r1_done_and_late_dropped(struct tctx *t)
{
    return t->res[1].called > 0 && upstream_get_stats(t->u)->dropped_mismatch >= 1;
}

static void test_cancel_tcp_then_answer(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_TC, TCP_HOLD);
    make_upstream(t);
    struct upstream_query *a = start(t, 0, 0xaaaa, "a.example");
    start(t, 1, 0xbbbb, "b.example");
    assert_true(run_until(t, f0_two_tcp, 3000));
    upstream_query_cancel(a);
    assert_int_equal(upstream_pending(t->u), 1);
    fake_tcp_release(f); /* both answers, the cancelled one's included */
    assert_true(run_until(t, r1_done_and_late_dropped, 3000));
    assert_answer(&t->res[1], 0xbbbb, "b.example");
    assert_int_equal(t->res[0].called, 0);
    assert_int_equal(upstream_get_stats(t->u)->dropped_mismatch, 1);
    assert_int_equal(f->tcp_conns, 1);
    run_for(t, 50);
    assert_int_equal(t->res[0].called, 0);
}

static bool both_pending_reached(struct tctx *t)
{
    return t->fake[0]->udp_queries >= 1 && t->fake[1]->tcp_queries >= 1;
}

static void test_free_with_pending(void **state)
{
    struct tctx *t = *state;
    add_fake(t, 0, UDP_HOLD, TCP_ANSWER);
    add_fake(t, 1, UDP_TC, TCP_HOLD);
    make_upstream(t);
    start(t, 0, 1, "udp.example"); /* round robin: fake 0, stays on UDP */
    start(t, 1, 2, "tcp.example"); /* fake 1, moves to TCP */
    start(t, 2, 3, "new.example"); /* fake 0 again, just sent */
    assert_true(run_until(t, both_pending_reached, 3000));
    assert_int_equal(upstream_pending(t->u), 3);
    upstream_free(t->u);
    t->u = NULL;
    fake_udp_release(t->fake[0]);
    fake_tcp_release(t->fake[1]);
    run_for(t, 100);
    for (int i = 0; i < 3; i++)
        assert_int_equal(t->res[i].called, 0);
}

static void test_tcp_close_fails_over(void **state)
{
    struct tctx *t = *state;
    struct fake *f0 = add_fake(t, 0, UDP_TC, TCP_CLOSE);
    struct fake *f1 = add_fake(t, 1, UDP_TC, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 3000;
    make_upstream(t);
    uint64_t t0 = dg_now_ms();
    start(t, 0, 0x5a5a, "big.example");
    assert_true(run_until(t, r0_done, 5000));
    assert_answer(&t->res[0], 0x5a5a, "big.example");
    assert_true(t->res[0].at_ms - t0 < 1000);
    assert_int_equal(f0->tcp_queries, 1);
    /* Once an answer was truncated, later tries go straight to TCP. */
    assert_int_equal(f1->udp_queries, 0);
    assert_int_equal(f1->tcp_queries, 1);
}

static void test_tcp_mismatch_dropped(void **state)
{
    struct tctx *t = *state;
    struct fake *f = add_fake(t, 0, UDP_TC, TCP_WRONG_FIRST);
    make_upstream(t);
    start(t, 0, 0x0102, "big.example");
    assert_true(run_until(t, r0_done, 3000));
    assert_answer(&t->res[0], 0x0102, "big.example");
    assert_int_equal(f->tcp_queries, 1);
    assert_int_equal(upstream_get_stats(t->u)->dropped_mismatch, 2);
}

static void test_tcp_refused_fails_over(void **state)
{
    struct tctx *t = *state;
    struct fake *f0 = add_fake(t, 0, UDP_TC, TCP_NONE);
    struct fake *f1 = add_fake(t, 1, UDP_TC, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 3000;
    make_upstream(t);
    uint64_t t0 = dg_now_ms();
    start(t, 0, 9, "big.example");
    assert_true(run_until(t, r0_done, 5000));
    assert_answer(&t->res[0], 9, "big.example");
    assert_true(t->res[0].at_ms - t0 < 1000);
    assert_int_equal(f0->tcp_conns, 0);
    assert_int_equal(f1->tcp_queries, 1);
    assert_int_equal(upstream_get_stats(t->u)->errors, 1);
}

/* ------------------------------------------------------------ server sets (forward zones) */

#define OBS_MAX_IDX 16

/* Upstream events by observer index. */
struct obs_log {
    unsigned queries[OBS_MAX_IDX], answers[OBS_MAX_IDX], timeouts[OBS_MAX_IDX];
    unsigned health[OBS_MAX_IDX];
    uint64_t last_health[OBS_MAX_IDX];
    unsigned out_of_range; /* any event with an index >= OBS_MAX_IDX */
};

static void on_obs_event(void *arg, enum dg_event ev, unsigned idx, uint64_t value)
{
    (void)value;
    struct obs_log *l = arg;
    if (idx >= OBS_MAX_IDX) {
        l->out_of_range++;
        return;
    }
    if (ev == DG_EV_UP_QUERY)
        l->queries[idx]++;
    else if (ev == DG_EV_UP_ANSWER)
        l->answers[idx]++;
    else if (ev == DG_EV_UP_TIMEOUT)
        l->timeouts[idx]++;
    else if (ev == DG_EV_UP_HEALTH) {
        l->health[idx]++;
        l->last_health[idx] = value;
    }
}

/* A set made from a server list of its own (a forward zone's) queries only those servers, with
 * failover between them, and reports them as obs_base + i; the default list is not touched. */
/* Queries come from the upstream's pool (up to 256 kept, each with its timer): 300 started
 * and cancelled (the pool keeps 256, frees the rest with their timers), then queries on
 * reused blocks must still time out once each through their kept timers, a long query (not
 * pooled) beside them. Leaks (a timer freed with its block, or not) show under ASan/LSan. */
static unsigned pool_done, pool_timeouts;
static void on_pool_done(void *arg, int status, const uint8_t *ans, size_t len)
{
    (void)arg;
    (void)ans;
    (void)len;
    pool_done++;
    if (status == -ETIMEDOUT)
        pool_timeouts++;
}

static bool pool_all_done(struct tctx *t)
{
    (void)t;
    return pool_done >= 11;
}

static void test_pooled_queries_reused(void **state)
{
    struct tctx *t = *state;
    add_fake(t, 0, UDP_SILENT, TCP_ANSWER);
    t->cfg->upstream_timeout_ms = 100;
    t->cfg->query_timeout_ms = 150;
    make_upstream(t);
    uint8_t q[600];
    size_t len = make_query(q, 9, "pool.example");
    struct upstream_query *h[300];
    for (int i = 0; i < 300; i++)
        assert_non_null(h[i] = upstream_query_start(t->u, q, len, on_pool_done, NULL));
    for (int i = 0; i < 300; i++)
        upstream_query_cancel(h[i]);
    assert_int_equal(upstream_pending(t->u), 0);
    pool_done = pool_timeouts = 0;
    for (int i = 0; i < 10; i++)
        assert_non_null(upstream_query_start(t->u, q, len, on_pool_done, NULL));
    char longname[260];
    memset(longname, 'a', sizeof(longname));
    for (int i = 63; i < 250; i += 64)
        longname[i] = '.';
    longname[250] = '\0';
    size_t llen = make_query(q, 10, longname);
    assert_true(llen > 256); /* beyond UP_POOL_QLEN: malloc'ed */
    assert_non_null(upstream_query_start(t->u, q, llen, on_pool_done, NULL));
    assert_int_equal(pool_done, 0);
    assert_true(run_until(t, pool_all_done, 5000));
    run_for(t, 300); /* no second callback from a reused timer */
    assert_int_equal(pool_done, 11);
    assert_int_equal(pool_timeouts, 11);
    assert_int_equal(upstream_pending(t->u), 0);
}

static void test_server_set_obs_base(void **state)
{
    struct tctx *t = *state;
    struct fake *dflt = add_fake(t, 0, UDP_ANSWER, TCP_ANSWER);
    t->fake[1] = fake_new(t->base, UDP_SILENT, TCP_ANSWER);
    t->fake[2] = fake_new(t->base, UDP_ANSWER, TCP_ANSWER);
    /* the zone's list, outside cfg->upstream (as cfg->fwd[i].up is) */
    struct config *zcfg = calloc(1, sizeof(*zcfg));
    assert_non_null(zcfg);
    cfg_add_upstream(zcfg, t->fake[1]->addr);
    cfg_add_upstream(zcfg, t->fake[2]->addr);
    t->cfg->upstream_timeout_ms = 200;

    struct obs_log log = {0};
    struct dg_observer obs = {.event = on_obs_event, .arg = &log};
    t->u = upstream_new_servers(t->base, t->cfg, zcfg->upstream, 2, 5);
    assert_non_null(t->u);
    /* a stale "down" at index 6 (an older set's) is replaced at once by the new set's health */
    log.last_health[6] = DG_UP_HEALTH(9000, 1);
    upstream_set_observer(t->u, &obs);
    assert_int_equal(log.health[5], 1);
    assert_int_equal(log.health[6], 1);
    assert_int_equal(log.last_health[5], DG_UP_HEALTH(0, 0));
    assert_int_equal(log.last_health[6], DG_UP_HEALTH(0, 0));
    assert_int_equal(log.health[0] + log.health[4] + log.health[7], 0);
    /* Several queries: whichever server the rotation starts with, the silent one is tried and
     * the answering one answers. */
    for (int i = 0; i < 3; i++) {
        memset(&t->res[0], 0, sizeof(t->res[0]));
        start(t, 0, (uint16_t)(0x100 + i), "host.corp.example");
        assert_true(run_until(t, r0_done, 5000));
        assert_answer(&t->res[0], (uint16_t)(0x100 + i), "host.corp.example");
    }
    assert_int_equal(dflt->udp_queries, 0);
    assert_true(t->fake[1]->udp_queries >= 1);
    assert_int_equal(t->fake[2]->udp_queries, 3);
    /* indexes: 5 is the silent one, 6 the answering one; nothing else reported */
    assert_int_equal(log.out_of_range, 0);
    for (unsigned i = 0; i < OBS_MAX_IDX; i++) {
        if (i == 5 || i == 6)
            continue;
        assert_int_equal(log.queries[i] + log.answers[i] + log.timeouts[i] + log.health[i], 0);
    }
    assert_int_equal(log.queries[5], t->fake[1]->udp_queries);
    assert_int_equal(log.timeouts[5], t->fake[1]->udp_queries);
    assert_int_equal(log.answers[5], 0);
    assert_int_equal(log.queries[6], 3);
    assert_int_equal(log.answers[6], 3);

    /* the default set (upstream_new) still reports from 0 */
    struct upstream *d = upstream_new(t->base, t->cfg);
    assert_non_null(d);
    upstream_set_observer(d, &obs);
    uint8_t q[512];
    size_t len = make_query(q, 7, "example.com");
    memset(&t->res[1], 0, sizeof(t->res[1]));
    assert_non_null(upstream_query_start(d, q, len, on_done, &t->res[1]));
    bool ok = false;
    for (int k = 0; k < 1000 && !ok; k++) {
        event_base_loop(t->base, EVLOOP_ONCE);
        ok = t->res[1].called > 0;
    }
    assert_true(ok);
    assert_answer(&t->res[1], 7, "example.com");
    assert_int_equal(dflt->udp_queries, 1);
    assert_int_equal(log.queries[0], 1);
    assert_int_equal(log.answers[0], 1);
    upstream_free(d);

    /* an empty list: no query can start */
    struct upstream *e = upstream_new_servers(t->base, t->cfg, NULL, 0, 9);
    assert_non_null(e);
    assert_null(upstream_query_start(e, q, len, on_done, &t->res[2]));
    upstream_free(e);
    /* the servers' list must outlive the set */
    upstream_free(t->u);
    t->u = NULL;
    free(zcfg);
}

/* Default servers first, then each zone's in order. */
static void test_obs_base_numbering(void **state)
{
    (void)state;
    struct config *cfg = calloc(1, sizeof(*cfg));
    struct dg_fwd_zone *z = calloc(3, sizeof(*z));
    assert_non_null(cfg);
    assert_non_null(z);
    z[0].n_up = 3;
    z[1].n_up = 1;
    z[2].n_up = 2;
    cfg->fwd = z;
    cfg->n_forward_zone = 3;
    cfg->n_upstream = 2;
    assert_int_equal(upstream_obs_base(cfg, 0), 2);
    assert_int_equal(upstream_obs_base(cfg, 1), 5);
    assert_int_equal(upstream_obs_base(cfg, 2), 6);
    assert_int_equal(upstream_obs_base(cfg, 3), 8); /* all servers */
    cfg->n_upstream = 0;
    cfg->n_forward_zone = 0;
    assert_int_equal(upstream_obs_base(cfg, 0), 0);
    free(z);
    free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_udp_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_id_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_question_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failover_to_second, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tc_fallback_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_pipelined_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_icmp_refused_failover, setup, teardown),
        cmocka_unit_test_setup_teardown(test_all_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_down_and_probe, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_udp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_tcp_then_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pooled_queries_reused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_close_fails_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_mismatch_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_refused_fails_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_server_set_obs_base, setup, teardown),
        cmocka_unit_test(test_obs_base_numbering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
