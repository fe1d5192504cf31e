#include "dohgate/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h> /* SIOCOUTQ */
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dohgate/acl.h"
#include "dohgate/budget.h"
#include "dohgate/client.h"
#include "dohgate/clients.h"
#include "dohgate/config.h"
#include "dohgate/dnsstream.h"
#include "dohgate/h1.h"
#include "dohgate/h2.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"
#include "dohgate/proxyproto.h"
#include "dohgate/tls.h"
#include "dohgate/util.h"

/* Plaintext gathered before one SSL_write: a few TLS records. More is gathered in later rounds. */
#define OUT_GATHER (4 * 16384)
/* Stop reading requests from a client whose unsent output exceeds this while the socket is
 * full (backpressure): nghttp2 then keeps at most max-concurrent-streams responses queued. */
#define OUT_HIGH_WATER (32 * 1024)
/* Bytes read per SSL_read; reads per readiness event are bounded so one client cannot starve
 * the others. */
#define READ_CHUNK   16384
#define READS_PER_EV 16

/* CS_PREFACE: the clear-text listener, before its first bytes chose HTTP/2 or HTTP/1.1.
 * CS_PROXY: reading a PROXY header from a proxy-protocol-from peer; CS_PROXY_CHECK: one peek at
 * another peer's first bytes (a PROXY signature closes it); then the TLS handshake or the
 * session. Before CS_HANDSHAKE's end no TLS was spoken. CS_ACME: a handshake that answered a
 * tls-alpn-01 challenge (tls.h), lingering until it closes. */
enum conn_state {
    CS_HANDSHAKE,
    CS_PREFACE,
    CS_H2,
    CS_H1,
    CS_DNS,
    CS_PROXY,
    CS_PROXY_CHECK,
    CS_ACME
};

/* RFC 9113 §3.4: what a client with prior knowledge of HTTP/2 (h2c) sends first. */
static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)

/* The PROXY header received so far (CS_PROXY only): every byte here is the header's. */
struct pp_in {
    size_t len;
    uint8_t buf[PP_MAX];
};

/* io_read/io_write results besides a byte count */
enum { IO_EOF = 0, IO_WANT_READ = -1, IO_WANT_WRITE = -2, IO_ERR = -3 };

struct conn {
    struct conn_set *set;
    struct dg_lnode node; /* on set->conns */
    int fd;
    SSL *ssl; /* NULL on the plain-HTTP and metrics listeners */
    enum dg_listener kind;
    bool client_tracked; /* counted in set->clients: uncount on close */
    /* who, filled once at accept; the sessions and every request point here */
    struct client_id client;
    /* what requests on it hold (budget.h); the sessions and requests point here */
    struct budget_scope budget;
    enum conn_state state;
    struct event *rev, *wev, *timer, *flush_ev;
    struct h2_session *h2;
    struct h1_session *h1;
    struct dnsstream_session *ds; /* dns-listen TCP and dot-listen: DNS messages, no HTTP */
    struct pp_in *pp;             /* CS_PROXY: the header so far; freed once it is whole */
    struct dg_buf out;
    bool close_after_flush;
    bool tls_failed;      /* fatal TLS/socket error: no close_notify */
    bool want_write;      /* wev armed */
    bool read_paused;     /* backpressure: rev disarmed */
    bool lingering;       /* goodbye sent and FIN too: dropping what still comes, then close */
    uint64_t last_active; /* ms: last byte read or written, for the idle and stall timers */
    uint64_t out_since;   /* ms: output waiting and none of it taken since (0: none waits) */
    int sendq;            /* the kernel's send queue (SIOCOUTQ) when out_since was last set */
    uint64_t req_armed;   /* h1: start time of the request the timer was last set for */
    uint64_t trimmed_at;  /* last_active when the connection last gave its idle memory back */
    uint64_t timer_due;   /* ms: when the timer fires (rearm(), arm_timer()) */
    /* CS_PREFACE: the first bytes, held while they match the HTTP/2 preface */
    uint8_t preface[H2_PREFACE_LEN];
    uint8_t preface_len;
};

/* Whether TLS got past its handshake (a close_notify makes sense). */
static bool tls_up(const struct conn *c)
{
    return c->ssl &&
           (c->state == CS_H2 || c->state == CS_H1 || c->state == CS_DNS || c->state == CS_ACME);
}

