/* Per-worker resolution: cache → coalescing → upstream → cache (see resolver.h).
 *
 * Structure: a hash table of in-flight entries keyed by the cache key. Each entry owns the
 * query it forwarded and a list of waiters; each waiter owns a copy of its client's query
 * (ID, question-name spelling, and what a synthesized SERVFAIL must echo). An entry is freed
 * only in on_upstream_done() or resolver_free(); a waiter only when its callback ran, in
 * resolver_cancel(), or in resolver_free(). Both come from the worker's pools (dg_pool,
 * util.h) when the query fits RES_POOL_QLEN bytes: a miss allocates and frees each once, in
 * bursts as deep as the queries in flight, which glibc's per-thread cache does not absorb. */
#include "dohgate/resolver.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dohgate/cache.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/l2cache.h"
#include "dohgate/list.h"
#include "dohgate/log.h"
#include "dohgate/nameset.h"
#include "dohgate/observer.h"
#include "dohgate/upstream.h"

struct inflight;

/* Waiters and entries for queries up to this length come from the pools, which keep at most
 * RES_POOL_KEEP blocks each (~0.3 KB: ~150 KiB per worker after such a burst). */
#define RES_POOL_QLEN 256
#define RES_POOL_KEEP 256

struct resolver_waiter {
    struct inflight *inf;
    struct dg_lnode node; /* on inf->waiters */
    resolver_done_cb cb;
    void *arg;
    size_t qlen;
    bool pooled;     /* from r->wpool */
    uint8_t query[]; /* the client's query, ECS removed */
};

struct inflight {
    struct resolver *r;
    struct inflight *hnext;
    struct upstream_query *uq;
    struct l2_get *l2q;     /* the Redis lookup, before uq (one of them at a time, or neither) */
    struct dg_list waiters; /* newest first */
    size_t nwaiters;
    struct cache_key key;
    size_t qlen;
    bool pooled;     /* from r->ipool */
    uint8_t query[]; /* the query forwarded: kept for the Redis lookup, whose answer is checked
                        against it and which may go upstream after all its waiters left */
};

struct resolver {
    struct upstream *up;
    struct cache *cache;
    const struct config *cfg;
    struct inflight **table;
    size_t nbuckets; /* power of two */
    size_t ninflight;
    struct dg_buf scratch; /* one answer at a time, per worker: never kept across calls */
    struct resolver_stats stats;
    const struct dg_observer *obs;
    /* forward zones (resolver_set_zones()): name -> index + 1 into zone_up; not owned */
    const struct nameset *zones;
    struct upstream *const *zone_up;
    size_t n_zone_up;
    struct l2cache *l2;  /* the shared second-level cache (cache-redis), or NULL; not owned */
    struct dg_buf l2buf; /* the answer of one Redis hit, or the entry one Redis put sends */
    struct dg_pool wpool, ipool; /* waiters, in-flight entries (RES_POOL_QLEN) */
};

/* A question's outcome: in our own counters (tests, the SIGUSR1 log) and to the observer. */
#define RES_COUNT(r, field, ev) ((r)->stats.field++, dg_observe((r)->obs, (ev), 0, 1))

struct resolver *resolver_new(struct upstream *up, struct cache *cache, const struct config *cfg)
{
    if (!cache)
        return NULL;
    struct resolver *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->nbuckets = 256;
    r->table = calloc(r->nbuckets, sizeof(*r->table));
    if (!r->table) {
        free(r);
        return NULL;
    }
    r->up = up;
    r->cache = cache;
    r->cfg = cfg;
    dg_pool_init(&r->wpool, sizeof(struct resolver_waiter) + RES_POOL_QLEN, RES_POOL_KEEP);
    dg_pool_init(&r->ipool, sizeof(struct inflight) + RES_POOL_QLEN, RES_POOL_KEEP);
    return r;
}

static struct resolver_waiter *waiter_new(struct resolver *r, size_t qlen)
{
    bool pooled;
    struct resolver_waiter *w = dg_pool_alloc(&r->wpool, sizeof(*w) + qlen, &pooled);
    if (w)
        w->pooled = pooled;
    return w;
}

static void waiter_free(struct resolver *r, struct resolver_waiter *w)
{
    if (w)
        dg_pool_free(&r->wpool, w, w->pooled);
}

