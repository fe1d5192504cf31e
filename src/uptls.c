/*
 * uptls.c — TLS client connections to encrypted upstreams (see uptls.h).
 *
 * One connection: a non-blocking socket, an SSL, a read event (persistent), a write event
 * (added while the socket must take more, or activated to flush what a loop turn queued) and a
 * timer bounding connect + handshake. States: CONNECTING → HANDSHAKE → OPEN → CLOSED.
 *
 * Writes are queued in a plaintext buffer and flushed once per loop turn (the write event is
 * activated, not called): queries that a turn produces go out in as few records and syscalls as
 * the socket allows, as the UDP path's sendmmsg() batches do.
 */
#include "dohgate/uptls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/util.h"

/* Plaintext read per SSL_read() call, and calls per readable event (a fast server must not keep
 * the worker from its other connections). */
#define UPTLS_READ_CHUNK 16384
#define UPTLS_READ_CALLS 16

struct uptls_ctx {
    SSL_CTX *ssl;
};

enum uptls_state { ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };

struct uptls_conn {
    struct uptls_ctx *ctx;
    const struct dg_upstream *up;
    SSL *ssl;
    int fd;
    struct event *rd, *wr, *timer;
    const struct uptls_cbs *cbs;
    void *arg;
    SSL_SESSION **slot;
    enum uptls_state state;
    struct dg_buf in, out;
    bool wr_added;
    bool read_wants_write; /* SSL_read() asked for the socket to be writable */
    bool resumed, verify_failed;
    bool handshaked; /* ready() ran */
    bool clean; /* the handshake was done and the end was no TLS error: the session stays good */
    int depth;  /* callbacks of ours on the stack */
    bool dead;  /* freed inside a callback: the memory goes when it returns */
    char why[200];
};

/* ---------------------------------------------------------------- context */

/* The first error of OpenSSL's queue, in words; the queue is cleared. */
static const char *ssl_err_text(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
    return buf;
}

/* Every session the server issues replaces the owner's (TLS 1.3 sends them after the
 * handshake, possibly several): the newest is the one most likely to be accepted. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct uptls_conn *c = SSL_get_app_data(ssl);
    if (!c || !c->slot)
        return 0;
    if (*c->slot)
        SSL_SESSION_free(*c->slot);
    *c->slot = sess;
    return 1; /* the reference is ours now */
}

/* With pins, the chain's CA and names do not matter (the key-pinned profile): the pins are
 * checked once the handshake is done. Without, OpenSSL's verdict stands. */
static int on_verify(int ok, X509_STORE_CTX *sctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct uptls_conn *c = ssl ? SSL_get_app_data(ssl) : NULL;
    if (c && c->up->n_pin)
        return 1;
    return ok;
}

