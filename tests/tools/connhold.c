/*
 * connhold: many TLS 1.3 + HTTP/2 DoH connections from one small process, for tests/bench/hold.sh.
 *
 *   connhold hold --port P [-n N] [options]
 *       open N connections (K in flight at once), each: TCP connect, TLS handshake (ALPN h2, SNI),
 *       client preface + SETTINGS, one GET /dns-query?dns=<query for --name>, read until stream 1
 *       ends with :status 200; then keep the connection idle, acknowledging the server's SETTINGS
 *       and PING frames. Once every connection is up or has failed, prints on stdout
 *           up U setup_s S failed F
 *       then holds until --hold seconds have passed (0: until SIGTERM/SIGINT) and prints
 *           closed_by_server C
 *       (C: held connections the server closed or sent GOAWAY on while idle). Failures and their
 *       reasons, and progress, go to stderr. --burst K: K GETs at once (streams 1, 3, ...,
 *       2K-1, in the first write) instead of one, the connection counted up once all K ended:
 *       what a browser's page load leaves behind on a connection that then goes idle.
 *   connhold handshake --port P [-n M] [--resume] [options]
 *       M connections, K at a time (default 1): handshake + one GET + close. With --resume the
 *       first connection's TLS 1.3 session ticket (it arrives after the handshake, read with the
 *       response) is offered on every later connection; R counts those the server resumed
 *       (SSL_session_reused), and the run fails when R < 95% of M-1. --resume-delay S waits S
 *       seconds after the ticket came before the later connections (a test lets it expire). Prints
 *           handshakes M resumed R wall_s S failed F
 *
 * Options: --host A (127.0.0.1), --port P, -n N, --concurrency K (hold 256, handshake 1),
 * --rate R (new connections per second over all sources, 0 = no pacing), --src A --src-count C
 * (source addresses A, A+1, ... A+C-1, used round robin: bind() with IP_BIND_ADDRESS_NO_PORT so
 * the kernel picks a port per 4-tuple; a server's per-address limits then see C clients), --sni S
 * (localhost), --name NAME (www.lab.test), --path P (/dns-query), --ca FILE (verify against it;
 * default: no verification, the cheaper client), --hold SECONDS, --timeout SECONDS (30: handshake
 * and first answer of one connection).
 *
 * Memory: the point of the tool is that the client is not what limits the count. Per connection
 * it keeps an SSL object with SSL_MODE_RELEASE_BUFFERS (OpenSSL drops its record buffers while
 * nothing is pending), a 32-byte frame-parser state, and an output buffer only while a write is
 * blocked; no nghttp2 session. Reads go through one shared 16 KiB buffer. HTTP/2 is done by hand:
 * the request is one pre-encoded HEADERS frame (HPACK literals, as the lab's idleconns.py), and
 * only the frame types an idle client must answer are parsed.
 *
 * Exit status: 0 when every connection came up (hold) or every handshake succeeded and enough were
 * resumed (handshake); 1 otherwise; 2 on a usage or set-up error (e.g. RLIMIT_NOFILE too low).
 * One thread, epoll, level-triggered.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/util.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

enum cstate { C_FREE, C_CONNECTING, C_HANDSHAKE, C_REQUEST, C_IDLE, C_DONE };

/* One connection. Kept small on purpose: 100,000 of them. */
struct conn {
    SSL *ssl;
    uint8_t *out; /* pending output (malloc'd only while a write is blocked) */
    uint32_t out_len;
    uint32_t started_s; /* seconds since start, for --timeout */
    int fd;
    uint8_t state;
    uint8_t want_out; /* EPOLLOUT registered */
    uint8_t got_status;
    uint8_t status_ok;
    /* frame parser: the 9-byte header, then `skip` payload bytes of which the first `keep`
     * are collected into `pl` (PING's 8 bytes, or the start of stream 1's HEADERS block) */
    uint8_t hdr[9];
    uint8_t hdr_have;
    uint8_t pl[16];
    uint8_t pl_have;
    uint8_t pl_want;
    uint8_t ends; /* streams ended (--burst) */
    uint32_t skip;
};

struct opts {
    int handshake_mode;
    const char *host;
    int port;
    long n;
    long concurrency;
    double rate;
    const char *src;
    long src_count;
    const char *sni;
    const char *name;
    const char *path;
    const char *ca;
    double hold;
    double timeout;
    int resume;
    double resume_delay;
    long burst;
};

