/**
 * @file policy.h
 * The policy step: what dohgate answers itself before the cache and the upstreams, for every
 * transport (DoH, JSON, plain DNS, DoT: dnsserve.c calls policy_apply()). In order:
 *  1. local data and local zones (localdata.h: local-record, hosts-file, local-zone and the
 *     RFC 6303 defaults): answered, never forwarded;
 *  2. blocklists (blocklist, in the policy that applies to the client), unless an allowlist
 *     holds the name: the block-answer (null: 0.0.0.0 / :: / NODATA, NXDOMAIN with a SOA, or
 *     REFUSED), TTL block-ttl, an Extended DNS Error "Blocked" naming the list (RFC 8914);
 *  3. everything else goes on to the resolver (which picks a forward-zone's upstreams by the
 *     name, resolver.h).
 *
 * Which blocklists apply: the named policy of the client (policy-client: a DoH path ID
 * /dns-query/ID, else the longest matching network), else the policy named "default", else
 * (no policy named "default", whatever other policies exist) every blocklist.
 *
 * A struct policy is immutable and reference counted; it holds everything the files gave
 * (built by policy_build() on the main thread, off the event loops). A struct policy_slot holds
 * the current one for the whole process: SIGHUP (reload.c) and the file watch
 * (policy_slot_poll(), from main's once-a-second tick) publish a new one; each worker view
 * picks it up at its next query through its struct policy_view (one relaxed atomic load per
 * query when nothing changed), so a swap drops or delays no query. On a bad file the old
 * policy stays and one line says why.
 */
#ifndef DOHGATE_POLICY_H
#define DOHGATE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct config;
struct client_id;
struct dg_observer;
struct policy;
struct policy_slot;

/** Most blocklists (their masks are 32 bits). */
#define POLICY_MAX_LISTS 32
/** Largest list or hosts file read (a 1,000,000-name list is about 25 MB). */
#define POLICY_MAX_FILE (512u << 20)

/**
 * Build the policy of @p cfg: read its hosts files, blocklists and allowlists, parse its local
 * records, add the default local zones not overridden by a local-zone or forward-zone.
 * @return the policy (one reference), or NULL with "FILE:LINE: message" (or "FILE: message")
 *         in @p err.
 */
struct policy *policy_build(const struct config *cfg, char *err, size_t errlen);
struct policy *policy_ref(struct policy *p);
/** Thread-safe; the last reference frees (on whichever thread drops it). NULL is ignored. */
void policy_unref(struct policy *p);

/** One line for the log: "N local records, N local zones, N blocked names in N lists (N MB),
 * N allowed names". */
void policy_describe(const struct policy *p, char *out, size_t outlen);

/** The index of the named policy a DoH path ID selects, or -1 (no such ID). */
int policy_find_id(const struct policy *p, const char *id, size_t len);

/** What policy_apply() did, for tests and the query log. */
enum policy_outcome {
    POLICY_PASS = 0, /**< not ours: go on to the resolver */
    POLICY_LOCAL,    /**< local data or a local zone answered */
    POLICY_BLOCKED,  /**< a blocklist answered */
};

/**
 * Apply @p p to @p q (a query that passed dns_query_check()) from @p client (may be NULL),
 * with the policy @p id names (@p id may be NULL; an unknown ID counts as none).
 * @param ans  receives the answer unless POLICY_PASS (appended).
 * @param ttl  its max-age.
 * Counts DG_EV_POLICY (local answers, blocked answers by list) on @p obs (may be NULL).
 * @return enum policy_outcome, or -ENOMEM (nothing answered).
 */
int policy_apply(const struct policy *p, const uint8_t *q, size_t qlen,
                 const struct client_id *client, const char *id, size_t id_len, struct dg_buf *ans,
                 uint32_t *ttl, const struct dg_observer *obs);

/* ---- the current policy of the process ---- */

/** @p p: the first policy (the slot takes the reference). @return NULL on OOM (p kept). */
struct policy_slot *policy_slot_new(struct policy *p);
/** After every view released its policy (the workers have stopped). */
void policy_slot_free(struct policy_slot *s);
/** The current policy, for the main thread (which alone replaces it): logs, tests. */
const struct policy *policy_slot_peek(const struct policy_slot *s);
/** Make @p p current (takes the reference); views pick it up at their next query. Main thread. */
void policy_slot_publish(struct policy_slot *s, struct policy *p);

/**
 * The file watch, main thread: every call stats the current policy's files (those of @p cfg);
 * a change seen the same on two calls in a row (a settled file, as the certificates) rebuilds
 * the policy from @p cfg and publishes it.
 * @return 0 (nothing to do), 1 (a new policy is in: @p err holds the description), -1 (the
 *         rebuild failed: the old policy stays, @p err says why, once per change).
 */
int policy_slot_poll(struct policy_slot *s, const struct config *cfg, char *err, size_t errlen);

/** A worker view's hold on the current policy: one per view, used on its thread only. */
struct policy_view {
    struct policy_slot *slot; /**< NULL: no policy step (tests) */
    /** the view's configuration: a policy built for other forward zones is not taken (the
     * view keeps the policy it had; policy_view_get() is called once at the view's start) */
    const struct config *cfg;
    uint64_t gen;
    struct policy *p;
};

/** The current policy for this view (picked up when the slot changed); NULL without a slot. */
const struct policy *policy_view_get(struct policy_view *v);
/** Drop the view's reference (view teardown). */
void policy_view_release(struct policy_view *v);

#endif