/* Zeroed, as the code below expects of a new entry. */
static struct inflight *inflight_new(struct resolver *r, size_t qlen)
{
    bool pooled;
    struct inflight *inf = dg_pool_alloc(&r->ipool, sizeof(*inf) + qlen, &pooled);
    if (inf) {
        memset(inf, 0, sizeof(*inf) + qlen);
        inf->pooled = pooled;
    }
    return inf;
}

static void inflight_free(struct resolver *r, struct inflight *inf)
{
    if (inf)
        dg_pool_free(&r->ipool, inf, inf->pooled);
}

/* The newest waiter of @p inf, or NULL. */
static struct resolver_waiter *first_waiter(const struct inflight *inf)
{
    return dg_list_entry(inf->waiters.head, struct resolver_waiter, node);
}

static void waiter_unlink(struct resolver_waiter *w)
{
    struct inflight *inf = w->inf;
    dg_list_unlink(&inf->waiters, &w->node);
    inf->nwaiters--;
    w->inf = NULL;
}

static struct inflight **bucket_of(struct resolver *r, uint64_t hash)
{
    return &r->table[(hash >> 32 ^ hash) & (r->nbuckets - 1)];
}

static struct inflight *table_find(struct resolver *r, const struct cache_key *k)
{
    for (struct inflight *e = *bucket_of(r, k->hash); e; e = e->hnext) {
        if (e->key.hash == k->hash && e->key.len == k->len &&
            memcmp(e->key.data, k->data, k->len) == 0)
            return e;
    }
    return NULL;
}

static void table_grow(struct resolver *r)
{
    size_t nb = r->nbuckets * 2;
    struct inflight **t = calloc(nb, sizeof(*t));
    if (!t)
        return; /* longer chains, still correct */
    struct inflight **old = r->table;
    size_t onb = r->nbuckets;
    r->table = t;
    r->nbuckets = nb;
    for (size_t i = 0; i < onb; i++) {
        while (old[i]) {
            struct inflight *e = old[i];
            old[i] = e->hnext;
            struct inflight **b = bucket_of(r, e->key.hash);
            e->hnext = *b;
            *b = e;
        }
    }
    free(old);
}

static void table_remove(struct resolver *r, struct inflight *inf)
{
    for (struct inflight **pp = bucket_of(r, inf->key.hash); *pp; pp = &(*pp)->hnext) {
        if (*pp == inf) {
            *pp = inf->hnext;
            r->ninflight--;
            return;
        }
    }
}

/* Make @p ans (an answer to the same question) this waiter's: its ID, RD bit and name
 * spelling. */
static void personalize(uint8_t *ans, size_t alen, const uint8_t *q, size_t qlen)
{
    size_t qend = dns_question_end(q, qlen);
    memcpy(ans, q, 2);
    ans[2] = (uint8_t)((ans[2] & ~0x01u) | (q[2] & 0x01u));
    if (qend > DNS_HEADER_LEN + 4 && alen >= qend)
        memcpy(ans + DNS_HEADER_LEN, q + DNS_HEADER_LEN, qend - DNS_HEADER_LEN - 4);
}

static void deliver(struct resolver *r, struct resolver_waiter *w, const uint8_t *ans, size_t len,
                    uint32_t ttl)
{
    resolver_done_cb cb = w->cb;
    void *arg = w->arg;
    waiter_free(r, w);
    cb(arg, ans, len, ttl);
}

/* Serve-stale or SERVFAIL for one waiter whose upstream query failed. */
static void deliver_failure(struct resolver *r, struct resolver_waiter *w,
                            const struct cache_key *k)
{
    struct dg_buf *b = &r->scratch;
    b->len = 0;
    if (r->cache && r->cfg->serve_stale) {
        struct cache_hit_info info;
        enum cache_result cr = cache_lookup(r->cache, k, w->query, w->qlen, dg_now_ms(),
                                            CACHE_ALLOW_STALE | CACHE_KEY_OF_QUERY, b, &info);
        if (cr != CACHE_MISS) {
            if (cr == CACHE_STALE)
                RES_COUNT(r, stale_hits, DG_EV_RES_STALE_HIT);
            deliver(r, w, b->data, b->len, info.ttl);
            return;
        }
    }
    RES_COUNT(r, servfails, DG_EV_RES_SERVFAIL);
    if (dns_make_error_answer(w->query, w->qlen, DNS_RCODE_SERVFAIL, b) != 0) {
        /* Not even a SERVFAIL fits in memory: the bare header (ID, QR, SERVFAIL) does. */
        uint8_t hdr[DNS_HEADER_LEN] = {w->query[0], w->query[1], 0x81, 0x82};
        deliver(r, w, hdr, sizeof(hdr), 0);
        return;
    }
    deliver(r, w, b->data, b->len, 0);
}