static struct opts O = {.host = "127.0.0.1",
                        .n = 0,
                        .concurrency = 0,
                        .src_count = 1,
                        .sni = "localhost",
                        .name = "www.lab.test",
                        .path = "/dns-query",
                        .timeout = 30};

static struct conn *conns;
static int ep = -1;
static SSL_CTX *ctx;
static uint8_t *request; /* preface + SETTINGS + HEADERS(stream 1, 3, ...: --burst) */
static size_t request_len;
static uint8_t rbuf[16384]; /* shared by every SSL_read */
static struct sockaddr_in dst;
static uint32_t src_base; /* host order; 0 = no bind */
static uint64_t t0_ms;
static volatile sig_atomic_t stop_flag;

/* counters */
static long launched, inflight, up, failed, done_conns, closed_by_server, resumed;
static SSL_SESSION *ticket; /* --resume: the first connection's session */
static double ticket_at;    /* when it came (seconds since start) */

/* failure reasons: a few fixed strings, counted */
#define MAX_REASONS 32
static struct {
    char what[80];
    long count;
} reasons[MAX_REASONS];

static void count_reason(const char *what)
{
    for (int i = 0; i < MAX_REASONS; i++) {
        if (reasons[i].count == 0) {
            snprintf(reasons[i].what, sizeof reasons[i].what, "%s", what);
            reasons[i].count = 1;
            return;
        }
        if (strcmp(reasons[i].what, what) == 0) {
            reasons[i].count++;
            return;
        }
    }
}

static double now_s(void)
{
    return (double)(dg_now_ms() - t0_ms) / 1000.0;
}

static void usage(void)
{
    fprintf(stderr, "usage: connhold hold|handshake --port P [-n N] [--host A] [--concurrency K] "
                    "[--rate R] [--src A --src-count C] [--sni S] [--name NAME] [--path P] "
                    "[--ca FILE] [--hold S] [--timeout S] [--resume [--resume-delay S]] "
                    "[--burst K]\n"
                    "(see the comment at the top of tests/tools/connhold.c)\n");
    exit(2);
}

/* ---- HTTP/2 by hand ---- */

static size_t put_frame_hdr(uint8_t *p, uint32_t len, uint8_t type, uint8_t flags, uint32_t sid)
{
    p[0] = (uint8_t)(len >> 16);
    p[1] = (uint8_t)(len >> 8);
    p[2] = (uint8_t)len;
    p[3] = type;
    p[4] = flags;
    p[5] = (uint8_t)(sid >> 24);
    p[6] = (uint8_t)(sid >> 16);
    p[7] = (uint8_t)(sid >> 8);
    p[8] = (uint8_t)sid;
    return 9;
}

