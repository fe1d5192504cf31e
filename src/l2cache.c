/* The shared second-level cache on Redis (see l2cache.h).
 *
 * Connection states: l2->ac NULL and now < retry_at: skipped (backoff); l2->ac NULL and the
 * backoff over: the next command connects (hiredis queues commands until the connection is
 * up, so the lookup that reconnects is also the probe); l2->ac set: commands pipelined on it.
 * A lookup that times out, a failed connect and a dropped connection all end the connection
 * and start the next backoff; the first good reply resets it.
 *
 * Record lifetime: a struct l2_get is the hiredis privdata of its GET and is freed only in
 * on_get_reply(), which hiredis calls exactly once per command (with the reply, or NULL when
 * the context goes away: our redisAsyncFree() or its own disconnect). Its caller leaves earlier
 * (l2_cancel(), the timeout): then g->cb is NULL and the reply is dropped. */
#include "dohgate/l2cache.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"

/* Lookups timed out in a row, with no reply between, that make the server rest. */
#define L2_TIMEOUTS_DOWN 3

struct l2cache {
    struct event_base *base;
    char host[INET6_ADDRSTRLEN];
    int port;
    unsigned timeout_ms;
    redisAsyncContext *ac;
    unsigned outstanding; /* commands sent on ac without their reply yet */
    unsigned backoff_ms;  /* the current rest; 0: the server answered since the last failure */
    uint64_t retry_at;    /* dg_now_ms() when the rest is over */
    enum l2_result drop_reason; /* what the gets still waiting when ac is dropped are told */
    bool failed_now;            /* conn() just failed to connect: an error, not a skip */
    unsigned timeouts_in_row;   /* lookups timed out with no reply from the server between */
    const struct dg_observer *obs;
    struct dg_buf cmdkey; /* prefix + key, one command at a time */
    struct dg_buf val;    /* the value of one put */
};

struct l2_get {
    struct l2cache *l2;
    l2_get_cb cb; /* NULL: the caller left (cancel, timeout) */
    void *arg;
    struct event *timer;
};

unsigned l2_backoff_next(unsigned prev_ms)
{
    if (prev_ms < L2_BACKOFF_MIN_MS)
        return L2_BACKOFF_MIN_MS;
    if (prev_ms >= L2_BACKOFF_MAX_MS / 2)
        return L2_BACKOFF_MAX_MS;
    return prev_ms * 2;
}

int l2_value_encode(const uint8_t *wire, size_t len, uint64_t now_unix, uint32_t lifetime,
                    struct dg_buf *out)
{
    if (len > DNSWIRE_MAX_MSG)
        return -EINVAL;
    uint8_t h[L2_HDR_LEN] = {'D', 'G', L2_VERSION, 0};
    dg_put32(h + 4, (uint32_t)(now_unix >> 32));
    dg_put32(h + 8, (uint32_t)now_unix);
    dg_put32(h + 12, lifetime);
    if (dg_buf_reserve(out, sizeof(h) + len) != 0)
        return -ENOMEM;
    dg_buf_append(out, h, sizeof(h));
    dg_buf_append(out, wire, len);
    return 0;
}

