/*
 * h2reset: an HTTP/2 DoH client that misbehaves on purpose, for the integration tests.
 *
 *   h2reset [--path P] [--delay MS] PORT reset N NAME
 *       open N GET streams (DoH queries for NAME; the qtype cycles through A, AAAA, TXT, MX, NS so
 *       that some queries coalesce and some do not), wait MS ms (default 200) reading what comes,
 *       send RST_STREAM(CANCEL) on all of them, open N more streams and close the TCP connection
 *       at once (SO_LINGER 0: a TCP RST) without reading.
 *   h2reset [--path P] PORT rapid N NAME
 *       the "rapid reset" pattern (CVE-2023-44487): N times HEADERS immediately followed by
 *       RST_STREAM(CANCEL), all in one flight; then read for up to 2 s (the server may send
 *       GOAWAY) and close.
 *   h2reset [--path P] PORT idle NAME SECONDS
 *       one GET query, then nothing: read for up to SECONDS and print what the server did with
 *       the idle connection: "idle: response 200; GOAWAY NO_ERROR (last stream 1) after T ms;
 *       EOF after T ms" (or "no GOAWAY" / "no EOF").
 *   h2reset [--path P] PORT query NAME [TYPE]
 *       one GET query; prints "HTTP-STATUS RCODE" (e.g. "200 NOERROR") and exits 0 when a
 *       complete response came.
 *
 * It connects to 127.0.0.1:PORT with TLS, ALPN h2, SNI localhost, and does not verify the
 * certificate. Exit status 0 on success, 1 on a failure (the reason goes to stderr).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dohgate/util.h"

#define MAX_STREAMS 4096

struct client {
    int fd;
    SSL *ssl;
    nghttp2_session *session;
    char authority[64];
    const char *path;
    /* query mode */
    int32_t query_stream;
    int status;
    uint8_t body[65536];
    size_t body_len;
    int done;
    /* counters */
    unsigned responses;    /* HEADERS with :status received */
    unsigned closed;       /* streams closed */
    unsigned sent_headers; /* HEADERS frames written */
    unsigned sent_rst;     /* RST_STREAM frames written */
    int goaway;
    uint32_t goaway_code;
    int32_t goaway_last_stream;
    uint64_t goaway_at; /* ms (now_ms) when GOAWAY arrived */
    int eof;
};

static void die_ssl(const char *what)
{
    unsigned long e;
    fprintf(stderr, "h2reset: %s failed", what);
    while ((e = ERR_get_error()) != 0) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        fprintf(stderr, ": %s", buf);
    }
    fputc('\n', stderr);
    exit(1);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* wire query: ID 0, RD, one question NAME/TYPE/IN */
static size_t build_query(const char *name, uint16_t qtype, uint8_t *out, size_t cap)
{
    size_t n = 0;
    const char *p = name;
    if (cap < 12 + 256 + 4)
        return 0;
    memset(out, 0, 12);
    out[2] = 0x01; /* RD */
    out[5] = 1;    /* QDCOUNT */
    n = 12;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t len = dot ? (size_t)(dot - p) : strlen(p);
        if (len == 0 || len > 63 || n + len + 1 > 12 + 255)
            return 0;
        out[n++] = (uint8_t)len;
        memcpy(out + n, p, len);
        n += len;
        p += len;
        if (*p == '.')
            p++;
    }
    out[n++] = 0;
    dg_put16(out + n, qtype);
    dg_put16(out + n + 2, 1);
    return n + 4;
}

static int write_all(struct client *c, const uint8_t *p, size_t n)
{
    uint64_t deadline = now_ms() + 10000;
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        int r, err;
        ERR_clear_error();
        r = SSL_write(c->ssl, p, chunk);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            continue;
        }
        err = SSL_get_error(c->ssl, r);
        if ((err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) && now_ms() < deadline) {
            struct pollfd pfd = {c->fd, (short)(err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN), 0};
            poll(&pfd, 1, 100);
            continue;
        }
        return -1;
    }
    return 0;
}

