/**
 * @file h1.h
 * HTTP/1.1 (and 1.0) server session, parsed with Debian's libhttp-parser (the nodejs parser,
 * fuzzed for years by OSS-Fuzz; it refuses Content-Length together with chunked, bad chunk sizes
 * and header smuggling tricks). Driven through memory like the HTTP/2 session (h2.h): the
 * connection feeds received bytes and pulls output.
 *
 * One request at a time: after a complete request the parser stops; bytes of pipelined requests
 * wait (bounded) until the response has been written, then parsing goes on. Limits: request
 * target 4096 bytes → 414; the whole header section 16 KiB or 100 fields → 431; a body over the
 * route's limit (router_max_body: 0 where no handler takes a body) → 413, from Content-Length
 * before reading it, a chunked one at the byte past the limit; body bytes are taken under the
 * connection's body budget (budget.h) while stored, past it 503 and close; Expect:
 * 100-continue is answered "100 Continue" when the body is acceptable; other Expect values 417;
 * CONNECT 405; a malformed request 400; HTTP/1.1 without Host 400. Stricter than the parser's
 * non-strict mode, also 400: a field name that is not a token (whitespace before the colon),
 * obs-fold or a bare CR in the head, more than one Host, a Host (or absolute-form authority) that
 * is not http_authority_valid(), userinfo in an absolute-form target. Trailers of a chunked body
 * are checked and dropped. Every error response closes the connection. Responses carry
 * content-length, or use chunked coding when the length is unknown (close-delimited for HTTP/1.0
 * clients).
 *
 * Ownership: the connection owns the session; the session owns the current request (headers,
 * body) and embeds its struct http_exchange; a streamed body source is closed when the response
 * ends or the session is freed. h1_session_free() cancels a pending handler operation first.
 */
#ifndef DOHGATE_H1_H
#define DOHGATE_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct h1_session;
struct handler_ctx;
struct budget_scope;
struct client_id;

/** Same contract as h2_wake_cb: only schedule a flush, may run inside h1_session_recv(). */
typedef void (*h1_wake_cb)(void *owner);

struct h1_settings {
    bool https;   /**< false on the plain-HTTP listener */
    bool metrics; /**< the metrics listener (implies !https) */
    /** plain-listen: served like the TLS listener (https true), without TLS (http.h) */
    bool cleartext;
    /** who (client.h); must outlive the session; may be NULL */
    const struct client_id *client;
    /** what the connection holds (budget.h); must outlive the session; may be NULL */
    struct budget_scope *budget;
};

/** @return NULL on OOM. */
struct h1_session *h1_session_new(const struct h1_settings *st, const struct handler_ctx *hctx,
                                  h1_wake_cb wake, void *owner);
void h1_session_free(struct h1_session *s);

/**
 * Feed received bytes; a complete request is dispatched from inside this call.
 * @return 0, or -ENOMEM (close now). Protocol errors queue an error response and make
 *         h1_session_done() true once it is written.
 */
int h1_session_recv(struct h1_session *s, const uint8_t *data, size_t len);

/**
 * Append response bytes to @p out until it holds at least @p limit bytes or nothing more is
 * ready. Finishing a response starts on the next pipelined request, which may dispatch it.
 * @return 0, or negative errno (a body source failed mid-body, or OOM): close the connection.
 */
int h1_session_send(struct h1_session *s, struct dg_buf *out, size_t limit);

/** True when the connection should be closed once @p out is written. */
bool h1_session_done(const struct h1_session *s);
/** False while buffered, unparsed input is over its bound: stop reading the socket. */
bool h1_session_want_read(const struct h1_session *s);
/** A request is being received or answered (the connection is not idle). */
bool h1_session_busy(const struct h1_session *s);
/** Between requests, give back what only a request in progress needs (the header array, the
 * buffer of input read ahead when it is empty). The connection calls it once it has been quiet
 * for a while (conn.c). @return the bytes given back */
size_t h1_session_trim(struct h1_session *s);
/** When the current request's first byte arrived (ms, dg_now_ms), 0 when none is being read. */
uint64_t h1_session_request_started(const struct h1_session *s);
/** The request took too long to arrive: answer 408 and close after it. */
void h1_session_timeout(struct h1_session *s);
/** Graceful stop: finish the current response (with connection: close), then done. */
void h1_session_shutdown(struct h1_session *s);

/** A graceful stop for a session whose request is on its way (started during the stop: its
 * connection was accepted from the backlog or finished its handshake meanwhile; or idle with
 * bytes waiting in the socket): serve that request, then close, rather than end at once as
 * h1_session_shutdown() does with an idle session. */
void h1_session_serve_one(struct h1_session *s);

#endif