int l2_value_decode(const uint8_t *val, size_t vlen, const uint8_t *query, size_t qlen,
                    uint64_t now_unix, struct dg_buf *out, uint32_t *left)
{
    if (!val || vlen < L2_HDR_LEN + DNSWIRE_HEADER_LEN || vlen > L2_MAX_VALUE)
        return -EINVAL;
    if (val[0] != 'D' || val[1] != 'G' || val[2] != L2_VERSION || val[3] != 0)
        return -EINVAL;
    uint64_t stored = (uint64_t)dg_get32(val + 4) << 32 | dg_get32(val + 8);
    uint32_t lifetime = dg_get32(val + 12);
    if (lifetime == 0 || lifetime > DNSWIRE_TTL_MAX || qlen < DNSWIRE_HEADER_LEN)
        return -EINVAL;
    if (stored > now_unix + L2_CLOCK_SKEW_S)
        return -EINVAL; /* not ours to trust: a clock that far off, or made up */
    uint64_t age = stored < now_unix ? now_unix - stored : 0;
    const uint8_t *wire = val + L2_HDR_LEN;
    size_t len = vlen - L2_HDR_LEN;
    /* Checked on a copy carrying the query's ID: dns_answer_matches() wants the same ID, and
     * the stored one is some other client's. */
    size_t start = out->len;
    if (dg_buf_append(out, wire, len) != 0)
        return -ENOMEM;
    uint8_t *a = out->data + start;
    memcpy(a, query, 2);
    int rc = -EINVAL;
    if (!dns_answer_matches(query, qlen, a, len) || (a[2] & DNS_F2_TC) || (a[2] & DNS_F2_OPCODE) ||
        (a[3] & DNS_F3_RCODE) == DNS_RCODE_SERVFAIL)
        goto drop;
    if (age >= lifetime) {
        rc = 1;
        goto drop;
    }
    /* Age every TTL as the local cache does for its own entries: a record of the answer or
     * authority section that would be expired expires the whole answer (the lifetime is
     * their smallest TTL); additional records go down to 0. OPT carries no TTL. */
    struct dnswire_iter it;
    struct dnswire_rr rr;
    dnswire_iter_init(&it, a, len, 0);
    int n;
    while ((n = dnswire_iter_next(&it, &rr)) == 1) {
        if (rr.sec == DNSWIRE_QD || rr.type == DNSWIRE_TYPE_OPT)
            continue;
        uint32_t ttl = dg_get32(a + rr.ttl_off);
        if (ttl > DNSWIRE_TTL_MAX)
            ttl = 0;
        if (ttl <= age) {
            if (rr.sec != DNSWIRE_AR) {
                rc = 1;
                goto drop;
            }
            ttl = 0;
        } else {
            ttl -= (uint32_t)age;
        }
        dg_put32(a + rr.ttl_off, ttl);
    }
    /* Again: a compression pointer may aim into a TTL field just rewritten (no encoder does
     * that; a made-up value can, found by fuzz_l2_value), which changes a name. */
    if (n < 0 || !dns_answer_matches(query, qlen, a, len))
        goto drop;
    *left = lifetime - (uint32_t)age;
    return 0;
drop:
    out->len = start;
    return rc;
}

/* ---- the connection ------------------------------------------------------------------------ */

struct l2cache *l2_new(struct event_base *base, const char *addr, unsigned timeout_ms)
{
    struct dg_addr a;
    if (!addr || config_parse_addr(addr, 0, &a) != 0)
        return NULL;
    struct l2cache *l2 = calloc(1, sizeof(*l2));
    if (!l2)
        return NULL;
    l2->base = base;
    int fam = a.ss.ss_family;
    inet_ntop(fam, config_addr_bytes(&a), l2->host, sizeof(l2->host));
    l2->port = (int)config_addr_port(&a);
    l2->timeout_ms = timeout_ms ? timeout_ms : 20;
    l2->drop_reason = L2_ERROR;
    return l2;
}

void l2_set_observer(struct l2cache *l2, const struct dg_observer *obs)
{
    l2->obs = obs;
}

void l2_report(struct l2cache *l2, enum l2_result res)
{
    dg_observe(l2->obs, DG_EV_REDIS_LOOKUP, res, 1);
}

bool l2_in_backoff(const struct l2cache *l2)
{
    return !l2->ac && l2->backoff_ms && dg_now_ms() < l2->retry_at;
}

/* Start the next rest. ac is already detached (or never was). */
static void start_backoff(struct l2cache *l2, const char *why)
{
    bool first = l2->backoff_ms == 0;
    l2->backoff_ms = l2_backoff_next(l2->backoff_ms);
    l2->retry_at = dg_now_ms() + l2->backoff_ms;
    dg_observe(l2->obs, DG_EV_REDIS_DOWN, 0, 1);
    /* one line when it goes down; the retries of a server that stays down only at debug */
    dg_log(first ? DG_LOG_WARN : DG_LOG_DEBUG, "cache-redis %s:%d: %s; skipped for %u ms", l2->host,
           l2->port, why, l2->backoff_ms);
}

/* Our own end of the connection (a lookup timed out): the gets still waiting on it are told
 * @p reason when hiredis hands their privdata back, inside redisAsyncFree(). Never called from
 * a hiredis callback. */