/* send everything nghttp2 has queued */
static int flush(struct client *c)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->session, &data);
        if (n < 0) {
            fprintf(stderr, "h2reset: nghttp2_session_mem_send: %s\n", nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0)
            return 0;
        if (write_all(c, data, (size_t)n) != 0) {
            fprintf(stderr, "h2reset: TLS write failed (connection closed by the server?)\n");
            return -1;
        }
    }
}

/* read and process for up to @p ms, or until c->done / EOF. -1 on a protocol error. */
static int pump(struct client *c, unsigned ms)
{
    uint64_t deadline = now_ms() + ms;
    uint8_t buf[16384];
    while (!c->done && !c->eof) {
        uint64_t now = now_ms();
        int r, err;
        if (flush(c) != 0)
            return -1;
        if (now >= deadline)
            break;
        if (SSL_pending(c->ssl) == 0) {
            struct pollfd pfd = {c->fd, POLLIN, 0};
            int pr = poll(&pfd, 1, (int)(deadline - now));
            if (pr < 0 && errno != EINTR)
                return -1;
            if (pr <= 0)
                continue;
        }
        ERR_clear_error();
        r = SSL_read(c->ssl, buf, (int)sizeof buf);
        if (r > 0) {
            ssize_t used = nghttp2_session_mem_recv(c->session, buf, (size_t)r);
            if (used < 0) {
                fprintf(stderr, "h2reset: nghttp2_session_mem_recv: %s\n",
                        nghttp2_strerror((int)used));
                return -1;
            }
            continue;
        }
        err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
            continue;
        c->eof = 1;
    }
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    struct client *c = user_data;
    (void)session;
    (void)flags;
    if (frame->hd.type == NGHTTP2_HEADERS && namelen == 7 && memcmp(name, ":status", 7) == 0) {
        char v[8] = {0};
        memcpy(v, value, valuelen < 7 ? valuelen : 7);
        c->responses++;
        if (frame->hd.stream_id == c->query_stream)
            c->status = atoi(v);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    struct client *c = user_data;
    (void)session;
    (void)flags;
    if (stream_id == c->query_stream) {
        size_t room = sizeof c->body - c->body_len;
        size_t n = len < room ? len : room;
        memcpy(c->body + c->body_len, data, n);
        c->body_len += n;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct client *c = user_data;
    (void)session;
    (void)error_code;
    c->closed++;
    if (stream_id == c->query_stream)
        c->done = 1;
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct client *c = user_data;
    (void)session;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1;
        c->goaway_code = frame->goaway.error_code;
        c->goaway_last_stream = frame->goaway.last_stream_id;
        c->goaway_at = now_ms();
    }
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct client *c = user_data;
    (void)session;
    if (frame->hd.type == NGHTTP2_HEADERS)
        c->sent_headers++;
    else if (frame->hd.type == NGHTTP2_RST_STREAM)
        c->sent_rst++;
    return 0;
}

static void client_connect(struct client *c, int port)
{
    struct sockaddr_in sa;
    SSL_CTX *ctx;
    const unsigned char *alpn = NULL;
    unsigned alpnlen = 0;
    int one = 1;
    nghttp2_session_callbacks *cbs;
    nghttp2_settings_entry iv[2] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 65535}};

    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0) {
        perror("h2reset: socket");
        exit(1);
    }
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "h2reset: connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(1);
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    snprintf(c->authority, sizeof c->authority, "127.0.0.1:%d", port);

    ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die_ssl("SSL_CTX_new");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2", 3) != 0)
        die_ssl("SSL_CTX_set_alpn_protos");
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL keeps a reference */
    if (!c->ssl)
        die_ssl("SSL_new");
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1)
        die_ssl("TLS handshake");
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpnlen);
    if (alpnlen != 2 || memcmp(alpn, "h2", 2) != 0) {
        fprintf(stderr, "h2reset: the server did not select ALPN h2\n");
        exit(1);
    }
    /* non-blocking from here on: poll() decides, and SSL_read never blocks on a record that
     * carries no application data (TLS 1.3 session tickets) */
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);

    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        fprintf(stderr, "h2reset: out of memory\n");
        exit(1);
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    if (nghttp2_session_client_new(&c->session, cbs, c) != 0) {
        fprintf(stderr, "h2reset: nghttp2_session_client_new failed\n");
        exit(1);
    }
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 2);
}

