/*
 * upstream.c — non-blocking forwarding of DNS queries to upstream resolvers.
 *
 * Structure (one tree per worker; nothing here is shared between threads):
 *
 *   struct upstream              one per worker event_base. Owns the server array, the list of
 *    │                           pending queries, the UDP receive scratch buffer and the ID pool.
 *    ├─ struct up_server [n]     one per configured upstream address. Owns its TCP connections.
 *    │   └─ struct up_tcp        one kept-open TCP connection (RFC 7766 pipelining): its fd, read,
 *    │                           write and idle events, and its in/out byte buffers. It does NOT
 *    │                           own the queries waiting on it; it links them (in-flight list) so
 *    │                           that it can find an answer's query by ID and fail them all over
 *    │                           to their next try when the connection dies.
 *    └─ struct upstream_query    one per upstream_query_start(). Owns its copy of the message
 *                                (the ID field holds the current try's random ID), its timer,
 *                                and during a UDP try its own socket and read event. During a
 *                                TCP try it sits in exactly one connection's in-flight list.
 *
 * A query is in one of three try states: TRY_UDP (socket open), TRY_TCP (linked on a
 * connection) or TRY_NONE (between tries). Its timer is pending for its whole life: during a
 * try it is the try timeout (upstream-timeout, clipped to what is left of query-timeout);
 * between tries it is a zero timeout. That zero-timeout hop is how every "this try failed now"
 * (ICMP refused, send error, TCP connection lost, a synchronous failure in
 * upstream_query_start()) moves to the next try: the next try, and possibly the final
 * callback, then run from that query's own timer callback with no other object on the stack.
 * This is what keeps the user callback from running synchronously inside
 * upstream_query_start(), and keeps a dying TCP connection from calling user code while it is
 * walking its in-flight list (a user callback may cancel other queries on the same
 * connection).
 *
 * Lifetimes:
 *  - A query is freed in exactly one place, query_free(): on completion (before the callback
 *    runs, so the callback sees a dead handle, as upstream.h says), on
 *    upstream_query_cancel(), and in upstream_free(). query_free() undoes the current try
 *    (closes the UDP socket or unlinks from the TCP connection) and frees the timer, so
 *    event_del happens exactly once, inside event_free().
 *  - A TCP connection is freed only from its own event callbacks (EOF/error, idle timer) or
 *    from upstream_free(); never as a side effect of starting or cancelling a query. So a user
 *    callback invoked from on_tcp_read() can start or cancel queries without pulling the
 *    connection out from under the read loop. upstream_free() must not be called from an
 *    upstream callback.
 *  - An answer on TCP whose query was cancelled or timed out finds no query with its ID and is
 *    dropped; its bytes were already accounted for in the framing, so the stream stays in sync.
 *    Likewise a cancelled query's frame already in the output buffer is still sent (it may be
 *    half written); its answer is then dropped.
 *
 * Stats: queries started, answers delivered, tries that timed out (timeouts), tries that failed
 * otherwise (errors: refused, socket errors, TCP connection lost), TC=1 fallbacks to TCP, and
 * received messages dropped (wrong source, ID or question, garbage, late TCP answers).
 *
 * Left out for later: RTT-based server choice and health tracking, DoT, EDNS/TC-based
 * downgrade heuristics, retrying on SERVFAIL/REFUSED rcodes (the answer is delivered as-is).
 */
#include "dohgate/upstream.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <event2/event.h>

#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/log.h"
#include "dohgate/metrics.h"
#include "dohgate/util.h"

/* Pipelining depth per TCP connection; unbound and Knot use similar bounds. */
#define UP_TCP_MAX_INFLIGHT 100
/* Connections per upstream per worker; beyond that a query fails over to the next try. */
#define UP_TCP_MAX_CONNS 4
/* A connection with no query in flight for this long is closed (RFC 7766 §6.2.3 leaves the
 * value to us; servers usually close sooner anyway). */
