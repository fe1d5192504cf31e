/*
 * upstream.c — non-blocking forwarding of DNS queries to upstream resolvers.
 *
 * Structure (one tree per worker; nothing here is shared between threads):
 *
 *   struct upstream              one per worker event_base. Owns the server array, the list of
 *    │                           pending queries, the UDP receive buffers (recvmmsg), the ID
 *    │                           pool and the table of UDP queries in flight by ID.
 *    ├─ struct up_server [n]     one per configured upstream address. Owns its UDP sockets and
 *    │   │                       TCP connections.
 *    │   ├─ struct up_udp        one connected UDP socket (UP_UDP_SOCKS per server, taken in
 *    │   │                       turn, each renewed after UP_UDP_SOCK_USES queries or
 *    │   │                       UP_UDP_SOCK_MS, so source ports keep changing). Links the
 *    │   │                       queries sent on it; a retired socket stays open, reading,
 *    │   │                       until its last query ends.
 *    │   └─ struct up_tcp        one kept-open TCP connection (RFC 7766 pipelining): its fd, read,
 *    │                           write and idle events, and its in/out byte buffers. It does NOT
 *    │                           own the queries waiting on it; it links them (in-flight list) so
 *    │                           that it can find an answer's query by ID and fail them all over
 *    │                           to their next try when the connection dies.
 *    └─ struct upstream_query    one per upstream_query_start(). Owns its copy of the message
 *                                (the ID field holds the current try's random ID) and its timer.
 *                                During a UDP try it sits in one socket's in-flight list and in
 *                                the ID table (IDs are unique among a worker's UDP queries);
 *                                during a TCP try in exactly one connection's in-flight list.
 *
 * A query is in one of three try states: TRY_UDP (linked on a socket), TRY_TCP (linked on a
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
 *    (unlinks from the UDP socket or the TCP connection) and frees the timer, so
 *    event_del happens exactly once, inside event_free(); a query of the common size
 *    (UP_POOL_QLEN) instead goes back to the worker's pool (u->qpool) with its timer
 *    deleted, not freed: its next user is a query at the same address, which is the timer's
 *    argument, so the timer is reused as it is (an allocation and a free fewer per query).
 *  - A UDP socket is freed when retired and its last query ends, but never while
 *    on_udp_read() walks it (user callbacks run from there): then on_udp_read() frees it.
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
 * received messages dropped (wrong source, ID or question, garbage, late answers: on UDP they
 * now reach the shared socket instead of a closed one).
 *
 * Source ports: a socket per query (what unbound does) cost ~8 syscalls per query; the pool
 * costs one sendmmsg() per loop turn and socket (up to UP_UDP_BATCH queries) and one recvmmsg()
 * per batch of answers. The price: an off-path
 * spoofer faces at most UP_UDP_SOCKS open ports per server at any time instead of one per
 * query in flight (16-bit ID plus one of 8 random ports, renewed every 1024 queries / 30 s).
 *
 * Left out for later: DoT, EDNS/TC-based downgrade heuristics, retrying on SERVFAIL/REFUSED
 * rcodes (the answer is delivered as-is).
 */
/* recvmmsg() */
#define _GNU_SOURCE

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
#include "dohgate/dnswire.h"
#include "dohgate/list.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"
#include "dohgate/updoh.h"
#include "dohgate/uptls.h"
#include "dohgate/util.h"

/* Pipelining depth per TCP connection; unbound and Knot use similar bounds. */
#define UP_TCP_MAX_INFLIGHT 100
/* Connections per upstream per worker; beyond that a query fails over to the next try. */
#define UP_TCP_MAX_CONNS 4
/* A connection with no query in flight for this long is closed (RFC 7766 §6.2.3 leaves the
 * value to us; servers usually close sooner anyway). */
#define UP_TCP_IDLE_MS 10000
/* Room a try may add to the client's query: an OPT (11), keepalive (4), padding (4 + up to
 * 127). */
#define UP_QUERY_ROOM (11 + 4 + 4 + DNS_PAD_BLOCK_QUERY)
/* Queries up to this length take their block from the worker's pool (dg_pool, util.h): a DoH
 * query is ~30-100 bytes, 128-byte padded ones included. Longer ones are malloc'ed. The pool
 * keeps at most UP_POOL_KEEP blocks (~0.9 KB each: ~220 KiB per upstream set and worker after
 * a burst of that many queries in flight). */
#define UP_POOL_QLEN 256
#define UP_POOL_KEEP 256
/* Unsent bytes above which a connection takes no new queries (a server that stopped reading). */
#define UP_TCP_MAX_OUT (256 * 1024)
/* recv() size for TCP; the input buffer holds at most one partial frame plus this. */
#define UP_TCP_READ_CHUNK 16384
/* Connected UDP sockets per upstream per worker, each bound by the kernel to its own random
 * port; queries take them in turn. */
#define UP_UDP_SOCKS 8
/* A socket is retired (a fresh one, with a new random port, takes its place) after this many
 * queries or this long, whichever comes first: the source port an off-path spoofer has to find
 * changes all the time, as with a socket per query, at a fraction of the cost. */
#define UP_UDP_SOCK_USES 1024
#define UP_UDP_SOCK_MS   30000
/* Datagrams per recvmmsg() call, and calls per readable event, so that a flood of junk cannot
 * starve the loop. */
#define UP_UDP_BATCH     32
#define UP_UDP_MAX_CALLS 4
/* IDs of timed-out tries remembered per socket, so that their late answers are not taken for
 * forgeries (a late answer beyond these counts as one: after 64 timeouts in a row on one socket
 * the server is failing anyway). */
#define UP_UDP_LATE 64
/* Draws of a random ID before a query gives up (the table is nearly full: max-upstream-queries
 * close to 65,536 UDP queries in flight in one worker); the try then fails as a local error. */
#define UP_ID_DRAWS 64
/* Random IDs fetched per arc4random_buf() call (glibc 2.36 does one getrandom per call: 64 IDs
 * per call made it ~1,000 syscalls per second at 70k misses/s). */
#define UP_ID_POOL 1024
/* Largest UDP payload: one receive buffer of this size per batch slot (untouched pages cost
 * no memory). */
#define UP_RBUF_LEN 65536
/* Query IDs are unique among a worker's UDP queries in flight: an answer finds its query by
 * ID in a 65536-entry table. */
#define UP_IDS 65536

/* TRY_WAIT: the server's connections are all full (UP_TCP_MAX_CONNS x UP_TCP_MAX_INFLIGHT, or
 * HTTP/2 streams); the query waits on the server's queue for a place, within its try's time. */
