/**
 * @file l2cache.h
 * The shared second-level cache (`cache-redis`): answers kept in a Redis server that several
 * dohgate instances share, looked up by the resolver on a local miss before the upstreams and
 * filled after an upstream answer (the way Unbound's cachedb uses Redis).
 *
 * One `struct l2cache` per worker view: one asynchronous hiredis connection, driven by the
 * worker's event_base through hiredis's libevent adapter, commands pipelined on it. Nothing
 * here ever blocks the worker: the connection is made asynchronously, lookups are bounded by
 * `cache-redis-timeout` with our own timers (hiredis 0.14 has no asynchronous timeouts), and a
 * slow or dead server (three lookups timed out in a row with no reply between: one alone may
 * be this worker's own loop running late; or a connection failing with commands on it) is
 * skipped for a backoff (1 s doubling to 30 s; l2_backoff_next()) and then reconnected on the
 * next lookup; an idle connection the server closes is reconnected without one. Redis never fails a
 * query: every outcome other than a valid hit sends the question upstream.
 *
 * Format. Key: L2_KEY_PREFIX + the local cache's key bytes (cache_key_make(); binary). Value:
 * an L2_HDR_LEN header (magic "DG", format version L2_VERSION, a zero byte, the wall-clock
 * time it was stored and the lifetime it had then, both big-endian, unix seconds / seconds)
 * followed by the answer in wire form as the local cache serves it (TTLs clamped, age 0). The
 * Redis expiry (SET ... EX) is that lifetime. Redis is shared, so a value is outside input:
 * l2_value_decode() checks it like an upstream answer before anything uses it.
 *
 * Ownership and callbacks: l2_get() returns a handle, or NULL when it did not ask (no
 * connection during the backoff, too many commands outstanding, OOM): then no callback ever
 * runs, the caller goes upstream at once. With a handle, the callback runs exactly once, later,
 * from the event loop (never inside l2_get()), unless l2_cancel() came first; l2_cancel() is
 * synchronous. hiredis callbacks cannot be cancelled, so a cancelled or timed-out lookup keeps
 * its record (the hiredis privdata) until the reply or the disconnect, detached from its
 * caller. l2_free() drops the connection; every caller must have cancelled its lookups before.
 * One thread: the worker's.
 */
#ifndef DOHGATE_L2CACHE_H
#define DOHGATE_L2CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct event_base;
struct dg_observer;
struct l2cache;
struct l2_get;

#define L2_KEY_PREFIX      "dohgate:1:"
#define L2_VERSION         1u
#define L2_HDR_LEN         16u /**< "DG", version, 0, stored (u64 BE), lifetime (u32 BE) */
#define L2_MAX_VALUE       (L2_HDR_LEN + 65535u)
#define L2_MAX_OUTSTANDING 512u /**< commands awaiting a reply per connection; past it: skipped */
#define L2_BACKOFF_MIN_MS  1000u
#define L2_BACKOFF_MAX_MS  30000u
/** A value stored up to this many seconds "in the future" (clocks of two machines) is taken
 * with age 0; further ahead it is refused. */
#define L2_CLOCK_SKEW_S 60u

/** Outcome of a lookup, also the idx of DG_EV_REDIS_LOOKUP. */
enum l2_result {
    L2_HIT = 0, /**< a value that passed l2_value_decode() (reported by the caller) */
    L2_MISS,    /**< no such key, or a value that had expired (reported by the caller) */
    L2_TIMEOUT, /**< no reply within cache-redis-timeout: the server is given a rest */
    L2_ERROR,   /**< connection failure, error reply */
    L2_SKIPPED, /**< not asked: backoff, too many outstanding, OOM */
    L2_INVALID, /**< a value that failed l2_value_decode() (reported by the caller) */
    L2_NRESULT
};

/**
 * Completion of l2_get(). @p res: L2_HIT with the raw value in @p val / @p len (valid only
 * during the call; still to be decoded), or L2_MISS / L2_TIMEOUT / L2_ERROR (no value). The
 * handle is gone when this runs. The outcome was already reported to the observer except for
 * L2_HIT, which the caller reports (L2_HIT, L2_MISS or L2_INVALID) after decoding.
 */
typedef void (*l2_get_cb)(void *arg, enum l2_result res, const uint8_t *val, size_t len);

/**
 * @param addr  "ADDR:PORT" numeric (IPv6 in brackets), as config_finish() validated it.
 * @param timeout_ms  the lookup budget (cache-redis-timeout).
 * @return NULL on OOM or a bad address. Connects on the first lookup, not here.
 */
struct l2cache *l2_new(struct event_base *base, const char *addr, unsigned timeout_ms);
/** Drop the connection (pending records released through hiredis); NULL is fine. */
void l2_free(struct l2cache *l2);
/** Report DG_EV_REDIS_* events to @p obs (may be NULL; must outlive @p l2). */
void l2_set_observer(struct l2cache *l2, const struct dg_observer *obs);

/** Look @p key (the cache key bytes, prefix added here) up. @return a handle or NULL (see the
 * file comment: NULL means not asked, counted as L2_SKIPPED, no callback). */
struct l2_get *l2_get(struct l2cache *l2, const uint8_t *key, size_t keylen, l2_get_cb cb,
                      void *arg);
/** The callback of @p g never runs after this. */
void l2_cancel(struct l2_get *g);

/**
 * Store @p wire (an answer as the local cache serves it, TTLs at age 0) under @p key for
 * @p lifetime seconds, fire and forget. Skipped (not counted as a store) without a connection
 * or with too many commands outstanding, for lifetime 0 or a SERVFAIL.
 */
void l2_put(struct l2cache *l2, const uint8_t *key, size_t keylen, const uint8_t *wire, size_t len,
            uint32_t lifetime);

/** Lookup outcome reported by the caller (L2_HIT, L2_MISS, L2_INVALID). */
void l2_report(struct l2cache *l2, enum l2_result res);

/** Is the server currently skipped (backoff)? (tests, the SIGUSR1 log) */
bool l2_in_backoff(const struct l2cache *l2);

/** The next backoff after one of @p prev_ms (0: none yet): 1 s, doubling, at most 30 s. */
unsigned l2_backoff_next(unsigned prev_ms);

/** Make a value: the header for @p now_unix / @p lifetime, then @p wire. @return 0 or -ENOMEM
 * / -EINVAL (too long). */
int l2_value_encode(const uint8_t *wire, size_t len, uint64_t now_unix, uint32_t lifetime,
                    struct dg_buf *out);

/**
 * Check a value from Redis against the client's @p query (one that passed dns_query_check(),
 * hop options stripped) and age it: header (magic, version, length), the answer well formed
 * (dns_wire_check()), a response (QR, not TC, not SERVFAIL) to the same question (name
 * case-insensitive, type, class), stored not too far in the future; the age (now − stored) is
 * taken off every TTL (OPT excluded) and off the stored lifetime. The answer appended to
 * @p out carries the query's ID; @p left receives the lifetime left.
 * @return 0 (fresh: use it), 1 (expired: a miss), -EINVAL (invalid), -ENOMEM.
 */
int l2_value_decode(const uint8_t *val, size_t vlen, const uint8_t *query, size_t qlen,
                    uint64_t now_unix, struct dg_buf *out, uint32_t *left);

#endif