#define UP_TCP_IDLE_MS 10000
/* Unsent bytes above which a connection takes no new queries (a server that stopped reading). */
#define UP_TCP_MAX_OUT (256 * 1024)
/* recv() size for TCP; the input buffer holds at most one partial frame plus this. */
#define UP_TCP_READ_CHUNK 16384
/* Datagrams read per readable event, so a flood of junk cannot starve the loop. */
#define UP_UDP_MAX_READS 32
/* Random IDs fetched per arc4random_buf() call (glibc 2.36 does one getrandom per call). */
#define UP_ID_POOL 64
/* Largest UDP payload. */
#define UP_RBUF_LEN 65536

enum up_try_state { TRY_NONE = 0, TRY_UDP, TRY_TCP };

struct up_tcp;

struct up_server {
    struct upstream *u;
    const struct dg_addr *addr;
    struct up_tcp *conns; /* doubly linked via up_tcp.prev/next */
    size_t n_conns;
    /* health, this worker's view (see "choosing an upstream") */
    uint64_t srtt_us;       /* smoothed answer time; 0 = not measured yet */
    unsigned fails;         /* failed tries in a row */
    uint64_t down_until_ms; /* 0: up; else down, and probed once this time has passed */
    unsigned backoff_ms;    /* the current down period; doubles while probes fail */
    bool probing;           /* a try is out to this down server */
};

struct up_tcp {
    struct up_server *srv;
    int fd;
    bool connected;
    struct event *rd, *wr, *idle;
    struct dg_buf in, out;
    struct upstream_query *inflight; /* via upstream_query.tcp_prev/tcp_next */
    size_t n_inflight;
    struct up_tcp *prev, *next;
};

struct upstream_query {
    struct upstream *u;
    upstream_done_cb cb;
    void *arg;
    uint8_t *msg; /* copy of the query; bytes 0-1 hold the current try's ID */
    size_t len;
    uint16_t orig_id;
    enum up_try_state state;
    bool use_tcp; /* set after a TC=1 answer: the answer is large whoever sends it */
    unsigned tries, max_tries, n_refused;
    uint32_t tried;        /* servers tried for this query (bit i: srv[i]) */
    bool probe;            /* the current try probes a down server */
    bool saw_bad;          /* the current UDP try received answers that did not match */
    struct up_server *srv; /* server of the current try (when state != TRY_NONE) */
    uint64_t deadline_ms;
    struct event *timer;
    int udp_fd;
    struct event *udp_ev;
    struct up_tcp *tcp;
    struct upstream_query *tcp_prev, *tcp_next;
    struct upstream_query *prev, *next; /* upstream.queries */
    uint64_t try_start_us;              /* for the SRTT and the latency metric */
};

struct upstream {
    struct event_base *base;
    const struct config *cfg;
    struct up_server *srv;
    size_t n_srv;
    size_t rr;
    struct upstream_query *queries;
    size_t pending;
    struct upstream_stats stats;
    uint16_t ids[UP_ID_POOL];
    size_t n_ids;
    uint8_t *rbuf; /* UDP receive buffer, UP_RBUF_LEN bytes */
    struct worker_metrics *wm;
    size_t explore; /* first tries counted for the 1-in-EXPLORE re-measuring */
};

/* This server's metrics, or NULL (no metrics, or no server). */
static struct upstream_metrics *up_met(const struct upstream *u, const struct up_server *s)
{
    return u->wm && s ? &u->wm->up[s - u->srv] : NULL;
}

/* A try went out to @p s. */
static void try_started(struct upstream_query *q, struct up_server *s)
{
    struct upstream_metrics *m = up_met(q->u, s);
    if (m)
        ctr_add(&m->queries, 1);
    q->try_start_us = metrics_now_us();
    q->saw_bad = false;
}

void upstream_set_metrics(struct upstream *u, struct worker_metrics *wm)
{
    u->wm = wm;
}

static void on_query_timer(evutil_socket_t fd, short what, void *arg);
static void on_udp_read(evutil_socket_t fd, short what, void *arg);
static void on_tcp_read(evutil_socket_t fd, short what, void *arg);
static void on_tcp_write(evutil_socket_t fd, short what, void *arg);
static void on_tcp_idle(evutil_socket_t fd, short what, void *arg);

/* ---------------------------------------------------------------- helpers */