struct uptls_ctx *uptls_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
    char e[256];
    struct uptls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx || !(ctx->ssl = SSL_CTX_new(TLS_client_method()))) {
        snprintf(err, errlen, "upstream TLS: out of memory");
        free(ctx);
        return NULL;
    }
    SSL_CTX *s = ctx->ssl;
    SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
    SSL_CTX_set_mode(s, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(s, SSL_VERIFY_PEER, on_verify);
    /* OpenSSL 3 reports a close without close_notify as an error ("unexpected eof"); many
     * servers close that way. DNS messages carry their own lengths (DoT framing, HTTP/2 frames),
     * so a truncation cannot pass for an answer: take it as the close it is. */
    SSL_CTX_set_options(s, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* The owner keeps the sessions (one slot per upstream), not OpenSSL's cache. */
    SSL_CTX_set_session_cache_mode(s, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(s, on_new_session);
    int ok = cfg->upstream_ca ? SSL_CTX_load_verify_locations(s, cfg->upstream_ca, NULL)
                              : SSL_CTX_set_default_verify_paths(s);
    if (!ok) {
        if (cfg->upstream_ca)
            snprintf(err, errlen, "upstream-ca %s: cannot load: %s", cfg->upstream_ca,
                     ssl_err_text(e, sizeof(e)));
        else
            snprintf(err, errlen, "upstream TLS: cannot load the system's CA store: %s",
                     ssl_err_text(e, sizeof(e)));
        uptls_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

void uptls_ctx_free(struct uptls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

int uptls_spki_sha256(X509 *x, uint8_t out[32])
{
    unsigned char *der = NULL;
    int n = x ? i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der) : -1;
    if (n <= 0)
        return -EINVAL;
    unsigned len = 0;
    int ok = EVP_Digest(der, (size_t)n, out, &len, EVP_sha256(), NULL);
    OPENSSL_free(der);
    return ok && len == 32 ? 0 : -EINVAL;
}

/* ---------------------------------------------------------------- connection */

static void conn_release(struct uptls_conn *c)
{
    if (c->rd)
        event_free(c->rd);
    if (c->wr)
        event_free(c->wr);
    if (c->timer)
        event_free(c->timer);
    if (c->ssl) {
        SSL_set_app_data(c->ssl, NULL); /* no session callback into freed memory */
        /* OpenSSL marks the session of a connection freed without a shutdown not resumable
         * (ssl_clear_bad_session); a server that closed an idle connection, or our own idle
         * close, did nothing wrong: say the shutdown was sent so the session stays usable */
        if (c->clean)
            SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0)
        close(c->fd);
    dg_buf_free(&c->in);
    dg_buf_free(&c->out);
    free(c);
}

/* The end: events off, the owner told once. */
static void conn_fail(struct uptls_conn *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(struct uptls_conn *c, int err, const char *fmt, ...)
{
    if (c->state == ST_CLOSED)
        return;
    c->state = ST_CLOSED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    event_del(c->rd);
    event_del(c->wr);
    event_del(c->timer);
    c->cbs->closed(c->arg, err);
}

static void want_write(struct uptls_conn *c, bool on)
{
    if (on == c->wr_added)
        return;
    if (on ? event_add(c->wr, NULL) : event_del(c->wr)) {
        if (on)
            conn_fail(c, -ENOMEM, "cannot watch the socket");
        return;
    }
    c->wr_added = on;
}

/* Why the handshake failed, in words that name the reason an operator can act on. */
static void handshake_failed(struct uptls_conn *c, int ssl_err)
{
    char e[256];
    /* with pins, on_verify accepted the chain whatever OpenSSL thought of it: a failure here is
     * not the certificate's (only the pin check after the handshake judges it) */
    long vr = c->up->n_pin ? X509_V_OK : SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        c->verify_failed = true;
        const char *hint = "";
        char h[300] = "";
        switch (vr) {
        case X509_V_ERR_HOSTNAME_MISMATCH:
            snprintf(h, sizeof(h), " (name mismatch: the certificate is not for %s)", c->up->name);
            hint = h;
            break;
        case X509_V_ERR_IP_ADDRESS_MISMATCH:
            snprintf(h, sizeof(h),
                     " (name mismatch: the certificate is not for %s; give the name to verify "
                     "as #NAME or name=)",
                     c->up->addr.text);
            hint = h;
            break;
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
        case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
        case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
        case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
            hint = " (unknown CA: not in upstream-ca or the system store)";
            break;
        case X509_V_ERR_CERT_HAS_EXPIRED:
            hint = " (expired)";
            break;
        default:
            break;
        }
        ERR_clear_error();
        conn_fail(c, -EPROTO, "certificate verify failed: %s%s", X509_verify_cert_error_string(vr),
                  hint);
        return;
    }
    if (ssl_err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        int en = errno;
        conn_fail(c, en ? -en : -ECONNRESET, "TLS handshake failed: %s",
                  en ? strerror(en) : "the server closed the connection");
        return;
    }
    conn_fail(c, -EPROTO, "TLS handshake failed: %s", ssl_err_text(e, sizeof(e)));
}

/* With pins: one key of the chain must have one of them. */
static bool pins_match(struct uptls_conn *c)
{
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c->ssl);
    for (int i = 0; chain && i < sk_X509_num(chain); i++) {
        uint8_t h[32];
        if (uptls_spki_sha256(sk_X509_value(chain, i), h) != 0)
            continue;
        for (size_t k = 0; k < c->up->n_pin; k++)
            if (memcmp(h, c->up->pin[k], 32) == 0)
                return true;
    }
    return false;
}

static void flush(struct uptls_conn *c)
{
    while (c->out.len && c->state == ST_OPEN) {
        ERR_clear_error();
        errno = 0; /* SSL_ERROR_SYSCALL reads it: not a stale one */
        int n =
            SSL_write(c->ssl, c->out.data, c->out.len > INT32_MAX ? INT32_MAX : (int)c->out.len);
        if (n > 0) {
            dg_buf_consume(&c->out, (size_t)n);
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_WRITE) {
            want_write(c, true);
            return;
        }
        if (e == SSL_ERROR_WANT_READ)
            return; /* the read event drives it on */
        char b[256];
        int en = errno;
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
            conn_fail(c, en ? -en : -EPIPE, "write failed: %s", en ? strerror(en) : "closed");
        else {
            c->clean = false;
            conn_fail(c, -EPROTO, "TLS write failed: %s", ssl_err_text(b, sizeof(b)));
        }
        return;
    }
    if (c->state == ST_OPEN && !c->read_wants_write)
        want_write(c, false);
}

static void read_some(struct uptls_conn *c)
{
    size_t before = c->in.len;
    for (int i = 0; i < UPTLS_READ_CALLS && c->state == ST_OPEN; i++) {
        if (dg_buf_reserve(&c->in, UPTLS_READ_CHUNK) < 0) {
            conn_fail(c, -ENOMEM, "out of memory");
            return;
        }
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(c->ssl, c->in.data + c->in.len, UPTLS_READ_CHUNK);
        if (n > 0) {
            c->in.len += (size_t)n;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ)
            break;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->read_wants_write = true; /* the write event reads again */
            want_write(c, true);
            break;
        }
        /* Bytes that came before the close are still delivered. */
        if (c->in.len > before)
            c->cbs->input(c->arg, &c->in);
        if (c->dead || c->state == ST_CLOSED)
            return;
        char b[256];
        int en = errno;
        if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && !en))
            conn_fail(c, -ECONNRESET, "closed by the server");
        else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
            conn_fail(c, -en, "read failed: %s", strerror(en));
        else {
            c->clean = false;
            conn_fail(c, -EPROTO, "TLS error: %s", ssl_err_text(b, sizeof(b)));
        }
        return;
    }
    if (c->in.len > before && c->state == ST_OPEN)
        c->cbs->input(c->arg, &c->in);
    /* A readable event that stopped at UPTLS_READ_CALLS comes back (level-triggered). */
}

