/**
 * @file http.h
 * The transport-neutral request/response exchange between the HTTP framing modules (h1, h2) and
 * the handlers (router, doh, site, proxy, metrics). A transport embeds one struct http_exchange
 * per request (the h2 stream, the h1 session) and drives it through one state machine, kept here
 * once for both transports:
 *
 *   READING --http_exchange_dispatch()--> DISPATCHED --http_respond*()--> RESPONDED
 *        \                                  |  (failed: 500/503 text, else transport reset)
 *         `---------- http_exchange_end() (stream closed, connection gone) ----------> DONE
 *
 * - DISPATCHED: the handler owns the answer. It answers now or later; to answer later it
 *   registers its pending operation with http_set_pending(). When the transport ends the
 *   exchange first, the registered cancel function runs exactly once, synchronously, and the
 *   handler must forget the exchange there.
 * - Responding (http_respond, http_respond_stream, http_respond_text) detaches the pending
 *   operation itself before the transport sees the response: no handler clears it by hand.
 * - A response that cannot be handed over (memory, a transport error) is never left hanging:
 *   the exchange answers with a 503 (no memory) or 500 text instead, and when even that fails
 *   it asks the transport to reset (HTTP/2: RST_STREAM INTERNAL_ERROR; HTTP/1.1: the connection
 *   closes). So after http_exchange_dispatch() returns, every exchange has a response, a reset,
 *   or pending work (a handler that leaves none gets a 500).
 * - The HTTP rules that do not depend on the framing live here: reason phrases, which responses
 *   have no body and what content-length means for them (HEAD, 1xx, 204, 304), and the length
 *   checks of a streamed body (a source that ends before its length aborts the response; one
 *   with more is never asked for more than the length).
 * Debug builds (no NDEBUG) assert the state on entry to each call.
 *
 * Lifetimes: the exchange lives until the transport ends it; a streamed body source belongs to
 * the exchange from http_respond_stream() on and is closed exactly once (after the last byte, on
 * a failure, or at http_exchange_end()). The exchange stays valid until then, so a producer
 * that returned HTTP_BODY_AGAIN may call http_body_resume() on it until close() ran.
 */
#ifndef DOHGATE_HTTP_H
#define DOHGATE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/client.h"
#include "dohgate/util.h"

struct acl;
struct budget_scope;
struct client_id;
struct dg_observer;
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
     * Copy up to @p max bytes into @p buf. Called through http_body_pull() as the transport
     * has room, never re-entered, never asked for bytes past the announced length.
     * @return bytes copied (> 0), 0 at the end of the body, HTTP_BODY_AGAIN, or another negative
     *         errno on failure (the transport aborts the response: RST_STREAM, or a close on
     *         HTTP/1.1, never a silently short body).
     */
    long (*read)(void *arg, uint8_t *buf, size_t max);
    /** The exchange is done with the source (any reason). Called exactly once; free it here.
     * May run synchronously from http_respond_stream() (HEAD, 204, 304, a failure). */
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
    bool https;   /**< false on the plain-HTTP listener (port 80); true on TLS and plain-listen */
    bool metrics; /**< on the metrics listener */
    /** plain-listen: DoH and the site without TLS, behind a TLS-terminating proxy (https is
     * true too); the scheme the site backend hears comes from the proxy (proxy.c) */
    bool cleartext;
    /** Every request header except pseudo-headers and cookie joins, names lower-case, in order. */
    const struct http_header *headers;
    size_t nheaders;
    /** who asks (client.h): parsed once at accept, owned by the connection, or, when the
     * connection's peer is a trusted-proxy, the client its forwarding headers name (the
     * exchange's fwd_client, set by http_exchange_dispatch()); may be NULL */
    const struct client_id *client;
    /** the connection's peer is in trusted-proxy (set by http_exchange_dispatch()): its
     * X-Forwarded-Proto may be believed */
    bool via_trusted_proxy;
    /** what the connection holds (budget.h): owned by the connection; may be NULL */
    struct budget_scope *budget;
    /** The body was not read before dispatch: it follows, read it with http_req_body_read()
     * (body/body_len are empty then). Only on routes router_body_streams() names. */
    bool body_stream;
    /** With body_stream: the body's announced length (content-length), -1 when unknown
     * (HTTP/1.1 chunked, HTTP/2 without content-length). */
    long long body_length;
};