/* IDs come from arc4random (getrandom-seeded ChaCha20 in glibc >= 2.36), fetched in batches:
 * an off-path attacker must guess both the ID and the OS-chosen source port. */
static uint16_t up_random_id(struct upstream *u)
{
    if (u->n_ids == 0) {
        arc4random_buf(u->ids, sizeof(u->ids));
        u->n_ids = UP_ID_POOL;
    }
    return u->ids[--u->n_ids];
}

static bool up_addr_equal(const struct sockaddr_storage *a, socklen_t alen, const struct dg_addr *b)
{
    if (a->ss_family != b->ss.ss_family)
        return false;
    if (a->ss_family == AF_INET && alen >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a;
        const struct sockaddr_in *y = (const struct sockaddr_in *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6 && alen >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)&b->ss;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* A timer that cannot be added would leave the query hanging forever. event_active() does not
 * allocate, so fall back to it: the query then sees an immediate timeout, which still makes
 * progress and still never runs the callback synchronously. */
static void query_timer_set(struct upstream_query *q, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    if (evtimer_add(q->timer, &tv) < 0) {
        log_err("upstream: cannot arm a query timer");
        event_active(q->timer, EV_TIMEOUT, 1);
    }
}

/* This try's timeout: upstream-timeout, clipped to what is left of the query's budget. */
static uint64_t query_try_ms(const struct upstream_query *q, uint64_t now)
{
    uint64_t left = q->deadline_ms > now ? q->deadline_ms - now : 0;
    uint64_t t = q->u->cfg->upstream_timeout_ms;
    return t < left ? t : left;
}

/* ---------------------------------------------------------------- TCP connections */

static void tcp_free(struct up_tcp *c)
{
    struct up_server *s = c->srv;
    assert(c->inflight == NULL && c->n_inflight == 0);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->n_conns--;
    if (c->rd)
        event_free(c->rd);
    if (c->wr)
        event_free(c->wr);
    if (c->idle)
        event_free(c->idle);
    if (c->fd >= 0)
        close(c->fd);
    dg_buf_free(&c->in);
    dg_buf_free(&c->out);
    free(c);
}

static struct up_tcp *tcp_new(struct up_server *s, int *err)
{
    struct upstream *u = s->u;
    struct up_tcp *c = calloc(1, sizeof(*c));
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    c->srv = s;
    c->fd = -1;
    /* Link first so that tcp_free() is the one cleanup path for partial state too. */
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->n_conns++;

    c->fd = socket(s->addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        *err = -errno;
        goto fail;
    }
    /* Pipelined small frames must go out at once, not wait for Nagle. */
    int one = 1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (const struct sockaddr *)&s->addr->ss, s->addr->len) == 0) {
        c->connected = true;
    } else if (errno != EINPROGRESS) {
        *err = -errno;
        goto fail;
    }
    c->rd = event_new(u->base, c->fd, EV_READ | EV_PERSIST, on_tcp_read, c);
    c->wr = event_new(u->base, c->fd, EV_WRITE | EV_PERSIST, on_tcp_write, c);
    c->idle = evtimer_new(u->base, on_tcp_idle, c);
    if (!c->rd || !c->wr || !c->idle) {
        *err = -ENOMEM;
        goto fail;
    }
    /* Reading from the start also catches a refused connect (EPOLLERR wakes both events). */
    if (event_add(c->rd, NULL) < 0 || event_add(c->wr, NULL) < 0) {
        *err = -ENOMEM;
        goto fail;
    }
    return c;
fail:
    tcp_free(c);
    return NULL;
}

/* A connection that may take one more query, or a new one if the bound allows. */
static struct up_tcp *tcp_get(struct up_server *s, bool *created, int *err)
{
    *created = false;
    for (struct up_tcp *c = s->conns; c; c = c->next)
        if (c->n_inflight < UP_TCP_MAX_INFLIGHT && c->out.len < UP_TCP_MAX_OUT)
            return c;
    if (s->n_conns >= UP_TCP_MAX_CONNS) {
        *err = -EAGAIN;
        return NULL;
    }
    struct up_tcp *c = tcp_new(s, err);
    *created = c != NULL;
    return c;
}