static void handshake(struct uptls_conn *c)
{
    ERR_clear_error();
    errno = 0;
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ) {
            want_write(c, false);
            return;
        }
        if (e == SSL_ERROR_WANT_WRITE) {
            want_write(c, true);
            return;
        }
        handshake_failed(c, e);
        return;
    }
    if (c->up->n_pin && !pins_match(c)) {
        c->verify_failed = true;
        conn_fail(c, -EPROTO,
                  "certificate verify failed: no key of the chain matches a "
                  "pin-sha256 (pin mismatch)");
        return;
    }
    c->state = ST_OPEN;
    c->handshaked = c->clean = true;
    c->resumed = SSL_session_reused(c->ssl);
    event_del(c->timer);
    want_write(c, false);
    c->cbs->ready(c->arg);
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    struct uptls_conn *c = arg;
    (void)fd;
    c->depth++;
    if (c->state == ST_CONNECTING && (what & EV_WRITE)) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
            soerr = errno;
        if (soerr)
            conn_fail(c, -soerr, "connect failed: %s", strerror(soerr));
        else
            c->state = ST_HANDSHAKE;
    } else if (c->state == ST_CONNECTING && (what & EV_READ)) {
        /* EPOLLERR/HUP of a refused connect wakes the read side first */
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr)
            conn_fail(c, -soerr, "connect failed: %s", strerror(soerr));
    }
    if (c->state == ST_HANDSHAKE && !c->dead)
        handshake(c);
    if (c->state == ST_OPEN && !c->dead) {
        if ((what & EV_READ) || ((what & EV_WRITE) && c->read_wants_write)) {
            c->read_wants_write = false;
            read_some(c);
        }
        if (c->state == ST_OPEN && !c->dead)
            flush(c);
    }
    if (--c->depth == 0 && c->dead)
        conn_release(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct uptls_conn *c = arg;
    (void)fd;
    (void)what;
    c->depth++;
    conn_fail(c, -ETIMEDOUT, "%s timed out",
              c->state == ST_CONNECTING ? "connecting" : "the TLS handshake");
    if (--c->depth == 0 && c->dead)
        conn_release(c);
}

