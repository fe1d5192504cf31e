/**
 * @file updoh.h
 * The client side of DNS over HTTPS (RFC 8484) for upstreams: one HTTP/2 connection (nghttp2's
 * client session over an uptls.h connection, ALPN h2) that carries many queries at once, each a
 * POST of application/dns-message on its own stream.
 *
 * An answer is accepted when its stream ends with :status 200, content-type
 * application/dns-message and a body of at most 65535 bytes; anything else fails that query
 * only. A GOAWAY lets the streams below its last-stream-id finish and fails the others with
 * -ENOTCONN (never processed: safe to send again elsewhere); the connection takes no new query
 * after it.
 *
 * Lifetimes and callbacks: the owner creates a connection with updoh_conn_new() and frees it with
 * updoh_conn_free(), from anywhere but inside done() (closed() may free it). done() runs once per
 * submitted query unless it was cancelled first; it and closed() run only from the connection's
 * own events (or updoh_conn_input()), never from updoh_conn_new(), updoh_submit() or
 * updoh_cancel(). Inside done() the
 * owner may submit and cancel other queries on the same connection.
 */
#ifndef DOHGATE_UPDOH_H
#define DOHGATE_UPDOH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct event_base;
struct dg_upstream;
struct uptls_ctx;
struct uptls_conn;
struct updoh_conn;

struct updoh_cbs {
    /** The handshake is done, verified, and the server speaks HTTP/2. */
    void (*ready)(void *owner);
    /**
     * The end of the query @p tag: @p err 0 with the answer (@p msg is writable scratch, valid
     * during the call), or -EPROTO (a status other than 200, another content-type, a body too
     * large or empty), -ECONNRESET (the stream was reset, or the connection failed), -ECONNABORTED
     * (the server closed the connection before answering: send it again), -ENOTCONN (refused by a
     * GOAWAY, never processed), -ENOMEM.
     */
    void (*done)(void *owner, void *tag, int err, uint8_t *msg, size_t len);
    /** The connection is over: every query still open got done() first. @p err as uptls.h's
     * closed(); updoh_conn_why() says why. The owner frees the connection (here or later). */
    void (*closed)(void *owner, int err);
};

/**
 * Connect to @p up (DG_UP_HTTPS) through @p tls; @p session and @p handshake_ms as for
 * uptls_conn_new(). @return NULL with -errno in @p err (no callback will run).
 */
struct updoh_conn *updoh_conn_new(struct uptls_ctx *tls, struct event_base *base,
                                  const struct dg_upstream *up, SSL_SESSION **session,
                                  unsigned handshake_ms, const struct updoh_cbs *cbs, void *owner,
                                  int *err);
/**
 * Send @p msg (a DNS query; copied) as a POST on a new stream; its answer comes to done() with
 * @p tag. @return the stream id (> 0), or -ENOTCONN (the connection takes no more queries:
 * GOAWAY, closed, or too many streams open), -ENOMEM.
 */
int32_t updoh_submit(struct updoh_conn *c, const uint8_t *msg, size_t len, void *tag);
/** Forget stream @p sid (RST_STREAM CANCEL is sent): done() will not run for it. */
void updoh_cancel(struct updoh_conn *c, int32_t sid);
/** Where a session's output goes: @return 0 or -ENOMEM. */
typedef int (*updoh_write_fn)(void *io, const void *p, size_t n);
/**
 * A session without TLS (for tests and fuzzing): its output goes to @p write, its input comes
 * from updoh_conn_input(); ready() never runs. Otherwise as updoh_conn_new().
 */
struct updoh_conn *updoh_session_new(struct event_base *base, const struct dg_upstream *up,
                                     updoh_write_fn write, void *io, const struct updoh_cbs *cbs,
                                     void *owner, int *err);
/** Bytes from the server. done() and closed() may run from here (as from the connection's
 * events). @return 0, or -1 when the connection failed (closed() ran). */
int updoh_conn_input(struct updoh_conn *c, const uint8_t *data, size_t len);
/** Whether updoh_submit() would take another query now. */
bool updoh_can_take(const struct updoh_conn *c);
/** Whether the handshake was done and the server agreed to HTTP/2 (ready() ran), also after
 * the connection closed. */
bool updoh_ready(const struct updoh_conn *c);
/** The TLS connection under it (for uptls_conn_ready/resumed/why/verify_failed); NULL for
 * updoh_session_new()'s. */
struct uptls_conn *updoh_tls(const struct updoh_conn *c);
/** Why the connection closed ("" while open): the TLS reason or the HTTP/2 one. */
const char *updoh_conn_why(const struct updoh_conn *c);
/** Close (if open) and free. Not from inside done(). NULL is ignored. */
void updoh_conn_free(struct updoh_conn *c);

#endif