static void client_close(struct client *c, int abrupt)
{
    if (abrupt) {
        struct linger lg = {1, 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    } else {
        SSL_shutdown(c->ssl);
    }
    close(c->fd);
    SSL_free(c->ssl);
    nghttp2_session_del(c->session);
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE             \
    }

/* submit one GET for NAME/qtype; returns the stream id (> 0) or exits */
static int32_t submit_get(struct client *c, const char *name, uint16_t qtype)
{
    uint8_t q[600];
    char b64[900];
    char path[1200];
    size_t n = build_query(name, qtype, q, sizeof q);
    int32_t id;
    if (n == 0) {
        fprintf(stderr, "h2reset: bad name '%s'\n", name);
        exit(1);
    }
    dg_b64url_encode(q, n, b64);
    snprintf(path, sizeof path, "%s?dns=%s", c->path, b64);
    {
        nghttp2_nv hdrs[] = {NV(":method", "GET"), NV(":scheme", "https"),
                             NV(":authority", c->authority), NV(":path", path),
                             NV("accept", "application/dns-message")};
        id = nghttp2_submit_request(c->session, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], NULL,
                                    NULL);
    }
    if (id < 0) {
        fprintf(stderr, "h2reset: nghttp2_submit_request: %s\n", nghttp2_strerror(id));
        exit(1);
    }
    return id;
}

static const uint16_t qtypes[] = {1, 28, 16, 15, 2}; /* A AAAA TXT MX NS */

static int mode_reset(struct client *c, unsigned n, const char *name, unsigned delay_ms)
{
    int32_t *ids = calloc(n, sizeof *ids);
    unsigned i;
    if (!ids)
        return 1;
    for (i = 0; i < n; i++)
        ids[i] = submit_get(c, name, qtypes[i % 5]);
    if (flush(c) != 0 || pump(c, delay_ms) != 0) {
        free(ids);
        return 1;
    }
    for (i = 0; i < n; i++)
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, ids[i], NGHTTP2_CANCEL);
    if (flush(c) != 0) {
        free(ids);
        return 1;
    }
    {
        unsigned first_headers = c->sent_headers, first_rst = c->sent_rst;
        for (i = 0; i < n; i++)
            submit_get(c, name, qtypes[i % 5]);
        /* a failed flush here only means the server closed first; the point is the abrupt close */
        (void)flush(c);
        printf("reset: %u streams opened, %u reset, %u more opened, closed abruptly; %u responses "
               "seen%s\n",
               first_headers, first_rst, c->sent_headers - first_headers, c->responses,
               c->goaway ? ", GOAWAY received" : "");
    }
    free(ids);
    client_close(c, 1);
    return 0;
}

static int mode_rapid(struct client *c, unsigned n, const char *name)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        int32_t id = submit_get(c, name, qtypes[i % 5]);
        /* HEADERS must be on the wire before the RST: nghttp2 drops a request reset before it
         * was sent. Both go out without waiting for the server. */
        if (flush(c) != 0)
            break;
        nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
        if (flush(c) != 0)
            break;
    }
    (void)pump(c, 2000);
    printf("rapid: %u streams opened and %u reset; %u responses seen; %s\n", c->sent_headers,
           c->sent_rst, c->responses, c->goaway ? "GOAWAY received" : "no GOAWAY");
    client_close(c, 1);
    return 0;
}

static const char *rcode_name(unsigned rc)
{
    static const char *names[] = {"NOERROR",  "FORMERR", "SERVFAIL",
                                  "NXDOMAIN", "NOTIMP",  "REFUSED"};
    static char buf[16];
    if (rc < 6)
        return names[rc];
    snprintf(buf, sizeof buf, "RCODE%u", rc);
    return buf;
}