static struct upstream_query *tcp_find(const struct up_tcp *c, uint16_t id)
{
    for (struct upstream_query *q = c->inflight; q; q = q->tcp_next)
        if (dg_get16(q->msg) == id)
            return q;
    return NULL;
}

static void tcp_detach(struct upstream_query *q)
{
    struct up_tcp *c = q->tcp;
    if (q->tcp_prev)
        q->tcp_prev->tcp_next = q->tcp_next;
    else
        c->inflight = q->tcp_next;
    if (q->tcp_next)
        q->tcp_next->tcp_prev = q->tcp_prev;
    q->tcp_prev = q->tcp_next = NULL;
    q->tcp = NULL;
    c->n_inflight--;
    if (c->n_inflight == 0) {
        struct timeval tv = {.tv_sec = UP_TCP_IDLE_MS / 1000,
                             .tv_usec = (UP_TCP_IDLE_MS % 1000) * 1000};
        /* If this fails the connection just stays until the server closes it. */
        if (evtimer_add(c->idle, &tv) < 0)
            log_warn("upstream: cannot arm a TCP idle timer");
    }
}

/* ---------------------------------------------------------------- choosing an upstream */

/*
 * Each worker keeps, per upstream, a smoothed answer time (SRTT, as TCP: 7/8 old + 1/8 new) and
 * the failed tries in a row. HEALTH_FAILS failures in a row mark a server down for a backoff
 * (1 s, doubling up to 60 s); when it has passed, one query probes it: an answer brings it
 * back, a failure doubles the backoff. A try goes to the fastest server this query has not
 * tried, counting SRTTs in 2 ms steps so that servers about as fast share the load in turn;
 * one first try in EXPLORE goes to the next server in turn, so that slow or unmeasured
 * servers get measured again. Down servers are used only when every other one was tried.
 */
#define HEALTH_FAILS       3
#define HEALTH_BACKOFF_MIN 1000
#define HEALTH_BACKOFF_MAX 60000
#define SRTT_STEP_US       2000
#define EXPLORE            64

/* The gauges /metrics shows for this worker's view of @p s. */
static void health_publish(const struct up_server *s)
{
    if (!s->u->wm)
        return;
    struct upstream_metrics *m = &s->u->wm->up[s - s->u->srv];
    atomic_store_explicit(&m->srtt_us, s->srtt_us, memory_order_relaxed);
    atomic_store_explicit(&m->down, s->down_until_ms != 0, memory_order_relaxed);
}

static void health_success(struct up_server *s, uint64_t rtt_us)
{
    if (!s)
        return;
    s->srtt_us = s->srtt_us ? (7 * s->srtt_us + rtt_us) / 8 : rtt_us;
    if (s->down_until_ms) {
        log_info("upstream %s answers again: back in use", s->addr->text);
        s->srtt_us = rtt_us; /* its old SRTT holds the timeouts that marked it down */
    }
    s->fails = 0;
    s->down_until_ms = 0;
    s->backoff_ms = 0;
    s->probing = false;
    health_publish(s);
}

/* A try failed: refused at once (@p waited_us 0) or no answer in @p waited_us; @p lying: only
 * answers that did not match came back (from the queried address and port: the connected socket
 * drops any other source), a broken server that is marked down at once. An off-path spoofer
 * could only add to a try that failed anyway. */
static void health_failure(struct up_server *s, uint64_t waited_us, bool lying, bool probe)
{
    if (!s)
        return;
    /* a server that does not answer is at least as slow as the time we waited */
    if (waited_us > s->srtt_us)
        s->srtt_us = waited_us;
    s->fails = lying && s->fails < HEALTH_FAILS ? HEALTH_FAILS : s->fails + 1;
    if (s->down_until_ms) {
        /* Down already: only the probe's verdict moves the schedule (the tries that were in
         * flight when it went down fail too, and must not push it out further). */
        if (probe) {
            s->backoff_ms =
                s->backoff_ms >= HEALTH_BACKOFF_MAX / 2 ? HEALTH_BACKOFF_MAX : 2 * s->backoff_ms;
            s->down_until_ms = dg_now_ms() + s->backoff_ms;
        }
    } else if (s->fails >= HEALTH_FAILS) {
        s->backoff_ms = HEALTH_BACKOFF_MIN;
        s->down_until_ms = dg_now_ms() + s->backoff_ms;
        log_warn("upstream %s: %u failed tries in a row, not used for %u s (then probed)",
                 s->addr->text, s->fails, s->backoff_ms / 1000);
        if (s->u->wm)
            ctr_add(&s->u->wm->up[s - s->u->srv].marked_down, 1);
    }
    health_publish(s);
}

