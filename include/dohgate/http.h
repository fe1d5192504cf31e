/**
 * @file http.h
 * The transport-neutral request/response exchange between the HTTP framing modules (h2, later
 * h1) and the handlers (router, doh). A transport embeds one struct http_exchange per request
 * (the h2 stream owns it); the handler answers through http_respond(), now or later.
 *
 * Lifetimes: the exchange lives until the transport closes it (stream reset, connection closed,
 * response fully sent). A handler that answers later must register its pending operation with
 * http_set_pending(); when the transport closes the exchange first, it calls the registered
 * cancel function exactly once, synchronously, and the handler must forget the exchange there.
 * A handler that completes must call http_clear_pending() before http_respond().
 *
 * Streamed bodies: http_respond_stream() hands the transport a body source that it pulls from
 * as the client's window and socket allow (so memory stays bounded whatever the body's size).
 * The transport owns the source from then on and calls its close() exactly once: after the last
 * byte, on a failure, or when the exchange dies first. The exchange stays valid until then, so a
 * producer that returned HTTP_BODY_AGAIN may call http_body_resume() on it until close() ran.
 */
#ifndef DOHGATE_HTTP_H
#define DOHGATE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/metrics.h"
#include "dohgate/util.h"

struct acl;
struct client_id;
struct clients;
struct config;
struct proxy;
struct resolver;
struct site;

struct http_header {
    const char *name; /**< lower-case */
    const char *value;
};

/** Returned by http_body_source.read when no byte is ready yet: call http_body_resume() later. */
#define HTTP_BODY_AGAIN (-11)

/** A response body produced piecewise (a file, a proxied backend response). */
struct http_body_source {
    /**
     * Copy up to @p max bytes into @p buf. Called by the transport, never re-entered.
     * @return bytes copied (> 0), 0 at the end of the body, HTTP_BODY_AGAIN, or another negative
     *         errno on failure (the transport aborts the response: RST_STREAM, or a close on
     *         HTTP/1.1, never a silently short body).
     */
    long (*read)(void *arg, uint8_t *buf, size_t max);
    /** The transport is done with the source (any reason). Called exactly once; free it here. */
    void (*close)(void *arg);
    void *arg;
};

/** A request as the transport decoded it. Strings are NUL-terminated, owned by the exchange. */
struct http_request {
    const char *method;
    const char *path; /**< with query string */
    const char *authority;
    const char *content_type;
    const uint8_t *body;
    size_t body_len;
    int version;  /**< 20 for HTTP/2, 11 or 10 for HTTP/1.x */
    bool https;   /**< false on the plain-HTTP listener (port 80) */
    bool metrics; /**< on the metrics listener */
    /** Every request header except pseudo-headers and cookie joins, names lower-case, in order. */
    const struct http_header *headers;
    size_t nheaders;
    /** who asks (client.h): parsed once at accept, owned by the connection; may be NULL */
    const struct client_id *client;
};

/** The first value of request header @p name (lower-case), or NULL. */
const char *http_request_header(const struct http_request *r, const char *name);

/** What handlers need from the worker that runs them. Owned by the worker. */
struct handler_ctx {
    const struct config *cfg;
    struct resolver *resolver;
    const struct site *site;       /**< shared, read-only; may be NULL (tests) */
    struct proxy *proxy;           /**< this worker's backend pool; NULL unless site-backend */
    struct worker_metrics *wm;     /**< this worker's counters; may be NULL (tests) */
    struct clients *clients;       /**< per-client rate limits; may be NULL */
    const struct acl *acl;         /**< allow-client/deny-client; may be NULL */
    const struct metrics *metrics; /**< all of them, for the metrics page; may be NULL */
    /** this worker's blocks for HTTP/2 frame buffers (h2.c); may be NULL (plain malloc) */
    struct pagepool *h2_pool;
};

struct http_exchange;
typedef void (*http_cancel_cb)(void *op);

