/**
 * @file conn.h
 * One client connection: the socket, the SSL object, its events and timers, and, after the
 * handshake, the protocol chosen by ALPN (HTTP/2 session, or a one-response HTTP/1.1 refusal
 * until HTTP/1.1 exists). TLS runs directly on the non-blocking socket (no bufferevent): the
 * connection reads everything available, feeds it to nghttp2, then writes everything nghttp2
 * produced in one SSL_write, so many frames share one TLS record and one syscall.
 *
 * Ownership: a struct conn_set (embedded in the worker) owns its connections. A connection is
 * freed only from its own event callbacks (read/write/timer/flush), never from inside nghttp2
 * or handler callbacks, or by conn_set_close_all().
 */
#ifndef DOHGATE_CONN_H
#define DOHGATE_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct config;
struct handler_ctx;
struct conn;

struct conn_set {
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    const struct config *cfg;
    const struct handler_ctx *hctx;
    struct conn *head;
    size_t count;
    bool shutting_down;
    /** Called after a connection was freed (count already decremented). May be NULL. */
    void (*on_closed)(struct conn_set *set, void *arg);
    void *on_closed_arg;
};

/**
 * Take over an accepted, non-blocking socket and start the TLS handshake.
 * @return 0, or -ENOMEM (the socket is closed: ownership passes in every case).
 */
int conn_accept(struct conn_set *set, int fd);

/** Graceful stop: GOAWAY to every HTTP/2 connection; each closes when its streams are done. */
void conn_set_shutdown(struct conn_set *set);

/** Close every connection now (pending operations cancelled). */
void conn_set_close_all(struct conn_set *set);

#endif