/**
 * Transport helper for http_exchange_ops.body_read: move up to @p max bytes of a request body the
 * transport holds in @p held (every byte taken under @p budget's BUDGET_BODY, *@p held_units of
 * them) into @p buf, giving their budget back. @p complete: the body's last byte has arrived.
 * @return bytes (> 0; *eof set when they were the last), 0 at the end (*eof set), or
 *         HTTP_BODY_AGAIN when nothing is held yet.
 */
long http_body_take_held(struct dg_buf *held, size_t *held_units, struct budget_scope *budget,
                         bool complete, uint8_t *buf, size_t max, bool *eof);

/** The first value of request header @p name (lower-case), or NULL. */
const char *http_request_header(const struct http_request *r, const char *name);

/* ---- field syntax (RFC 9110 §5, RFC 9112 §5, RFC 3986 §3.2), shared by h1, h2 and proxy ----- */

/** RFC 9110 §5.6.2: @p s[0..@p len) is a token (1*tchar): what a field name or a method must be.
 * Whitespace, ':' and controls are not tchars, so "Transfer-Encoding " is not a field name. */
bool http_token_valid(const char *s, size_t len);

/** RFC 9110 §5.5: a field value as it is sent (trimmed): VCHAR and obs-text, with SP/HTAB only
 * between them; never NUL, CR, LF or another control. The empty value is valid. */
bool http_field_value_valid(const char *s, size_t len);

/**
 * Whether @p s is an authority as a Host field or :authority may carry it (RFC 9110 §7.2,
 * RFC 3986 §3.2.2-3): host [":" port], host = reg-name (unreserved, pct-encoded, sub-delims;
 * 1..255 characters, which an IPv4 address is too) or "[" IPv6 address "]"; port = 1..5 digits,
 * at most 65535. No userinfo, no empty host, no IPvFuture or zone identifier: nothing that a
 * backend's Host, a redirect's Location or the landing page could take another way.
 */
bool http_authority_valid(const char *s);

/**
 * A byte scanner of a message head (request or status line and the field lines), for what
 * libhttp-parser's callbacks cannot show: obs-fold (a field line that starts with SP or HTAB,
 * RFC 9112 §5.2; the parser folds it silently) and a bare CR (§2.2; the parser's non-strict mode
 * takes it, and the byte after it, as a line end). Empty lines before the start line are
 * skipped, as the parser does. Zero-initialise it for each message.
 */
struct http_head_scan {
    int state;
};

/**
 * Scan the next @p len bytes of a message.
 * @return the bytes of @p p that belong to the head (all of them, or up to and including the
 *         empty line that ends it, after which http_head_scan_done() is true and further calls
 *         return 0), or -EBADMSG at an obs-fold or a bare CR.
 */
long http_head_scan(struct http_head_scan *sc, const uint8_t *p, size_t len);

/** The empty line that ends the head has been scanned. */
bool http_head_scan_done(const struct http_head_scan *sc);

/** What handlers need from the worker that runs them. Owned by the worker. */
struct ddr_endpoints;
struct policy_view;
struct handler_ctx {
    const struct config *cfg;
    struct resolver *resolver;
    const struct site *site;         /**< shared, read-only; may be NULL (tests) */
    struct proxy *proxy;             /**< this worker's backend pool; NULL unless site-backend */
    const struct dg_observer *obs;   /**< this worker's event counting; may be NULL (tests) */
    struct clients *clients;         /**< per-client rate limits; may be NULL */
    const struct acl *acl;           /**< allow-client/deny-client; may be NULL */
    const struct acl *dns_acl;       /**< dns-allow (or its private default); NULL: everybody */
    const struct ddr_endpoints *ddr; /**< DDR answers (RFC 9462); NULL: ddr no (forwarded) */
    /** trusted-proxy: a request from a peer in it takes its client from X-Forwarded-For or
     * Forwarded (forwarded.h, http_exchange_dispatch()); NULL or empty: the headers are ignored */
    const struct acl *trusted_proxy;
    /** the view's hold on the current policy (policy.h; mutable, this worker's thread only);
     * NULL: no policy step (tests) */
    struct policy_view *policy;
    const struct metrics *metrics; /**< all of them, for the metrics page; may be NULL */
    /** this worker's blocks for HTTP/2 frame buffers (h2.c); may be NULL (plain malloc) */
    struct pagepool *h2_pool;
    /** this worker's one-page blocks for nghttp2's page-sized tables (h2.c); may be NULL */
    struct pagepool *h2_pages;
};

/** Method classes the HTTP rules need (HEAD has no body, idempotency for retries). */
enum http_method_kind {
    HTTP_M_GET,
    HTTP_M_POST,
    HTTP_M_HEAD,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_OPTIONS,
    HTTP_M_TRACE,
    HTTP_M_OTHER /**< CONNECT, PATCH, extension methods */
};