/* HPACK integer with an N-bit prefix (RFC 7541 5.1); first byte's high bits in `hi` */
static size_t hpack_int(uint8_t *p, uint8_t hi, int nbits, size_t v)
{
    size_t max = ((size_t)1 << nbits) - 1, n = 0;
    if (v < max) {
        p[n++] = (uint8_t)(hi | v);
        return n;
    }
    p[n++] = (uint8_t)(hi | max);
    v -= max;
    while (v >= 128) {
        p[n++] = (uint8_t)(0x80 | (v & 0x7f));
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* literal header field without indexing, indexed name (4-bit prefix), raw string value */
static size_t hpack_lit(uint8_t *p, size_t name_idx, const char *val)
{
    size_t n = hpack_int(p, 0x00, 4, name_idx), len = strlen(val);
    n += hpack_int(p + n, 0x00, 7, len);
    memcpy(p + n, val, len);
    return n + len;
}

static void build_request(void)
{
    uint8_t q[300], block[1024];
    size_t ql = 12, bl = 0;
    char path[512], auth[300];
    memset(q, 0, 12);
    q[2] = 0x01; /* RD */
    q[5] = 1;    /* QDCOUNT */
    const char *s = O.name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        if (len == 0 || len > 63 || ql + len + 6 > sizeof q) {
            fprintf(stderr, "connhold: bad --name %s\n", O.name);
            exit(2);
        }
        q[ql++] = (uint8_t)len;
        memcpy(q + ql, s, len);
        ql += len;
        s += len + (dot ? 1 : 0);
    }
    q[ql++] = 0;
    q[ql++] = 0, q[ql++] = 1; /* A */
    q[ql++] = 0, q[ql++] = 1; /* IN */
    char b64[420];
    b64[dg_b64url_encode(q, ql, b64)] = '\0';
    snprintf(path, sizeof path, "%.80s?dns=%.420s", O.path, b64);
    snprintf(auth, sizeof auth, "%.250s:%d", O.sni, O.port);
    block[bl++] = 0x82;                                         /* :method GET */
    block[bl++] = 0x87;                                         /* :scheme https */
    bl += hpack_lit(block + bl, 4, path);                       /* :path */
    bl += hpack_lit(block + bl, 1, auth);                       /* :authority */
    bl += hpack_lit(block + bl, 19, "application/dns-message"); /* accept */
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    size_t n = 0, k = O.burst > 0 ? (size_t)O.burst : 1;
    request = malloc(24 + 9 + k * (9 + bl));
    if (!request) {
        fprintf(stderr, "connhold: out of memory\n");
        exit(2);
    }
    memcpy(request, preface, 24);
    n = 24;
    n += put_frame_hdr(request + n, 0, 4, 0, 0); /* SETTINGS, empty */
    for (size_t i = 0; i < k; i++) {
        /* HEADERS, END_STREAM|END_HEADERS, on streams 1, 3, ... */
        n += put_frame_hdr(request + n, (uint32_t)bl, 1, 0x5, (uint32_t)(2 * i + 1));
        memcpy(request + n, block, bl);
        n += bl;
    }
    request_len = n;
}

/* ---- connection life ---- */

static void set_events(struct conn *c, int want_out)
{
    if (c->want_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.u32 = (uint32_t)(c - conns)};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
        c->want_out = (uint8_t)want_out;
}

/* Ends a connection; `why` NULL for a planned close. Counts it by the state it was in. */
static void finish(struct conn *c, const char *why)
{
    if (c->state == C_FREE || c->state == C_DONE)
        return;
    if (c->state == C_IDLE) {
        if (why) {
            closed_by_server++;
            count_reason(why);
        }
        up--;
    } else {
        inflight--;
        if (why) {
            failed++;
            count_reason(why);
        }
    }
    done_conns++;
    if (c->ssl) {
        if (!why)
            SSL_shutdown(c->ssl); /* close_notify, not waited for */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    free(c->out);
    c->out = NULL;
    c->out_len = 0;
    c->state = C_DONE;
}

static void ssl_fail(struct conn *c, const char *what, int ret)
{
    char buf[80];
    int err = SSL_get_error(c->ssl, ret);
    unsigned long e = ERR_peek_error();
    if (err == SSL_ERROR_SYSCALL && e == 0)
        snprintf(buf, sizeof buf, "%s: %s", what, errno ? strerror(errno) : "EOF");
    else if (err == SSL_ERROR_ZERO_RETURN)
        snprintf(buf, sizeof buf, "%s: close_notify", what);
    else {
        char es[64];
        ERR_error_string_n(e, es, sizeof es);
        snprintf(buf, sizeof buf, "%s: %s", what, es);
    }
    ERR_clear_error();
    finish(c, buf);
}

/* Writes (or queues) bytes; SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets the queue grow between
 * retries. Returns -1 when the connection was ended. */
static int send_bytes(struct conn *c, const uint8_t *p, size_t n)
{
    if (n) {
        uint8_t *o = realloc(c->out, c->out_len + n);
        if (!o) {
            finish(c, "out of memory");
            return -1;
        }
        memcpy(o + c->out_len, p, n);
        c->out = o;
        c->out_len += (uint32_t)n;
    }
    if (!c->out_len)
        return 0;
    ERR_clear_error();
    int r = SSL_write(c->ssl, c->out, (int)c->out_len);
    if (r > 0) {
        free(c->out);
        c->out = NULL;
        c->out_len = 0;
        set_events(c, 0);
        return 0;
    }
    int err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
        set_events(c, err == SSL_ERROR_WANT_WRITE);
        return 0;
    }
    ssl_fail(c, "write", r);
    return -1;
}

/* :status from the first bytes of stream 1's header block: an indexed static entry (8-14) or a
 * literal with a static name and a raw (non-Huffman) value. 0 when it cannot tell. */
static int parse_status(const uint8_t *b, size_t n)
{
    static const int st[] = {200, 204, 206, 304, 400, 404, 500};
    if (n < 1)
        return 0;
    if ((b[0] & 0x80) && (b[0] & 0x7f) >= 8 && (b[0] & 0x7f) <= 14)
        return st[(b[0] & 0x7f) - 8];
    size_t idx;
    if ((b[0] & 0xc0) == 0x40)
        idx = b[0] & 0x3f;
    else if ((b[0] & 0xe0) == 0x00 || (b[0] & 0xf0) == 0x10)
        idx = b[0] & 0x0f;
    else
        return 0;
    if (idx < 8 || idx > 14 || n < 5 || (b[1] & 0x80) || b[1] != 3)
        return 0;
    return (b[2] - '0') * 100 + (b[3] - '0') * 10 + (b[4] - '0');
}

static void on_stream1_end(struct conn *c)
{
    if (!c->got_status || !c->status_ok) {
        char buf[40];
        snprintf(buf, sizeof buf, "response: no :status 200");
        finish(c, buf);
        return;
    }
    if (O.handshake_mode) {
        if (O.resume && !ticket)
            return; /* first connection: read on until the ticket has come */
        finish(c, NULL);
        return;
    }
    c->state = C_IDLE;
    inflight--;
    up++;
}

/* A complete frame header (+ collected payload start) is handled here. Returns -1 when the
 * connection ended. */
static int on_frame(struct conn *c, uint8_t type, uint8_t flags, uint32_t sid)
{
    uint8_t out[9 + 8];
    switch (type) {
    case 4: /* SETTINGS */
        if (!(flags & 1))
            return send_bytes(c, out, put_frame_hdr(out, 0, 4, 1, 0));
        return 0;
    case 6: /* PING */
        if (!(flags & 1)) {
            put_frame_hdr(out, 8, 6, 1, 0);
            memcpy(out + 9, c->pl, 8);
            return send_bytes(c, out, sizeof out);
        }
        return 0;
    case 7: /* GOAWAY */
        finish(c, c->state == C_IDLE ? "GOAWAY while idle" : "GOAWAY before the answer");
        return -1;
    case 3: /* RST_STREAM */
        if (sid == 1 && c->state == C_REQUEST) {
            finish(c, "RST_STREAM on stream 1");
            return -1;
        }
        return 0;
    case 1: /* HEADERS */
        if (sid == 1 && !c->got_status) {
            size_t off = 0;
            if (flags & 0x8)
                off += 1 + (size_t)0; /* pad length byte; padding is at the end */
            if (flags & 0x20)
                off += 5; /* priority */
            int s = off < c->pl_have ? parse_status(c->pl + off, c->pl_have - off) : 0;
            c->got_status = 1;
            c->status_ok = s == 200;
        }
        /* fallthrough */
    case 0: /* DATA */
        if ((sid & 1) && (flags & 1) && c->state == C_REQUEST &&
            ++c->ends >= (O.burst > 0 ? O.burst : 1)) {
            on_stream1_end(c);
            if (c->state == C_DONE)
                return -1;
        }
        return 0;
    default:
        return 0;
    }
}

static int feed(struct conn *c, const uint8_t *p, size_t n)
{
    while (n) {
        if (c->hdr_have < 9) {
            size_t k = (size_t)(9 - c->hdr_have) < n ? (size_t)(9 - c->hdr_have) : n;
            memcpy(c->hdr + c->hdr_have, p, k);
            c->hdr_have = (uint8_t)(c->hdr_have + k);
            p += k, n -= k;
            if (c->hdr_have < 9)
                return 0;
            c->skip = (uint32_t)c->hdr[0] << 16 | (uint32_t)c->hdr[1] << 8 | c->hdr[2];
            c->pl_have = 0;
            c->pl_want = (uint8_t)(c->skip < sizeof c->pl ? c->skip : sizeof c->pl);
        }
        size_t k = c->skip < n ? c->skip : n;
        if (c->pl_have < c->pl_want) {
            size_t m =
                (size_t)(c->pl_want - c->pl_have) < k ? (size_t)(c->pl_want - c->pl_have) : k;
            memcpy(c->pl + c->pl_have, p, m);
            c->pl_have = (uint8_t)(c->pl_have + m);
        }
        c->skip -= (uint32_t)k;
        p += k, n -= k;
        if (c->skip == 0) {
            uint32_t sid = ((uint32_t)c->hdr[5] << 24 | (uint32_t)c->hdr[6] << 16 |
                            (uint32_t)c->hdr[7] << 8 | c->hdr[8]) &
                           0x7fffffffu;
            c->hdr_have = 0;
            if (on_frame(c, c->hdr[3], c->hdr[4], sid) < 0)
                return -1;
        }
    }
    return 0;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (ticket || !SSL_SESSION_is_resumable(sess))
        return 0;
    ticket = sess; /* keep the reference OpenSSL hands over */
    ticket_at = now_s();
    return 1;
}

static void do_handshake(struct conn *c)
{
    ERR_clear_error();
    int r = SSL_connect(c->ssl);
    if (r != 1) {
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            set_events(c, err == SSL_ERROR_WANT_WRITE);
            return;
        }
        ssl_fail(c, "handshake", r);
        return;
    }
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    if (alpn_len != 2u || memcmp(alpn, "h2", 2) != 0) {
        finish(c, "no h2 ALPN");
        return;
    }
    if (SSL_session_reused(c->ssl))
        resumed++;
    c->state = C_REQUEST;
    set_events(c, 0);
    send_bytes(c, request, request_len);
}

