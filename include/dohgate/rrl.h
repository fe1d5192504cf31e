/**
 * @file rrl.h
 * Response rate limiting for plain DNS over UDP (dns-rate-limit, dns-rate-slip): a token bucket
 * per client network, so that a server reachable from spoofed sources cannot be turned into an
 * amplifier. A network is an IPv4 /24 or an IPv6 /56, as BIND's RRL groups them (one attacker
 * rarely spoofs a single address; one household holds a whole /56). Each bucket holds at most
 * one second's worth (burst = rate) and refills continuously.
 *
 * Over the limit, every slip-th limited answer is let through truncated (TC=1, no records: a
 * real client retries over TCP, where spoofing is impossible) and the others are dropped, as in
 * BIND (slip 0: drop them all; slip 1: truncate them all).
 *
 * One table for all workers: SO_REUSEPORT spreads one source's datagrams over the workers by
 * source port, so per-worker tables would multiply the limit by the number of workers. Sharded
 * (a mutex per shard, held for a hash lookup) and bounded: at most max_entries networks, every
 * entry allocated when the table is made; a new network takes the place of the shard's least
 * recently seen one, so a flood of random sources costs no memory and only forgets old buckets
 * (a forgotten network starts again with a full bucket).
 *
 * Threads: rrl_check() is thread-safe; rrl_new()/rrl_free() are not (one owner, the snapshot).
 * Layer: beside clients (client.h only).
 */
#ifndef DOHGATE_RRL_H
#define DOHGATE_RRL_H

#include <stddef.h>
#include <stdint.h>

#include "dohgate/client.h"

struct rrl_config {
    unsigned rate;      /**< answers per second per network; also the bucket size (> 0) */
    unsigned slip;      /**< every slip-th limited answer goes truncated; 0: none does */
    size_t max_entries; /**< networks tracked at once (at least one per shard is kept) */
};

enum rrl_verdict {
    RRL_PASS, /**< within the limit: answer normally */
    RRL_SLIP, /**< over it, and this one slips: answer with TC=1 and no records */
    RRL_DROP, /**< over it: no answer */
};

struct rrl;

/** @return a table (all its entries allocated), or NULL on OOM or rate 0. */
struct rrl *rrl_new(const struct rrl_config *cfg);
void rrl_free(struct rrl *r);

/**
 * Account one answer to @p client at @p now_ms (monotonic). Unknown clients (len 0) always
 * pass: there is nobody to answer anyway. Thread-safe.
 */
enum rrl_verdict rrl_check(struct rrl *r, const struct client_id *client, uint64_t now_ms);

/** Networks tracked now (for tests). */
size_t rrl_entries(struct rrl *r);

/** The number of shards (for tests: the eviction bound is per shard). */
#define RRL_SHARDS 16

#endif
