/**
 * @file upstream.h
 * Non-blocking forwarding of DNS queries to upstream resolvers, per worker (one struct upstream
 * per event_base; never shared between threads).
 *
 * UDP first, from a socket with an OS-chosen random source port and a random 16-bit ID per try;
 * an answer is accepted only if it comes from the queried address and port, carries the try's ID
 * and the query's question (dns_answer_matches()). Everything else is counted and dropped. A
 * TC=1 answer makes the query retry over TCP to the same upstream; TCP connections are kept
 * open and pipelined (RFC 7766), answers matched by ID. Each try has its own timer
 * (upstream-timeout); on timeout or error the next upstream is tried, round robin, until the
 * total budget (query-timeout) is spent. Then the callback gets status -ETIMEDOUT.
 *
 * Lifetimes: the upstream module owns every query. The caller holds a handle and a callback
 * registration: upstream_query_cancel() removes it synchronously (the callback never runs after
 * cancel returns). The callback never runs synchronously from upstream_query_start().
 */
#ifndef DOHGATE_UPSTREAM_H
#define DOHGATE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct config;
struct upstream;
struct upstream_query;

/**
 * Completion callback. Called once, from the event loop, unless cancelled first.
 * @param status  0 with the answer, or -ETIMEDOUT (budget spent), -ECONNREFUSED (every
 *                upstream refused), -ENOMEM. On error @p ans is NULL.
 * @param ans     the upstream's answer; its ID is already set back to the ID of the query given
 *                to upstream_query_start(). Valid only during the call (copy it to keep it).
 * The query handle is already freed when this runs: do not cancel it.
 */
typedef void (*upstream_done_cb)(void *arg, int status, const uint8_t *ans, size_t len);

/**
 * Counters of one worker's upstream module (read by the owning thread, or after it stopped).
 * queries: started; answers: delivered; timeouts: tries that got no answer in time; errors: tries
 * that failed otherwise (ICMP refused, socket error, TCP connection lost); tcp_fallbacks: TC=1
 * answers that moved a query to TCP; dropped_mismatch: received messages not accepted (wrong
 * source, ID or question, unparseable, late answers to cancelled or timed-out TCP queries).
 */
struct upstream_stats {
    uint64_t queries, answers, timeouts, tcp_fallbacks, dropped_mismatch, errors;
};

struct dg_upstream;

/**
 * Create an upstream set of one worker over the servers @p srv[0..n) (at most
 * DG_CONFIG_MAX_LIST are used): the default `upstream` list, or one forward zone's
 * (cfg->fwd[i].up). Every transport, timer, the health and backoff work the same for any set.
 * Reads cfg->upstream_timeout_ms and query_timeout_ms. @p cfg and @p srv must outlive the
 * module. With n == 0 every upstream_query_start() fails.
 * @param obs_base  observer index of srv[0]: server i reports its events as obs_base + i
 *                  (upstream_obs_base() numbers all sets of one configuration).
 * @return NULL on error (logged).
 */
struct upstream *upstream_new_servers(struct event_base *base, const struct config *cfg,
                                      const struct dg_upstream *srv, size_t n, unsigned obs_base);
/** The default set: upstream_new_servers(base, cfg, cfg->upstream, cfg->n_upstream, 0). */
struct upstream *upstream_new(struct event_base *base, const struct config *cfg);
/**
 * The observer index of the first server of forward zone @p zone (cfg->fwd[zone]): the
 * default servers are 0..n_upstream-1, then zone 0's, zone 1's, ... With @p zone ==
 * cfg->n_forward_zone: the number of servers of the whole configuration.
 */
unsigned upstream_obs_base(const struct config *cfg, size_t zone);
/**
 * Free everything; pending queries are dropped without calling their callbacks. Must not be
 * called from inside an upstream_done_cb.
 */
void upstream_free(struct upstream *u);

/**
 * Start forwarding @p query (a checked DNS query; copied, the caller keeps its buffer).
 * @return the handle, or NULL (-ENOMEM / no upstream configured): then no callback will run.
 */
struct upstream_query *upstream_query_start(struct upstream *u, const uint8_t *query, size_t len,
                                            upstream_done_cb cb, void *arg);
/** Forget the caller's registration; after return @p cb will never be called for it. */
void upstream_query_cancel(struct upstream_query *q);

const struct upstream_stats *upstream_get_stats(const struct upstream *u);
struct dg_observer;
/** Report per-upstream tries, answers (with latency), timeouts, errors, marking down and
 * health (DG_EV_UP_*, idx = obs_base + the server's index in its list: see
 * upstream_new_servers()) to @p obs (may be NULL; must outlive @p u). Reports every server's
 * initial health (DG_EV_UP_HEALTH: SRTT unknown, up) at once. */
void upstream_set_observer(struct upstream *u, const struct dg_observer *obs);
struct uptls_ctx;
/** The TLS client context for DoT and DoH upstreams (uptls.h; not owned, must outlive @p u).
 * Without it (NULL) tries to such upstreams fail. Set before the first query. */
void upstream_set_tls(struct upstream *u, struct uptls_ctx *tls);
/** Queries in flight (for tests and shutdown). */
size_t upstream_pending(const struct upstream *u);

#endif