static void conn_free(struct conn *c)
{
    struct conn_set *set = c->set;
    dg_list_unlink(&set->conns, &c->node);
    set->count--;
    if (c->client_tracked)
        clients_conn_close(set->clients, &c->client.key);
    dg_observe(set->obs, DG_EV_CONN_CLOSED, c->kind, 1);
    if (c->ssl && c->state == CS_HANDSHAKE) /* failed, timed out, or the client left */
        dg_observe(set->obs, DG_EV_TLS_FAILED, 0, 1);
    /* The h2 session goes first: it cancels the streams' pending upstream queries. */
    h2_session_free(c->h2);
    h1_session_free(c->h1);
    dnsstream_session_free(c->ds); /* cancels the queries in flight */
    budget_scope_fini(&c->budget); /* the sessions gave everything back */
    if (c->rev)
        event_free(c->rev);
    if (c->wev)
        event_free(c->wev);
    if (c->timer)
        event_free(c->timer);
    if (c->flush_ev)
        event_free(c->flush_ev);
    free(c->pp);
    if (c->ssl) {
        if (tls_up(c) && !c->tls_failed) {
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
/* Bytes the kernel still holds for the client (SIOCOUTQ), -1 when unknown. Read only when the
 * socket is full (a rare path) and when send-timeout is about to close a connection. */
static int sendq_len(const struct conn *c)
{
    int q;
    return ioctl(c->fd, SIOCOUTQ, &q) == 0 ? q : -1;
}

/* Whether a client whose socket stayed full still read: Linux reports a full socket writable
 * only after about half of its send buffer (up to 4 MB) drained, so a slow reader (tens of
 * KB/s) can go a whole send-timeout without one successful write of ours while it reads all
 * along. The kernel's queue shrinking is that progress. Samples the queue again. */
static bool sendq_drained(struct conn *c)
{
    int q = sendq_len(c);
    bool drained = q >= 0 && c->sendq >= 0 && q < c->sendq;
    c->sendq = q;
    return drained;
}

static void rearm(struct conn *c, uint64_t left_ms);
static void trim_soon(struct conn *c);

/* The last words are queued (GOAWAY, a 408, the GOAWAY after a protocol error): close once they
 * have left, and within GOODBYE_MS whatever the client does, so that one that does not read
 * cannot hold the connection until the idle timeout. Armed once: later input must not push it
 * out. */
#define GOODBYE_MS 2000
static void goodbye(struct conn *c)
{
    if (c->close_after_flush)
        return;
    c->close_after_flush = true;
    rearm(c, GOODBYE_MS);
}

/* Graceful end of an HTTP/2 connection (SIGTERM, the idle timeout), in two steps (h2.h): the
 * first GOAWAY and its PING now, the final GOAWAY at the PING's ACK or, if that does not come,
 * at the connection's timer, armed here for it (on_timer). Not while the goodbye or the linger
 * owns the timer: the connection is ending anyway. @return whether the first step is under way
 * (false: it ended already, or the session went one step). */
static bool h2_drain_start(struct conn *c)
{
    h2_session_shutdown(c->h2);
    uint64_t due = h2_session_goaway_due(c->h2);
    uint64_t now = dg_now_ms();
    if (due && !c->close_after_flush && !c->lingering)
        rearm(c, due > now ? due - now : 0);
    on_wake(c);
    return due != 0;
}

/* One read from TLS or the plain socket. @return bytes (> 0) or an IO_* code. */
static int io_read(struct conn *c, uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = recv(c->fd, buf, n, 0);
        if (r > 0) {
            if (c->kind != DG_LISTENER_METRICS) /* scrapes are not traffic */
                dg_observe(c->set->obs, DG_EV_BYTES_IN, 0, (uint64_t)r);
            return (int)r;
        }
        if (r == 0)
            return IO_EOF;
        return errno == EAGAIN || errno == EINTR ? IO_WANT_READ : IO_ERR;
    }
    ERR_clear_error();
    int r = SSL_read(c->ssl, buf, (int)n);
    if (r > 0) {
        dg_observe(c->set->obs, DG_EV_BYTES_IN, 0, (uint64_t)r);
        return r;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ)
        return IO_WANT_READ;
    if (err == SSL_ERROR_WANT_WRITE)
        return IO_WANT_WRITE;
    if (err == SSL_ERROR_SSL)
        dg_log_ssl_errors(DG_LOG_DEBUG, "TLS read");
    if (err == SSL_ERROR_ZERO_RETURN)
        return IO_EOF; /* close_notify */
    c->tls_failed = true;
    return IO_ERR;
}

static int io_write(struct conn *c, const uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
        if (r >= 0) {
            if (c->kind != DG_LISTENER_METRICS)
                dg_observe(c->set->obs, DG_EV_BYTES_OUT, 0, (uint64_t)r);
            return (int)r;
        }
        return errno == EAGAIN || errno == EINTR ? IO_WANT_WRITE : IO_ERR;
    }
    ERR_clear_error();
    int r = SSL_write(c->ssl, buf, (int)n);
    if (r > 0) {
        dg_observe(c->set->obs, DG_EV_BYTES_OUT, 0, (uint64_t)r);
        return r;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_WRITE)
        return IO_WANT_WRITE;
    if (err == SSL_ERROR_WANT_READ)
        return IO_WANT_READ;
    if (err == SSL_ERROR_SSL)
        dg_log_ssl_errors(DG_LOG_DEBUG, "TLS write");
    c->tls_failed = true;
    return IO_ERR;
}

/* Bytes inside OpenSSL that no socket event will announce: decrypted ones, and with
 * read-ahead (tls.c) whole records read from the socket but not processed yet. */
static bool io_pending(const struct conn *c)
{
    return c->ssl && SSL_has_pending(c->ssl);
}

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
        if (io_pending(c))
            on_wake(c);
    }
}