static int mode_query(struct client *c, const char *name, uint16_t qtype)
{
    c->query_stream = submit_get(c, name, qtype);
    if (pump(c, 10000) != 0)
        return 1;
    if (!c->done) {
        fprintf(stderr, "h2reset: no complete response within 10 s%s\n", c->eof ? " (EOF)" : "");
        return 1;
    }
    if (c->status == 0) {
        fprintf(stderr, "h2reset: stream closed without a response\n");
        return 1;
    }
    if (c->body_len >= 12 && c->status == 200)
        printf("%d %s\n", c->status, rcode_name(c->body[3] & 0x0F));
    else
        printf("%d -\n", c->status);
    client_close(c, 0);
    return 0;
}

static int mode_idle(struct client *c, const char *name, unsigned seconds)
{
    c->query_stream = submit_get(c, name, 1);
    if (pump(c, 10000) != 0 || !c->done) {
        fprintf(stderr, "h2reset: no response to the first query\n");
        return 1;
    }
    uint64_t t0 = now_ms();
    c->done = 0; /* pump until EOF or the deadline */
    if (pump(c, seconds * 1000u) != 0)
        return 1;
    uint64_t t1 = now_ms();
    printf("idle: response %d; ", c->status);
    if (c->goaway)
        printf("GOAWAY %s (last stream %d) after %llu ms; ", nghttp2_http2_strerror(c->goaway_code),
               (int)c->goaway_last_stream, (unsigned long long)(c->goaway_at - t0));
    else
        printf("no GOAWAY; ");
    if (c->eof)
        printf("EOF after %llu ms\n", (unsigned long long)(t1 - t0));
    else
        printf("no EOF\n");
    client_close(c, 0);
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: h2reset [--path P] [--delay MS] PORT reset N NAME\n"
                    "       h2reset [--path P] PORT rapid N NAME\n"
                    "       h2reset [--path P] PORT query NAME [TYPE-NUMBER]\n"
                    "       h2reset [--path P] PORT idle NAME SECONDS\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static struct client c;
    unsigned delay_ms = 200;
    int i = 1, port, rc;
    const char *mode;

    c.path = "/dns-query";
    while (i < argc && strncmp(argv[i], "--", 2) == 0) {
        if (strcmp(argv[i], "--path") == 0 && i + 1 < argc)
            c.path = argv[i + 1];
        else if (strcmp(argv[i], "--delay") == 0 && i + 1 < argc)
            delay_ms = (unsigned)atoi(argv[i + 1]);
        else
            usage();
        i += 2;
    }
    if (argc - i < 3)
        usage();
    port = atoi(argv[i]);
    mode = argv[i + 1];
    if (port <= 0 || port > 65535)
        usage();

    if (strcmp(mode, "reset") == 0 || strcmp(mode, "rapid") == 0) {
        long n;
        if (argc - i < 4)
            usage();
        n = atol(argv[i + 2]);
        if (n <= 0 || n > MAX_STREAMS)
            usage();
        client_connect(&c, port);
        rc = mode[0] == 'r' && mode[1] == 'e' ? mode_reset(&c, (unsigned)n, argv[i + 3], delay_ms)
                                              : mode_rapid(&c, (unsigned)n, argv[i + 3]);
    } else if (strcmp(mode, "idle") == 0) {
        if (argc - i < 4)
            usage();
        client_connect(&c, port);
        rc = mode_idle(&c, argv[i + 2], (unsigned)atoi(argv[i + 3]));
    } else if (strcmp(mode, "query") == 0) {
        uint16_t qtype = argc - i > 3 ? (uint16_t)atoi(argv[i + 3]) : 1;
        client_connect(&c, port);
        rc = mode_query(&c, argv[i + 2], qtype);
    } else {
        usage();
        rc = 2;
    }
    return rc;
}
