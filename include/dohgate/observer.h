/**
 * @file observer.h
 * Events that the modules report for counting: connections and bytes (conn, worker), HTTP
 * responses (http), DoH answers (doh_handler), questions (resolver) and upstream tries
 * (upstream). A module holds a `const struct dg_observer *` (NULL: nobody listens, as in unit
 * tests and fuzzers) and calls dg_observe(); the metrics module implements the observer
 * (metrics_observer_init()) and is the only one that knows how events become Prometheus series.
 * So no module below metrics includes metrics.h, and the counters' layout stays in metrics.c.
 *
 * This header sits in the lowest layer (beside util.h): it names events, it knows no module.
 * The callback runs synchronously on the reporting thread (each worker has its own observer,
 * whose counters only that worker writes) and must not call back into the reporter.
 */
#ifndef DOHGATE_OBSERVER_H
#define DOHGATE_OBSERVER_H

#include <stdint.h>

/** What @p idx and @p value of dg_observe() mean is given for each event. */
enum dg_event {
    /* connections (conn, worker); idx: enum dg_listener */
    DG_EV_CONN_ACCEPTED,
    DG_EV_CONN_CLOSED,
    DG_EV_CONN_REFUSED,  /**< closed at accept; idx: enum dg_refusal (not a listener) */
    DG_EV_TLS_HANDSHAKE, /**< idx: DG_TLS_13 and DG_TLS_RESUMED bits */
    DG_EV_TLS_FAILED,    /**< a handshake failed, timed out or the client left during it */
    DG_EV_BYTES_IN,      /**< value: HTTP bytes read on a client connection */
    DG_EV_BYTES_OUT,     /**< value: HTTP bytes written */
    /* HTTP (http.c): idx: the status sent; value: DG_HTTP_KEY(version, method) */
    DG_EV_HTTP_RESPONSE,
    /* DNS answers to clients (dnsserve.c): idx: DG_DNS_KEY(transport, rcode) of an answer sent */
    DG_EV_DNS_ANSWER,
    DG_EV_DNS_TRUNCATED, /**< a UDP answer went out with TC=1 (too large, or slipped) */
    DG_EV_DNS_DROPPED,   /**< plain-DNS queries got no answer; idx: enum dg_dns_drop;
                              value: how many */
    /* the policy step (policy.c) */
    DG_EV_LOCAL_ANSWER, /**< answered from local data; idx 0: records, 1: a negative answer
                             of a local zone (NXDOMAIN, NODATA) */
    DG_EV_BLOCKED,      /**< a blocklist answered; idx: the list (its blocklist position) */
    /* client questions (resolver.c); idx unused */
    DG_EV_RES_HIT,       /**< answered from the cache */
    DG_EV_RES_STALE_HIT, /**< answered from an expired entry after upstream failure */
    DG_EV_RES_MISS,
    DG_EV_RES_COALESCED, /**< waited for an identical question already sent */
    DG_EV_RES_PREFETCH,  /**< a background refresh started */
    DG_EV_RES_SERVFAIL,  /**< no upstream answered and nothing stale: SERVFAIL */
    DG_EV_RES_REJECTED,  /**< too many in flight: SERVFAIL */
    /* upstream tries (upstream.c); idx: the server's number, upstream_obs_base() + its index */
    DG_EV_UP_QUERY,       /**< a try was sent (or failed before it could be) */
    DG_EV_UP_ANSWER,      /**< value: microseconds from the try to its accepted answer */
    DG_EV_UP_TIMEOUT,     /**< a try got no answer in time */
    DG_EV_UP_ERROR,       /**< a try failed at once (refused, unreachable, reset) */
    DG_EV_UP_MARKED_DOWN, /**< the worker stopped using the server */
    DG_EV_UP_HEALTH,      /**< value: DG_UP_HEALTH(srtt_us, down): this worker's view now */
    DG_EV_UP_CONNECT,     /**< a connection (TCP, TLS, HTTPS) to the server was opened */
    DG_EV_UP_HANDSHAKE,   /**< a TLS handshake completed; value 1: it resumed a session */
    DG_EV_UP_CONN_FAILED, /**< a connection failed before its handshake was done; value 1:
                               its certificate failed verification or pinning */
    DG_EV_UP_REUSED,      /**< a try went on a connection already open */
    /* the shared second-level cache (l2cache.c, resolver.c) */
    DG_EV_REDIS_LOOKUP, /**< idx: enum l2_result of l2cache.h (hit, miss, timeout, error,
                             skipped, invalid) */
    DG_EV_REDIS_STORE,  /**< an answer was sent to Redis (SET ... EX) */
    DG_EV_REDIS_DOWN,   /**< value 1: this worker's Redis connection failed or timed out and is
                             skipped for a backoff (each time); 0: it answered again */
    /* budgets (budget.c) and progress timeouts (conn, h1, h2) */
    DG_EV_BUDGET_REFUSED, /**< idx: BUDGET_EVENT_IDX(kind, level) of budget.h */
    DG_EV_STALLED,        /**< idx: enum dg_stall: closed or reset for making no progress */
    /* the PROXY protocol (conn.c) */
    DG_EV_PROXY_PROTOCOL, /**< a connection's PROXY header, taken or refused; idx: enum
                               dg_pp_result */
};