enum up_try_state { TRY_NONE = 0, TRY_UDP, TRY_TCP, TRY_WAIT };

struct up_tcp;

/* One connected UDP socket; queries sent on it link themselves on its in-flight list. */
struct up_udp {
    struct up_server *srv;
    int fd;
    struct event *ev;
    unsigned uses; /* queries sent on it */
    uint64_t created_ms;
    struct dg_list inflight; /* its queries, via upstream_query.try_node */
    size_t n_inflight;
    /* Datagrams that matched no query in flight on this socket, late answers excepted. The
     * socket is connected, so they came from the server's address and port: a try that saw
     * this move and got no answer was lied to (see health_failure()). */
    uint64_t bad;
    uint16_t late[UP_UDP_LATE]; /* IDs of the last tries that timed out here */
    unsigned n_late;
    bool retired; /* out of s->udp[]: takes no query, freed when its last one ends */
    bool reading; /* on_udp_read() or udp_flush() is walking it: not freed until it returns */
    /* Queries of this loop turn not sent yet: one sendmmsg() for all of them (on_flush). They
     * are in flight already (linked, ID taken). */
    struct upstream_query *sendq[UP_UDP_BATCH];
    unsigned n_send;
    bool dirty;                   /* on u->dirty */
    struct dg_lnode dirty_node;   /* on u->dirty */
    struct dg_lnode retired_node; /* on srv->retired */
};

struct up_server {
    struct upstream *u;
    const struct dg_upstream *up;
    const struct dg_addr *addr;
    /* TLS: the newest session the server issued, offered by the next connection (owned) */
    SSL_SESSION *session;
    /* Connections that failed before their handshake was done, in a row, and when the next
     * may be tried (backoff: a server that refuses TLS is not hammered by every query). */
    unsigned conn_fails;
    uint64_t connect_after_ms;
    /* The last connection failure logged, and when: one line per reason, not per query. */
    char why[200];
    uint64_t why_ms;
    /* Queries waiting for a place on its connections (TRY_WAIT, via try_node; oldest at the
     * tail), and the event that sends them once one frees (activated, never called: a place
     * frees inside other queries' callbacks and connection teardowns). */
    struct dg_list waiting;
    size_t n_waiting;
    struct event *drain_ev;
    struct dg_list conns; /* its TCP connections, via up_tcp.node */
    size_t n_conns;
    struct up_udp *udp[UP_UDP_SOCKS]; /* NULL slots are filled on demand */
    size_t udp_rr;
    struct dg_list retired; /* via up_udp.retired_node */
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
    struct uptls_conn *tls; /* DoT: the TLS connection (fd, rd and wr unused) */
    struct updoh_conn *h2;  /* DoH: the HTTP/2 connection (fd, rd, wr, in and out unused) */
    unsigned idle_ms;       /* closed after this long without a query (EDNS keepalive may lower) */
    uint64_t answered_us;   /* when it last delivered an answer */
    bool ka_read;           /* its first answer was read for an EDNS keepalive */
    bool stale; /* a try on it timed out with no answer on it since that try was sent (a hung
                   server, a flow dropped on the way): no new query; closed once empty */
    struct event *rd, *wr, *idle;
    struct dg_buf in, out;
    struct dg_list inflight; /* its queries, via upstream_query.try_node */
    size_t n_inflight;
    struct dg_lnode node; /* on srv->conns */
};

struct upstream_query {
    struct upstream *u;
    upstream_done_cb cb;
    void *arg;
    uint8_t *msg; /* the current try's copy of the query; bytes 0-1 hold its ID; q->cap bytes */
    const uint8_t *orig; /* the query as given (len0 bytes): each try starts from it */
    size_t len0, cap;
    bool opt_added; /* this try's message got an OPT the client did not send (to be padded): the
                       answer's OPT goes before it is delivered */
    size_t len;
    uint16_t orig_id;
    enum up_try_state state;
    bool use_tcp; /* set after a TC=1 answer: the answer is large whoever sends it */
    unsigned tries, max_tries, n_refused;
    unsigned resends;  /* tries given back after a connection closed under them (query_resend) */
    uint32_t tried;    /* servers tried for this query (bit i: srv[i]) */
    bool probe;        /* the current try probes a down server */
    bool saw_bad;      /* the current UDP try received answers that did not match */
    uint64_t bad_mark; /* its socket's bad count when the try started */
    bool send_pending; /* in its socket's sendq */
    struct up_server *srv; /* server of the current try (when state != TRY_NONE) */
    uint64_t deadline_ms;
    struct event *timer;
    struct up_udp *udp;
    /* on the in-flight list of its UDP socket or TCP connection: a query is on one at most */
    struct dg_lnode try_node;
    struct up_tcp *tcp;
    int32_t sid;           /* DoH: the try's stream on tcp->h2 (0: none open) */
    struct dg_lnode node;  /* on upstream.queries */
    uint64_t try_start_us; /* for the SRTT and the latency metric */
    bool pooled;           /* the block is from u->qpool (len0 <= UP_POOL_QLEN) */
    uint8_t msgbuf[];      /* orig, then msg */
};

/* The query whose try_node is @p n. */
static struct upstream_query *try_query(struct dg_lnode *n)
{
    return dg_list_entry(n, struct upstream_query, try_node);
}

struct upstream {
    struct event_base *base;
    const struct config *cfg;
    struct up_server *srv;
    size_t n_srv;
    size_t rr;
    struct dg_list queries; /* every query, via upstream_query.node */
    size_t pending;
    struct upstream_stats stats;
    uint16_t ids[UP_ID_POOL];
    size_t n_ids;
    uint8_t *rbuf; /* UDP receive buffers, UP_UDP_BATCH x UP_RBUF_LEN bytes */
    struct mmsghdr mm[UP_UDP_BATCH];
    struct iovec iov[UP_UDP_BATCH];
    struct upstream_query **by_id;    /* UP_IDS entries: UDP queries in flight by current ID */
    struct mmsghdr smm[UP_UDP_BATCH]; /* sendmmsg() scratch (not mm: a flush can run while */
    struct iovec siov[UP_UDP_BATCH];  /* on_udp_read() is using that) */
    struct dg_list dirty;             /* sockets with queries to send, via dirty_node */
    struct event *flush_ev;           /* activated when the first one is queued */
    const struct timeval *try_tv;     /* upstream-timeout as a libevent common timeout */
    const struct dg_observer *obs;    /* event counting (metrics); may be NULL */
    unsigned obs_base;                /* observer index of srv[0] (upstream_new_servers()) */
    struct uptls_ctx *tls;            /* TLS client context (not owned); NULL: no TLS upstream */
    size_t explore;                   /* first tries counted for the 1-in-EXPLORE re-measuring */
    struct dg_pool qpool;             /* blocks of queries up to UP_POOL_QLEN, timers kept */
};