static void drop(struct l2cache *l2, enum l2_result reason, const char *why)
{
    redisAsyncContext *ac = l2->ac;
    if (!ac)
        return;
    l2->ac = NULL; /* first: the disconnect callback sees it is not the current one */
    l2->outstanding = 0;
    start_backoff(l2, why);
    l2->drop_reason = reason;
    redisAsyncFree(ac);
    l2->drop_reason = L2_ERROR;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct l2cache *l2 = ac->data;
    if (status == REDIS_OK || ac != l2->ac)
        return;
    /* hiredis frees the context after this, its pending commands answered with NULL */
    l2->ac = NULL;
    l2->outstanding = 0;
    start_backoff(l2, ac->errstr[0] ? ac->errstr : "connect failed");
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct l2cache *l2 = ac->data;
    (void)status;
    if (ac != l2->ac)
        return; /* dropped by us (drop(), l2_free()) */
    l2->ac = NULL;
    if (l2->outstanding == 0) {
        /* an idle connection closed (Redis's `timeout`, a restart, CLIENT KILL, a proxy): no
         * lookup failed, so no rest; the next lookup connects again */
        log_debug("cache-redis %s:%d: idle connection closed (%s)", l2->host, l2->port,
                  ac->errstr[0] ? ac->errstr : "by the server");
        return;
    }
    l2->outstanding = 0;
    start_backoff(l2, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* A connection to send on: the current one, or a new one once the rest is over. */
static redisAsyncContext *conn(struct l2cache *l2)
{
    if (l2->ac)
        return l2->ac;
    if (l2->backoff_ms && dg_now_ms() < l2->retry_at)
        return NULL;
    redisAsyncContext *ac = redisAsyncConnect(l2->host, l2->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        /* refused at once (loopback does that): a failed probe, like a failed connect */
        char why[128];
        snprintf(why, sizeof(why), "%s", ac->errstr);
        redisAsyncFree(ac);
        start_backoff(l2, why);
        l2->failed_now = true;
        return NULL;
    }
    ac->data = l2;
    if (redisLibeventAttach(ac, l2->base) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    l2->ac = ac;
    l2->outstanding = 0;
    return ac;
}

static int make_key(struct l2cache *l2, const uint8_t *key, size_t keylen)
{
    l2->cmdkey.len = 0;
    if (dg_buf_append(&l2->cmdkey, L2_KEY_PREFIX, sizeof(L2_KEY_PREFIX) - 1) != 0 ||
        dg_buf_append(&l2->cmdkey, key, keylen) != 0)
        return -ENOMEM;
    return 0;
}

/* A reply (or NULL: the context is going) on a live connection: the server works again. */
static void note_reply(struct l2cache *l2, const redisAsyncContext *ac, const redisReply *rep)
{
    if (ac == l2->ac && l2->outstanding)
        l2->outstanding--;
    if (rep)
        l2->timeouts_in_row = 0;
    if (rep && rep->type != REDIS_REPLY_ERROR && l2->backoff_ms) {
        l2->backoff_ms = 0;
        dg_observe(l2->obs, DG_EV_REDIS_DOWN, 0, 0);
    }
}

static void on_get_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct l2_get *g = privdata;
    struct l2cache *l2 = g->l2;
    const redisReply *rep = reply;
    note_reply(l2, ac, rep);
    l2_get_cb cb = g->cb;
    void *arg = g->arg;
    if (g->timer)
        event_free(g->timer);
    free(g);
    if (!cb)
        return;
    enum l2_result res;
    if (!rep) /* the connection went: timed out (drop()) or failed */
        res = l2->drop_reason == L2_TIMEOUT ? L2_TIMEOUT : L2_ERROR;
    else if (rep->type == REDIS_REPLY_STRING)
        res = L2_HIT;
    else if (rep->type == REDIS_REPLY_NIL)
        res = L2_MISS;
    else
        res = L2_ERROR;
    if (res != L2_HIT)
        l2_report(l2, res);
    cb(arg, res, res == L2_HIT ? (const uint8_t *)rep->str : NULL,
       res == L2_HIT ? (size_t)rep->len : 0);
}

static void on_get_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct l2_get *g = arg;
    struct l2cache *l2 = g->l2;
    (void)fd;
    (void)what;
    l2_get_cb cb = g->cb;
    void *cb_arg = g->arg;
    g->cb = NULL;
    l2_report(l2, L2_TIMEOUT);
    /* This caller goes upstream now. The budget counts from the queueing, so a loop turn
     * slowed by this worker's own load can spend it before the command was even written:
     * one timeout says little about the server. L2_TIMEOUTS_DOWN in a row with no reply
     * between do: the server is slow or stopped, so give it a rest. Dropping the connection
     * hands every record back (this one included: freed then, with this timer); the other
     * lookups waiting on it are told "timeout" at once rather than each waiting out its own
     * budget. */
    if (++l2->timeouts_in_row >= L2_TIMEOUTS_DOWN) {
        l2->timeouts_in_row = 0;
        drop(l2, L2_TIMEOUT, "lookups timed out");
    }
    if (cb)
        cb(cb_arg, L2_TIMEOUT, NULL, 0);
}

struct l2_get *l2_get(struct l2cache *l2, const uint8_t *key, size_t keylen, l2_get_cb cb,
                      void *arg)
{
    redisAsyncContext *ac = l2->outstanding < L2_MAX_OUTSTANDING ? conn(l2) : NULL;
    struct l2_get *g = ac ? calloc(1, sizeof(*g)) : NULL;
    if (!g || make_key(l2, key, keylen) != 0)
        goto skip;
    g->l2 = l2;
    g->cb = cb;
    g->arg = arg;
    if (!(g->timer = evtimer_new(l2->base, on_get_timeout, g)))
        goto skip;
    if (redisAsyncCommand(ac, on_get_reply, g, "GET %b", l2->cmdkey.data, l2->cmdkey.len) !=
        REDIS_OK)
        goto skip;
    l2->outstanding++;
    struct timeval tv = {.tv_sec = l2->timeout_ms / 1000,
                         .tv_usec = (suseconds_t)(l2->timeout_ms % 1000) * 1000};
    evtimer_add(g->timer, &tv);
    return g;
skip:
    if (g) {
        if (g->timer)
            event_free(g->timer);
        free(g);
    }
    l2_report(l2, l2->failed_now ? L2_ERROR : L2_SKIPPED);
    l2->failed_now = false;
    return NULL;
}

void l2_cancel(struct l2_get *g)
{
    if (!g)
        return;
    g->cb = NULL;
    if (g->timer) {
        event_free(g->timer);
        g->timer = NULL;
    }
}

static void on_put_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct l2cache *l2 = privdata;
    note_reply(l2, ac, reply);
}