static bool health_up(const struct up_server *s)
{
    return s->down_until_ms == 0;
}

static struct up_server *pick(struct upstream_query *q, uint64_t now)
{
    struct upstream *u = q->u;
    size_t n = u->n_srv;
    uint32_t all = n >= 32 ? UINT32_MAX : (1u << n) - 1;
    if ((q->tried & all) == all)
        q->tried = 0; /* every server had its try: go round again */
    size_t start = u->rr++ % n;
    struct up_server *best = NULL, *probe = NULL, *fallback = NULL;
    uint64_t best_score = UINT64_MAX;
    for (size_t k = 0; k < n; k++) {
        struct up_server *s = &u->srv[(start + k) % n];
        if (q->tried & (1u << (s - u->srv)))
            continue;
        if (!health_up(s)) {
            if (now >= s->down_until_ms && !s->probing && !probe)
                probe = s;
            if (!fallback || s->down_until_ms < fallback->down_until_ms)
                fallback = s;
            continue;
        }
        uint64_t score = s->srtt_us / SRTT_STEP_US;
        if (score < best_score) {
            best = s;
            best_score = score;
        }
    }
    /* One query probes a down server whose time has come, if it leaves a try to spare. */
    struct up_server *s = probe && q->tries + 1 < q->max_tries ? probe : best;
    if (!s)
        s = fallback ? fallback : &u->srv[start];
    else if (s == best && q->tries == 0 && ++u->explore % EXPLORE == 0) {
        /* its own turn, so that every server gets re-measured, not the same one */
        struct up_server *x = &u->srv[(u->explore / EXPLORE) % n];
        if (health_up(x))
            s = x;
    }
    q->probe = s == probe;
    if (q->probe)
        s->probing = true;
    q->tried |= 1u << (s - u->srv);
    return s;
}

/* ---------------------------------------------------------------- query lifecycle */

/* Undo the current try, whatever it is. Idempotent. */
static void query_end_try(struct upstream_query *q)
{
    /* a probe that ends without a verdict (the client left) must not block the next one */
    if (q->probe && q->srv)
        q->srv->probing = false;
    q->probe = false;
    if (q->state == TRY_UDP) {
        event_free(q->udp_ev);
        close(q->udp_fd);
        q->udp_ev = NULL;
        q->udp_fd = -1;
    } else if (q->state == TRY_TCP) {
        tcp_detach(q);
    }
    q->state = TRY_NONE;
}

/* The one place a query is freed. */
static void query_free(struct upstream_query *q)
{
    struct upstream *u = q->u;
    query_end_try(q);
    if (q->prev)
        q->prev->next = q->next;
    else
        u->queries = q->next;
    if (q->next)
        q->next->prev = q->prev;
    u->pending--;
    if (q->timer)
        event_free(q->timer);
    free(q->msg);
    free(q);
}

/* Free the query, then run the callback: the callback may start or cancel other queries. */
static void query_finish(struct upstream_query *q, int status, const uint8_t *ans, size_t len)
{
    upstream_done_cb cb = q->cb;
    void *arg = q->arg;
    if (status == 0)
        q->u->stats.answers++;
    query_free(q);
    cb(arg, status, ans, len);
}

/* @p ans is writable scratch (UDP buffer or TCP input buffer) owned by this module. */
static void query_answer(struct upstream_query *q, uint8_t *ans, size_t len)
{
    uint64_t rtt = metrics_now_us() - q->try_start_us;
    health_success(q->srv, rtt);
    if (up_met(q->u, q->srv))
        metrics_upstream_answer(q->u->wm, (size_t)(q->srv - q->u->srv), rtt);
    dg_put16(ans, q->orig_id);
    query_finish(q, 0, ans, len);
}

