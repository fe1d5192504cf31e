/**
 * @file dnsstream.h
 * A DNS session over a byte stream: plain DNS over TCP (RFC 7766, the TCP side of dns-listen)
 * and DNS over TLS (RFC 7858, dot-listen). Each message is preceded by its 2-byte length (RFC
 * 1035 §4.2.2). Driven through memory like the HTTP sessions (h1.h, h2.h): the connection feeds
 * the bytes it read (TLS already removed) and pulls the bytes to write.
 *
 * Each query goes through dns_serve_admit() (a refusal is a REFUSED answer; the connection
 * stays) and dns_serve() (dnsserve.h). Queries are pipelined: up to dns-tcp-pipeline are in
 * flight at once, and answers go out in the order they complete, not the order of the queries
 * (RFC 7766 §6.2.1.1, §7); each keeps the client's DNS ID, which is how the client matches
 * them. Past the pipeline limit, or with much output not taken, the session asks the
 * connection to stop reading (want_read() false) until answers have gone out.
 *
 * EDNS keepalive (RFC 7828): an answer to a query that carries edns-tcp-keepalive carries one
 * with idle-timeout in units of 100 ms (capped at 65535), 0 once the session is shutting down,
 * which tells the client to close (§3.3.2). A padded answer is padded again after the option.
 *
 * Bad input: a length under 12 (no room for a DNS header), or a message dns_serve() cannot
 * answer at all (DNS_SERVE_MALFORMED), ends the session (RFC 7766 §8): nothing more is read,
 * the queries already in flight are answered, then done() is true; counted as
 * DG_EV_DNS_DROPPED DG_DROP_MALFORMED.
 *
 * Ownership: the connection owns the session; the session owns its input and output bytes and
 * one record per query in flight, each holding a dns_serve handle. dnsstream_session_free()
 * cancels every one of them synchronously (their callbacks never run afterwards).
 * Threads: the worker's only.
 */
#ifndef DOHGATE_DNSSTREAM_H
#define DOHGATE_DNSSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/observer.h"
#include "dohgate/util.h"

struct dnsstream_session;
struct handler_ctx;
struct client_id;

/** Called when the session has new output (an answer completed): it must only schedule a
 * flush, never write or free anything. Never called from inside dnsstream_session_recv() or
 * _send() (answers made there are already in what _send() returns), only from the event loop. */
typedef void (*dnsstream_wake_cb)(void *owner);

struct dnsstream_settings {
    /** who (client.h): admission and the query log; must outlive the session; may be NULL */
    const struct client_id *client;
    /** DG_TR_DNS_TCP or DG_TR_DOT: which rules apply (dns-allow, padding) and the counters */
    enum dg_transport transport;
    /** answers held for a client whose socket is full before the session fails; 0:
     * DNSSTREAM_READY_MAX (tests set less) */
    size_t ready_max;
};

/** Answers waiting in the session (not yet taken by _send()) above which it stops reading and
 * stops starting queries: with the connection's own high-water mark, this bounds what a client
 * that does not read can make us hold. */
#define DNSSTREAM_OUT_HIGH (64 * 1024)
/** Answers waiting, while the client's socket is full (dnsstream_session_blocked()), above
 * which the session gives up on the client: queries already in flight when reading stopped
 * still complete into the queue (up to dns-tcp-pipeline answers of up to 64 KiB each), so a
 * client that sends a pipeline of large queries and reads nothing would otherwise make one
 * connection hold megabytes until send-timeout. Past this the session fails (its answers are
 * freed; dnsstream_session_send() returns -EMSGSIZE: the connection closes, counted as
 * stalled). A client that reads is never cut: a burst of answers goes out at the next flush. */
#define DNSSTREAM_READY_MAX (4 * DNSSTREAM_OUT_HIGH)

/** The connection says whether the client's socket is full (the last write was refused). */
void dnsstream_session_blocked(struct dnsstream_session *s, bool blocked);

/** @return NULL on OOM. @p hctx must outlive the session. */
struct dnsstream_session *dnsstream_session_new(const struct dnsstream_settings *st,
                                                const struct handler_ctx *hctx,
                                                dnsstream_wake_cb wake, void *owner);

/** Cancel every query in flight (synchronously), free the buffers and the session. NULL is
 * ignored. */
void dnsstream_session_free(struct dnsstream_session *s);

/**
 * Feed received bytes: whole messages are served from inside this call (up to the pipeline
 * limit; the rest waits in the session until answers free slots); a partial one waits for more.
 * Bytes fed after the session stopped reading (malformed input, shutdown) are dropped.
 * @return 0, or -ENOMEM (close the connection now).
 */
int dnsstream_session_recv(struct dnsstream_session *s, const uint8_t *data, size_t len);

/**
 * Start the queries that waited for a pipeline slot, then append ready answers (each with its
 * 2-byte length) to @p out until it holds at least @p limit bytes or nothing more is ready.
 * @return 0, or -ENOMEM (close the connection).
 */
int dnsstream_session_send(struct dnsstream_session *s, struct dg_buf *out, size_t limit);

/** True when the session has nothing more to say and reads nothing more: close the connection
 * once the output is written. */
bool dnsstream_session_done(const struct dnsstream_session *s);

/** False while the pipeline is full, answers wait to be taken (above DNSSTREAM_OUT_HIGH), or
 * the session reads nothing more: stop reading the socket. */
bool dnsstream_session_want_read(const struct dnsstream_session *s);

/** Queries in flight (waiting for the resolver). */
size_t dnsstream_session_inflight(const struct dnsstream_session *s);

/** An idle session gives back its input and answer buffers when they are empty: they keep the
 * capacity of the session's largest burst (a pipeline of answers) otherwise. The connection
 * calls it once it has been quiet for a while (conn.c). @return the bytes given back */
size_t dnsstream_session_trim(struct dnsstream_session *s);

/** When the first byte of a message that has not arrived whole was received (ms, dg_now_ms()),
 * 0 when none is incomplete: a message must arrive within request-timeout. */
uint64_t dnsstream_session_partial_since(const struct dnsstream_session *s);

/** Graceful stop (or the client closed its side): read nothing more, answer the queries in
 * flight (with keepalive 0), then done. */
void dnsstream_session_shutdown(struct dnsstream_session *s);

#endif
