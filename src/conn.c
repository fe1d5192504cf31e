#include "dohgate/conn.h"

#include <errno.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dohgate/config.h"
#include "dohgate/h2.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/tls.h"
#include "dohgate/util.h"

/* Plaintext gathered before one SSL_write: a few TLS records. More is gathered in later rounds. */
#define OUT_GATHER (4 * 16384)
/* Stop reading requests from a client whose unsent output exceeds this while the socket is
 * full (backpressure): nghttp2 then keeps at most max-concurrent-streams responses queued. */
#define OUT_HIGH_WATER (32 * 1024)
/* Bytes read per SSL_read; reads per readiness event are bounded so one client cannot starve
 * the others. */
#define READ_CHUNK    16384
#define READS_PER_EV  16
#define H1_MAX_HEADER 8192

enum conn_state { CS_HANDSHAKE, CS_H2, CS_H1_REFUSE, CS_CLOSED };

struct conn {
    struct conn_set *set;
    struct conn *prev, *next;
    int fd;
    SSL *ssl;
    enum conn_state state;
    struct event *rev, *wev, *timer, *flush_ev;
    struct h2_session *h2;
    struct dg_buf out;
    size_t h1_seen;   /* HTTP/1.1 refusal: request bytes seen so far */
    unsigned h1_crlf; /* progress through "\r\n\r\n" */
    bool close_after_flush;
    bool tls_failed;      /* fatal TLS/socket error: no close_notify */
    bool want_write;      /* wev armed */
    bool read_paused;     /* backpressure: rev disarmed */
    uint64_t last_active; /* ms, for the idle timer */
};

static void conn_free(struct conn *c)
{
    struct conn_set *set = c->set;
    if (c->prev)
        c->prev->next = c->next;
    else
        set->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    set->count--;
    /* The h2 session goes first: it cancels the streams' pending upstream queries. */
    h2_session_free(c->h2);
    event_free(c->rev);
    event_free(c->wev);
    event_free(c->timer);
    event_free(c->flush_ev);
    if (c->ssl) {
        if (c->state != CS_HANDSHAKE && !c->tls_failed) {
            /* Best effort close_notify; never wait for the peer's. */
            ERR_clear_error();
            SSL_set_quiet_shutdown(c->ssl, 0);
            SSL_shutdown(c->ssl);
        }
        SSL_free(c->ssl);
    }
    ERR_clear_error();
    close(c->fd);
    dg_buf_free(&c->out);
    free(c);
    if (set->on_closed)
        set->on_closed(set, set->on_closed_arg);
}

static void on_wake(void *arg);

static void set_write_interest(struct conn *c, bool on)
{
    if (on == c->want_write)
        return;
    c->want_write = on;
    if (on)
        event_add(c->wev, NULL);
    else
        event_del(c->wev);
}

static void set_read_paused(struct conn *c, bool paused)
{
    if (paused == c->read_paused)
        return;
    c->read_paused = paused;
    if (paused) {
        event_del(c->rev);
    } else {
        event_add(c->rev, NULL);
        /* Bytes already decrypted inside OpenSSL would not wake the socket event. */
        if (c->ssl && SSL_pending(c->ssl) > 0)
            on_wake(c);
    }
}

/* Arm the connection timer: handshake timeout first, idle timeout afterwards. */
static void arm_timer(struct conn *c, unsigned seconds)
{
    struct timeval tv = {.tv_sec = (time_t)seconds, .tv_usec = 0};
    event_add(c->timer, &tv);
}

static void on_wake(void *arg)
{
    struct conn *c = arg;
    /* Low priority: runs after every ready socket of this loop turn has been served, so all
     * responses produced in the turn leave together. */
    if (!event_pending(c->flush_ev, EV_TIMEOUT, NULL))
        event_active(c->flush_ev, EV_TIMEOUT, 0);
}