/* Report @p ev of server @p s (none: not reported) to the observer. */
static void up_event(const struct upstream *u, const struct up_server *s, enum dg_event ev,
                     uint64_t value)
{
    if (s)
        dg_observe(u->obs, ev, u->obs_base + (unsigned)(s - u->srv), value);
}

/* A try went out to @p s. */
static void try_started(struct upstream_query *q, struct up_server *s)
{
    up_event(q->u, s, DG_EV_UP_QUERY, 1);
    q->try_start_us = dg_now_us();
    q->saw_bad = false;
}

static void health_publish(const struct up_server *s);

void upstream_set_observer(struct upstream *u, const struct dg_observer *obs)
{
    u->obs = obs;
    /* A new set starts with fresh health: say so, so that the gauges of these indexes stop
     * showing what an older set last reported (the previous configuration's, where another
     * server, or another zone's, may have had the same index). */
    for (size_t i = 0; i < u->n_srv; i++)
        health_publish(&u->srv[i]);
}

void upstream_set_tls(struct upstream *u, struct uptls_ctx *tls)
{
    u->tls = tls;
}

static void on_query_timer(evutil_socket_t fd, short what, void *arg);
static void on_udp_read(evutil_socket_t fd, short what, void *arg);
static void query_try_failed(struct upstream_query *q, int err);
static void drain_soon(struct up_server *s);
static void on_drain(evutil_socket_t fd, short what, void *arg);
static void on_tcp_read(evutil_socket_t fd, short what, void *arg);
static void on_tcp_write(evutil_socket_t fd, short what, void *arg);
static void on_tcp_idle(evutil_socket_t fd, short what, void *arg);
static const struct uptls_cbs tcp_tls_cbs;
static const struct updoh_cbs tcp_doh_cbs;
static void query_answer(struct upstream_query *q, uint8_t *ans, size_t len);
static void health_failure(struct up_server *s, uint64_t waited_us, bool lying, bool probe);

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

/* A timer that cannot be added would leave the query hanging forever. event_active() does not
 * allocate, so fall back to it: the query then sees an immediate timeout, which still makes
 * progress and still never runs the callback synchronously. */