/** The class of a method token (case-sensitive, RFC 9110 §9.1); NULL gives HTTP_M_OTHER. */
enum http_method_kind http_method_kind(const char *method);

/** RFC 9110 §9.2.2: a request that may be sent twice with the effect of once (safe methods, PUT,
 * DELETE). Only these are retried on another backend connection. */
bool http_method_idempotent(enum http_method_kind m);

struct http_exchange;
typedef void (*http_cancel_cb)(void *op);

enum http_exchange_state {
    HTTP_EX_READING,    /**< the transport is still reading the request; no handler has it */
    HTTP_EX_DISPATCHED, /**< a handler owns the answer (now, or later with pending work) */
    HTTP_EX_RESPONDED,  /**< the response is with the transport; a body may still be flowing */
    HTTP_EX_DONE,       /**< the transport ended the exchange: nothing more happens on it */
};

/** A response as the exchange hands it to a transport, with the body rules applied. */
struct http_response {
    int status;
    const struct http_header *hdrs; /**< the handler's, copied by the transport */
    size_t nhdrs;
    /** content-length to send; -1: none (HTTP/1.1 then frames the body with chunked coding, or
     * with the connection's end for HTTP/1.0, unless no_body) */
    long long length;
    bool no_body; /**< HEAD, 1xx, 204, 304: headers only, whatever length says */
};

/** What a transport implements. None of them calls back into the handler synchronously. */
struct http_exchange_ops {
    /** Queue @p resp with the bytes of @p body (NULL when resp->no_body). On success take the
     * bytes (leave @p body empty). @return 0, -ENOMEM or another negative errno; on failure
     * nothing was queued. */
    int (*respond)(struct http_exchange *ex, const struct http_response *resp, struct dg_buf *body);
    /** Queue @p resp's head; unless resp->no_body, the body follows from http_body_pull()
     * as the client takes it. @return 0 or a negative errno (nothing queued). */
    int (*respond_stream)(struct http_exchange *ex, const struct http_response *resp);
    /** The body source has bytes again: pull when the client's window and socket allow. */
    void (*resume)(struct http_exchange *ex);
    /** End this exchange without (more of) a response: HTTP/2 RST_STREAM INTERNAL_ERROR,
     * HTTP/1.1 closes the connection once queued output has left. Cannot fail (a transport
     * that cannot queue the reset closes the connection). Never frees the exchange
     * synchronously. */
    void (*reset)(struct http_exchange *ex);
    /** Streamed request body (req.body_stream): copy up to @p max of the bytes held into
     * @p buf. The transport gives their budget back and lets the client send as many more
     * (HTTP/2 WINDOW_UPDATE, HTTP/1.1 reads on); it never calls back into the handler from
     * here. @return bytes (> 0); 0 with *eof at the end; HTTP_BODY_AGAIN when none is held
     * yet (the transport calls http_req_body_ready() when that changes); or a negative errno:
     * -EMSGSIZE past the route's limit, -ENOBUFS past the body budget, -EIO otherwise. */
    long (*body_read)(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof);
    /** The handler reads no more of the streamed body: drop what is held (its budget goes
     * back) and discard the rest as it comes. Never calls back. */
    void (*body_abandon)(struct http_exchange *ex);
    /** Optional (NULL: http_refuse() answers 503 with retry-after instead, as HTTP/1.1 does):
     * end the exchange telling the client that nothing of the request was processed and that
     * it may send it again (HTTP/2: RST_STREAM REFUSED_STREAM, RFC 9113 §8.7, which browsers
     * retry, where they show a 503 for an image or a script as it is). Cannot fail, like
     * reset; never frees the exchange synchronously. */
    void (*refuse)(struct http_exchange *ex);
};

struct http_exchange {
    const struct http_exchange_ops *ops;
    struct http_request req;
    const struct handler_ctx *ctx;
    enum http_exchange_state state;
    http_cancel_cb cancel; /**< set while a handler operation is pending */
    void *pending;
    struct http_body_source src; /**< the streamed body, while src_open */
    bool src_open;
    long long src_len; /**< the announced length, -1 unknown */
    long long src_sent;
    /* the request body's reader (http_req_body_read()) */
    void (*body_cb)(void *arg);
    void *body_arg;
    bool body_waiting; /**< a read returned HTTP_BODY_AGAIN: body_cb is owed a call */
    bool body_closed;  /**< ended, failed or abandoned: nothing more to read or tell */
    size_t body_off;   /**< read so far of a buffered req.body */
    /** the client a trusted proxy's headers named (req.client points here then) */
    struct client_id fwd_client;
};