/* Arm the connection timer: handshake timeout first, idle timeout afterwards. */
static void arm_timer(struct conn *c, unsigned seconds)
{
    struct timeval tv = {.tv_sec = (time_t)seconds, .tv_usec = 0};
    c->timer_due = dg_now_ms() + (uint64_t)seconds * 1000u;
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

/*
 * The goodbye (GOAWAY, the last response before "Connection: close", an error) has left:
 * close_notify, then our FIN, then read and drop whatever the client still sends, for up to
 * LINGER_MS, before closing. Closing at once with unread requests in the socket makes the
 * kernel answer with a reset, which destroys the goodbye in the client's buffers before it
 * reads it (nginx's lingering close). The protocol sessions are freed now.
 */
#define LINGER_MS 2000
static void linger_start(struct conn *c)
{
    if (c->lingering)
        return;
    c->lingering = true;
    if (tls_up(c) && !c->tls_failed) {
        ERR_clear_error();
        SSL_set_quiet_shutdown(c->ssl, 0);
        SSL_shutdown(c->ssl); /* close_notify, written straight to the socket */
        ERR_clear_error();
    }
    c->tls_failed = true; /* conn_free: no second close_notify */
    shutdown(c->fd, SHUT_WR);
    h2_session_free(c->h2);
    h1_session_free(c->h1);
    dnsstream_session_free(c->ds);
    c->h2 = NULL;
    c->h1 = NULL;
    c->ds = NULL;
    set_write_interest(c, false);
    set_read_paused(c, false);
    struct timeval tv = {.tv_sec = LINGER_MS / 1000, .tv_usec = (LINGER_MS % 1000) * 1000};
    event_add(c->timer, &tv);
}

/* Lingering: drop what arrives; @return -1 once the client closed too (or failed). */
static int linger_drain(struct conn *c)
{
    char buf[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t r = recv(c->fd, buf, sizeof(buf), 0);
        if (r > 0)
            continue;
        return r < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    }
    return 0;
}

/* Whether the session takes more input now (HTTP/1.1: one request at a time; DNS streams: the
 * pipeline and the answers waiting; HTTP/2 has its own flow control). */
static bool session_wants_read(const struct conn *c)
{
    return !(c->h1 && !h1_session_want_read(c->h1)) &&
           !(c->ds && !dnsstream_session_want_read(c->ds));
}

/* A request (HTTP/1.1) or a DNS message started and is not complete: the timer must fire at its
 * request-timeout, which is sooner than the idle timeout it was set to. */
static void arm_request_timer(struct conn *c, uint64_t started)
{
    if (!started || started == c->req_armed)
        return;
    c->req_armed = started;
    uint64_t req_ms = (uint64_t)c->set->cfg->request_timeout_s * 1000u;
    uint64_t el = c->last_active > started ? c->last_active - started : 0;
    rearm(c, el < req_ms ? req_ms - el : 0);
}

/* Gather protocol output and write it. @return -1 when the connection must be closed now. */
static int conn_flush(struct conn *c)
{
    for (;;) {
        if (c->out.len < OUT_GATHER) {
            int rc = 0;
            if (c->h2)
                rc = h2_session_send(c->h2, &c->out, OUT_GATHER);
            else if (c->h1)
                rc = h1_session_send(c->h1, &c->out, OUT_GATHER);
            else if (c->ds)
                rc = dnsstream_session_send(c->ds, &c->out, OUT_GATHER);
            if (rc == -EMSGSIZE) /* a DNS client that let its answers pile up */
                dg_observe(c->set->obs, DG_EV_STALLED, DG_STALL_CONNECTION, 1);
            if (rc != 0)
                return -1;
            /* A protocol error makes nghttp2 queue a GOAWAY and go on (mem_recv succeeds):
             * once that GOAWAY is in our buffer the session is over, whether or not the
             * client reads it. */
            if (c->h2 && !h2_session_want_read(c->h2))
                goodbye(c);
        }
        if (c->out.len == 0)
            break;
        int n = io_write(c, c->out.data, c->out.len > 1 << 20 ? 1 << 20 : c->out.len);
        if (n > 0) {
            dg_buf_consume(&c->out, (size_t)n);
            c->last_active = dg_now_ms();
            c->out_since = c->last_active; /* taken: send-timeout counts from here */
            if (c->ds)
                dnsstream_session_blocked(c->ds, false);
            continue;
        }
        if (n == IO_WANT_WRITE || n == IO_WANT_READ) {
            if (!c->out_since)
                c->out_since = dg_now_ms();
            if (c->ds) /* answers that pile up now are held for a client that does not read */
                dnsstream_session_blocked(c->ds, true);
            c->sendq = sendq_len(c); /* full now: what the client reads from here on shows */
            set_write_interest(c, true);
            set_read_paused(c, c->out.len > OUT_HIGH_WATER || !session_wants_read(c));
            return 0;
        }
        return -1;
    }
    c->out_since = 0;
    set_write_interest(c, false);
    set_read_paused(c, !session_wants_read(c));
    if (c->close_after_flush || (c->h2 && h2_session_done(c->h2)) ||
        (c->h1 && h1_session_done(c->h1)) || (c->ds && dnsstream_session_done(c->ds)))
        linger_start(c);
    return 0;
}

static int start_h1(struct conn *c)
{
    bool cleartext = c->kind == DG_LISTENER_CLEARTEXT;
    /* https: served as DoH and the site are (the TLS listeners, plain-listen), not the port-80
     * listener's redirects */
    const struct h1_settings st = {.https = c->ssl != NULL || cleartext,
                                   .cleartext = cleartext,
                                   .metrics = c->kind == DG_LISTENER_METRICS,
                                   .client = &c->client,
                                   .budget = &c->budget};
    c->h1 = h1_session_new(&st, c->set->hctx, on_wake, c);
    if (!c->h1)
        return -1;
    c->state = CS_H1;
    if (c->set->shutting_down) /* started during a stop: its first request is on its way */
        h1_session_serve_one(c->h1);
    return 0;
}

/* DNS over TCP or over TLS: length-prefixed DNS messages (dnsstream.h), whatever ALPN said
 * (tls.c allowed only "dot" or none on the DoT listener). */
static int start_dns(struct conn *c)
{
    const struct dnsstream_settings st = {
        .client = &c->client, .transport = c->kind == DG_LISTENER_DOT ? DG_TR_DOT : DG_TR_DNS_TCP};
    c->ds = dnsstream_session_new(&st, c->set->hctx, on_wake, c);
    if (!c->ds)
        return -1;
    c->state = CS_DNS;
    /* started during a stop: not shut down yet, so that the queries on their way are read
     * (feed() shuts it down after its first read) */
    return 0;
}

static int start_h2(struct conn *c)
{
    struct conn_set *set = c->set;
    struct h2_settings st = {.max_concurrent_streams = set->cfg->max_concurrent_streams,
                             .cleartext = c->kind == DG_LISTENER_CLEARTEXT,
                             .client = &c->client,
                             .budget = &c->budget};
    c->h2 = h2_session_new(&st, set->hctx, on_wake, c);
    if (!c->h2)
        return -1;
    c->state = CS_H2;
    if (set->shutting_down)
        h2_drain_start(c);
    return 0;
}

static int handshake_done(struct conn *c)
{
    struct conn_set *set = c->set;
    c->last_active = dg_now_ms();
    rearm(c, (uint64_t)set->cfg->idle_timeout_s * 1000u);
    dg_observe(set->obs, DG_EV_TLS_HANDSHAKE,
               (SSL_version(c->ssl) == TLS1_3_VERSION ? DG_TLS_13 : 0) |
                   (SSL_session_reused(c->ssl) == 1 ? DG_TLS_RESUMED : 0),
               1);
    if (tls_alpn_get(c->ssl) == TLS_ALPN_ACME) {
        /* tls-alpn-01: the CA only looks at the certificate (RFC 8737 §3), so nothing is read
         * from this connection: close_notify, FIN, and the lingering close. tls.c never
         * selects acme-tls/1 on the DoT listener; checked first all the same. */
        c->state = CS_ACME;
        linger_start(c);
        return 0;
    }
    if (c->kind == DG_LISTENER_DOT)
        return start_dns(c);
    if (tls_alpn_get(c->ssl) == TLS_ALPN_H2)
        return start_h2(c);
    /* ALPN http/1.1, or no ALPN at all (scripts, old clients): HTTP/1.1. */
    return start_h1(c);
}

/* The clear-text listener (plain-listen): no TLS, so no ALPN; the first bytes decide
 * (cleartext_take()). Called where a session would start, after anything that comes before
 * the HTTP bytes. */
static void start_cleartext(struct conn *c)
{
    c->state = CS_PREFACE;
    c->preface_len = 0;
}

/* The first timer of a plain listener's session (conn_start()). The clear-text listener's
 * first bytes must choose a protocol within request-timeout, armed once: reads do not move it
 * (on_timer closes a connection still in CS_PREFACE), so a client trickling the preface cannot
 * hold the connection for idle-timeout per byte. The others: idle-timeout. */
static uint64_t session_timeout_ms(const struct conn *c)
{
    const struct config *cfg = c->set->cfg;
    return (uint64_t)(c->kind == DG_LISTENER_CLEARTEXT ? cfg->request_timeout_s
                                                       : cfg->idle_timeout_s) *
           1000u;
}

static int feed(struct conn *c, const uint8_t *p, size_t len);

/*
 * CS_PREFACE: bytes that still match the HTTP/2 connection preface are held (up to its 24
 * bytes); the whole preface starts an HTTP/2 session with the settings of ALPN h2 (prior
 * knowledge, RFC 9113 §3.3), the first byte that differs an HTTP/1.1 session. The chosen
 * session then gets the held bytes and the rest, as if it had read them itself. The HTTP/1.1
 * "Upgrade: h2c" dance is not offered (an HTTP/1.1 client that asks gets HTTP/1.1; RFC 9113
 * deprecated it, and proxies speak h2c with prior knowledge).
 * @return as feed().
 */
static int cleartext_take(struct conn *c, const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len && c->preface_len < H2_PREFACE_LEN &&
           p[i] == (uint8_t)H2_PREFACE[c->preface_len])
        c->preface[c->preface_len++] = p[i++];
    if (i == len && c->preface_len < H2_PREFACE_LEN)
        return 0; /* all of it matches so far: wait for more */
    bool h2 = c->preface_len == H2_PREFACE_LEN;
    if ((h2 ? start_h2(c) : start_h1(c)) != 0)
        return -1;
    int rc = feed(c, c->preface, c->preface_len);
    if (rc == 0 && i < len)
        rc = feed(c, p + i, len - i);
    return rc;
}