/** The listener a connection came from (idx of the DG_EV_CONN_* events). */
enum dg_listener {
    DG_LISTENER_TLS,
    DG_LISTENER_PLAIN,
    DG_LISTENER_METRICS,
    DG_LISTENER_DNS_TCP,   /**< dns-listen, TCP (RFC 7766) */
    DG_LISTENER_DOT,       /**< dot-listen (RFC 7858) */
    DG_LISTENER_CLEARTEXT, /**< plain-listen: DoH and the site without TLS, behind a proxy */
    DG_NLISTENER
};

/** How a DNS query reached us (for DG_DNS_KEY). */
enum dg_transport {
    DG_TR_DOH,     /**< RFC 8484 on the TLS listener */
    DG_TR_JSON,    /**< the JSON API on the TLS listener */
    DG_TR_DNS_UDP, /**< dns-listen, UDP */
    DG_TR_DNS_TCP, /**< dns-listen, TCP */
    DG_TR_DOT,     /**< dot-listen */
    DG_NTRANSPORT
};

/** Why a plain-DNS query got no answer at all (idx of DG_EV_DNS_DROPPED). */
enum dg_dns_drop {
    DG_DROP_SOURCE,    /**< UDP from a source dns-allow does not list */
    DG_DROP_RATE,      /**< over dns-rate-limit, not slipped */
    DG_DROP_MALFORMED, /**< no answer can be made (not even FORMERR) */
    DG_DROP_SEND,      /**< the answer was made but the socket took none (buffer full, OOM) */
    DG_NDROP
};

/** A DNS answer's transport and rcode (low 4 bits) in one idx. */
#define DG_DNS_KEY(transport, rcode) (((unsigned)(transport) << 4) | ((unsigned)(rcode)&15u))
#define DG_DNS_KEY_TRANSPORT(key)    ((unsigned)(key) >> 4)
#define DG_DNS_KEY_RCODE(key)        ((unsigned)(key)&15u)

/** Why a connection was closed at accept (idx of DG_EV_CONN_REFUSED). */
enum dg_refusal {
    DG_REFUSE_MAX_CONNS,  /**< max-connections (per worker) */
    DG_REFUSE_PER_CLIENT, /**< max-connections-per-client */
    DG_REFUSE_RATE,       /**< connection-rate-limit */
    DG_REFUSE_ACL,        /**< deny-client / allow-client with acl-scope all */
    DG_NREFUSE
};

/** What send-timeout ended (idx of DG_EV_STALLED). */
enum dg_stall {
    DG_STALL_CONNECTION, /**< response data waiting, none accepted: the connection closed */
    DG_STALL_STREAM,     /**< a stream holding a resource made no progress: reset */
    DG_NSTALL
};

/** What became of a PROXY protocol header (idx of DG_EV_PROXY_PROTOCOL). */
enum dg_pp_result {
    DG_PP_V1,        /**< a v1 header named the client */
    DG_PP_V2,        /**< a v2 header named the client */
    DG_PP_LOCAL,     /**< a header without a client (v2 LOCAL: health checks; v1 UNKNOWN) */
    DG_PP_MISSING,   /**< a proxy-protocol-from peer sent no header (or closed first) */
    DG_PP_INVALID,   /**< a malformed or truncated header: closed */
    DG_PP_OVERSIZED, /**< v1 without CRLF in 107 bytes, v2 longer than PP_MAX: closed */
    DG_PP_UNTRUSTED, /**< a header from a peer outside proxy-protocol-from: closed */
    DG_PP_TIMEOUT,   /**< no whole header within handshake-timeout: closed */
    DG_NPP
};

#define DG_TLS_13      1u
#define DG_TLS_RESUMED 2u

/** HTTP version (10, 11, 20) and method class (enum http_method_kind of http.h) in one value. */
#define DG_HTTP_KEY(version, method) (((uint64_t)(version) << 8) | (uint64_t)(method))
#define DG_HTTP_KEY_VERSION(key)     ((unsigned)((key) >> 8))
#define DG_HTTP_KEY_METHOD(key)      ((unsigned)((key)&0xff))

/** An upstream's smoothed answer time (µs, 0 = unknown) and down flag in one value. */
#define DG_UP_HEALTH(srtt_us, down) (((uint64_t)(srtt_us) << 1) | ((down) ? 1u : 0u))
#define DG_UP_HEALTH_SRTT(v)        ((v) >> 1)
#define DG_UP_HEALTH_DOWN(v)        ((v)&1u)

struct dg_observer {
    void (*event)(void *arg, enum dg_event ev, unsigned idx, uint64_t value);
    void *arg;
};

/** Report an event; @p obs may be NULL. */
static inline void dg_observe(const struct dg_observer *obs, enum dg_event ev, unsigned idx,
                              uint64_t value)
{
    if (obs)
        obs->event(obs->arg, ev, idx, value);
}

#endif