static void on_readable(struct conn *c)
{
    for (;;) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, rbuf, sizeof rbuf);
        if (r > 0) {
            if (feed(c, rbuf, (size_t)r) < 0)
                return;
            continue;
        }
        int err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ)
            break;
        if (err == SSL_ERROR_WANT_WRITE) {
            set_events(c, 1);
            break;
        }
        if (c->state == C_REQUEST && O.handshake_mode && c->got_status && c->status_ok && !ticket) {
            finish(c, "closed before a session ticket came");
            return;
        }
        ssl_fail(c, c->state == C_IDLE ? "closed while idle" : "read", r);
        return;
    }
    /* the first connection of --resume: the ticket came with the answer or after it */
    if (O.handshake_mode && O.resume && ticket && c->state == C_REQUEST && c->got_status &&
        c->status_ok && c->hdr_have == 0 && c->skip == 0)
        finish(c, NULL);
}

static void on_event(struct conn *c, uint32_t events)
{
    if (c->state == C_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            char buf[80];
            snprintf(buf, sizeof buf, "connect: %s", strerror(soerr));
            finish(c, buf);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        c->state = C_HANDSHAKE;
        do_handshake(c);
        return;
    }
    if (c->state == C_HANDSHAKE) {
        do_handshake(c);
        return;
    }
    if ((events & EPOLLOUT) && c->out_len && send_bytes(c, NULL, 0) < 0)
        return;
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        on_readable(c);
}