/* Hand received bytes to the protocol session. @return 0, 1 (stop reading: a goodbye is
 * queued) or -1 (close now). */
static int feed(struct conn *c, const uint8_t *p, size_t len)
{
    if (c->state == CS_PREFACE)
        return cleartext_take(c, p, len);
    if (c->h2) {
        if (h2_session_recv(c->h2, p, len) != 0) {
            /* nghttp2 queued a GOAWAY; send it, then close. */
            goodbye(c);
            return 1;
        }
    } else if (c->ds) {
        if (dnsstream_session_recv(c->ds, p, len) != 0)
            return -1;
        if (c->set->shutting_down) /* a session started during a stop: these and no more */
            dnsstream_session_shutdown(c->ds);
        /* a client trickling a message's bytes is not idle, nor welcome */
        arm_request_timer(c, dnsstream_session_partial_since(c->ds));
    } else {
        if (h1_session_recv(c->h1, p, len) != 0)
            return -1;
        arm_request_timer(c, h1_session_request_started(c->h1));
    }
    return 0;
}

/* Read what is available and hand it to the protocol. @return -1 to close now. */
static int conn_read(struct conn *c)
{
    uint8_t buf[READ_CHUNK];
    for (int i = 0; i < READS_PER_EV && !c->read_paused; i++) {
        int n = io_read(c, buf, sizeof(buf));
        if (n > 0) {
            c->last_active = dg_now_ms();
            trim_soon(c);
            int rc = feed(c, buf, (size_t)n);
            if (rc != 0)
                return rc < 0 ? -1 : 0;
            if (c->out.len > OUT_HIGH_WATER || !session_wants_read(c))
                set_read_paused(c, true);
            continue;
        }
        if (n == IO_WANT_READ)
            return 0;
        if (n == IO_WANT_WRITE) {
            set_write_interest(c, true);
            return 0;
        }
        if (n == IO_EOF && c->ds) {
            /* A DNS client may send its queries and then close its side (RFC 7766 §6.2.4
             * leaves closing to either end): answer what it sent, then close. */
            dnsstream_session_shutdown(c->ds);
            set_read_paused(c, true);
            return 0;
        }
        return -1; /* EOF, close_notify, reset */
    }
    /* Read limit reached. Bytes left in the socket wake us on the next poll; bytes that OpenSSL
     * already read ahead do not, so come back in this turn's flush pass for those, but only
     * when the socket is empty: otherwise a client that keeps sending would hold the loop in
     * flush passes that never return to epoll. */
    int queued = 0;
    if (!c->read_paused && io_pending(c) && (ioctl(c->fd, FIONREAD, &queued) != 0 || queued == 0))
        on_wake(c);
    return 0;
}

