/**
 * @file dnsserve.h
 * Answering one DNS query, whichever way it came (DoH, the JSON API, plain DNS over UDP or TCP,
 * DoT): the step every front end shares, so that a query costs the same and follows the same
 * rules on each. In order: the wire checks (dns_query_check(): FORMERR, NOTIMP, REFUSED
 * answered here), DDR, the policy step (policy.h: local data and zones, blocklists), RFC 8482
 * minimal ANY, then the resolver (cache, coalescing, upstreams); on the
 * way out, the answer is padded for a padded query on an encrypted transport (RFC 8467),
 * truncated to the client's UDP size (UDP only), counted (DG_EV_DNS_ANSWER by transport and
 * rcode) and written to the query log.
 *
 * Who may ask is decided before, by the front end (dns_serve_admit() for the DNS listeners,
 * the router for HTTP); what it does with a refusal is the front end's (403, REFUSED, silence).
 *
 * Lifetime: dns_serve() answers at once (a cache hit, an error answer) or returns a pending
 * handle; the callback then runs once from the event loop, never inside dns_serve(), unless
 * dns_serve_cancel() ran first (synchronous: afterwards the callback never runs). The handle
 * is gone when the callback runs. One thread: the worker's.
 */
#ifndef DOHGATE_DNSSERVE_H
#define DOHGATE_DNSSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/observer.h"
#include "dohgate/util.h"

struct handler_ctx;
struct client_id;
struct dns_serve_op;

/** One query as the front end received it. Borrowed for the call only (copied if needed). */
struct dns_serve_req {
    const uint8_t *q;
    size_t len;
    const struct client_id *client; /**< for the query log; may be NULL */
    enum dg_transport transport;
    /** How it came, for the query log ("GET HTTP/2", "UDP"); NULL: the transport's name. */
    const char *how;
    /** The client ID of the DoH path (/dns-query/ID) choosing a named policy (policy.h);
     * NULL: none (the client's network decides). */
    const char *policy_id;
    size_t policy_id_len;
};

/**
 * Completion of a pending query. @p ans is this client's answer (its ID and name spelling,
 * already padded or truncated as the transport needs); the callee may take its bytes (swap the
 * buffer with its own; what is left is freed after the call). An empty @p ans means no memory
 * for the answer: the front end fails the query its own way. @p ttl: the max-age for HTTP
 * caches (0 for error answers).
 */
typedef void (*dns_serve_cb)(void *arg, struct dg_buf *ans, uint32_t ttl);

enum dns_serve_status {
    DNS_SERVE_ANSWERED = 0, /**< @p ans filled now */
    DNS_SERVE_PENDING = 1,  /**< the callback will run (or dns_serve_cancel()) */
    DNS_SERVE_MALFORMED = 2 /**< no DNS answer can be made: @p why says why (HTTP 400, drop) */
};

/**
 * Answer @p req with @p ctx's configuration and resolver. @p ans receives a synchronous answer
 * (appended; the caller frees it). @p op receives the pending handle.
 * @return enum dns_serve_status, or -ENOMEM (nothing pending, no answer: the front end says
 *         "out of memory" its own way, e.g. 503 or SERVFAIL built with dns_make_error_answer()).
 */
int dns_serve(const struct handler_ctx *ctx, const struct dns_serve_req *req, struct dg_buf *ans,
              uint32_t *ttl, dns_serve_cb cb, void *arg, struct dns_serve_op **op,
              const char **why);

/**
 * An answer the front end decided on without asking: REFUSED after dns_serve_admit(), or a
 * rate-limit slip (NOERROR with @p tc: TC=1 and no records, the client asks again over TCP).
 * Made like dnsserve's own error answers (ID, question, OPT), padded on DoT for a padded query,
 * counted by transport and rcode and written to the query log like every other answer.
 * @return DNS_SERVE_ANSWERED (@p ans filled), DNS_SERVE_MALFORMED (the query does not parse:
 *         no answer echoes it), or -ENOMEM.
 */
int dns_serve_error(const struct handler_ctx *ctx, const struct dns_serve_req *req, int rcode,
                    bool tc, struct dg_buf *ans);

/** Set a pending query's callback argument after dns_serve() returned DNS_SERVE_PENDING (the
 * callback never runs before the caller is back in the loop): a front end allocates its own
 * per-query state only for queries that wait, not for every cache hit. */
void dns_serve_set_arg(struct dns_serve_op *op, void *arg);

/** Cancel a pending query: its callback never runs. Synchronous. */
void dns_serve_cancel(struct dns_serve_op *op);

/** What a plain-DNS or DoT front end does with a query before dns_serve(). */
enum dns_admit {
    DNS_ADMIT_OK,
    DNS_ADMIT_REFUSED, /**< answer REFUSED (TCP, DoT: the client deserves to know) */
    DNS_ADMIT_DROP,    /**< say nothing (UDP from a source not allowed: no reflection) */
};

/**
 * The policy for the DNS listeners: for plain DNS (UDP, TCP), the source must be in dns-allow
 * (by default loopback and private networks: not an open resolver); then, for every transport,
 * the client ACL and the per-client query rate (admission.h). Refusals are REFUSED answers,
 * except over UDP, where a source outside dns-allow gets nothing. Counts DG_EV_DNS_DROPPED.
 */
enum dns_admit dns_serve_admit(const struct handler_ctx *ctx, const struct client_id *client,
                               enum dg_transport transport);

/** The transport's name as the metrics and the query log show it ("dns-udp", "dot", ...). */
const char *dns_transport_name(enum dg_transport t);

#endif
