/**
 * @file resolver.h
 * Per-worker resolution of checked queries: cache lookup, coalescing of identical in-flight
 * queries, forwarding through the upstream module, cache insertion, serve-stale when every
 * upstream fails (RFC 8767), and background prefetch of popular entries near expiry.
 *
 * Coalescing is per worker (like Unbound's per-thread mesh): identical queries that reach the
 * same worker while one is forwarded wait for that one answer. The cache is shared by all
 * workers, so a second worker's query for the same name is a cache hit once the first answer
 * arrived.
 *
 * With a shared second-level cache (resolver_set_l2(), `cache-redis`), a local miss that starts
 * a new in-flight entry (after coalescing: one Redis lookup per question) asks Redis first; a
 * valid hit (checked and aged by l2_value_decode()) goes into the local cache and to the
 * waiters as an upstream answer would, anything else goes upstream. Upstream answers go to
 * Redis with their lifetime left. Prefetches skip the Redis lookup. Waiters that leave while
 * Redis is asked leave as they do from an upstream query: the entry goes on.
 *
 * With forward zones (resolver_set_zones()), a question at or under a zone goes to that zone's
 * own upstream set (longest zone wins), every other one to the default set.
 *
 * Lifetimes: the resolver owns in-flight entries and their waiters. A caller holds a waiter
 * handle; resolver_cancel() removes it synchronously (its callback never runs afterwards). When
 * the last waiter of an in-flight query leaves, the upstream query goes on, so that its answer
 * still fills the cache (bounded by max-upstream-queries per worker).
 */
#ifndef DOHGATE_RESOLVER_H
#define DOHGATE_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct event_base;
struct upstream;
struct cache;
struct config;
struct resolver;
struct resolver_waiter;

#define RESOLVER_MAX_WAITERS 4096 /**< clients waiting on one forwarded query */

enum resolver_status { RESOLVER_ANSWERED = 0, RESOLVER_PENDING = 1 };

/**
 * Completion of a pending resolution; runs once from the event loop unless cancelled first.
 * @param ans  the answer for this client (its ID and question-name spelling): a real answer, a
 *             stale one, or a synthesized SERVFAIL. Valid only during the call.
 * @param ttl  the smallest TTL left in it, for Cache-Control.
 * The waiter handle is already gone when this runs.
 */
typedef void (*resolver_done_cb)(void *arg, const uint8_t *ans, size_t len, uint32_t ttl);

/** The resolver's own counts, for its worker's thread (tests, the SIGUSR1 log). The metrics
 * page counts the same outcomes through the observer (resolver_set_observer()). */
struct resolver_stats {
    uint64_t queries, hits, stale_hits, misses, coalesced, prefetches, servfails, rejected;
};

/**
 * @param cache  the shared cache (one with max_bytes 0 when caching is off: it still keys the
 *               in-flight table). Must outlive the resolver, as must @p up and @p cfg.
 * @return NULL on OOM. resolver_free() must not be called from inside a resolver_done_cb.
 */
struct resolver *resolver_new(struct upstream *up, struct cache *cache, const struct config *cfg);
/** Free in-flight entries (their upstream queries cancelled, no callbacks run). */
void resolver_free(struct resolver *r);

/**
 * Resolve a query that passed dns_query_check().
 * @param out  on RESOLVER_ANSWERED receives the answer (appended), @p ttl its max-age.
 * @param w    on RESOLVER_PENDING receives the waiter handle; @p cb will run later.
 * @return RESOLVER_ANSWERED (cache hit; synchronous), RESOLVER_PENDING, or -ENOMEM / -EINVAL /
 *         -EBUSY (limits reached): then nothing is pending and the caller answers SERVFAIL.
 */
int resolver_resolve(struct resolver *r, const uint8_t *query, size_t len, struct dg_buf *out,
                     uint32_t *ttl, resolver_done_cb cb, void *arg, struct resolver_waiter **w);

/** Remove a waiter; its callback never runs after this returns. */
void resolver_cancel(struct resolver_waiter *w);

/**
 * Give a pending waiter its callback argument after resolver_resolve() returned
 * RESOLVER_PENDING (the callback never runs before the caller returns to the loop), so that a
 * caller allocates its own pending state only when there is something pending: a cache hit,
 * most queries, then costs no allocation of the caller's.
 */
void resolver_waiter_set_arg(struct resolver_waiter *w, void *arg);

const struct resolver_stats *resolver_get_stats(const struct resolver *r);
struct nameset;
/**
 * Split horizon: forward the questions at or under a forward zone to that zone's upstream set.
 * A question goes to ups[v - 1], v being the value nameset_match() finds for the longest zone
 * in @p zones that is a suffix of its name (the value of zone i is i + 1); any other question
 * (no zone, v out of 1..n, ups[v - 1] NULL) goes to the default set given to resolver_new().
 * This applies to misses and prefetches; the cache and coalescing are unchanged (the route is
 * a function of the question's name, part of every cache key).
 * Call before the first resolver_resolve(). @p zones and @p ups (and the sets) are not owned and
 * must outlive the resolver (free it first: it cancels its queries on them). n == 0: no zones.
 */
void resolver_set_zones(struct resolver *r, const struct nameset *zones,
                        struct upstream *const *ups, size_t n);
struct l2cache;
/** Use @p l2 (may be NULL) as the shared second-level cache; not owned, must outlive @p r
 * (resolver_free() cancels the lookups on it). Call before the first resolver_resolve(). */
void resolver_set_l2(struct resolver *r, struct l2cache *l2);
struct dg_observer;
/** Report question outcomes (DG_EV_RES_*) to @p obs (may be NULL; must outlive @p r). */
void resolver_set_observer(struct resolver *r, const struct dg_observer *obs);
/** Distinct queries in flight (tests, shutdown). */
size_t resolver_inflight(const struct resolver *r);

#endif