static void query_timer_set(struct upstream_query *q, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    const struct timeval *t =
        ms == q->u->cfg->upstream_timeout_ms && q->u->try_tv ? q->u->try_tv : &tv;
    if (evtimer_add(q->timer, t) < 0) {
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
    assert(c->inflight.head == NULL && c->n_inflight == 0);
    dg_list_unlink(&s->conns, &c->node);
    s->n_conns--;
    drain_soon(s);
    if (c->rd)
        event_free(c->rd);
    if (c->wr)
        event_free(c->wr);
    if (c->idle)
        event_free(c->idle);
    uptls_conn_free(c->tls); /* safe inside its own callbacks */
    updoh_conn_free(c->h2);  /* safe inside its closed() */
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
    dg_list_push_front(&s->conns, &c->node);
    s->n_conns++;
    up_event(u, s, DG_EV_UP_CONNECT, 1);

    if (s->up->proto != DG_UP_DNS) {
        c->idle = evtimer_new(u->base, on_tcp_idle, c);
        if (!u->tls || !c->idle) {
            *err = -ENOMEM;
            goto fail;
        }
        /* connect + handshake within one try's time: a server that stalls the handshake
         * fails the queries waiting on it no later than their own timers would */
        unsigned hs_ms = u->cfg->upstream_timeout_ms;
        if (s->up->proto == DG_UP_TLS)
            c->tls = uptls_conn_new(u->tls, u->base, s->up, NULL, &s->session, hs_ms, &tcp_tls_cbs,
                                    c, err);
        else
            c->h2 =
                updoh_conn_new(u->tls, u->base, s->up, &s->session, hs_ms, &tcp_doh_cbs, c, err);
        if (!c->tls && !c->h2)
            goto fail;
        return c;
    }
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
    for (struct dg_lnode *n = s->conns.head; n; n = n->next) {
        struct up_tcp *c = dg_list_entry(n, struct up_tcp, node);
        if (c->stale)
            continue;
        struct uptls_conn *t = c->h2 ? updoh_tls(c->h2) : c->tls;
        size_t out = t ? uptls_conn_pending(t) : c->out.len;
        if (c->n_inflight < UP_TCP_MAX_INFLIGHT && out < UP_TCP_MAX_OUT &&
            (!c->h2 || updoh_can_take(c->h2))) {
            if (t && uptls_conn_ready(t))
                up_event(s->u, s, DG_EV_UP_REUSED, 1);
            return c;
        }
    }
    if (s->n_conns >= UP_TCP_MAX_CONNS) {
        *err = -EAGAIN;
        return NULL;
    }
    if (s->connect_after_ms && dg_now_ms() < s->connect_after_ms) {
        /* backing off after failed connections: this try fails at once, without a socket */
        *err = -ENOTCONN;
        return NULL;
    }
    struct up_tcp *c = tcp_new(s, err);
    *created = c != NULL;
    return c;
}

static struct upstream_query *tcp_find(const struct up_tcp *c, uint16_t id)
{
    for (struct dg_lnode *n = c->inflight.head; n; n = n->next) {
        struct upstream_query *q = try_query(n);
        if (dg_get16(q->msg) == id)
            return q;
    }
    return NULL;
}

static void tcp_detach(struct upstream_query *q)
{
    struct up_tcp *c = q->tcp;
    if (c->h2 && q->sid) {
        updoh_cancel(c->h2, q->sid); /* RST_STREAM: the server may stop working on it */
        q->sid = 0;
    }
    dg_list_unlink(&c->inflight, &q->try_node);
    q->tcp = NULL;
    c->n_inflight--;
    drain_soon(c->srv);
    if (c->n_inflight == 0) {
        unsigned ms = c->stale ? 0 : c->idle_ms ? c->idle_ms : UP_TCP_IDLE_MS;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        /* If this fails the connection just stays until the server closes it. */
        if (evtimer_add(c->idle, &tv) < 0)
            log_warn("upstream: cannot arm a TCP idle timer");
    }
}

/* ---------------------------------------------------------------- UDP sockets */

static void udp_free(struct up_udp *k)
{
    assert(k->inflight.head == NULL && k->n_inflight == 0);
    struct up_server *s = k->srv;
    if (k->retired) {
        dg_list_unlink(&s->retired, &k->retired_node);
    } else {
        for (size_t i = 0; i < UP_UDP_SOCKS; i++)
            if (s->udp[i] == k)
                s->udp[i] = NULL;
    }
    if (k->dirty)
        dg_list_unlink(&s->u->dirty, &k->dirty_node);
    if (k->ev)
        event_free(k->ev);
    if (k->fd >= 0)
        close(k->fd);
    free(k);
}

/* Take @p k out of use: its place is refilled by a fresh socket; it stays open, reading, for
 * the answers of its queries still in flight. */
static void udp_retire(struct up_udp *k)
{
    struct up_server *s = k->srv;
    for (size_t i = 0; i < UP_UDP_SOCKS; i++)
        if (s->udp[i] == k)
            s->udp[i] = NULL;
    k->retired = true;
    dg_list_push_front(&s->retired, &k->retired_node);
    if (k->n_inflight == 0 && !k->reading)
        udp_free(k);
}

static struct up_udp *udp_new(struct up_server *s, int *err)
{
    struct up_udp *k = calloc(1, sizeof(*k));
    if (!k) {
        *err = -ENOMEM;
        return NULL;
    }
    k->srv = s;
    k->created_ms = dg_now_ms();
    /* The kernel picks a random source port at connect(); connect() also makes the socket
     * drop datagrams from any other source and report ICMP errors to us. */
    k->fd = socket(s->addr->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        *err = -errno;
        free(k);
        return NULL;
    }
    if (connect(k->fd, (const struct sockaddr *)&s->addr->ss, s->addr->len) < 0) {
        *err = -errno;
        goto fail;
    }
    k->ev = event_new(s->u->base, k->fd, EV_READ | EV_PERSIST, on_udp_read, k);
    if (!k->ev || event_add(k->ev, NULL) < 0) {
        *err = -ENOMEM;
        goto fail;
    }
    return k;
fail:
    if (k->ev)
        event_free(k->ev);
    close(k->fd);
    free(k);
    return NULL;
}

/* The socket in turn for @p s, opened (or renewed, when old) on demand. The turn moves on
 * after each flush (on_flush), so the queries of one loop turn share a socket and a
 * sendmmsg(), and the next turn's go out from another port. */
static struct up_udp *udp_get(struct up_server *s, int *err)
{
    size_t slot = s->udp_rr % UP_UDP_SOCKS;
    struct up_udp *k = s->udp[slot];
    if (k && dg_now_ms() - k->created_ms >= UP_UDP_SOCK_MS) {
        udp_retire(k);
        k = NULL;
    }
    if (!k) {
        k = udp_new(s, err);
        s->udp[slot] = k;
    }
    return k;
}

static void udp_detach(struct upstream_query *q)
{
    struct up_udp *k = q->udp;
    dg_list_unlink(&k->inflight, &q->try_node);
    q->udp = NULL;
    q->u->by_id[dg_get16(q->msg)] = NULL;
    if (q->send_pending) {
        unsigned i = 0;
        while (k->sendq[i] != q)
            i++;
        memmove(&k->sendq[i], &k->sendq[i + 1], (k->n_send - i - 1) * sizeof(k->sendq[0]));
        k->n_send--;
        q->send_pending = false;
    }
    k->n_inflight--;
    if (k->retired && k->n_inflight == 0 && !k->reading)
        udp_free(k);
}

/* Send @p k's queued queries with as few sendmmsg() calls as the kernel allows. A query whose
 * datagram cannot be sent fails its try (a zero timer: no user code runs from here). */
static void udp_flush(struct up_udp *k)
{
    struct upstream *u = k->srv->u;
    struct upstream_query *batch[UP_UDP_BATCH];
    unsigned n = k->n_send;
    for (unsigned i = 0; i < n; i++) {
        struct upstream_query *q = k->sendq[i];
        batch[i] = q;
        q->send_pending = false;
        u->siov[i] = (struct iovec){q->msg, q->len};
        u->smm[i].msg_hdr = (struct msghdr){.msg_iov = &u->siov[i], .msg_iovlen = 1};
    }
    /* out of the queue first: failing a query detaches it */
    k->n_send = 0;
    bool outer = k->reading; /* on_udp_read() may be below us (a callback started a query) */
    k->reading = true;
    unsigned sent = 0;
    while (sent < n) {
        int r = sendmmsg(k->fd, u->smm + sent, n - sent, 0);
        if (r > 0) {
            sent += (unsigned)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        /* the first unsent datagram failed; go on with the rest (ECONNREFUSED here is an
         * earlier ICMP error: the same server) */
        query_try_failed(batch[sent], r < 0 ? -errno : -EIO);
        sent++;
    }
    k->reading = outer;
    if (!outer && k->retired && k->n_inflight == 0)
        udp_free(k);
}

/* End of the loop turn's queries: every socket with some sends them, and its server's next
 * queries go to its next socket. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct upstream *u = arg;
    while (u->dirty.head) {
        struct up_udp *k = dg_list_entry(u->dirty.head, struct up_udp, dirty_node);
        dg_list_unlink(&u->dirty, &k->dirty_node);
        k->dirty = false;
        if (!k->retired)
            k->srv->udp_rr++;
        udp_flush(k);
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

/* This worker's view of @p s changed (the SRTT and up/down gauges of /metrics). */
static void health_publish(const struct up_server *s)
{
    up_event(s->u, s, DG_EV_UP_HEALTH, DG_UP_HEALTH(s->srtt_us, s->down_until_ms != 0));
}

static void health_success(struct up_server *s, uint64_t rtt_us)
{
    if (!s)
        return;
    s->srtt_us = s->srtt_us ? (7 * s->srtt_us + rtt_us) / 8 : rtt_us;
    if (s->down_until_ms) {
        log_info("upstream %s answers again: back in use", s->up->text);
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
                 s->up->text, s->fails, s->backoff_ms / 1000);
        up_event(s->u, s, DG_EV_UP_MARKED_DOWN, 1);
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
        udp_detach(q);
    } else if (q->state == TRY_TCP) {
        tcp_detach(q);
    } else if (q->state == TRY_WAIT) {
        dg_list_unlink(&q->srv->waiting, &q->try_node);
        q->srv->n_waiting--;
    }
    q->state = TRY_NONE;
}

/* The one place a query is freed. */
static void query_free(struct upstream_query *q)
{
    struct upstream *u = q->u;
    query_end_try(q);
    dg_list_unlink(&u->queries, &q->node);
    u->pending--;
    if (q->pooled && u->qpool.nfree < u->qpool.max_keep) {
        /* kept with its block: the block's next query is at this address, the timer's arg
         * (a full pool would free the block, and the timer with it must go too: below) */
        if (q->timer)
            event_del(q->timer);
        dg_pool_put(&u->qpool, q);
        return;
    }
    if (q->timer)
        event_free(q->timer);
    free(q);
}

/* dg_pool_drain()'s: a kept block's timer (the block's first bytes are the pool's link; the
 * timer field is intact). */
static void query_block_fini(void *blk)
{
    struct upstream_query *q = blk;
    if (q->timer)
        event_free(q->timer);
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
    uint64_t rtt = dg_now_us() - q->try_start_us;
    health_success(q->srv, rtt);
    up_event(q->u, q->srv, DG_EV_UP_ANSWER, rtt);
    dg_put16(ans, q->orig_id);
    /* the client sent no EDNS: its answer has none either (RFC 6891 §7); an answer whose OPT
     * cannot be cut out safely goes as it is */
    if (q->opt_added)
        (void)dns_remove_opt(ans, &len);
    query_finish(q, 0, ans, len);
}

/* The current try failed now (not a timeout): go on from the timer, never from here. */
static void query_try_failed(struct upstream_query *q, int err)
{
    struct upstream *u = q->u;
    if (q->srv)
        log_debug("upstream %s: try failed (%d)", q->srv->up->text, -err);
    /* A try that failed before it was sent (socket, connect) still counts as one, so that
     * errors never exceed queries. */
    if (q->state == TRY_NONE)
        up_event(u, q->srv, DG_EV_UP_QUERY, 1);
    /* Our own shortage (descriptors, memory, a full TCP pool) says nothing of the server. */
    bool local =
        err == -EMFILE || err == -ENFILE || err == -ENOMEM || err == -ENOBUFS || err == -EAGAIN;
    if (!local)
        health_failure(q->srv, 0, false, q->probe); /* before query_end_try clears q->probe */
    query_end_try(q);
    u->stats.errors++;
    up_event(u, q->srv, DG_EV_UP_ERROR, 1);
    if (err == -ECONNREFUSED)
        q->n_refused++;
    query_timer_set(q, 0);
}

static int try_udp(struct upstream_query *q, struct up_server *s)
{
    struct upstream *u = q->u;
    int err = 0;
    struct up_udp *k = udp_get(s, &err);
    if (k && k->n_send == UP_UDP_BATCH) {
        s->udp_rr++; /* this one's batch is full: the next socket */
        k = udp_get(s, &err);
        if (k && k->n_send == UP_UDP_BATCH) {
            /* a busy turn went round all of them: send this batch now (a send that fails
             * only fails that query's try); a retired socket may go, so ask again */
            udp_flush(k);
            k = udp_get(s, &err);
        }
    }
    if (!k)
        return err;
    /* IDs unique among this worker's UDP queries: at most max-upstream-queries of 65536 are
     * taken, so this ends fast. */
    uint16_t id;
    unsigned draws = 0;
    do {
        if (++draws > UP_ID_DRAWS)
            return -EAGAIN;
        id = up_random_id(u);
    } while (u->by_id[id]);
    dg_put16(q->msg, id);
    /* Queued for this turn's sendmmsg(); sent at once only when every batch is full or the
     * flush event is missing. */
    bool queue = k->n_send < UP_UDP_BATCH && u->flush_ev;
    if (!queue) {
        ssize_t n = send(k->fd, q->msg, q->len, 0);
        if (n < 0 || (size_t)n != q->len)
            return n < 0 ? -errno : -EIO; /* ECONNREFUSED: an earlier ICMP error, same server */
    }
    u->by_id[id] = q;
    q->udp = k;
    dg_list_push_front(&k->inflight, &q->try_node);
    k->n_inflight++;
    q->bad_mark = k->bad;
    if (queue) {
        k->sendq[k->n_send++] = q;
        q->send_pending = true;
        if (!k->dirty) {
            k->dirty = true;
            dg_list_push_front(&u->dirty, &k->dirty_node);
            event_active(u->flush_ev, EV_WRITE, 1); /* runs later in this loop turn */
        }
    }
    if (++k->uses >= UP_UDP_SOCK_USES)
        udp_retire(k);
    q->srv = s;
    q->state = TRY_UDP;
    try_started(q, s);
    return 0;
}

/* Send @p q on @p c (made for it when @p created). */
static int tcp_send(struct upstream_query *q, struct up_server *s, struct up_tcp *c, bool created)
{
    if (c->h2) {
        /* RFC 8484 §4.1: ID 0 (the stream tells the answers apart) */
        dg_put16(q->msg, 0);
        int32_t sid = updoh_submit(c->h2, q->msg, q->len, q);
        if (sid < 0) {
            if (created)
                tcp_free(c);
            return sid;
        }
        q->sid = sid;
        goto linked;
    }
    /* Only a connection made for this query goes on failure: an existing one may be idle on
     * purpose, or in use by a read loop further up the stack. */
    if (!c->tls && (dg_buf_reserve(&c->out, 2 + q->len) < 0 || event_add(c->wr, NULL) < 0)) {
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
    if (c->tls) {
        /* queued (sent once the handshake is done, batched per loop turn) */
        if (uptls_conn_write(c->tls, pfx, 2) < 0 || uptls_conn_write(c->tls, q->msg, q->len) < 0) {
            if (created)
                tcp_free(c);
            return -ENOMEM;
        }
    } else {
        /* cannot fail: reserved above */
        (void)dg_buf_append(&c->out, pfx, 2);
        (void)dg_buf_append(&c->out, q->msg, q->len);
    }
linked:
    q->tcp = c;
    dg_list_push_front(&c->inflight, &q->try_node);
    c->n_inflight++;
    event_del(c->idle);
    q->srv = s;
    q->state = TRY_TCP;
    try_started(q, s);
    return 0;
}

static int try_tcp(struct upstream_query *q, struct up_server *s)
{
    bool created;
    int err = 0;
    struct up_tcp *c = tcp_get(s, &created, &err);
    if (c)
        return tcp_send(q, s, c, created);
    /* (queries in flight are bounded by max-upstream-queries: so are those waiting) */
    if (err == -EAGAIN && s->drain_ev) {
        /* every connection is full: wait for a place instead of failing at once (a burst
         * beyond what the pool carries must not turn into SERVFAILs) */
        dg_list_push_front(&s->waiting, &q->try_node);
        s->n_waiting++;
        q->srv = s;
        q->state = TRY_WAIT;
        return 0;
    }
    return err;
}

/* A place may have freed on @p s's connections: send what waits, oldest first, while they take
 * it. Runs from its own event. */
static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct up_server *s = arg;
    while (s->n_waiting) {
        bool created;
        int err = 0;
        struct up_tcp *c = tcp_get(s, &created, &err);
        if (!c)
            return; /* still full, or backing off: the next place (or the try's timer) */
        struct upstream_query *q = try_query(s->waiting.tail);
        dg_list_unlink(&s->waiting, &q->try_node);
        s->n_waiting--;
        q->state = TRY_NONE;
        int rc = tcp_send(q, s, c, created);
        if (rc < 0) {
            q->srv = s;
            query_try_failed(q, rc); /* a zero timer: no user code from here */
        }
    }
}

static void drain_soon(struct up_server *s)
{
    if (s->n_waiting && s->drain_ev)
        event_active(s->drain_ev, EV_TIMEOUT, 1);
}

/* The message of a try to @p s: what the client sent (the resolver removed the options of its
 * hop: ECS, padding, keepalive), as it is for plain DNS; padded to 128-byte blocks for an
 * encrypted upstream (RFC 8467 §4.1), with an empty edns-tcp-keepalive for DoT (RFC 7828: the
 * server then says how long it keeps the connection). Every edit adds bytes, so a length other
 * than the client's says an earlier encrypted try left its edits to undo. */
static void try_message(struct upstream_query *q, const struct up_server *s)
{
    if (q->len != q->len0) {
        memcpy(q->msg, q->orig, q->len0);
        q->len = q->len0;
    }
    q->opt_added = false;
    if (s->up->proto == DG_UP_DNS)
        return;
    /* Padding needs EDNS: a query without gets an OPT for the encrypted leg (1232 bytes, the
     * DNS flag day's size; the transport is a stream anyway), removed again from the answer,
     * so that the client gets what it asked for and its query's size is hidden all the same. */
    q->opt_added = dns_add_opt(q->msg, &q->len, q->cap, 1232) == 0;
    if (s->up->proto == DG_UP_TLS)
        (void)dns_add_option(q->msg, &q->len, q->cap, DNS_EDNS_KEEPALIVE, NULL, 0);
    (void)dns_pad(q->msg, &q->len, q->cap, DNS_PAD_BLOCK_QUERY);
}

/* A try to @p s by its transport: DoT always over its connections; plain DNS over UDP
 * until an answer came back truncated. */
static int try_server(struct upstream_query *q, struct up_server *s)
{
    try_message(q, s);
    if (s->up->proto != DG_UP_DNS || q->use_tcp)
        return try_tcp(q, s);
    return try_udp(q, s);
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
    int rc = try_server(q, s);
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
    if (q->state == TRY_WAIT) {
        /* never sent: our pool was full, which says nothing of the server's health */
        query_end_try(q);
    } else if (q->state != TRY_NONE) {
        if (q->state == TRY_TCP && q->tcp->answered_us < q->try_start_us)
            q->tcp->stale = true; /* nothing came back on it since: replace it */
        q->u->stats.timeouts++;
        up_event(q->u, q->srv, DG_EV_UP_TIMEOUT, 1);
        bool lied = q->saw_bad;
        if (q->state == TRY_UDP) {
            struct up_udp *k = q->udp;
            lied = lied || k->bad != q->bad_mark;
            k->late[k->n_late++ % UP_UDP_LATE] = dg_get16(q->msg);
        }
        health_failure(q->srv, dg_now_us() - q->try_start_us, lied, q->probe);
        query_end_try(q);
    }
    query_next_try(q);
}

/* One datagram from @p k's server. @p ans is scratch owned by this module. */
static void udp_handle(struct up_udp *k, uint8_t *ans, size_t len)
{
    struct upstream *u = k->srv->u;
    struct upstream_query *q = len >= DNS_HEADER_LEN ? u->by_id[dg_get16(ans)] : NULL;
    /* No query by that ID on this socket: late (its try timed out), or a lie. */
    if (!q || q->udp != k) {
        u->stats.dropped_mismatch++;
        bool late = false;
        for (unsigned i = 0; len >= 2 && i < UP_UDP_LATE && i < k->n_late; i++)
            late = late || k->late[i] == dg_get16(ans);
        if (!late)
            k->bad++;
        return;
    }
    if (!dns_answer_matches(q->msg, q->len, ans, len)) {
        u->stats.dropped_mismatch++;
        q->saw_bad = true;
        k->bad++;
        return;
    }
    if (dns_is_truncated(ans, len)) {
        struct up_server *s = q->srv;
        u->stats.tcp_fallbacks++;
        query_end_try(q);
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
    query_answer(q, ans, len);
}

static void on_udp_read(evutil_socket_t fd, short what, void *arg)
{
    struct up_udp *k = arg;
    struct upstream *u = k->srv->u;
    /* User callbacks run from udp_handle(); they may start and end queries on k, but k itself
     * is freed only here (or by udp_detach() when nobody reads it). */
    k->reading = true;
    for (int call = 0; call < UP_UDP_MAX_CALLS; call++) {
        for (size_t i = 0; i < UP_UDP_BATCH; i++) {
            u->iov[i] = (struct iovec){u->rbuf + i * UP_RBUF_LEN, UP_RBUF_LEN};
            u->mm[i].msg_hdr = (struct msghdr){.msg_iov = &u->iov[i], .msg_iovlen = 1};
        }
        int n = recvmmsg(fd, u->mm, UP_UDP_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            /* ECONNREFUSED is an ICMP port unreachable for one of k's queries: nobody listens
             * there, for any of them. Waiting for the timers would only burn the budget.
             * query_try_failed() only unlinks and arms a zero timer. */
            int err = -errno;
            while (k->inflight.head)
                query_try_failed(try_query(k->inflight.head), err);
            break;
        }
        for (int i = 0; i < n; i++) {
            /* A datagram larger than the buffer cannot be a DNS message (max 65535). */
            if (u->mm[i].msg_hdr.msg_flags & MSG_TRUNC) {
                u->stats.dropped_mismatch++;
                continue;
            }
            udp_handle(k, u->rbuf + (size_t)i * UP_RBUF_LEN, u->mm[i].msg_len);
        }
        if (n < UP_UDP_BATCH)
            break;
    }
    k->reading = false;
    if (k->retired && k->n_inflight == 0)
        udp_free(k);
}

/* Fail every query on the connection over to its next try, then close it. */
static void tcp_fail(struct up_tcp *c, int err)
{
    log_debug("upstream %s: TCP connection closed (%d)", c->srv->up->text, -err);
    /* query_try_failed() only unlinks and arms a zero timer: no user code runs in this loop. */
    while (c->inflight.head)
        query_try_failed(try_query(c->inflight.head), err);
    tcp_free(c);
}

/* A server closed a connection that worked (idle or query limits, a restart; RFC 7766 §6.2.3
 * lets it) with @p q still on it, or refused it with GOAWAY: the query was not answered, and
 * the server is not to blame. It goes out again on another connection without spending a try,
 * twice at most (a server that closes on every query must not keep it going until the
 * deadline). */
static void query_resend(struct upstream_query *q)
{
    if (q->resends >= 2) {
        /* a server that closes on every query is failing after all */
        query_try_failed(q, -ECONNRESET);
        return;
    }
    q->resends++;
    if (q->tries > 0)
        q->tries--;
    /* not an error: no mark against the server's health, no error counted; the next try
     * runs from the query's timer (no user code from here) */
    query_end_try(q);
    query_timer_set(q, 0);
}

static void tcp_handle_frame(struct up_tcp *c, uint8_t *ans, size_t len)
{
    struct upstream *u = c->srv->u;
    struct upstream_query *q = len >= DNS_HEADER_LEN ? tcp_find(c, dg_get16(ans)) : NULL;
    if (!q || !dns_answer_matches(q->msg, q->len, ans, len)) {
        u->stats.dropped_mismatch++;
        return;
    }
    /* RFC 7828: the server says how long it keeps an idle connection (in 100 ms units; 0:
     * close when done). Close before it does, so that a query never races its close. Read from
     * the connection's first answer only: a walk per answer for a value that does not change. */
    size_t ko, kl;
    if (!c->ka_read) {
        c->ka_read = true;
        if (dnswire_edns_option(ans, len, DNS_EDNS_KEEPALIVE, &ko, &kl) && kl == 2) {
            unsigned t = (unsigned)dg_get16(ans + ko) * 100u;
            unsigned ms = t > 200 ? t - 200 : 1;
            c->idle_ms = ms < UP_TCP_IDLE_MS ? ms : UP_TCP_IDLE_MS;
        }
    }
    c->answered_us = dg_now_us();
    query_answer(q, ans, len);
}

/* Answer the whole frames of @p in (RFC 7766 / RFC 7858 framing) and consume them. User
 * callbacks run in here; by the lifetime rules above they cannot free c. */
static void tcp_frame(void *arg, uint8_t *msg, size_t len)
{
    tcp_handle_frame(arg, msg, len);
}

static void tcp_frames(struct up_tcp *c, struct dg_buf *in)
{
    dg_buf_consume(in, dnswire_split_stream(in->data, in->len, tcp_frame, c));
}

/* ---- DoT: the TLS connection's callbacks (uptls.h): only from its own events */

/* A DoT or DoH connection is ready to carry queries (@p t its TLS connection): the server's
 * connection failures are over. */
static void stream_conn_ready(struct up_tcp *c, struct uptls_conn *t)
{
    struct up_server *s = c->srv;
    s->conn_fails = 0;
    s->connect_after_ms = 0;
    s->why[0] = '\0';
    up_event(s->u, s, DG_EV_UP_HANDSHAKE, uptls_conn_resumed(t));
}

static void on_tls_ready(void *arg)
{
    struct up_tcp *c = arg;
    stream_conn_ready(c, c->tls);
}

static void on_tls_input(void *arg, struct dg_buf *in)
{
    tcp_frames(arg, in);
}

/* Log a connection failure once per reason (and again after a minute of it). */
static void conn_failure_log(struct up_server *s, const char *why)
{
    uint64_t now = dg_now_ms();
    if (strcmp(s->why, why) == 0 && now - s->why_ms < 60000) {
        log_debug("upstream %s: %s", s->up->text, why);
        return;
    }
    snprintf(s->why, sizeof(s->why), "%s", why);
    s->why_ms = now;
    log_warn("upstream %s: %s", s->up->text, why);
}

/* A DoT or DoH connection is over (@p t its TLS connection; @p worked: it got to carrying
 * queries (handshake done, and HTTP/2 agreed for DoH); @p why in words). */
static void stream_conn_closed(struct up_tcp *c, struct uptls_conn *t, bool worked, const char *why,
                               int err)
{
    struct up_server *s = c->srv;
    bool verify = uptls_conn_verify_failed(t);
    if (!worked || verify) {
        /* never got to answering: back off before the next connection (250 ms doubling to
         * 30 s; a certificate that fails verification will not be fixed in a second) */
        s->conn_fails++;
        unsigned shift = s->conn_fails < 8 ? s->conn_fails - 1 : 7;
        uint64_t wait = verify ? 30000 : (uint64_t)250 << shift;
        s->connect_after_ms = dg_now_ms() + (wait < 30000 ? wait : 30000);
        up_event(s->u, s, DG_EV_UP_CONN_FAILED, verify);
        conn_failure_log(s, why);
        if (verify) /* misconfigured, or someone in between: out of use at once */
            health_failure(s, 0, true, false);
    } else if (c->n_inflight) {
        log_debug("upstream %s: connection closed with %zu queries in flight: %s", s->up->text,
                  c->n_inflight, why);
        if (err == -ECONNRESET) /* a close, not an error of the TLS or HTTP/2 layer */
            while (c->inflight.head)
                query_resend(try_query(c->inflight.head));
    }
    tcp_fail(c, err);
}

static void on_tls_closed(void *arg, int err)
{
    struct up_tcp *c = arg;
    stream_conn_closed(c, c->tls, uptls_conn_established(c->tls), uptls_conn_why(c->tls), err);
}

/* ---- DoH: the HTTP/2 connection's callbacks (updoh.h): only from its own events */

static void on_doh_ready(void *arg)
{
    struct up_tcp *c = arg;
    stream_conn_ready(c, updoh_tls(c->h2));
}

static void on_doh_done(void *arg, void *tag, int err, uint8_t *msg, size_t len)
{
    struct up_tcp *c = arg;
    struct upstream_query *q = tag;
    q->sid = 0; /* the stream is over: nothing to cancel */
    if (err == 0 && !dns_answer_matches(q->msg, q->len, msg, len)) {
        c->srv->u->stats.dropped_mismatch++;
        err = -EPROTO;
    }
    if (err == 0) {
        c->answered_us = dg_now_us();
        query_answer(q, msg, len);
        return;
    }
    if (err == -EPROTO)
        conn_failure_log(c->srv, updoh_conn_why(c->h2)[0] ? updoh_conn_why(c->h2)
                                                          : "answered no DNS message");
    /* refused by a GOAWAY: never processed, the server is not to blame; the next try goes on
     * another connection */
    if (err == -ENOTCONN || err == -ECONNABORTED)
        query_resend(q); /* refused by GOAWAY, or closed under it: never answered */
    else
        query_try_failed(q, err);
}

static void on_doh_closed(void *arg, int err)
{
    struct up_tcp *c = arg;
    stream_conn_closed(c, updoh_tls(c->h2), updoh_ready(c->h2), updoh_conn_why(c->h2), err);
}

static const struct updoh_cbs tcp_doh_cbs = {
    .ready = on_doh_ready, .done = on_doh_done, .closed = on_doh_closed};

static const struct uptls_cbs tcp_tls_cbs = {
    .ready = on_tls_ready, .input = on_tls_input, .closed = on_tls_closed};

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
    /* Frames complete so far are answered even when the server closes right after them. */
    tcp_frames(c, &c->in);
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

struct upstream *upstream_new_servers(struct event_base *base, const struct config *cfg,
                                      const struct dg_upstream *srv, size_t n, unsigned obs_base)
{
    if (!base || !cfg || (n && !srv))
        return NULL;
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u)
        goto oom;
    u->base = base;
    u->cfg = cfg;
    u->obs_base = obs_base;
    dg_pool_init(&u->qpool, sizeof(struct upstream_query) + 2 * UP_POOL_QLEN + UP_QUERY_ROOM,
                 UP_POOL_KEEP);
    /* q->tried has a bit per server: bounded well below its 32 */
    u->n_srv = n < DG_CONFIG_MAX_LIST ? n : DG_CONFIG_MAX_LIST;
    u->srv = calloc(u->n_srv ? u->n_srv : 1, sizeof(*u->srv));
    u->rbuf = malloc((size_t)UP_UDP_BATCH * UP_RBUF_LEN);
    u->by_id = calloc(UP_IDS, sizeof(*u->by_id));
    if (!u->srv || !u->rbuf || !u->by_id)
        goto oom;
    /* Most try timers have this one duration: a common timeout keeps them in a queue (O(1))
     * instead of the heap. NULL (no memory) falls back to plain timers. */
    struct timeval ttv = {.tv_sec = (time_t)(cfg->upstream_timeout_ms / 1000),
                          .tv_usec = (suseconds_t)(cfg->upstream_timeout_ms % 1000) * 1000};
    u->try_tv = event_base_init_common_timeout(base, &ttv);
    /* NULL (no memory) only means one send() per query */
    u->flush_ev = event_new(base, -1, 0, on_flush, u);
    for (size_t i = 0; i < u->n_srv; i++) {
        u->srv[i].u = u;
        u->srv[i].up = &srv[i];
        u->srv[i].addr = &srv[i].addr;
        /* NULL (no memory) only means a full pool fails tries at once */
        u->srv[i].drain_ev = event_new(base, -1, 0, on_drain, &u->srv[i]);
    }
    return u;
oom:
    log_err("upstream: out of memory");
    upstream_free(u);
    return NULL;
}

struct upstream *upstream_new(struct event_base *base, const struct config *cfg)
{
    if (!cfg)
        return NULL;
    return upstream_new_servers(base, cfg, cfg->upstream, cfg->n_upstream, 0);
}

unsigned upstream_obs_base(const struct config *cfg, size_t zone)
{
    size_t base = cfg->n_upstream < DG_CONFIG_MAX_LIST ? cfg->n_upstream : DG_CONFIG_MAX_LIST;
    for (size_t z = 0; z < zone && z < cfg->n_forward_zone; z++)
        base += cfg->fwd[z].n_up < DG_CONFIG_MAX_LIST ? cfg->fwd[z].n_up : DG_CONFIG_MAX_LIST;
    return (unsigned)base;
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    /* Queries first: they unlink themselves from the connections. */
    while (u->queries.head)
        query_free(dg_list_entry(u->queries.head, struct upstream_query, node));
    for (size_t i = 0; u->srv && i < u->n_srv; i++) {
        struct up_server *s = &u->srv[i];
        while (s->conns.head)
            tcp_free(dg_list_entry(s->conns.head, struct up_tcp, node));
        while (s->retired.head)
            udp_free(dg_list_entry(s->retired.head, struct up_udp, retired_node));
        for (size_t k = 0; k < UP_UDP_SOCKS; k++)
            if (s->udp[k])
                udp_free(s->udp[k]);
        if (s->session)
            SSL_SESSION_free(s->session);
        if (s->drain_ev)
            event_free(s->drain_ev);
    }
    if (u->flush_ev)
        event_free(u->flush_ev);
    dg_pool_drain(&u->qpool, query_block_fini);
    free(u->srv);
    free(u->rbuf);
    free(u->by_id);
    free(u);
}

struct upstream_query *upstream_query_start(struct upstream *u, const uint8_t *query, size_t len,
                                            upstream_done_cb cb, void *arg)
{
    if (!u || !query || !cb || len < DNS_HEADER_LEN || len > DNS_MAX_MSG || u->n_srv == 0)
        return NULL;
    /* One allocation: the query and its copy of the message; from the pool when it fits. */
    size_t qsize = sizeof(struct upstream_query) + 2 * len + UP_QUERY_ROOM;
    struct upstream_query *q;
    struct event *timer = NULL;
    bool pooled = len <= UP_POOL_QLEN;
    if (pooled) {
        /* a kept block brings the timer its last query had; a new one has none yet */
        bool kept = u->qpool.nfree > 0;
        q = dg_pool_get(&u->qpool);
        if (!q)
            return NULL;
        if (kept)
            timer = q->timer;
    } else {
        q = malloc(qsize);
        if (!q)
            return NULL;
    }
    /* as calloc would: the struct and the part of the buffer this query uses */
    memset(q, 0, qsize);
    q->pooled = pooled;
    q->timer = timer;
    q->u = u;
    q->cb = cb;
    q->arg = arg;
    q->orig = q->msgbuf;
    q->msg = q->msgbuf + len;
    q->cap = len + UP_QUERY_ROOM;
    /* Linked at once so that query_free() is the one cleanup path. */
    dg_list_push_front(&u->queries, &q->node);
    u->pending++;

    if (!q->timer)
        q->timer = evtimer_new(u->base, on_query_timer, q);
    if (!q->timer) {
        query_free(q);
        return NULL;
    }
    memcpy(q->msgbuf, query, len);
    memcpy(q->msg, query, len);
    q->len = q->len0 = len;
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
    int rc = try_server(q, s);
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
