/**
 * @file dnsudp.h
 * Plain DNS over UDP (dns-listen): the front end that reads datagrams, asks dns_serve() and
 * sends the answers back, from the address the query was sent to.
 *
 * Two objects:
 * - struct dnsudp, a reader: one per UDP socket per worker. It reads in batches (recvmmsg(),
 *   DNSUDP_BATCH datagrams per call, at most DNSUDP_CALLS_PER_EV calls per readiness event, so
 *   that a flood on UDP cannot starve the worker's TCP side), answers what can be answered at
 *   once (cache hits, errors) with one sendmmsg() per batch, and sends the answers that came
 *   later at the end of the loop turn (a low-priority event, as conn.c's flush), again batched.
 *   A send the kernel refuses (socket buffer full) is dropped and counted: UDP is lossy, and a
 *   queue would only grow under the load that filled the buffer.
 * - struct dnsudp_set, embedded in a worker's view (one configuration): its handler context,
 *   its rate-limit table, and the queries still waiting for the resolver. A pending query
 *   belongs to the view that started it, so a retired view (after a reload) stays until its
 *   count is 0, as it does for its connections.
 *
 * Per datagram, in order: source port 0 and answers (QR=1: RFC 5452, no loops) are dropped;
 * dns_serve_admit() (a source outside dns-allow: nothing; the ACL or the query rate: REFUSED);
 * the rate limit (rrl.h) charged before dns_serve(), so a flood over the limit costs no
 * resolver work (one token per answer we would send; a slipped answer is TC=1 with the
 * question only); then dns_serve() (malformed queries: no answer, counted).
 *
 * Lifetimes: the caller owns the socket (dnsudp_free() does not close it). A pending query
 * holds its set and its reader; dnsudp_set_cancel_all() cancels a set's queries (synchronous:
 * their callbacks never run afterwards) and must run before the set or any reader it used is
 * freed. One thread: the worker's.
 *
 * Layer: beside conn (it drives dnsserve as conn drives the HTTP sessions).
 */
#ifndef DOHGATE_DNSUDP_H
#define DOHGATE_DNSUDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/list.h"
#include "dohgate/observer.h"

struct event_base;
struct handler_ctx;
struct rrl;

#define DNSUDP_BATCH        64 /**< datagrams per recvmmsg() */
#define DNSUDP_CALLS_PER_EV 4  /**< recvmmsg() calls per readiness event */
/** Largest query read; a longer datagram is malformed (no answer). */
#define DNSUDP_MAX_QUERY 4096

struct dnsudp_set {
    const struct handler_ctx *hctx; /**< the view's; outlives the set */
    struct rrl *rrl;                /**< dns-rate-limit table, or NULL (no limit) */
    struct dg_list ops;             /**< pending queries */
    size_t count;                   /**< how many */
    /** Called when count drops to 0 as a query ends (not by dnsudp_set_cancel_all()); runs
     * inside a resolver callback: it must not free the set (schedule that instead). */
    void (*on_empty)(struct dnsudp_set *set, void *arg);
    void *on_empty_arg;
};

/** Cancel every pending query of @p set (synchronous; on_empty is not called). */
void dnsudp_set_cancel_all(struct dnsudp_set *set);

struct dnsudp;

/** Counters of one reader (this worker's). */
struct dnsudp_stats {
    uint64_t received;     /**< datagrams read */
    uint64_t sent;         /**< answers the kernel took */
    uint64_t send_dropped; /**< answers dropped: socket buffer full, or a send error */
};

/**
 * A reader for UDP socket @p fd (made non-blocking; packet-info options turned on so that
 * answers leave from the query's destination address), reading nothing until dnsudp_enable().
 * @p flush_priority: the event priority of the end-of-turn send (the lowest the base has).
 * @p obs: where DG_EV_DNS_* events are counted (may be NULL).
 * @return NULL on OOM.
 */
struct dnsudp *dnsudp_new(struct event_base *base, int fd, int flush_priority,
                          const struct dg_observer *obs);
/** New queries from now on go to @p set (a reload's new view). */
void dnsudp_use(struct dnsudp *u, struct dnsudp_set *set);
/** Start (or stop) reading. @return 0 or -ENOMEM. */
int dnsudp_enable(struct dnsudp *u, bool on);
const struct dnsudp_stats *dnsudp_get_stats(const struct dnsudp *u);
/**
 * Free the reader; answers queued and not yet sent are dropped. Every set it served must
 * have been cancelled (dnsudp_set_cancel_all()) first. NULL is ignored.
 */
void dnsudp_free(struct dnsudp *u);

#endif