/* Send the answer just stored locally (or, when the cache did not keep it, @p ans) to Redis
 * for its lifetime left. Never a SERVFAIL (l2_put()) nor an answer that lives 0 seconds. */
static void l2_store(struct resolver *r, struct inflight *inf, bool stored, const uint8_t *ans,
                     size_t len, uint64_t now)
{
    struct dg_buf *b = &r->l2buf;
    b->len = 0;
    struct cache_hit_info info;
    /* As the local cache serves it: TTLs clamped, the SOA of a negative answer brought to its
     * lifetime, so the age taken off at a hit ends the entry where the local one ends. */
    if (stored && cache_lookup(r->cache, &inf->key, inf->query, inf->qlen, now,
                               CACHE_UNCOUNTED | CACHE_KEY_OF_QUERY, b, &info) == CACHE_HIT) {
        l2_put(r->l2, inf->key.data, inf->key.len, b->data, b->len, info.ttl);
        return;
    }
    l2_put(r->l2, inf->key.data, inf->key.len, ans, len, cache_answer_lifetime(r->cache, ans, len));
}

static void finish(struct inflight *inf, int status, const uint8_t *ans, size_t len, bool from_l2);

static void on_upstream_done(void *arg, int status, const uint8_t *ans, size_t len)
{
    finish(arg, status, ans, len, false);
}

/* The answer of the upstream (or, @p from_l2, a checked and aged Redis hit) for every waiter:
 * into the cache (and, from upstream, to Redis), then to the clients. */
static void finish(struct inflight *inf, int status, const uint8_t *ans, size_t len, bool from_l2)
{
    struct resolver *r = inf->r;
    /* Out of the table first: callbacks below may resolve the same name again, which must
     * start afresh (or hit the cache), not join an entry that is going away. */
    table_remove(r, inf);
    inf->uq = NULL;
    bool failed = status != 0;
    /* Padding and keepalive are for the wire they came over (an upstream pads its answers to
     * padded queries, RFC 8467, and grants our DoT connection a keepalive timeout, RFC 7828):
     * stripped here, before both the cache and the waiters served without it (caching off, an
     * answer not kept, OOM), so no stored or forwarded answer carries another hop's options; a
     * padded client gets its own padding from dnsserve.c, a stream client its own keepalive
     * from dnsstream.c. The copy is only made for the answers that carry them (plain-DNS
     * upstreams practically never do). */
    struct dg_buf unpadded = {0};
    if (!failed && dns_answer_has_hop_options(ans, len)) {
        if (dg_buf_append(&unpadded, ans, len) == 0 &&
            dns_answer_strip_hop_options(unpadded.data, &unpadded.len) == 1) {
            ans = unpadded.data;
            len = unpadded.len;
        } else {
            /* OOM (as for the per-waiter copy below), or compression pointers into the OPT
             * that make the edit unsafe (no sane encoder's): serve-stale or SERVFAIL. */
            failed = true;
        }
    }
    if (!failed && dns_rcode(ans, len) == DNS_RCODE_SERVFAIL && r->cache && r->cfg->serve_stale) {
        /* RFC 8767: an upstream SERVFAIL is a failure too; keep the stale entry, do not
         * replace it with the SERVFAIL. */
        /* probed with the entry's own query: a prefetch, or an entry whose clients all left,
         * has no waiter, and its SERVFAIL must not replace a usable answer either */
        struct dg_buf probe = {0};
        struct cache_hit_info info;
        if (cache_lookup(r->cache, &inf->key, inf->query, inf->qlen, dg_now_ms(),
                         CACHE_ALLOW_STALE | CACHE_UNCOUNTED | CACHE_KEY_OF_QUERY, &probe,
                         &info) != CACHE_MISS)
            failed = true;
        dg_buf_free(&probe);
    }
    if (failed) {
        while (inf->waiters.head) {
            struct resolver_waiter *w = first_waiter(inf);
            waiter_unlink(w);
            deliver_failure(r, w, &inf->key);
        }
    } else {
        uint64_t now = dg_now_ms();
        bool stored = cache_insert(r->cache, &inf->key, ans, len, now) == 0;
        if (r->l2 && !from_l2)
            l2_store(r, inf, stored, ans, len, now);
        /* Not served from the cache (caching off, not kept, OOM): the max-age the cache would
         * have given it, one rule for both paths; computed once, on first need. */
        bool have_ttl = false;
        uint32_t ttl = 0;
        while (inf->waiters.head) {
            struct resolver_waiter *w = first_waiter(inf);
            waiter_unlink(w);
            struct dg_buf *b = &r->scratch;
            b->len = 0;
            /* Served from the entry just stored, the first clients see the same clamped TTLs
             * and max-age as every later one. */
            struct cache_hit_info info;
            if (stored &&
                cache_lookup(r->cache, &inf->key, w->query, w->qlen, now,
                             CACHE_UNCOUNTED | CACHE_KEY_OF_QUERY, b, &info) == CACHE_HIT) {
                deliver(r, w, b->data, b->len, info.ttl);
                continue;
            }
            b->len = 0;
            if (dg_buf_append(b, ans, len) != 0) {
                deliver_failure(r, w, &inf->key);
                continue;
            }
            personalize(b->data, b->len, w->query, w->qlen);
            if (!have_ttl) {
                ttl = cache_answer_lifetime(r->cache, ans, len);
                have_ttl = true;
            }
            deliver(r, w, b->data, b->len, ttl);
        }
    }
    dg_buf_free(&unpadded);
    inflight_free(r, inf);
}