/* Gather protocol output and write it. @return -1 when the connection must be closed now. */
static int conn_flush(struct conn *c)
{
    for (;;) {
        if (c->h2 && c->out.len < OUT_GATHER) {
            if (h2_session_send(c->h2, &c->out, OUT_GATHER) != 0)
                return -1;
        }
        if (c->out.len == 0)
            break;
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->out.data, (int)(c->out.len > 1 << 20 ? 1 << 20 : c->out.len));
        if (n > 0) {
            dg_buf_consume(&c->out, (size_t)n);
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            set_write_interest(c, true);
            set_read_paused(c, c->out.len > OUT_HIGH_WATER);
            return 0;
        }
        if (err == SSL_ERROR_SSL)
            dg_log_ssl_errors(DG_LOG_DEBUG, "TLS write");
        c->tls_failed = true;
        return -1;
    }
    set_write_interest(c, false);
    set_read_paused(c, false);
    if (c->close_after_flush)
        return -1;
    if (c->h2 && h2_session_done(c->h2))
        return -1;
    return 0;
}

/* The answer to a client that cannot speak HTTP/2 yet: a readable HTTP/1.1 error, then close. */
static void h1_refuse(struct conn *c)
{
    static const char body[] = "this server speaks HTTP/2 only for now (ALPN h2); use an HTTP/2 "
                               "client, e.g. curl --http2\n";
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 505 HTTP Version Not Supported\r\n"
                     "content-type: text/plain; charset=utf-8\r\n"
                     "content-length: %zu\r\nconnection: close\r\n\r\n",
                     sizeof(body) - 1);
    /* On OOM the connection just closes without the text. */
    if (dg_buf_append(&c->out, head, (size_t)n) == 0)
        dg_buf_append(&c->out, body, sizeof(body) - 1);
    c->close_after_flush = true;
}

static int h1_feed(struct conn *c, const uint8_t *p, size_t n)
{
    static const char end[] = "\r\n\r\n";
    for (size_t i = 0; i < n && !c->close_after_flush; i++) {
        c->h1_crlf = (p[i] == (uint8_t)end[c->h1_crlf]) ? c->h1_crlf + 1 : (p[i] == '\r');
        if (c->h1_crlf == 4 || ++c->h1_seen > H1_MAX_HEADER)
            h1_refuse(c);
    }
    return 0;
}

static int handshake_done(struct conn *c)
{
    struct conn_set *set = c->set;
    c->last_active = dg_now_ms();
    arm_timer(c, set->cfg->idle_timeout_s);
    if (tls_alpn_get(c->ssl) == TLS_ALPN_H2) {
        struct h2_settings st = {.max_concurrent_streams = set->cfg->max_concurrent_streams};
        c->h2 = h2_session_new(&st, set->hctx, on_wake, c);
        if (!c->h2)
            return -1;
        c->state = CS_H2;
        if (set->shutting_down)
            h2_session_shutdown(c->h2);
    } else {
        c->state = CS_H1_REFUSE;
    }
    return 0;
}

/* Read what is available and hand it to the protocol. @return -1 to close now. */
static int conn_read(struct conn *c)
{
    uint8_t buf[READ_CHUNK];
    for (int i = 0; i < READS_PER_EV && !c->read_paused; i++) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, sizeof(buf));
        if (n > 0) {
            c->last_active = dg_now_ms();
            int rc = c->state == CS_H2 ? h2_session_recv(c->h2, buf, (size_t)n)
                                       : h1_feed(c, buf, (size_t)n);
            if (rc != 0) {
                /* nghttp2 queued a GOAWAY; send it, then close. */
                c->close_after_flush = true;
                return 0;
            }
            if (c->out.len > OUT_HIGH_WATER)
                set_read_paused(c, true);
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ)
            return 0;
        if (err == SSL_ERROR_WANT_WRITE) {
            set_write_interest(c, true);
            return 0;
        }
        if (err == SSL_ERROR_SSL)
            dg_log_ssl_errors(DG_LOG_DEBUG, "TLS read");
        if (err != SSL_ERROR_ZERO_RETURN)
            c->tls_failed = true;
        return -1; /* EOF, close_notify, reset */
    }
    if (!c->read_paused && SSL_pending(c->ssl) > 0)
        on_wake(c); /* more decrypted bytes wait: come back in this turn's flush pass */
    return 0;
}

