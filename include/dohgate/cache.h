/**
 * @file cache.h
 * The DNS answer cache: one instance shared by every worker, sharded (one mutex per shard) so
 * workers rarely meet on a lock, bounded in bytes (entries, index and bookkeeping all counted),
 * LRU per shard. No I/O, no event loop: fully unit-testable.
 *
 * Key: lower-cased QNAME + QTYPE + QCLASS + DO bit + CD bit + whether the query had EDNS (an
 * answer to a query without OPT must not carry one, RFC 6891 §6.1.1). ECS is stripped before
 * forwarding by the caller, so it never reaches the key.
 *
 * An entry stores the answer's wire bytes and the offset of every TTL field in it (OPT
 * excluded), the time it was stored and its lifetime. A hit copies the bytes, writes the
 * client's ID and the client's spelling of the question name, and rewrites every TTL as
 * (stored TTL − age): no parsing on the hit path.
 *
 * Lifetime rules: dnswire_answer_lifetime() (dnswire.h) under the TTL knobs below, the same
 * function that gives the Cache-Control max-age of an answer the cache does not keep
 * (cache_answer_lifetime()), so that both paths give one number:
 *  - positive answers: min TTL of answer + authority records, clamped to [min_ttl, max_ttl];
 *  - NXDOMAIN / NODATA: min(SOA TTL, SOA MINIMUM), clamped to [min_ttl, max_negative_ttl];
 *    without a SOA: nosoa_negative_ttl;
 *  - SERVFAIL: servfail_ttl (0 = not cached; at most 30);
 *  - TC=1, malformed, or other rcodes (REFUSED, NOTIMP, FORMERR...): never cached; a lifetime
 *    of 0 after clamps is not cached either.
 *  - after expiry an entry stays, usable only as stale data, for stale_max_s more seconds
 *    (serve_stale on); stale answers carry TTL stale_answer_ttl.
 * The stored TTLs are brought into the same bounds (clamped; the SOA of a negative answer set
 * to min(SOA TTL, SOA MINIMUM)), so the TTLs served agree with the entry's lifetime. A SERVFAIL
 * does not replace an entry that can still be served fresh or stale (cache_insert returns 1).
 *
 * Thread safety: every function may be called from any thread concurrently, except
 * cache_new()/cache_free().
 */
#ifndef DOHGATE_CACHE_H
#define DOHGATE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct cache;

struct cache_config {
    size_t max_bytes;            /**< total bound, default 64 MiB; 0: store nothing (caching
                                      off), but cache_key_make() still works */
    unsigned nshards;            /**< power of two; 0 → 64 */
    uint32_t min_ttl;            /**< default 0 */
    uint32_t max_ttl;            /**< default 86400 */
    uint32_t max_negative_ttl;   /**< default 3600 */
    uint32_t nosoa_negative_ttl; /**< default 30 */
    uint32_t servfail_ttl;       /**< default 5 */
    bool serve_stale;            /**< default true */
    uint32_t stale_max_s;        /**< default 86400 */
    uint32_t stale_answer_ttl;   /**< default 30 */
    unsigned prefetch_percent;   /**< refresh hits in the last N% of the TTL; 0 = off; default 10.
                                      Entries living under 10 s are never prefetched. */
};

/** Fill @p cc with the defaults above. */
void cache_config_defaults(struct cache_config *cc);

#define CACHE_KEY_MAX (255 + 5)

struct cache_key {
    uint8_t data[CACHE_KEY_MAX];
    size_t len;
    uint64_t hash;
};

/** @return NULL on OOM or invalid config (max_bytes too small for the shards' bookkeeping). */
struct cache *cache_new(const struct cache_config *cc);
void cache_free(struct cache *c);
/**
 * Reload: take @p cc's TTL and stale/prefetch knobs (not max_bytes, not nshards) for the answers
 * stored and served from now on. Thread-safe; entries already stored keep their lifetimes.
 */
void cache_set_policy(struct cache *c, const struct cache_config *cc);

/**
 * Build the key of a query that passed dns_query_check().
 * @return 0 or -EINVAL (question does not parse).
 */
int cache_key_make(const struct cache *c, const uint8_t *query, size_t len, struct cache_key *k);

enum cache_result { CACHE_MISS = 0, CACHE_HIT, CACHE_STALE };

struct cache_hit_info {
    uint32_t ttl;  /**< smallest TTL left in the answer served (for Cache-Control) */
    bool prefetch; /**< the entry is in the last prefetch_percent of its life and no prefetch
                        was signalled for it yet: the caller should refresh it in the
                        background (signalled once per stored answer) */
};

/**
 * Look up @p k. On HIT (fresh) or STALE (expired, within stale_max_s, and CACHE_ALLOW_STALE in
 * @p flags) the answer is appended to @p out with the ID and question name taken from @p query.
 * @param now_ms  a monotonic clock in milliseconds (dg_now_ms()); tests pass their own.
 * @param flags   CACHE_ALLOW_STALE; CACHE_UNCOUNTED for lookups that are not a client's
 *                question (serving waiters from the entry just stored, probes): the hit and
 *                miss counters then stay as they are. CACHE_KEY_OF_QUERY: @p k was made
 *                from @p query by cache_key_make() (or equals a key made from it), so the
 *                check that @p query asks the key's question is skipped (it walks the
 *                question once more); a caller that cannot promise this must not pass it.
 * @return CACHE_MISS (out untouched), CACHE_HIT or CACHE_STALE; CACHE_MISS also on OOM.
 */
enum cache_result cache_lookup(struct cache *c, const struct cache_key *k, const uint8_t *query,
                               size_t qlen, uint64_t now_ms, unsigned flags, struct dg_buf *out,
                               struct cache_hit_info *info);
#define CACHE_ALLOW_STALE  1u /* true, for callers that pass a bool */
#define CACHE_UNCOUNTED    2u
#define CACHE_KEY_OF_QUERY 4u

/**
 * Store an upstream answer (already matched to the query) under @p k, replacing an older entry.
 * Evicts least recently used entries of the shard to stay within the bound.
 * @return 0 stored, 1 not cacheable (TC, malformed, rcode, TTL 0 after clamps), -ENOMEM,
 *         -E2BIG (larger than a shard's budget).
 */
int cache_insert(struct cache *c, const struct cache_key *k, const uint8_t *ans, size_t len,
                 uint64_t now_ms);

/**
 * The lifetime in seconds cache_insert() gives @p ans (0: it would not keep it), computed under
 * this cache's TTL knobs whether or not it stores anything (max_bytes 0 included): the
 * Cache-Control max-age of an answer served without going through the cache, equal to the
 * max-age a hit on the freshly stored entry reports. No lock taken. @p c may be NULL (0).
 */
uint32_t cache_answer_lifetime(const struct cache *c, const uint8_t *ans, size_t len);

/** Lookups count as they happen: besides client cache hits, hits include the answers to the
 * clients that waited for an upstream answer (served from the entry just stored) and lookups
 * made to find stale data; the resolver's own counters tell clients' hits from misses. */
struct cache_stats {
    uint64_t hits, stale_hits, misses, inserts, evictions;
    uint64_t entries, bytes; /**< current values */
};

/** Sum of all shards (takes each shard lock briefly). */
void cache_get_stats(struct cache *c, struct cache_stats *out);

#endif
