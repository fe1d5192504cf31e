/**
 * @file uptls.h
 * The client side of TLS for encrypted upstreams (DNS over TLS, DNS over HTTPS): one context per
 * upstream set (a worker view), one non-blocking connection per socket, driven by libevent.
 *
 * Verification (RFC 7858 §4.1, the strict profile; RFC 8484 §10): the peer's chain must lead to
 * a CA of `upstream-ca` (or the system store) and the certificate must hold the upstream's name
 * (`#NAME`, `name=`, or the URL's host) or, without one, its IP address (an IP SAN). TLS 1.2 or
 * later. With `pin-sha256=` pins (RFC 7858 §4.2, the key-pinned profile, as Knot Resolver has
 * it) the chain must instead contain a key with one of the pins, and nothing else is asked of
 * it: that is what lets an operator pin a self-signed upstream. A failure closes the connection
 * with a reason that names it (uptls_conn_why()).
 *
 * Sessions are resumed (TLS 1.2 tickets, TLS 1.3 PSK): the owner keeps one SSL_SESSION slot per
 * upstream; a new connection offers what the slot holds, and every session the server issues
 * replaces it.
 *
 * Lifetimes and callbacks: the owner creates a connection with uptls_conn_new() and frees it
 * with uptls_conn_free(), which it may call from inside any of the callbacks (the memory goes
 * when the callback returns). Callbacks run only from the connection's own libevent events,
 * never from uptls_conn_new() or uptls_conn_write(). After closed() no callback runs again.
 */
#ifndef DOHGATE_UPTLS_H
#define DOHGATE_UPTLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct event_base;
struct config;
struct dg_buf;
struct dg_upstream;
struct uptls_ctx;
struct uptls_conn;

/**
 * The client context for @p cfg's TLS and HTTPS upstreams: the CA store (cfg->upstream_ca or
 * the system's), TLS 1.2+, session resumption. @return NULL with @p err set (a CA file that
 * cannot be read).
 */
struct uptls_ctx *uptls_ctx_new(const struct config *cfg, char *err, size_t errlen);
void uptls_ctx_free(struct uptls_ctx *ctx);

struct uptls_cbs {
    /** The handshake is done and the peer verified: writes are sent from now on. */
    void (*ready)(void *arg);
    /** Decrypted bytes were appended to @p in; the owner consumes what it used. */
    void (*input)(void *arg, struct dg_buf *in);
    /** The connection failed or the peer closed it: @p err is a negative errno (-ECONNRESET
     * for a close by the peer, -EPROTO for a failed handshake or verification,
     * -ETIMEDOUT for a handshake past its time); uptls_conn_why() says why in words.
     * The owner frees the connection (here or later). */
    void (*closed)(void *arg, int err);
};

/**
 * Connect to @p up (DG_UP_TLS or DG_UP_HTTPS) and start the handshake. @p alpn: the ALPN
 * protocol to offer (wire format, e.g. "\x02h2"), NULL for none (DoT offers none: servers
 * that know ALPN but not "dot" may refuse the handshake). @p session: the owner's slot, read to
 * resume and written with each new session (an owned reference; the owner frees what is left
 * in it with SSL_SESSION_free); it must outlive the connection. @p handshake_ms bounds
 * connect + handshake.
 * @return the connection, or NULL with -errno in @p err (no callback will run).
 */
struct uptls_conn *uptls_conn_new(struct uptls_ctx *ctx, struct event_base *base,
                                  const struct dg_upstream *up, const char *alpn,
                                  SSL_SESSION **session, unsigned handshake_ms,
                                  const struct uptls_cbs *cbs, void *arg, int *err);
/** Queue @p n bytes; sent once the handshake is done, as fast as the socket takes them.
 * @return 0 or -ENOMEM. */
int uptls_conn_write(struct uptls_conn *c, const void *p, size_t n);
/** Bytes queued and not yet taken by the socket. */
size_t uptls_conn_pending(const struct uptls_conn *c);
/** Whether the handshake is done (ready() ran). */
bool uptls_conn_ready(const struct uptls_conn *c);
/** Whether the handshake was ever done (true after a close too, unlike uptls_conn_ready()). */
bool uptls_conn_established(const struct uptls_conn *c);
/** Whether the handshake resumed a session. */
bool uptls_conn_resumed(const struct uptls_conn *c);
/** The negotiated ALPN protocol ("" when none). */
const char *uptls_conn_alpn(const struct uptls_conn *c, char *buf, size_t len);
/** Why the connection closed, in words ("certificate verify failed: certificate has expired"),
 * or "" while it is open. */
const char *uptls_conn_why(const struct uptls_conn *c);
/** Whether it closed for a certificate that failed verification or pinning (the server is
 * misconfigured or an attacker sits in between: not worth retrying soon). */
bool uptls_conn_verify_failed(const struct uptls_conn *c);
/** Close (if open) and free; safe inside a callback. NULL is ignored. */
void uptls_conn_free(struct uptls_conn *c);

/** SHA-256 of @p x's SubjectPublicKeyInfo (the pin-sha256 value). @return 0 or -EINVAL. */
int uptls_spki_sha256(X509 *x, uint8_t out[32]);

#endif