struct uptls_conn *uptls_conn_new(struct uptls_ctx *ctx, struct event_base *base,
                                  const struct dg_upstream *up, const char *alpn,
                                  SSL_SESSION **session, unsigned handshake_ms,
                                  const struct uptls_cbs *cbs, void *arg, int *err)
{
    struct uptls_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    c->ctx = ctx;
    c->up = up;
    c->cbs = cbs;
    c->arg = arg;
    c->slot = session;
    c->fd = socket(up->addr.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        *err = -errno;
        goto fail;
    }
    int one = 1;
    /* Pipelined small records must go out at once, not wait for Nagle. */
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->rd = event_new(base, c->fd, EV_READ | EV_PERSIST, on_io, c);
    c->wr = event_new(base, c->fd, EV_WRITE | EV_PERSIST, on_io, c);
    c->timer = evtimer_new(base, on_timer, c);
    c->ssl = SSL_new(ctx->ssl);
    if (!c->rd || !c->wr || !c->timer || !c->ssl) {
        *err = -ENOMEM;
        goto fail;
    }
    SSL_set_app_data(c->ssl, c);
    SSL_set_connect_state(c->ssl);
    if (!SSL_set_fd(c->ssl, c->fd)) {
        *err = -ENOMEM;
        goto fail;
    }
    int ok = 1;
    if (up->name[0]) {
        /* SNI and the name the certificate must hold */
        ok = SSL_set_tlsext_host_name(c->ssl, up->name) && SSL_set1_host(c->ssl, up->name);
        SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    } else {
        /* the address, as text (client.h's: ::ffff:a.b.c.d unmapped), must be an IP SAN */
        struct client_id id;
        ok = client_id_from_sockaddr(&id, (const struct sockaddr *)&up->addr.ss) == 0 &&
             X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), id.text);
    }
    if (ok && alpn)
        ok = SSL_set_alpn_protos(c->ssl, (const unsigned char *)alpn, (unsigned)strlen(alpn)) == 0;
    if (ok && session && *session)
        ok = SSL_set_session(c->ssl, *session);
    if (!ok) {
        ERR_clear_error();
        *err = -ENOMEM;
        goto fail;
    }
    c->state = ST_CONNECTING;
    if (connect(c->fd, (const struct sockaddr *)&up->addr.ss, up->addr.len) == 0)
        c->state = ST_HANDSHAKE;
    else if (errno != EINPROGRESS) {
        *err = -errno;
        goto fail;
    }
    struct timeval tv = {.tv_sec = handshake_ms / 1000,
                         .tv_usec = (suseconds_t)(handshake_ms % 1000) * 1000};
    /* The write event says when the connect is done (and a handshake step wants to write);
     * it goes off once the handshake stops wanting to write. */
    if (event_add(c->rd, NULL) < 0 || event_add(c->wr, NULL) < 0 ||
        evtimer_add(c->timer, &tv) < 0) {
        *err = -ENOMEM;
        goto fail;
    }
    c->wr_added = true;
    return c;
fail:
    conn_release(c);
    return NULL;
}

int uptls_conn_write(struct uptls_conn *c, const void *p, size_t n)
{
    if (c->state == ST_CLOSED)
        return -EPIPE;
    if (dg_buf_append(&c->out, p, n) < 0)
        return -ENOMEM;
    /* Once per loop turn: activate the write event (it runs later in this turn) instead of
     * writing now, so that the queries of a turn share records and syscalls. */
    if (c->state == ST_OPEN && !c->wr_added)
        event_active(c->wr, EV_WRITE, 1);
    return 0;
}

size_t uptls_conn_pending(const struct uptls_conn *c)
{
    return c->out.len;
}

bool uptls_conn_ready(const struct uptls_conn *c)
{
    return c->state == ST_OPEN;
}

bool uptls_conn_established(const struct uptls_conn *c)
{
    return c->handshaked;
}

bool uptls_conn_resumed(const struct uptls_conn *c)
{
    return c->resumed;
}

const char *uptls_conn_alpn(const struct uptls_conn *c, char *buf, size_t len)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(c->ssl, &p, &n);
    snprintf(buf, len, "%.*s", (int)n, p ? (const char *)p : "");
    return buf;
}

const char *uptls_conn_why(const struct uptls_conn *c)
{
    return c->why;
}

bool uptls_conn_verify_failed(const struct uptls_conn *c)
{
    return c->verify_failed;
}

void uptls_conn_free(struct uptls_conn *c)
{
    if (!c || c->dead)
        return;
    if (c->state == ST_OPEN) {
        /* close_notify, best effort: the socket is non-blocking and we do not wait */
        (void)SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
    c->state = ST_CLOSED;
    if (c->depth > 0) {
        c->dead = true;
        event_del(c->rd);
        event_del(c->wr);
        event_del(c->timer);
        return;
    }
    conn_release(c);
}