/* Starts connection i. */
static void launch(long i)
{
    struct conn *c = &conns[i];
    c->fd = -1;
    c->state = C_CONNECTING;
    c->started_s = (uint32_t)now_s();
    launched++;
    inflight++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        char buf[80];
        snprintf(buf, sizeof buf, "socket: %s", strerror(errno));
        finish(c, buf);
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (src_base) {
        struct sockaddr_in sa = {.sin_family = AF_INET};
        sa.sin_addr.s_addr = htonl(src_base + (uint32_t)(i % O.src_count));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
            char buf[80];
            snprintf(buf, sizeof buf, "bind: %s", strerror(errno));
            finish(c, buf);
            return;
        }
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)i};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        char buf[80];
        snprintf(buf, sizeof buf, "epoll_ctl: %s", strerror(errno));
        finish(c, buf);
        return;
    }
    c->want_out = 1;
    c->ssl = SSL_new(ctx);
    if (!c->ssl) {
        finish(c, "SSL_new failed");
        return;
    }
    SSL_set_fd(c->ssl, fd);
    SSL_set_tlsext_host_name(c->ssl, O.sni);
    if (O.ca)
        SSL_set1_host(c->ssl, O.sni);
    if (ticket) {
        /* a copy per connection: with one shared SSL_SESSION, OpenSSL (3.0) stopped offering
         * it once the first connection that resumed with it had ended (observed: only the
         * connections started before that were resumed); copies keep the ticket usable */
        SSL_SESSION *copy = SSL_SESSION_dup(ticket);
        if (!copy || SSL_set_session(c->ssl, copy) != 1) {
            SSL_SESSION_free(copy);
            finish(c, "SSL_set_session failed");
            return;
        }
        SSL_SESSION_free(copy);
    }
    if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
        char buf[80];
        snprintf(buf, sizeof buf, "connect: %s", strerror(errno));
        finish(c, buf);
    }
}

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void print_reasons(void)
{
    for (int i = 0; i < MAX_REASONS && reasons[i].count; i++)
        fprintf(stderr, "connhold:   %ld x %s\n", reasons[i].count, reasons[i].what);
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {{"host", required_argument, 0, 'H'},
                                       {"port", required_argument, 0, 'p'},
                                       {"concurrency", required_argument, 0, 'k'},
                                       {"rate", required_argument, 0, 'r'},
                                       {"src", required_argument, 0, 's'},
                                       {"src-count", required_argument, 0, 'C'},
                                       {"sni", required_argument, 0, 'S'},
                                       {"name", required_argument, 0, 'q'},
                                       {"path", required_argument, 0, 'P'},
                                       {"ca", required_argument, 0, 'a'},
                                       {"hold", required_argument, 0, 'h'},
                                       {"timeout", required_argument, 0, 't'},
                                       {"resume", no_argument, 0, 'R'},
                                       {"resume-delay", required_argument, 0, 'D'},
                                       {"burst", required_argument, 0, 'B'},
                                       {0, 0, 0, 0}};
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "hold") == 0)
        O.handshake_mode = 0;
    else if (strcmp(argv[1], "handshake") == 0)
        O.handshake_mode = 1;
    else
        usage();
    optind = 2;
    int ch;
    while ((ch = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        switch (ch) {
        case 'n':
            O.n = atol(optarg);
            break;
        case 'H':
            O.host = optarg;
            break;
        case 'p':
            O.port = atoi(optarg);
            break;
        case 'k':
            O.concurrency = atol(optarg);
            break;
        case 'r':
            O.rate = atof(optarg);
            break;
        case 's':
            O.src = optarg;
            break;
        case 'C':
            O.src_count = atol(optarg);
            break;
        case 'S':
            O.sni = optarg;
            break;
        case 'q':
            O.name = optarg;
            break;
        case 'P':
            O.path = optarg;
            break;
        case 'a':
            O.ca = optarg;
            break;
        case 'h':
            O.hold = atof(optarg);
            break;
        case 't':
            O.timeout = atof(optarg);
            break;
        case 'R':
            O.resume = 1;
            break;
        case 'D':
            O.resume_delay = atof(optarg);
            break;
        case 'B':
            O.burst = atol(optarg);
            break;
        default:
            usage();
        }
    }
    if (optind != argc || O.port <= 0 || O.port > 65535 || O.src_count < 1 || O.timeout <= 0)
        usage();
    if (O.n <= 0)
        O.n = O.handshake_mode ? 2000 : 100000;
    if (O.concurrency <= 0)
        O.concurrency = O.handshake_mode ? 1 : 256;
    if ((O.resume && !O.handshake_mode) || O.burst < 0 || O.burst > 100)
        usage();
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0);
    memset(&dst, 0, sizeof dst);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)O.port);
    if (inet_pton(AF_INET, O.host, &dst.sin_addr) != 1) {
        fprintf(stderr, "connhold: --host %s: not an IPv4 address\n", O.host);
        return 2;
    }
    if (O.src) {
        struct in_addr a;
        if (inet_pton(AF_INET, O.src, &a) != 1) {
            fprintf(stderr, "connhold: --src %s: not an IPv4 address\n", O.src);
            return 2;
        }
        src_base = ntohl(a.s_addr);
    }

    /* descriptors: the connections in use at once, plus a margin for epoll and stdio */
    rlim_t need = (rlim_t)(O.handshake_mode ? O.concurrency : O.n) + 64;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < need) {
        struct rlimit want = {need, rl.rlim_max > need ? rl.rlim_max : need};
        if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
            fprintf(stderr,
                    "connhold: cannot raise RLIMIT_NOFILE from %llu/%llu to %llu: %s (root can; "
                    "check fs.nr_open)\n",
                    (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
                    (unsigned long long)need, strerror(errno));
            return 2;
        }
    }

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        return 2;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3);
    /* record buffers only while data is pending: an idle connection then holds none */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (O.ca) {
        if (SSL_CTX_load_verify_locations(ctx, O.ca, NULL) != 1) {
            fprintf(stderr, "connhold: cannot load --ca %s\n", O.ca);
            return 2;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (O.resume) {
        /* the callback only fires with a client-side cache mode; no internal cache is kept */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    }
    build_request();

    conns = calloc((size_t)O.n, sizeof *conns);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || ep < 0) {
        fprintf(stderr, "connhold: out of memory\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    fprintf(stderr,
            "connhold: %s %ld connections to %s:%d, %ld in flight, rate %s, %ld source(s)\n",
            O.handshake_mode ? (O.resume ? "handshake --resume" : "handshake") : "hold", O.n,
            O.host, O.port, O.concurrency, O.rate > 0 ? "paced" : "unpaced", O.src_count);
    t0_ms = dg_now_ms();
    double setup_s = -1, hold_until = 0, last_progress = 0, last_sweep = 0;
    struct epoll_event evs[512];
    while (!stop_flag) {
        double t = now_s();
        /* start connections: K in flight, the rate if any, and with --resume the first alone
         * until its ticket is in hand */
        while (launched < O.n && inflight < O.concurrency &&
               (O.rate <= 0 || (double)launched < O.rate * t + 1) &&
               !(O.resume && launched >= 1 && (!ticket || now_s() < ticket_at + O.resume_delay)))
            launch(launched);
        int timeout_ms = launched < O.n ? 5 : 500;
        int n = epoll_wait(ep, evs, (int)(sizeof evs / sizeof evs[0]), timeout_ms);
        if (n < 0 && errno != EINTR) {
            perror("connhold: epoll_wait");
            return 2;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            if (c->state != C_DONE && c->state != C_FREE)
                on_event(c, evs[i].events);
        }
        t = now_s();
        if (t - last_sweep >= 1.0) { /* --timeout for connections not yet up */
            last_sweep = t;
            for (long i = 0; i < launched; i++) {
                struct conn *c = &conns[i];
                if (c->state >= C_CONNECTING && c->state <= C_REQUEST &&
                    t - c->started_s > O.timeout)
                    finish(c, c->state == C_CONNECTING  ? "timeout: connect"
                              : c->state == C_HANDSHAKE ? "timeout: handshake"
                                                        : "timeout: answer");
            }
        }
        if (setup_s < 0 && t - last_progress >= 2.0) {
            last_progress = t;
            fprintf(stderr, "connhold: %.0f s: %ld started, %ld up, %ld failed, %ld in flight\n", t,
                    launched, O.handshake_mode ? done_conns - failed : up, failed, inflight);
        }
        if (setup_s < 0 && launched == O.n && inflight == 0) {
            setup_s = t;
            if (O.handshake_mode)
                break;
            printf("up %ld setup_s %.2f failed %ld\n", up, setup_s, failed);
            fprintf(stderr, "connhold: all started in %.2f s: %ld up, %ld failed%s\n", setup_s, up,
                    failed, failed ? ":" : "");
            print_reasons();
            memset(reasons, 0, sizeof reasons); /* from now on: why held ones ended */
            if (O.hold > 0)
                hold_until = t + O.hold;
        }
        if (hold_until > 0 && t >= hold_until)
            break;
    }

    if (O.handshake_mode) {
        long m = done_conns, ok = done_conns - failed;
        double wall = setup_s >= 0 ? setup_s : now_s();
        printf("handshakes %ld resumed %ld wall_s %.2f failed %ld\n", m, resumed, wall, failed);
        if (failed)
            print_reasons();
        int bad = failed > 0 || m < O.n;
        if (O.resume) {
            /* the first connection is a full handshake by construction */
            long could = O.n - 1;
            if (resumed * 100 < could * 95) {
                fprintf(stderr, "connhold: only %ld of %ld later connections were resumed\n",
                        resumed, could);
                bad = 1;
            }
        }
        (void)ok;
        return bad ? 1 : 0;
    }
    long held_at_end = up;
    printf("closed_by_server %ld\n", closed_by_server);
    fprintf(stderr, "connhold: %ld still held at the end, %ld closed by the server%s\n",
            held_at_end, closed_by_server, closed_by_server ? ":" : "");
    print_reasons();
    /* the kernel closes the rest at exit; no close_notify to 100,000 peers */
    return (setup_s >= 0 && failed == 0) ? 0 : 1;
}