/* The current try failed now (not a timeout): go on from the timer, never from here. */
static void query_try_failed(struct upstream_query *q, int err)
{
    struct upstream *u = q->u;
    if (q->srv)
        log_debug("upstream %s: try failed (%d)", q->srv->addr->text, -err);
    /* A try that failed before it was sent (socket, connect) still counts as one, so that
     * errors never exceed queries. */
    struct upstream_metrics *m = up_met(u, q->srv);
    if (m && q->state == TRY_NONE)
        ctr_add(&m->queries, 1);
    /* Our own shortage (descriptors, memory, a full TCP pool) says nothing of the server. */
    bool local =
        err == -EMFILE || err == -ENFILE || err == -ENOMEM || err == -ENOBUFS || err == -EAGAIN;
    if (!local)
        health_failure(q->srv, 0, false, q->probe); /* before query_end_try clears q->probe */
    query_end_try(q);
    u->stats.errors++;
    if (m)
        ctr_add(&m->errors, 1);
    if (err == -ECONNREFUSED)
        q->n_refused++;
    query_timer_set(q, 0);
}

static int try_udp(struct upstream_query *q, struct up_server *s)
{
    struct upstream *u = q->u;
    int err;
    /* A fresh socket per try: the kernel picks a random source port for it, and connect()
     * makes it drop datagrams from any other source and report ICMP errors to us. */
    int fd = socket(s->addr->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (const struct sockaddr *)&s->addr->ss, s->addr->len) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    struct event *ev = event_new(u->base, fd, EV_READ | EV_PERSIST, on_udp_read, q);
    if (!ev) {
        close(fd);
        return -ENOMEM;
    }
    if (event_add(ev, NULL) < 0) {
        err = -ENOMEM;
        goto fail;
    }
    dg_put16(q->msg, up_random_id(u));
    ssize_t n = send(fd, q->msg, q->len, 0);
    if (n < 0 || (size_t)n != q->len) {
        err = n < 0 ? -errno : -EIO;
        goto fail;
    }
    q->udp_fd = fd;
    q->udp_ev = ev;
    q->srv = s;
    q->state = TRY_UDP;
    try_started(q, s);
    return 0;
fail:
    event_free(ev);
    close(fd);
    return err;
}

static int try_tcp(struct upstream_query *q, struct up_server *s)
{
    bool created;
    int err = 0;
    struct up_tcp *c = tcp_get(s, &created, &err);
    if (!c)
        return err;
    if (dg_buf_reserve(&c->out, 2 + q->len) < 0 || event_add(c->wr, NULL) < 0) {
        /* Only a connection made for this query goes: an existing one may be idle on purpose,
         * or in use by a read loop further up the stack. */
        if (created)
            tcp_free(c);
        return -ENOMEM;
    }
    /* IDs must be unique among the connection's in-flight queries (RFC 7766 §7). At most 100
     * of 65536 are taken, so this ends fast. */
    uint16_t id;
    do
        id = up_random_id(q->u);
    while (tcp_find(c, id));
    dg_put16(q->msg, id);
    uint8_t pfx[2];
    dg_put16(pfx, (uint16_t)q->len);
    /* Cannot fail: reserved above. */
    (void)dg_buf_append(&c->out, pfx, 2);
    (void)dg_buf_append(&c->out, q->msg, q->len);

    q->tcp = c;
    q->tcp_prev = NULL;
    q->tcp_next = c->inflight;
    if (c->inflight)
        c->inflight->tcp_prev = q;
    c->inflight = q;
    c->n_inflight++;
    event_del(c->idle);
    q->srv = s;
    q->state = TRY_TCP;
    try_started(q, s);
    return 0;
}

static void query_next_try(struct upstream_query *q)
{
    uint64_t now = dg_now_ms();
    if (q->tries >= q->max_tries || now >= q->deadline_ms) {
        bool refused = q->tries > 0 && q->n_refused == q->tries;
        query_finish(q, refused ? -ECONNREFUSED : -ETIMEDOUT, NULL, 0);
        return;
    }
    struct up_server *s = pick(q, now);
    q->tries++;
    int rc = q->use_tcp ? try_tcp(q, s) : try_udp(q, s);
    if (rc < 0) {
        q->srv = s;
        query_try_failed(q, rc);
        return;
    }
    query_timer_set(q, query_try_ms(q, now));
}

