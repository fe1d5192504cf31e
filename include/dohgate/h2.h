/**
 * @file h2.h
 * HTTP/2 server session glue over nghttp2, driven through memory (nghttp2_session_mem_recv /
 * mem_send), so the connection decides when to read and when to write: all frames produced in
 * one event-loop turn go out in one TLS write.
 *
 * Ownership: the connection owns the session; the session owns its streams; a stream owns its
 * request strings/body and its response bytes, and embeds the struct http_exchange that handlers
 * see. A stream is freed only in nghttp2's on_stream_close callback or by h2_session_free(),
 * and in both cases any pending handler operation is cancelled first (http_exchange_end).
 * Request bodies: refused at HEADERS (413) where the route takes none (router_max_body), stored
 * under the connection's body budget (budget.h; past it RST_STREAM REFUSED_STREAM, or 503 once
 * some was stored), and the flow-control windows open only for bytes stored or discarded: no
 * automatic WINDOW_UPDATE.
 * No DNS knowledge here.
 */
#ifndef DOHGATE_H2_H
#define DOHGATE_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

struct h2_session;
struct handler_ctx;
struct budget_scope;
struct client_id;

/** Called when the session has new output to send, e.g. a response submitted by an upstream
 * callback. May be called synchronously from inside h2_session_recv(); it must only schedule a
 * flush, never write or free anything. */
typedef void (*h2_wake_cb)(void *owner);

/** What nghttp2 allocates per session for its frame buffer (9-byte header + 1 + 16 KiB payload):
 * the block size of handler_ctx.h2_pool. (handler_ctx.h2_pages has one-page blocks.) */
#define H2_FRAMEBUF_BYTES (9 + 1 + 16384)

struct h2_settings {
    unsigned max_concurrent_streams;
    /** plain-listen (h2c with prior knowledge): requests carry req.cleartext (http.h) */
    bool cleartext;
    const struct client_id *client; /**< who (client.h); must outlive the session; may be NULL */
    /** what the connection holds (budget.h); must outlive the session; may be NULL */
    struct budget_scope *budget;
};

/**
 * Create a server session and queue our SETTINGS.
 * @return NULL on OOM.
 */
struct h2_session *h2_session_new(const struct h2_settings *st, const struct handler_ctx *hctx,
                                  h2_wake_cb wake, void *owner);
/** Cancel every stream's pending operation, free the streams and the session. */
void h2_session_free(struct h2_session *s);

/**
 * Feed received bytes. Requests that complete are dispatched to the router from inside this
 * call (they may be answered synchronously).
 * @return 0, or -EPROTO (protocol error / flood: the session queued GOAWAY; flush, then close).
 */
int h2_session_recv(struct h2_session *s, const uint8_t *data, size_t len);

/**
 * Append pending output frames to @p out until it holds at least @p limit bytes or nothing is
 * pending. @return 0, or -ENOMEM / -EPROTO (close the connection).
 */
int h2_session_send(struct h2_session *s, struct dg_buf *out, size_t limit);

/** True when the session neither wants to read nor to write any more: close the connection. */
bool h2_session_done(const struct h2_session *s);
/** Whether nghttp2 still has output queued. */
bool h2_session_want_write(const struct h2_session *s);
/** False once the session reads nothing more: a GOAWAY that ends it left nghttp2 (after a
 * protocol error, or the last stream after a graceful one); what is left is to flush. */
bool h2_session_want_read(const struct h2_session *s);
/** Streams currently open. */
size_t h2_session_streams(const struct h2_session *s);

/**
 * An idle session gives memory back: the pages of its frame buffer (dead between frames) and
 * those of its one-page blocks that hold only zeroes (the stream map once no stream is left).
 * Does nothing while a stream is open or nghttp2 has output queued. Cheap to call but not free
 * (an madvise per block, a read of each one-page block; the next frame faults a page in):
 * the connection calls it once after it has been quiet for a while (conn.c).
 * @return the bytes given back
 */
size_t h2_session_trim(struct h2_session *s);
/** send-timeout for one connection's session (h2_session_sweep()). */
struct h2_sweep {
    uint64_t now;        /**< ms, dg_now_ms() */
    uint64_t send_ms;    /**< send-timeout: what a client gets to make progress */
    uint64_t pending_ms; /**< backstop for a stream waiting on the server (query, backend) */
    uint64_t next;       /**< out: when the next stream could stall (ms), 0: none can */
    unsigned reset;      /**< out: streams reset (RST_STREAM CANCEL) by this sweep */
    bool stalled;        /**< out: the connection took no response data for send_ms */
};

/**
 * Find what made no progress (send-timeout, issue 14), called by the connection's timer, so
 * that nothing per request needs a timer of its own: the streams record the time of their
 * progress as frames pass (the clock value the current recv/send call read once; no syscall,
 * no stream lookup: DATA received in on_frame_recv, DATA sent in the data callbacks).
 * - Connection: response DATA is waiting (deferred by flow control, or not taken) and none
 *   left for send_ms: sw->stalled is set and nothing else is done (the caller closes).
 * - Streams: one that holds something (an incomplete request, response data to send, or,
 *   after pending_ms, a pending handler operation or a source that waits) and made no
 *   progress (a request data byte received, padding not counted; a response byte sent) for
 *   that long is reset with RST_STREAM CANCEL, its exchange ended and its buffered request body
 *   (with its budget) released now (its source, its pending operation and what they hold are
 *   released synchronously). A response whose stream window the client keeps open is waiting
 *   its turn (dependent or lower-priority stream), not stalled: only the connection check
 *   applies to it, and its own clock starts once that window is shut.
 * PING, SETTINGS and WINDOW_UPDATE are never progress. Calls the wake callback when it reset
 * something. Never frees a stream.
 */
void h2_session_sweep(struct h2_session *s, struct h2_sweep *sw);

/** How long the first GOAWAY waits for its PING's ACK before the final one goes anyway (a
 * client that does not answer PINGs, or one across a very slow path). */
#define H2_GOAWAY_ACK_MS 1000

/**
 * Graceful shutdown in two steps (RFC 9113 §6.8): now a GOAWAY with last-stream-ID 2^31-1, and a
 * PING right behind it (submitted once the GOAWAY has been written out, so that it follows it on
 * the wire); streams the client opens meanwhile are served as usual. When the PING's ACK arrives
 * (inside h2_session_recv(), which then calls the wake callback), the final GOAWAY, as
 * h2_session_goaway(). The caller's timer sends it at h2_session_goaway_due() if the ACK never
 * comes. Open streams finish; h2_session_want_read() turns false once the final GOAWAY is out
 * and they are done. Idempotent; one step (h2_session_goaway()) if the first GOAWAY or the PING
 * cannot be queued, or the client sent a GOAWAY first.
 */
void h2_session_shutdown(struct h2_session *s);
/** While the first step waits for its PING's ACK: when the final GOAWAY is due (ms, the
 * dg_now_ms() clock); 0 before h2_session_shutdown() and once the final GOAWAY is queued. */
uint64_t h2_session_goaway_due(const struct h2_session *s);
/** The final GOAWAY now (last-stream-ID: the last stream processed): no new streams, open ones
 * finish; a stream above it that arrived before this GOAWAY left is not served (the client
 * knows it to be unprocessed). Idempotent. */
void h2_session_goaway(struct h2_session *s);

#endif
