/**
 * @file proxy.h
 * Reverse proxy to the site's HTTP/1.1 backend (site-backend), one per worker, on the worker's
 * event loop. The request (method, target, headers without hop-by-hop fields, plus Host,
 * X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host) is sent at once. A streamed body
 * (req.body_stream) follows as the backend socket takes it, pulled with http_req_body_read()
 * and sent with the client's length or with chunked coding, so that a slow backend slows the
 * client down (the transports let it send only as bytes are taken); a body the transport
 * holds whole (HTTP/1.1 bodies that came with their head) is sent from req.body. A response
 * head that comes before the body's end stops the sending (the rest is abandoned, the backend
 * connection not reused). The response is parsed with libhttp-parser and streamed to the
 * client through an http_body_source:
 * at most PROXY_BUFFER bytes are held per request; beyond that the backend is not read until the
 * client has taken them (backpressure both ways through the transports' flow control).
 *
 * Backend connections are kept alive and reused (at most PROXY_IDLE_MAX idle per worker, closed
 * after PROXY_IDLE_S or when the backend closes them). A request that fails on a reused
 * connection before any response byte arrives is retried once on a new connection (the
 * backend may have closed the idle connection while the request was on its way): idempotent
 * methods only, and only while no byte of a streamed body was taken.
 *
 * Errors before the response head: 502 (connection refused or reset, malformed response), 504
 * (no connection or no answer within backend-timeout). After the head, a failure aborts the
 * client's response (RST_STREAM / connection close), never a silently truncated body.
 *
 * Ownership: struct proxy belongs to its worker and must be freed after the worker's
 * connections (their exchanges cancel their proxy requests). A proxied request belongs to its
 * exchange's pending registration until the head is answered, then to the body source.
 */
#ifndef DOHGATE_PROXY_H
#define DOHGATE_PROXY_H

#include <stddef.h>

struct config;
struct event_base;
struct http_exchange;
struct proxy;

#define PROXY_BUFFER   65536
#define PROXY_IDLE_MAX 32
#define PROXY_IDLE_S   30

struct proxy_stats {
    unsigned long long requests, connects, reused, retries, errors_502, errors_504;
};

/** @return NULL on OOM. cfg->backend must be set. */
struct proxy *proxy_new(struct event_base *base, const struct config *cfg);
/** Close idle backend connections. Requests still open must have been cancelled before. */
void proxy_free(struct proxy *px);
/** Forward the request of @p ex; answers later (registers a pending operation), or now on error. */
void proxy_handle(struct proxy *px, struct http_exchange *ex);
const struct proxy_stats *proxy_get_stats(const struct proxy *px);

#endif