struct http_exchange_ops {
    /** See http_respond(). */
    int (*respond)(struct http_exchange *ex, int status, const struct http_header *hdrs,
                   size_t nhdrs, struct dg_buf *body);
    /** See http_respond_stream(). */
    int (*respond_stream)(struct http_exchange *ex, int status, const struct http_header *hdrs,
                          size_t nhdrs, long long length, const struct http_body_source *src);
    /** See http_body_resume(). */
    void (*resume)(struct http_exchange *ex);
};

struct http_exchange {
    const struct http_exchange_ops *ops;
    struct http_request req;
    const struct handler_ctx *ctx;
    http_cancel_cb cancel; /**< set while a handler operation is pending */
    void *pending;
};

/**
 * Send the response. Header names and values are copied. On success the body's bytes are moved
 * into the exchange (@p body is left empty); on failure the caller still owns them.
 * The transport adds content-length. Can be called once per exchange.
 * @return 0, -ENOMEM, -EALREADY (already answered).
 */
static inline int http_respond(struct http_exchange *ex, int status, const struct http_header *hdrs,
                               size_t nhdrs, struct dg_buf *body)
{
    /* What the count needs is taken first: the transport may be done with the exchange when
     * this returns. Scrapes of the metrics listener are not traffic. */
    struct met_req mr = metrics_req(ex->ctx->wm, &ex->req);
    int rc = ex->ops->respond(ex, status, hdrs, nhdrs, body);
    if (rc == 0)
        metrics_http(&mr, status);
    return rc;
}

/**
 * Send the response headers now and the body from @p src. @p length is the body's size when known
 * (sent as content-length; a source that ends early or runs over aborts the response), or -1
 * (HTTP/2: no content-length; HTTP/1.1: chunked). For HEAD requests the source is closed at once.
 * Whatever the outcome, @p src belongs to the transport afterwards (closed on failure too).
 * @return 0, -ENOMEM, -EALREADY.
 */
static inline int http_respond_stream(struct http_exchange *ex, int status,
                                      const struct http_header *hdrs, size_t nhdrs,
                                      long long length, const struct http_body_source *src)
{
    struct met_req mr = metrics_req(ex->ctx->wm, &ex->req);
    int rc = ex->ops->respond_stream(ex, status, hdrs, nhdrs, length, src);
    if (rc == 0)
        metrics_http(&mr, status);
    return rc;
}

/** A source that returned HTTP_BODY_AGAIN has bytes (or its end) ready. May be called from any
 * callback of the worker's loop; never re-enters the source synchronously. */
static inline void http_body_resume(struct http_exchange *ex)
{
    ex->ops->resume(ex);
}

/**
 * Headers every response of this server carries, chosen from the configuration: HSTS on HTTPS,
 * the configured extra headers, server. Appends to @p hdrs (capacity @p cap) and returns the new
 * count. The strings belong to the configuration (or are static).
 */
size_t http_common_headers(const struct config *cfg, bool https, struct http_header *hdrs, size_t n,
                           size_t cap);

/** The reason phrase of a status code ("Not Found"), "" when unknown. */
const char *http_reason(int status);

/** Answer with a one-line text/plain body ("text\n"), plus optional extra headers. */
int http_respond_text(struct http_exchange *ex, int status, const char *text,
                      const struct http_header *extra, size_t nextra);

static inline void http_set_pending(struct http_exchange *ex, http_cancel_cb cancel, void *op)
{
    ex->cancel = cancel;
    ex->pending = op;
}

static inline void http_clear_pending(struct http_exchange *ex)
{
    ex->cancel = NULL;
    ex->pending = NULL;
}

/** Called by the transport when the exchange dies: cancels the pending operation, if any. */
static inline void http_exchange_abort(struct http_exchange *ex)
{
    if (ex->cancel) {
        http_cancel_cb cb = ex->cancel;
        void *op = ex->pending;
        http_clear_pending(ex);
        cb(op);
    }
}

#endif