static void on_query_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_query *q = arg;
    if (q->state != TRY_NONE) {
        q->u->stats.timeouts++;
        if (up_met(q->u, q->srv))
            ctr_add(&up_met(q->u, q->srv)->timeouts, 1);
        health_failure(q->srv, metrics_now_us() - q->try_start_us, q->saw_bad, q->probe);
        query_end_try(q);
    }
    query_next_try(q);
}

static void on_udp_read(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_query *q = arg;
    struct upstream *u = q->u;
    for (int i = 0; i < UP_UDP_MAX_READS; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof(from);
        ssize_t n = recvfrom(fd, u->rbuf, UP_RBUF_LEN, 0, (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            /* ECONNREFUSED is the ICMP port unreachable: nobody listens there, waiting for
             * the timer would only burn the budget. */
            query_try_failed(q, -errno);
            return;
        }
        size_t len = (size_t)n;
        /* The connected socket already filters sources; the check costs nothing. */
        if (!up_addr_equal(&from, fromlen, q->srv->addr) ||
            !dns_answer_matches(q->msg, q->len, u->rbuf, len)) {
            u->stats.dropped_mismatch++;
            q->saw_bad = true;
            continue;
        }
        if (dns_is_truncated(u->rbuf, len)) {
            struct up_server *s = q->srv;
            u->stats.tcp_fallbacks++;
            query_end_try(q); /* frees this event: return right after */
            q->use_tcp = true;
            int rc = try_tcp(q, s);
            if (rc < 0) {
                q->srv = s;
                query_try_failed(q, rc);
            } else {
                query_timer_set(q, query_try_ms(q, dg_now_ms()));
            }
            return;
        }
        query_answer(q, u->rbuf, len);
        return;
    }
}

/* Fail every query on the connection over to its next try, then close it. */
static void tcp_fail(struct up_tcp *c, int err)
{
    log_debug("upstream %s: TCP connection closed (%d)", c->srv->addr->text, -err);
    /* query_try_failed() only unlinks and arms a zero timer: no user code runs in this loop. */
    while (c->inflight)
        query_try_failed(c->inflight, err);
    tcp_free(c);
}

static void tcp_handle_frame(struct up_tcp *c, uint8_t *ans, size_t len)
{
    struct upstream *u = c->srv->u;
    struct upstream_query *q = len >= DNS_HEADER_LEN ? tcp_find(c, dg_get16(ans)) : NULL;
    if (!q || !dns_answer_matches(q->msg, q->len, ans, len)) {
        u->stats.dropped_mismatch++;
        return;
    }
    query_answer(q, ans, len);
}

static void on_tcp_read(evutil_socket_t fd, short what, void *arg)
{
    struct up_tcp *c = arg;
    int err = 0;
    bool eof = false;
    if (dg_buf_reserve(&c->in, UP_TCP_READ_CHUNK) < 0) {
        tcp_fail(c, -ENOMEM);
        return;
    }
    ssize_t n = recv(fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n == 0) {
        eof = true;
    } else if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        err = -errno;
        eof = true;
    } else {
        c->in.len += (size_t)n;
    }
    /* Frames complete so far are answered even when the server closes right after them.
     * User callbacks run in here; by the lifetime rules above they cannot free c. */
    size_t off = 0;
    while (c->in.len - off >= 2) {
        size_t flen = dg_get16(c->in.data + off);
        if (c->in.len - off - 2 < flen)
            break;
        tcp_handle_frame(c, c->in.data + off + 2, flen);
        off += 2 + flen;
    }
    dg_buf_consume(&c->in, off);
    if (eof)
        tcp_fail(c, err);
}

static void on_tcp_write(evutil_socket_t fd, short what, void *arg)
{
    struct up_tcp *c = arg;
    if (!c->connected) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr) {
            tcp_fail(c, -soerr);
            return;
        }
        c->connected = true;
    }
    while (c->out.len > 0) {
        /* MSG_NOSIGNAL: a server that went away must not SIGPIPE the whole process. */
        ssize_t n = send(fd, c->out.data, c->out.len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            tcp_fail(c, -errno);
            return;
        }
        dg_buf_consume(&c->out, (size_t)n);
    }
    event_del(c->wr);
}