/* ---- PROXY protocol: before TLS or the session ------------------------------------------- */

static void pp_count(struct conn *c, enum dg_pp_result res, const char *why)
{
    dg_observe(c->set->obs, DG_EV_PROXY_PROTOCOL, res, 1);
    if (why)
        log_debug("PROXY protocol from %s: %s; closing", c->client.text, why);
}

static enum dg_pp_result pp_error_result(enum pp_error err)
{
    return err == PP_ERR_SIGNATURE   ? DG_PP_MISSING
           : err == PP_ERR_TOO_LARGE ? DG_PP_OVERSIZED
                                     : DG_PP_INVALID;
}

/* A whole header: its source becomes the client, on which the checks skipped at accept run now.
 * @return 0, or -1 to close (refused). */
static int pp_done(struct conn *c, const struct pp_result *r)
{
    struct conn_set *set = c->set;
    pp_count(c, r->has_addr ? (r->version == 1 ? DG_PP_V1 : DG_PP_V2) : DG_PP_LOCAL, NULL);
    free(c->pp);
    c->pp = NULL;
    if (r->has_addr) {
        /* nothing points into the old value but the budget scope, which holds nothing yet */
        client_id_from_sockaddr(&c->client, (const struct sockaddr *)&r->src);
        budget_scope_init(&c->budget, set->clients, &c->client, set->obs);
    }
    /* Every header, LOCAL too, is judged on the client it leaves: a v2 LOCAL (a health check,
     * but HAProxy also sends LOCAL for client traffic from a unix socket frontend) and a v1
     * UNKNOWN keep the balancer's own address, which must then pass the ACL and limits like
     * anyone's (the spec: use the real connection endpoints). */
    if (set->admit) {
        bool tracked = false;
        int why = set->admit(set, &c->client, &tracked);
        if (why != DG_NREFUSE) {
            dg_observe(set->obs, DG_EV_CONN_REFUSED, (unsigned)why, 1);
            return -1;
        }
        c->client_tracked = tracked;
    }
    return 0;
}

/*
 * CS_PROXY: read the header without taking a byte past its end (TLS reads the socket itself):
 * peek, parse what we have, then take off the socket exactly the bytes the parser says are the
 * header's. An incomplete header is taken whole (every byte of it is the header's), so the
 * level-triggered read event does not fire again for bytes we leave there.
 * @return 1 when the header is whole, 0 to wait for more, -1 to close.
 */
static int pp_read(struct conn *c)
{
    struct pp_in *p = c->pp;
    for (;;) {
        if (p->len >= sizeof(p->buf)) { /* cannot happen: the parser decides by PP_MAX */
            pp_count(c, DG_PP_OVERSIZED, "header too large");
            return -1;
        }
        ssize_t n = recv(c->fd, p->buf + p->len, sizeof(p->buf) - p->len, MSG_PEEK);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        if (n <= 0) { /* closed or reset before the header was whole */
            pp_count(c, p->len ? DG_PP_INVALID : DG_PP_MISSING,
                     p->len ? "connection closed within the header" : "closed before a header");
            return -1;
        }
        struct pp_result r;
        enum pp_status st = pp_parse(p->buf, p->len + (size_t)n, &r);
        if (st == PP_ERROR) {
            pp_count(c, pp_error_result(r.err), pp_error_str(r.err));
            return -1;
        }
        size_t take = st == PP_DONE ? r.len - p->len : (size_t)n;
        ssize_t got = recv(c->fd, p->buf + p->len, take, 0);
        if (got != (ssize_t)take) { /* the bytes just peeked are there: a socket error */
            pp_count(c, DG_PP_INVALID, "read failed");
            return -1;
        }
        p->len += take;
        if (st == PP_DONE)
            return pp_done(c, &r) == 0 ? 1 : -1;
    }
}

/* CS_PROXY_CHECK: one look at a peer's first bytes, taking none. @return 1 to go on, 0 to wait
 * for them, -1 to close. */
