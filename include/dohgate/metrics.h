/**
 * @file metrics.h
 * Counters for the Prometheus endpoint (metrics-listen). Each worker owns one struct
 * worker_metrics and is its only writer; the page is rendered on whichever worker serves the
 * metrics listener, reading every worker's counters. So counters are C11 atomics written with
 * relaxed load+store (a plain increment on x86, no locked instruction: there is one writer)
 * and read with relaxed loads: a scrape may see a counter a few increments late, never torn.
 *
 * The modules do not write these counters: they report events (observer.h), and the observer
 * that metrics_observer_init() makes counts them here. So the Prometheus layout is known to
 * this module only, and no module below it includes this header.
 */
#ifndef DOHGATE_METRICS_H
#define DOHGATE_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/budget.h"
#include "dohgate/config.h"
#include "dohgate/observer.h"

typedef _Atomic uint64_t dg_counter;

/** Single-writer increment: see the file comment. */
static inline void ctr_add(dg_counter *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}
static inline uint64_t ctr_get(const dg_counter *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

enum { MET_V10, MET_V11, MET_V2, MET_NVER };
enum { MET_GET, MET_POST, MET_HEAD, MET_OTHER, MET_NMETHOD };
#define MET_NSTATUS     24 /* the statuses this server sends, and "other" */
#define MET_LAT_BUCKETS 12 /* upstream latency: 0.5 ms .. 2.5 s, then +Inf */
/**
 * Upstream servers with series of their own: the default ones (at most DG_CONFIG_MAX_LIST)
 * and the forward zones' after them, numbered as upstream_obs_base() numbers them (the index
 * of the DG_EV_UP_* events). Servers past this bound (many zones with many servers each) work
 * as any other but are not counted, and have no series.
 */
#define MET_MAX_UPSTREAMS 64

struct upstream_metrics {
    dg_counter queries;         /**< tries sent to this server (UDP, or TCP after truncation) */
    dg_counter answers;         /**< accepted answers */
    dg_counter timeouts;        /**< tries that got no answer in time */
    dg_counter errors;          /**< tries that failed at once (refused, unreachable, reset) */
    dg_counter marked_down;     /**< times this worker stopped using the server */
    dg_counter connections;     /**< connections opened (TCP, TLS, HTTPS) */
    dg_counter handshakes;      /**< TLS handshakes completed */
    dg_counter resumed;         /**< ... of which resumed a session */
    dg_counter conn_failures;   /**< connections that failed before their handshake was done */
    dg_counter verify_failures; /**< ... of which for a certificate (verification, pin) */
    dg_counter reused;          /**< tries sent on a connection already open */
    dg_counter srtt_us;         /**< gauge: this worker's smoothed answer time, 0 = unknown */
    dg_counter down;            /**< gauge: 1 while this worker does not use the server */
    dg_counter lat[MET_LAT_BUCKETS + 1]; /**< answers by latency bucket (not cumulative) */
    dg_counter lat_sum_us;
};

#define METRICS_MAX_LISTS 32 /**< blocklists counted (POLICY_MAX_LISTS) */

struct worker_metrics {
    dg_counter http[MET_NVER][MET_NMETHOD][MET_NSTATUS];
    dg_counter rcode[DG_NTRANSPORT][16];
    dg_counter dns_truncated;
    dg_counter dns_dropped[DG_NDROP];
    dg_counter local_answers[2];           /**< DG_EV_LOCAL_ANSWER: records, negative */
    dg_counter blocked[METRICS_MAX_LISTS]; /**< DG_EV_BLOCKED, by blocklist position */
    dg_counter conn_accepted[DG_NLISTENER];
    dg_counter conn_closed[DG_NLISTENER];
    dg_counter conn_refused[DG_NREFUSE];
    dg_counter budget_refused[BUDGET_NKIND * BUDGET_NLEVEL]; /**< BUDGET_EVENT_IDX */
    dg_counter stalled[DG_NSTALL];                           /**< send-timeout, by what */
    dg_counter proxy_protocol[DG_NPP];                       /**< PROXY headers, by result */
    dg_counter tls_handshakes[2][2];                         /**< [TLS 1.2, 1.3][full, resumed] */
    dg_counter tls_failed;          /**< handshakes that failed or timed out */
    dg_counter bytes_in, bytes_out; /**< HTTP bytes on client connections (inside TLS) */
    /** by upstream_obs_base() index: cfg->upstream's, then each forward zone's */
    struct upstream_metrics up[MET_MAX_UPSTREAMS];
    /** client questions by outcome (DG_EV_RES_*) */
    dg_counter res_hits, res_stale_hits, res_misses, res_coalesced, res_prefetches, res_servfails,
        res_rejected;
    /** the shared second-level cache (DG_EV_REDIS_*): lookups by enum l2_result, stores, times
     * a connection was given a rest, and whether the last event said it is resting (0/1) */
    dg_counter redis_lookups[8], redis_stores, redis_backoffs, redis_down;
};

struct cache;
struct tls_store;
struct acme;

/** Everything a scrape reads. Made by main, shared read-only by the workers. */
struct metrics {
    struct worker_metrics *w; /**< nworkers of them */
    unsigned nworkers;
    const struct config *cfg;
    struct cache *cache;
    struct tls_store *tls;
    /** the ACME client (acme.h), set by main once started; NULL: no acme-domain. Written
     * before the workers serve scrapes (atomic: main starts the client after the workers). */
    struct acme *_Atomic acme;
    uint64_t start_time; /**< seconds since the epoch */
};

/** @return NULL on OOM. @p cache and @p tls may be NULL; all must outlive the result. */
struct metrics *metrics_new(unsigned nworkers, const struct config *cfg, struct cache *cache,
                            struct tls_store *tls);
void metrics_free(struct metrics *m);

/**
 * Make @p obs count the events of one worker into @p wm (its only writer). @p wm NULL: @p obs
 * counts nothing. @p wm must outlive every use of @p obs.
 */
void metrics_observer_init(struct dg_observer *obs, struct worker_metrics *wm);

/**
 * Append the Prometheus text exposition (format 0.0.4) of everything to @p out.
 * @return 0 or -ENOMEM.
 */
struct dg_buf;
int metrics_render(const struct metrics *m, struct dg_buf *out);

struct http_exchange;
/** The metrics listener's handler: GET /metrics, GET /healthz, else 404 (405 for methods). */
void metrics_handle(struct http_exchange *ex);

#endif