/** Transport: make @p ex ready for a request (state READING). @p ctx: the worker's. */
void http_exchange_init(struct http_exchange *ex, const struct http_exchange_ops *ops,
                        const struct handler_ctx *ctx);

/**
 * Transport: the request in ex->req is complete; hand it to @p handler (READING -> DISPATCHED).
 * A request whose authority (ex->req.authority, or a host field) is not http_authority_valid()
 * is answered 400 here and never reaches the handler: the one check for HTTP/2's :authority,
 * a second one for HTTP/1.1's Host (h1.c refuses it while parsing).
 * Then the client: when ctx->trusted_proxy has entries, the request is not from the metrics
 * listener and its connection's peer (ex->req.client) is in trusted-proxy, the lines of the one
 * header trusted-proxy-header names (`X-Forwarded-For` by default, or `Forwarded`; the other
 * is ignored: a proxy passes a client's own copy of it through) are walked right to left
 * (forwarded.h) and the address found, if any, becomes ex->req.client (stored in ex->fwd_client):
 * what admission, the policy, the query log and the site proxy read. The connection's own limits
 * and budget stay on the peer. When the handler returns without a response and without pending
 * work, the exchange answers 500 itself. The transport must not free the exchange from inside any
 * http_* call.
 */
void http_exchange_dispatch(struct http_exchange *ex, void (*handler)(struct http_exchange *ex));

/**
 * Transport: take the exchange to DISPATCHED without a handler, for an error response that the
 * transport itself sends (a malformed request, 413, 414, 431). READING -> DISPATCHED.
 */
void http_exchange_begin(struct http_exchange *ex);

/**
 * Transport: take the answer back from the handler while none was given (HTTP/1.1's
 * request-timeout expiring during a streamed body): the pending operation is cancelled exactly
 * once, synchronously, and the body's reader forgotten.
 * @return true when the exchange is still DISPATCHED and the transport may answer it itself.
 */
bool http_exchange_take_back(struct http_exchange *ex);

/**
 * Transport: the exchange dies (stream closed, connection gone, next request on HTTP/1.1):
 * cancels the pending operation (exactly once, synchronously) and closes the body source.
 * Any state -> DONE; calling it again does nothing.
 */
void http_exchange_end(struct http_exchange *ex);

/**
 * Transport: the next chunk of the streamed body, at most @p max bytes, never past the
 * announced length.
 * @param eof set when this was the last chunk (the source is closed already).
 * @return bytes (> 0), 0 at the end (with *eof), HTTP_BODY_AGAIN (wait for ops->resume), or a
 *         negative errno: the source failed, ended before its length, or none is open. The
 *         source is closed then, and the transport must abort the response, never end it
 *         as if complete.
 */
long http_body_pull(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof);

/**
 * Send the response. Header names and values are copied. On success the body's bytes are moved
 * into the exchange (@p body is left empty); otherwise the caller still owns them. The exchange
 * adds content-length (HEAD: the length of @p body, which is not sent; 304, 204, 1xx: none).
 * Must be called in state DISPATCHED (debug builds assert it); releases the pending operation.
 * @return 0; or a negative errno when this response could not be queued, in which case the
 *         exchange answered with a 503/500 or reset (it is never left unanswered).
 */
int http_respond(struct http_exchange *ex, int status, const struct http_header *hdrs, size_t nhdrs,
                 struct dg_buf *body);

/**
 * Send the response headers now and the body from @p src. @p length is the body's size when known
 * (sent as content-length; a source that ends early aborts the response, and is never asked for
 * bytes past it), or -1 (HTTP/2: no content-length; HTTP/1.1: chunked). For HEAD, 1xx, 204 and
 * 304 the source is closed at once. Whatever the outcome, @p src belongs to the exchange
 * afterwards (closed on failure too). Same states and failure outcome as http_respond().
 * @return 0 or a negative errno (see http_respond()).
 */
int http_respond_stream(struct http_exchange *ex, int status, const struct http_header *hdrs,
                        size_t nhdrs, long long length, const struct http_body_source *src);

/** A source that returned HTTP_BODY_AGAIN has bytes (or its end) ready. May be called from any
 * callback of the worker's loop until the source's close() ran; never re-enters the source
 * synchronously. */
void http_body_resume(struct http_exchange *ex);