static void on_tcp_idle(evutil_socket_t fd, short what, void *arg)
{
    struct up_tcp *c = arg;
    assert(c->n_inflight == 0);
    tcp_free(c);
}

/* ---------------------------------------------------------------- public API */

struct upstream *upstream_new(struct event_base *base, const struct config *cfg)
{
    if (!base || !cfg)
        return NULL;
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u)
        goto oom;
    u->base = base;
    u->cfg = cfg;
    u->n_srv = cfg->n_upstream < DG_CONFIG_MAX_LIST ? cfg->n_upstream : DG_CONFIG_MAX_LIST;
    u->srv = calloc(u->n_srv ? u->n_srv : 1, sizeof(*u->srv));
    u->rbuf = malloc(UP_RBUF_LEN);
    if (!u->srv || !u->rbuf)
        goto oom;
    for (size_t i = 0; i < u->n_srv; i++) {
        u->srv[i].u = u;
        u->srv[i].addr = &cfg->upstream[i];
    }
    return u;
oom:
    log_err("upstream: out of memory");
    upstream_free(u);
    return NULL;
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    /* Queries first: they unlink themselves from the connections. */
    while (u->queries)
        query_free(u->queries);
    for (size_t i = 0; u->srv && i < u->n_srv; i++)
        while (u->srv[i].conns)
            tcp_free(u->srv[i].conns);
    free(u->srv);
    free(u->rbuf);
    free(u);
}

struct upstream_query *upstream_query_start(struct upstream *u, const uint8_t *query, size_t len,
                                            upstream_done_cb cb, void *arg)
{
    if (!u || !query || !cb || len < DNS_HEADER_LEN || len > DNS_MAX_MSG || u->n_srv == 0)
        return NULL;
    struct upstream_query *q = calloc(1, sizeof(*q));
    if (!q)
        return NULL;
    q->u = u;
    q->cb = cb;
    q->arg = arg;
    q->udp_fd = -1;
    /* Linked at once so that query_free() is the one cleanup path. */
    q->next = u->queries;
    if (u->queries)
        u->queries->prev = q;
    u->queries = q;
    u->pending++;

    q->msg = malloc(len);
    q->timer = evtimer_new(u->base, on_query_timer, q);
    if (!q->msg || !q->timer) {
        query_free(q);
        return NULL;
    }
    memcpy(q->msg, query, len);
    q->len = len;
    q->orig_id = dg_get16(query);
    /* Enough tries to use the whole budget (a slow upstream gets another chance while time is
     * left), and every upstream at least twice; the cap bounds the work when every upstream
     * refuses at once. */
    unsigned by_budget =
        (u->cfg->query_timeout_ms + u->cfg->upstream_timeout_ms - 1) / u->cfg->upstream_timeout_ms;
    unsigned by_servers = u->n_srv * 2 > 2 ? (unsigned)(u->n_srv * 2) : 2;
    q->max_tries = by_budget > by_servers ? by_budget : by_servers;
    if (q->max_tries > 32)
        q->max_tries = 32;
    uint64_t now = dg_now_ms();
    q->deadline_ms = now + u->cfg->query_timeout_ms;
    u->stats.queries++;

    /* First try inline, to save a loop iteration; a failure here goes through the zero timer
     * like any other, so the callback never runs from this call. */
    struct up_server *s = pick(q, now);
    q->tries = 1;
    int rc = try_udp(q, s);
    if (rc < 0) {
        q->srv = s;
        query_try_failed(q, rc);
    } else {
        query_timer_set(q, query_try_ms(q, now));
    }
    return q;
}

void upstream_query_cancel(struct upstream_query *q)
{
    if (q)
        query_free(q);
}

const struct upstream_stats *upstream_get_stats(const struct upstream *u)
{
    return &u->stats;
}

size_t upstream_pending(const struct upstream *u)
{
    return u->pending;
}
