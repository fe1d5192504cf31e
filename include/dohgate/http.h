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
 */
#ifndef DOHGATE_HTTP_H
#define DOHGATE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct config;
struct resolver;

struct http_header {
    const char *name; /**< lower-case */
    const char *value;
};

/** A request as the transport decoded it. Strings are NUL-terminated, owned by the exchange. */
struct http_request {
    const char *method;
    const char *path; /**< with query string */
    const char *authority;
    const char *content_type;
    const uint8_t *body;
    size_t body_len;
    int version; /**< 20 for HTTP/2, 11 for HTTP/1.1 */
};

/** What handlers need from the worker that runs them. Owned by the worker. */
struct handler_ctx {
    const struct config *cfg;
    struct resolver *resolver;
};

struct http_exchange;
typedef void (*http_cancel_cb)(void *op);

struct http_exchange_ops {
    /** See http_respond(). */
    int (*respond)(struct http_exchange *ex, int status, const struct http_header *hdrs,
                   size_t nhdrs, struct dg_buf *body);
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
    return ex->ops->respond(ex, status, hdrs, nhdrs, body);
}

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
