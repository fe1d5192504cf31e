/**
 * @file conn.h
 * One client connection: the socket, the SSL object (none on the plain-HTTP listener), its
 * events and timers, and, after the handshake, the protocol chosen by ALPN: an HTTP/2 session
 * for "h2", an HTTP/1.1 session (h1.h) for "http/1.1" or no ALPN. On the DNS listeners a DNS
 * stream session (dnsstream.h) instead: at once on dns-listen TCP, after the handshake on
 * dot-listen (the same certificates, SNI and tickets; ALPN "dot" or none). TLS runs directly on
 * the non-blocking socket (no bufferevent): the connection reads everything available, feeds it
 * to the session, then writes everything it produced in one SSL_write, so many frames (or DNS
 * answers) share one TLS record and one syscall.
 *
 * PROXY protocol (proxyproto.h): on every listener but the metrics one, a connection from a
 * peer in set->pp_from (proxy-protocol-from) first reads a PROXY v1/v2 header, before TLS or
 * the session, taking exactly its bytes off the socket (a peek, then a read of what belongs to
 * the header: what follows is the TLS ClientHello, read by OpenSSL from the socket itself);
 * the header must come within handshake-timeout. Its source address then replaces the
 * connection's client, and set->admit runs the connection-time checks the worker skipped at
 * accept on it. With pp_from set, a connection from any other peer is peeked at once: one that
 * starts with a PROXY signature is closed (a load balancer missing from the list), any other
 * goes on untouched.
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

#include "dohgate/list.h"
#include "dohgate/observer.h"

struct event_base;
struct config;
struct handler_ctx;
struct conn;
struct tls_store;
struct client_id;
struct acl;

struct conn_set {
    struct event_base *base;
    struct tls_store *tls;         /**< shared by the workers; outlives them */
    const struct dg_observer *obs; /**< counts connections, handshakes, bytes; may be NULL */
    struct clients *clients;       /**< per-client connection counts; may be NULL */
    const struct config *cfg;
    const struct handler_ctx *hctx;
    struct dg_list conns; /**< open connections, newest first (struct conn.node) */
    size_t count;
    bool shutting_down;
    /** proxy-protocol-from: peers whose connections start with a PROXY header; NULL or empty:
     * none (no peek either). Not owned: the snapshot's, which outlives the set. */
    const struct acl *pp_from;
    /**
     * The connection-time checks (ACL, per-client limits) on a client: at accept
     * (conn_accept()), or for a load balancer's connection on the client its PROXY header
     * named (the balancer's own address for a header without one: v1 UNKNOWN, v2 LOCAL or
     * UNSPEC). @return DG_NREFUSE (admitted; *tracked: counted in clients, uncounted when the
     * connection closes) or an enum dg_refusal: the connection is closed and counted
     * (DG_EV_CONN_REFUSED). Never frees a connection. May be NULL (no checks).
     */
    int (*admit)(struct conn_set *set, const struct client_id *client, bool *tracked);
    /** Called after a connection was freed (count already decremented). May be NULL. */
    void (*on_closed)(struct conn_set *set, void *arg);
    void *on_closed_arg;
};

/** Event priorities: the base needs CONN_PRIORITIES queues; socket events use the default
 * (middle) one, the per-connection flush runs after them. */
#define CONN_PRIORITIES     3
#define CONN_FLUSH_PRIORITY 2

/**
 * Take over an accepted, non-blocking socket: start the TLS handshake (DG_LISTENER_TLS,
 * DG_LISTENER_DOT), serve plain HTTP/1.1 at once (the port-80 listener, or the metrics
 * listener), or plain DNS over TCP (DG_LISTENER_DNS_TCP). A peer in set->pp_from (never on the
 * metrics listener) must first send a PROXY header, whose client then replaces @p client.
 * set->admit judges the client (any listener but metrics) before anything is allocated, or,
 * for a load balancer, once its header is read; a refusal closes the socket and is counted
 * (DG_EV_CONN_REFUSED). @p client: who connected, as accept() reported it (copied into the
 * connection, whose sessions and requests point to the copy; NULL: unknown, no checks).
 * @return 0, -EACCES (refused) or -ENOMEM; the socket is closed on failure: ownership passes
 * in every case.
 */
int conn_accept(struct conn_set *set, int fd, enum dg_listener kind,
                const struct client_id *client);

/** Graceful stop: GOAWAY to every HTTP/2 connection; each closes when its streams are done.
 * DNS connections read nothing more, answer the queries in flight (keepalive 0), then close. */
void conn_set_shutdown(struct conn_set *set);

/** Close every connection now (pending operations cancelled). */
void conn_set_close_all(struct conn_set *set);

#endif