/* The upstream set for query @p q: the longest forward zone at or above its name, else the
 * default set. Decided by the name alone, so a cache key (which holds the name) always routes
 * the same way under one resolver: coalescing and prefetch need nothing more. */
static struct upstream *route(const struct resolver *r, const uint8_t *q, size_t qlen)
{
    if (!r->zones)
        return r->up;
    size_t nlen;
    const uint8_t *name = dns_question_name(q, qlen, &nlen);
    uint32_t v = 0;
    if (!name || nameset_match(r->zones, name, nlen, UINT32_MAX, &v) < 0 || v == 0 ||
        v > r->n_zone_up || !r->zone_up[v - 1])
        return r->up;
    return r->zone_up[v - 1];
}

/* Redis had nothing usable (miss, expired, invalid, timeout, error): upstream as without it.
 * Runs from the event loop; if not even the upstream query starts, the waiters get what a
 * failed one gives them (stale or SERVFAIL). */
static void on_l2_done(void *arg, enum l2_result res, const uint8_t *val, size_t len)
{
    struct inflight *inf = arg;
    struct resolver *r = inf->r;
    inf->l2q = NULL;
    if (res == L2_HIT) {
        struct dg_buf *b = &r->l2buf;
        b->len = 0;
        uint32_t left = 0;
        int rc = l2_value_decode(val, len, inf->query, inf->qlen, (uint64_t)time(NULL), b, &left);
        l2_report(r->l2, rc == 0 ? L2_HIT : rc == 1 ? L2_MISS : L2_INVALID);
        if (rc == 0) {
            /* finish() may resolve again, which reuses l2buf: the answer moves out first */
            struct dg_buf hit = *b;
            *b = (struct dg_buf){0};
            finish(inf, 0, hit.data, hit.len, true);
            dg_buf_free(&hit);
            return;
        }
    }
    inf->uq = upstream_query_start(route(r, inf->query, inf->qlen), inf->query, inf->qlen,
                                   on_upstream_done, inf);
    if (!inf->uq)
        finish(inf, -ENOMEM, NULL, 0, false);
}

/* Start resolving @p q under @p k: Redis first when there is one and @p ask_l2, else (or when
 * it is skipped) upstream. @return the entry, or NULL (limits, OOM). */
static struct inflight *inflight_start(struct resolver *r, const struct cache_key *k,
                                       const uint8_t *q, size_t qlen, bool ask_l2)
{
    if (r->ninflight >= r->cfg->max_upstream_queries)
        return NULL;
    struct inflight *inf = inflight_new(r, qlen);
    if (!inf)
        return NULL;
    inf->r = r;
    inf->key = *k;
    memcpy(inf->query, q, qlen);
    inf->qlen = qlen;
    if (r->l2 && ask_l2)
        inf->l2q = l2_get(r->l2, k->data, k->len, on_l2_done, inf);
    if (!inf->l2q)
        inf->uq = upstream_query_start(route(r, q, qlen), q, qlen, on_upstream_done, inf);
    if (!inf->l2q && !inf->uq) {
        inflight_free(r, inf);
        return NULL;
    }
    if (r->ninflight >= r->nbuckets)
        table_grow(r);
    struct inflight **b = bucket_of(r, k->hash);
    inf->hnext = *b;
    *b = inf;
    r->ninflight++;
    return inf;
}