static void conn_io(struct conn *c)
{
    if (c->state == CS_HANDSHAKE) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                set_write_interest(c, false);
                return;
            }
            if (err == SSL_ERROR_WANT_WRITE) {
                set_write_interest(c, true);
                return;
            }
            if (err == SSL_ERROR_SSL)
                dg_log_ssl_errors(DG_LOG_DEBUG, "TLS handshake");
            conn_free(c);
            return;
        }
        if (handshake_done(c) != 0) {
            conn_free(c);
            return;
        }
    }
    if (conn_read(c) != 0 || conn_flush(c) != 0)
        conn_free(c);
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    conn_io(arg);
}

/* A blocked write, or a handshake waiting to write: a full pass covers both directions (a TLS
 * write can need a read, and the other way round). */
static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    conn_io(arg);
}

static void on_flush_ev(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->state == CS_HANDSHAKE)
        return;
    if (SSL_pending(c->ssl) > 0 && !c->read_paused) {
        conn_io(c);
        return;
    }
    if (conn_flush(c) != 0)
        conn_free(c);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    if (c->state == CS_HANDSHAKE) {
        log_debug("TLS handshake timed out");
        conn_free(c);
        return;
    }
    unsigned idle = c->set->cfg->idle_timeout_s;
    uint64_t now = dg_now_ms(), idle_ms = (uint64_t)idle * 1000u;
    bool busy = c->h2 && h2_session_streams(c->h2) > 0;
    if (busy || now - c->last_active < idle_ms) {
        uint64_t left = busy ? idle_ms : idle_ms - (now - c->last_active);
        struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                             .tv_usec = (suseconds_t)(left % 1000) * 1000};
        event_add(c->timer, &tv);
        return;
    }
    /* Idle: say goodbye with GOAWAY rather than a bare close, so pooling clients know. */
    if (c->h2 && !c->close_after_flush) {
        h2_session_shutdown(c->h2);
        c->close_after_flush = true;
        arm_timer(c, 2); /* if the client does not read, give up soon */
        if (conn_flush(c) != 0)
            conn_free(c);
        return;
    }
    conn_free(c);
}

int conn_accept(struct conn_set *set, int fd)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->set = set;
    c->fd = fd;
    c->ssl = SSL_new(set->ssl_ctx);
    c->rev = event_new(set->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(set->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->timer = evtimer_new(set->base, on_timer, c);
    c->flush_ev = event_new(set->base, -1, 0, on_flush_ev, c);
    /* Link first so that conn_free() can undo everything from here on. */
    c->next = set->head;
    if (set->head)
        set->head->prev = c;
    set->head = c;
    set->count++;
    if (!c->ssl || !c->rev || !c->wev || !c->timer || !c->flush_ev || SSL_set_fd(c->ssl, fd) != 1) {
        conn_free(c);
        return -ENOMEM;
    }
    event_priority_set(c->flush_ev, 1);
    SSL_set_accept_state(c->ssl);
    event_add(c->rev, NULL);
    arm_timer(c, set->cfg->handshake_timeout_s);
    return 0;
}

void conn_set_shutdown(struct conn_set *set)
{
    set->shutting_down = true;
    for (struct conn *c = set->head; c; c = c->next) {
        if (c->h2) {
            h2_session_shutdown(c->h2);
            on_wake(c);
        }
    }
}

void conn_set_close_all(struct conn_set *set)
{
    while (set->head)
        conn_free(set->head);
}