void l2_put(struct l2cache *l2, const uint8_t *key, size_t keylen, const uint8_t *wire, size_t len,
            uint32_t lifetime)
{
    if (!l2 || lifetime == 0 || len < DNSWIRE_HEADER_LEN ||
        (wire[3] & DNS_F3_RCODE) == DNS_RCODE_SERVFAIL || l2->outstanding >= L2_MAX_OUTSTANDING)
        return;
    redisAsyncContext *ac = conn(l2);
    l2->failed_now = false;
    if (!ac || make_key(l2, key, keylen) != 0)
        return;
    l2->val.len = 0;
    if (l2_value_encode(wire, len, (uint64_t)time(NULL), lifetime, &l2->val) != 0)
        return;
    if (redisAsyncCommand(ac, on_put_reply, l2, "SET %b %b EX %u", l2->cmdkey.data, l2->cmdkey.len,
                          l2->val.data, l2->val.len, lifetime) != REDIS_OK)
        return;
    l2->outstanding++;
    dg_observe(l2->obs, DG_EV_REDIS_STORE, 0, 1);
}

void l2_free(struct l2cache *l2)
{
    if (!l2)
        return;
    redisAsyncContext *ac = l2->ac;
    l2->ac = NULL;
    if (ac)
        redisAsyncFree(ac); /* every record comes back through its reply callback, detached */
    if (l2->backoff_ms)     /* the worker's gauge: the next view starts with a server not resting */
        dg_observe(l2->obs, DG_EV_REDIS_DOWN, 0, 0);
    dg_buf_free(&l2->cmdkey);
    dg_buf_free(&l2->val);
    free(l2);
}