/* ---- request bodies streamed to the handler ------------------------------------------------
 * A route that streams bodies (router_body_streams(): the reverse proxy) is dispatched at the
 * end of the request head when a body follows (req.body_stream). The handler pulls the bytes with
 * http_req_body_read(); the transport holds at most a small window of them per request (under
 * the body budget) and lets the client send more only as the handler takes them, so a slow
 * reader slows the client down instead of filling memory. The route's limit (site-max-body)
 * bounds the total: past it the read fails with -EMSGSIZE.
 * The reader is woken through the callback it registered, only after a read returned
 * HTTP_BODY_AGAIN, and never synchronously from inside an http_req_body_* call: the transports
 * call http_req_body_ready() from their receive path. Reading may go on after the response was
 * sent (state RESPONDED) until the exchange ends; the callback is dropped then, and by
 * http_req_body_abandon(). For a request that was not streamed (body_stream false) the same
 * calls read req.body (buffered whole, DoH and HTTP/1.1) and never return HTTP_BODY_AGAIN. */

/** Handler: who to wake (@p cb(@p arg)) after a read returned HTTP_BODY_AGAIN. Replaces the
 * previous one; NULL forgets it. States DISPATCHED and RESPONDED. */
void http_req_body_set_reader(struct http_exchange *ex, void (*cb)(void *arg), void *arg);

/**
 * Handler: up to @p max bytes of the request body into @p buf.
 * @return bytes (> 0); 0 with *@p eof at the end; HTTP_BODY_AGAIN (wait for the callback); or a
 *         negative errno (body_read in struct http_exchange_ops; -EIO after the exchange ended
 *         or the body was abandoned). After 0 or an error, the body is closed.
 */
long http_req_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof);

/** Handler: read no more of the body (an early response, a failure). The transport discards
 * the rest. Idempotent; allowed in any state. */
void http_req_body_abandon(struct http_exchange *ex);

/** Transport: bytes, the end or a failure of the streamed body are there: wakes the reader
 * when it is waiting. Call it only from the receive path, never from ops->body_read. */
void http_req_body_ready(struct http_exchange *ex);

/** Transport: the streamed body failed (past its limit or the budget): wakes the reader even
 * when it is not waiting, so that it can answer now (413/503) instead of at its next read.
 * Same calling rules as http_req_body_ready(). */
void http_req_body_failed(struct http_exchange *ex);

/** Whether the streamed body was closed (read to its end, failed, abandoned): the transport
 * then discards what still comes. */
bool http_req_body_closed(const struct http_exchange *ex);

/**
 * Headers every response of this server carries, chosen from the configuration: HSTS on HTTPS,
 * the configured extra headers, server. Appends to @p hdrs (capacity @p cap) and returns the new
 * count. The strings belong to the configuration (or are static).
 */
size_t http_common_headers(const struct config *cfg, bool https, struct http_header *hdrs, size_t n,
                           size_t cap);

/** The reason phrase of a status code ("Not Found"), "" when unknown. */
const char *http_reason(int status);

/** Whether a response with @p status to a request with @p method carries no body (RFC 9110
 * §6.4.1: HEAD, 1xx, 204, 304). */
bool http_no_body(const char *method, int status);

/** Answer with a one-line text/plain body ("text\n"), plus optional extra headers (at most 7).
 * Same contract as http_respond(). */
int http_respond_text(struct http_exchange *ex, int status, const char *text,
                      const struct http_header *extra, size_t nextra);

/** Answer with the status's reason phrase as the one-line body (http_reason(); "Error" when it
 * has none), plus optional extra headers. Same contract as http_respond(). */
int http_respond_status(struct http_exchange *ex, int status, const struct http_header *extra,
                        size_t nextra);

/**
 * Refuse the request for now (a budget, budget.h): nothing of it was processed, the client may
 * send it again. With a transport that can say so (ops->refuse: HTTP/2 RST_STREAM
 * REFUSED_STREAM) the exchange ends without a response (DISPATCHED -> DONE); otherwise it is
 * answered 503 with "retry-after: 1" and @p text as the body. Releases the pending operation
 * like a response. State DISPATCHED.
 * @return 0, or what http_respond_text() returns for the 503.
 */
int http_refuse(struct http_exchange *ex, const char *text);

/**
 * Register the operation that will answer later. @p cancel(@p op) runs exactly once if the
 * exchange ends first (synchronously, from http_exchange_end()); responding releases the
 * registration without calling it. State DISPATCHED, at most one operation at a time.
 */
void http_set_pending(struct http_exchange *ex, http_cancel_cb cancel, void *op);

#endif