static int pp_check(struct conn *c)
{
    uint8_t b[16];
    ssize_t n = recv(c->fd, b, sizeof(b), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    if (pp_has_signature(b, (size_t)n)) {
        pp_count(c, DG_PP_UNTRUSTED, "a header from a peer not in proxy-protocol-from");
        return -1;
    }
    return 1;
}

/* The protocol proper: the TLS handshake (its timer, armed at accept, still runs), or the
 * session of a plain listener. */
static int conn_start(struct conn *c)
{
    if (c->ssl) {
        c->state = CS_HANDSHAKE;
        SSL_set_accept_state(c->ssl);
        return 0;
    }
    if (c->kind == DG_LISTENER_CLEARTEXT)
        start_cleartext(c);
    else if ((c->kind == DG_LISTENER_DNS_TCP ? start_dns(c) : start_h1(c)) != 0)
        return -1;
    rearm(c, session_timeout_ms(c));
    return 0;
}

static void conn_io(struct conn *c)
{
    if (c->lingering) {
        if (linger_drain(c) != 0)
            conn_free(c);
        return;
    }
    if (c->state == CS_PROXY || c->state == CS_PROXY_CHECK) {
        int rc = c->state == CS_PROXY ? pp_read(c) : pp_check(c);
        if (rc <= 0) {
            if (rc < 0)
                conn_free(c);
            return;
        }
        /* What follows the header may be here already: on to the protocol at once. */
        if (conn_start(c) != 0) {
            conn_free(c);
            return;
        }
    }
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
        if (c->lingering) /* tls-alpn-01 answered: no session */
            return;
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
    if (c->state == CS_HANDSHAKE || c->state == CS_PROXY || c->state == CS_PROXY_CHECK ||
        c->lingering)
        return;
    if (io_pending(c) && !c->read_paused) {
        conn_io(c);
        return;
    }
    if (conn_flush(c) != 0)
        conn_free(c);
}

/* A connection quiet this long gives its idle memory back (on_timer(), conn_trim()). */
#define TRIM_MS 2000

/* Whether the connection has a protocol session, whose idle memory conn_trim() gives back (not
 * during the handshake, the PROXY header or the preface). */
static bool trimmable(const struct conn *c)
{
    return c->h2 || c->h1 || c->ds;
}

/*
 * Quiet for TRIM_MS with nothing left to write: give back what only a busy connection needs.
 * The output buffer keeps the capacity of its largest burst otherwise (a page of the website,
 * a burst of answers: up to OUT_GATHER and a frame) for the life of the connection; the
 * sessions give back theirs (h2: the frame buffer's pages and the empty stream map's; DNS:
 * the emptied input and answer buffers; HTTP/1.1: the header array). The next write
 * allocates 256 bytes again. Logged at debug level (t_idle_memory reads the line).
 */
static void conn_trim(struct conn *c)
{
    size_t out = dg_buf_release_if_empty(&c->out), session = 0;
    if (c->h2)
        session += h2_session_trim(c->h2);
    if (c->ds)
        session += dnsstream_session_trim(c->ds);
    if (c->h1)
        session += h1_session_trim(c->h1);
    log_debug("idle connection gave back %zu bytes: output buffer %zu, session %zu", out + session,
              out, session);
}

static void rearm(struct conn *c, uint64_t left_ms)
{
    /* Never later than send-timeout (the handshake timer is armed with arm_timer()):
     * on_timer() then looks at work that started after this arming (a new stream, output that
     * waits) in time; nor later than the trim of a session not yet trimmed since it was last
     * active (on_timer() measures the quiet spell itself), unless the connection is ending
     * (its goodbye or linger deadline is the timer). */
    uint64_t cap = (uint64_t)c->set->cfg->send_timeout_s * 1000u;
    if (trimmable(c) && c->trimmed_at != c->last_active && cap > TRIM_MS && !c->close_after_flush &&
        !c->lingering)
        cap = TRIM_MS;
    if (left_ms > cap)
        left_ms = cap;
    struct timeval tv = {.tv_sec = (time_t)(left_ms / 1000),
                         .tv_usec = (suseconds_t)(left_ms % 1000) * 1000};
    c->timer_due = dg_now_ms() + left_ms;
    event_add(c->timer, &tv);
}

/* A read: the connection is in use again, and gives its idle memory back once it has been quiet
 * for TRIM_MS (on_timer()). The timer is brought forward only when it is due
 * later than that, so a busy connection costs one comparison per read and one timer wakeup
 * per TRIM_MS at most; on_timer() runs every rule whenever it fires, so firing early is safe. */
static void trim_soon(struct conn *c)
{
    /* A connection that is ending owns its timer for that (goodbye(), the linger): on_timer()
     * closes such a one whenever the timer fires, so it must not fire early. */
    if (c->close_after_flush || c->lingering)
        return;
    if (trimmable(c) && c->timer_due > c->last_active + TRIM_MS)
        rearm(c, TRIM_MS);
}

/*
 * One timer per connection covers: the handshake timeout; HTTP/1.1's request timeout (a request
 * must arrive whole within request-timeout: slowloris); the idle timeout (no request in progress);
 * and send-timeout (issue 14), which only progress resets, never a PING or a bare read:
 * - output waiting in our buffer that the socket took none of for send-timeout: closed (a
 *   client that does not read; HTTP/1.1 and HTTP/2 alike);
 * - HTTP/2: h2_session_sweep() closes a connection whose response DATA waits (flow control) and
 *   none left for send-timeout, and resets the streams that hold something and made no
 *   progress. The sweep runs from this timer: no timer per stream, no syscall per request (the
 *   streams store the clock value of the current recv/send call); it costs one wakeup per
 *   connection at most every send-timeout, and a walk over its streams (at most
 *   max-concurrent-streams) when it fires.
 * - HTTP/1.1 with a request in the handler's hands: closed when no byte moved either way for
 *   max(idle-timeout, backend-timeout + 5 s), the backstop behind the handlers' own timers.
 * - DNS over TCP / TLS: a message must arrive whole within request-timeout (closed, no answer);
 *   queries in flight make the connection busy, not idle, up to the same backstop (which covers
 *   query-timeout); idle-timeout otherwise (RFC 7766 §6.2.3 wants idle ones closed). The
 *   client learns that timeout from EDNS keepalive (dnsstream.h).
 */
#define SWEEP_SLACK_MS 100

static uint64_t pending_backstop_ms(const struct config *cfg)
{
    uint64_t idle_ms = (uint64_t)cfg->idle_timeout_s * 1000u;
    uint64_t stall_ms = (uint64_t)cfg->backend_timeout_s * 1000u + 5000u;
    uint64_t query_ms = (uint64_t)cfg->query_timeout_ms + 5000u;
    uint64_t ms = stall_ms > idle_ms ? stall_ms : idle_ms;
    return query_ms > ms ? query_ms : ms;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    const struct config *cfg = c->set->cfg;
    if (c->lingering) {
        conn_free(c); /* the client did not close within LINGER_MS */
        return;
    }
    if (c->state == CS_PROXY) {
        pp_count(c, DG_PP_TIMEOUT, "no whole header within handshake-timeout");
        conn_free(c);
        return;
    }
    if (c->state == CS_PROXY_CHECK || c->state == CS_HANDSHAKE || c->state == CS_PREFACE) {
        log_debug(c->state == CS_PREFACE ? "clear-text connection chose no protocol in time"
                  : c->ssl               ? "TLS handshake timed out"
                                         : "no request within idle-timeout");
        conn_free(c);
        return;
    }
    uint64_t now = dg_now_ms();
    if (c->close_after_flush) {
        /* The goodbye did not leave in time: the client does not read. */
        conn_free(c);
        return;
    }
    /* The first GOAWAY's PING got no ACK in time: the final GOAWAY now (h2_drain_start()). */
    uint64_t goaway_due = c->h2 ? h2_session_goaway_due(c->h2) : 0;
    if (goaway_due && now >= goaway_due) {
        h2_session_goaway(c->h2);
        goaway_due = 0;
        on_wake(c);
    }
    uint64_t send_ms = (uint64_t)cfg->send_timeout_s * 1000u;
    if (c->out.len && c->out_since && now - c->out_since >= send_ms && sendq_drained(c))
        c->out_since = now; /* a slow reader, not a stalled one: count from here */
    if (c->out.len && c->out_since && now - c->out_since >= send_ms) {
        log_debug("closing a connection that took none of its output for %llu ms (send queue %d)",
                  (unsigned long long)(now - c->out_since), c->sendq);
        dg_observe(c->set->obs, DG_EV_STALLED, DG_STALL_CONNECTION, 1);
        conn_free(c);
        return;
    }
    /* the earliest moment something could have to be done; capped at send-timeout so that
     * work that starts after this arming (a new stream, output) is looked at in time */
    uint64_t left = send_ms;
    if (c->out.len && c->out_since)
        left = c->out_since + send_ms - now;
    if (goaway_due && goaway_due - now < left)
        left = goaway_due - now;
    if (c->h2 && h2_session_streams(c->h2) > 0) {
        struct h2_sweep sw = {
            .now = now, .send_ms = send_ms, .pending_ms = pending_backstop_ms(cfg)};
        /* While our output waits on a full socket, nghttp2 is not asked for frames, so no
         * stream can make progress: the socket is the bottleneck, and the rule above (the
         * kernel's send queue) judges the whole connection. A slow reader is not a stall. */
        if (!(c->out.len && c->out_since))
            h2_session_sweep(c->h2, &sw);
        if (sw.stalled) {
            log_debug("closing an HTTP/2 connection whose response data waited %llu ms",
                      (unsigned long long)send_ms);
            dg_observe(c->set->obs, DG_EV_STALLED, DG_STALL_CONNECTION, 1);
            conn_free(c);
            return;
        }
        if (sw.reset) {
            log_debug("reset %u HTTP/2 streams that made no progress", sw.reset);
            for (unsigned i = 0; i < sw.reset; i++) /* the metric counts events, not values */
                dg_observe(c->set->obs, DG_EV_STALLED, DG_STALL_STREAM, 1);
        }
        /* Streams opened within a few ms of each other stall within a few ms too: a little
         * slack lets one sweep reset them together instead of one wakeup each. */
        if (sw.next && sw.next + SWEEP_SLACK_MS - now < left)
            left = sw.next + SWEEP_SLACK_MS - now;
        if (h2_session_streams(c->h2) > 0) {
            rearm(c, left);
            return;
        }
    }
    uint64_t req_ms = (uint64_t)cfg->request_timeout_s * 1000u;
    uint64_t started = c->h1   ? h1_session_request_started(c->h1)
                       : c->ds ? dnsstream_session_partial_since(c->ds)
                               : 0;
    if (started && now - started >= req_ms) {
        if (c->ds) { /* DNS has no way to say "too slow": close */
            log_debug("closing a DNS connection whose message did not arrive whole in %llu ms",
                      (unsigned long long)req_ms);
            conn_free(c);
            return;
        }
        h1_session_timeout(c->h1); /* 408, then close */
        goodbye(c);
        if (conn_flush(c) != 0)
            conn_free(c);
        return;
    }
    /* DNS: queries in flight are the server's to answer, not idleness (the backstop covers an
     * answer that never comes). */
    bool busy = (c->h1 && h1_session_busy(c->h1)) || (c->ds && dnsstream_session_inflight(c->ds));
    uint64_t idle_ms = (uint64_t)cfg->idle_timeout_s * 1000u;
    uint64_t limit = busy ? pending_backstop_ms(cfg) : idle_ms;
    uint64_t quiet = now - c->last_active;
    /* A connection quiet for TRIM_MS gives its idle memory back (conn_trim()), once per quiet
     * spell: most connections of a DoH or DoT server are idle most of the time (browsers and
     * phones keep theirs for minutes), and a burst of queries a second apart pays nothing. */
    if (trimmable(c) && !c->out.len && c->trimmed_at != c->last_active) {
        if (quiet >= TRIM_MS) {
            conn_trim(c);
            c->trimmed_at = c->last_active;
        } else if (TRIM_MS - quiet < left) {
            left = TRIM_MS - quiet;
        }
    }
    if (quiet < limit) {
        if (limit - quiet < left)
            left = limit - quiet;
        if (started && req_ms - (now - started) < left)
            left = req_ms - (now - started);
        rearm(c, left);
        return;
    }
    if (busy)
        log_debug("closing a connection on which nothing moved for %llu ms",
                  (unsigned long long)quiet);
    /* Idle: say goodbye with GOAWAY rather than a bare close, so pooling clients know. In two
     * steps like a shutdown: a client may be sending a request right now, after its quiet
     * spell, and the first GOAWAY lets that one be served instead of refused (it would have to
     * retry it on a new connection, a handshake more); the cost is one round trip, at most
     * H2_GOAWAY_ACK_MS, of a connection that is ending anyway. */
    if (c->h2) {
        if (goaway_due) { /* the first step is under way: the final GOAWAY comes at its time */
            rearm(c, goaway_due - now);
            return;
        }
        if (!h2_drain_start(c)) {
            h2_session_goaway(c->h2); /* one step after all (or the final one is out already) */
            goodbye(c);               /* if the client does not read, give up soon */
        }
        if (conn_flush(c) != 0)
            conn_free(c);
        return;
    }
    conn_free(c);
}

int conn_accept(struct conn_set *set, int fd, enum dg_listener kind, const struct client_id *client)
{
    bool tls = kind == DG_LISTENER_TLS || kind == DG_LISTENER_DOT;
    /* The metrics listener skips the client checks and the PROXY protocol. */
    bool checked = kind != DG_LISTENER_METRICS && client;
    bool proxied = checked && acl_active(set->pp_from) && acl_allows_client(set->pp_from, client);
    bool tracked = false;
    /* Refusals close at once, before any allocation or TLS work: the cheapest answer to a
     * flood. A load balancer's connection is judged once its PROXY header named the client
     * (pp_done()), by the same callback. */
    if (checked && !proxied && set->admit) {
        int why = set->admit(set, client, &tracked);
        if (why != DG_NREFUSE) {
            dg_observe(set->obs, DG_EV_CONN_REFUSED, (unsigned)why, 1);
            close(fd);
            return -EACCES;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        if (tracked)
            clients_conn_close(set->clients, &client->key);
        close(fd);
        return -ENOMEM;
    }
    c->set = set;
    c->fd = fd;
    c->kind = kind;
    if (client)
        c->client = *client; /* else: calloc made it the unknown client */
    c->client_tracked = tracked;
    budget_scope_init(&c->budget, set->clients, &c->client, set->obs);
    c->last_active = dg_now_ms();
    if (tls)
        c->ssl = tls_store_ssl_new(set->tls);
    c->rev = event_new(set->base, fd, EV_READ | EV_PERSIST, on_readable, c);
    c->wev = event_new(set->base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
    c->timer = evtimer_new(set->base, on_timer, c);
    c->flush_ev = event_new(set->base, -1, 0, on_flush_ev, c);
    /* Link first so that conn_free() can undo everything from here on. */
    dg_list_push_front(&set->conns, &c->node);
    set->count++;
    dg_observe(set->obs, DG_EV_CONN_ACCEPTED, kind, 1);
    if ((tls && (!c->ssl || SSL_set_fd(c->ssl, fd) != 1 ||
                 (kind == DG_LISTENER_DOT && tls_ssl_set_dot(c->ssl) != 0))) ||
        !c->rev || !c->wev || !c->timer || !c->flush_ev ||
        event_priority_set(c->flush_ev, CONN_FLUSH_PRIORITY) != 0 || event_add(c->rev, NULL) != 0) {
        conn_free(c);
        return -ENOMEM;
    }
    /* A load balancer's header first; from anyone else, with proxy-protocol-from set, a peek
     * that nobody sends one (the timer is the protocol's own meanwhile). */
    if (proxied) {
        c->state = CS_PROXY;
        if (!(c->pp = malloc(sizeof(*c->pp)))) {
            conn_free(c);
            return -ENOMEM;
        }
        c->pp->len = 0;
    } else if (checked && acl_active(set->pp_from)) {
        c->state = CS_PROXY_CHECK;
    }
    if (tls || c->state == CS_PROXY)
        arm_timer(c, set->cfg->handshake_timeout_s);
    else if (c->state == CS_PROXY_CHECK) /* the timer conn_start() will arm again */
        rearm(c, session_timeout_ms(c));
    if (c->state == CS_HANDSHAKE && conn_start(c) != 0) {
        conn_free(c);
        return -ENOMEM;
    }
    return 0;
}

/* Bytes waiting for the session: in the socket, or decrypted inside OpenSSL. */
static bool conn_has_input(const struct conn *c)
{
    int queued = 0;
    return io_pending(c) || (ioctl(c->fd, FIONREAD, &queued) == 0 && queued > 0);
}

/* Before its session: nothing taken from the socket and nothing waiting in it. */
static bool conn_received_nothing(const struct conn *c)
{
    if ((c->state == CS_PROXY && c->pp && c->pp->len) || (c->state == CS_PREFACE && c->preface_len))
        return false;
    return !conn_has_input(c);
}

void conn_set_shutdown(struct conn_set *set)
{
    set->shutting_down = true;
    for (struct dg_lnode *n = set->conns.head; n; n = n->next) {
        struct conn *c = dg_list_entry(n, struct conn, node);
        if (c->h2) {
            h2_drain_start(c);
        } else if (c->h1) {
            /* bytes waiting: a request on its way (one accepted from the backlog at the stop) */
            if (conn_has_input(c))
                h1_session_serve_one(c->h1);
            else
                h1_session_shutdown(c->h1);
            on_wake(c);
        } else if (c->ds) {
            if (!conn_has_input(c)) /* else feed() shuts it down once it read them */
                dnsstream_session_shutdown(c->ds);
            on_wake(c);
        } else if ((c->state == CS_PROXY || c->state == CS_PROXY_CHECK || c->state == CS_PREFACE) &&
                   conn_received_nothing(c)) {
            /* no session yet and nothing sent, so no request to finish: close from its own
             * timer callback (never from here: the caller walks the set) rather than wait out
             * its timeout. One that sent something goes on: its session starts in the stop's
             * mode. */
            event_active(c->timer, EV_TIMEOUT, 0);
        }
    }
}

void conn_set_close_all(struct conn_set *set)
{
    while (set->conns.head)
        conn_free(dg_list_entry(set->conns.head, struct conn, node));
}