int resolver_resolve(struct resolver *r, const uint8_t *query, size_t len, struct dg_buf *out,
                     uint32_t *ttl, resolver_done_cb cb, void *arg, struct resolver_waiter **wp)
{
    r->stats.queries++;
    struct resolver_waiter *w = waiter_new(r, len);
    if (!w)
        return -ENOMEM;
    memcpy(w->query, query, len);
    w->qlen = len;
    if (dns_query_strip_hop_options(w->query, &w->qlen) < 0) {
        waiter_free(r, w);
        return -EINVAL;
    }
    struct cache_key k;
    if (cache_key_make(r->cache, w->query, w->qlen, &k) != 0) {
        waiter_free(r, w);
        return -EINVAL;
    }
    if (r->cache) {
        struct cache_hit_info info;
        if (cache_lookup(r->cache, &k, w->query, w->qlen, dg_now_ms(), CACHE_KEY_OF_QUERY, out,
                         &info) == CACHE_HIT) {
            RES_COUNT(r, hits, DG_EV_RES_HIT);
            *ttl = info.ttl;
            /* A prefetch skips Redis: the entry is near its end here, and another instance's
             * copy is most likely as old; its answer still goes to Redis. */
            if (info.prefetch && !table_find(r, &k) &&
                inflight_start(r, &k, w->query, w->qlen, false))
                RES_COUNT(r, prefetches, DG_EV_RES_PREFETCH);
            waiter_free(r, w);
            return RESOLVER_ANSWERED;
        }
    }
    RES_COUNT(r, misses, DG_EV_RES_MISS);
    struct inflight *inf = table_find(r, &k);
    if (inf) {
        if (inf->nwaiters >= RESOLVER_MAX_WAITERS) {
            RES_COUNT(r, rejected, DG_EV_RES_REJECTED);
            waiter_free(r, w);
            return -EBUSY;
        }
        RES_COUNT(r, coalesced, DG_EV_RES_COALESCED);
    } else {
        inf = inflight_start(r, &k, w->query, w->qlen, true);
        if (!inf) {
            RES_COUNT(r, rejected, DG_EV_RES_REJECTED);
            waiter_free(r, w);
            return -EBUSY;
        }
    }
    w->cb = cb;
    w->arg = arg;
    w->inf = inf;
    dg_list_push_front(&inf->waiters, &w->node);
    inf->nwaiters++;
    *wp = w;
    return RESOLVER_PENDING;
}

void resolver_waiter_set_arg(struct resolver_waiter *w, void *arg)
{
    w->arg = arg;
}

void resolver_cancel(struct resolver_waiter *w)
{
    /* The in-flight query goes on without waiters: its answer still fills the cache. */
    struct resolver *r = w->inf->r;
    waiter_unlink(w);
    waiter_free(r, w);
}

void resolver_free(struct resolver *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nbuckets; i++) {
        while (r->table[i]) {
            struct inflight *inf = r->table[i];
            r->table[i] = inf->hnext;
            l2_cancel(inf->l2q);
            if (inf->uq)
                upstream_query_cancel(inf->uq);
            while (inf->waiters.head) {
                struct resolver_waiter *w = first_waiter(inf);
                waiter_unlink(w);
                waiter_free(r, w);
            }
            inflight_free(r, inf);
        }
    }
    free(r->table);
    dg_pool_drain(&r->wpool, NULL);
    dg_pool_drain(&r->ipool, NULL);
    dg_buf_free(&r->scratch);
    dg_buf_free(&r->l2buf);
    free(r);
}

void resolver_set_zones(struct resolver *r, const struct nameset *zones,
                        struct upstream *const *ups, size_t n)
{
    r->zones = n ? zones : NULL;
    r->zone_up = ups;
    r->n_zone_up = n;
}

void resolver_set_l2(struct resolver *r, struct l2cache *l2)
{
    r->l2 = l2;
}

void resolver_set_observer(struct resolver *r, const struct dg_observer *obs)
{
    r->obs = obs;
}

const struct resolver_stats *resolver_get_stats(const struct resolver *r)
{
    return &r->stats;
}

size_t resolver_inflight(const struct resolver *r)
{
    return r->ninflight;
}
