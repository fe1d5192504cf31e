/*
 * hpack_growth: how much memory an nghttp2 server session keeps after many DoH answers, with the
 * varying response headers indexed in HPACK or not (issue 20; docs/benchmarks.md).
 *
 *   hpack_growth [REQUESTS] [index|noindex] [DEFLATE_TABLE]
 *       (defaults: 1000, noindex, 4096)
 *
 * A server and a client nghttp2 session in memory (nghttp2's own client encoder, as curl's).
 * The client sends REQUESTS GETs /dns-query?dns=... one after the other; the server answers each
 * with the headers dohgate's DoH answers carry: :status 200, content-type
 * application/dns-message, cache-control max-age=N (N changes from answer to answer, as a
 * cache's aged TTLs do) and content-length, then a body. With "noindex" cache-control goes as an
 * HPACK literal without indexing (NGHTTP2_NV_FLAG_NO_INDEX), as h2.c's hpack_flags() sends it;
 * with "index" nghttp2 chooses (it indexes it). The server session's allocations are counted
 * through nghttp2_mem (malloc_usable_size): printed are the bytes it holds after the first
 * answer and after the last, and the bytes the server sent per answer.
 *
 * Not a test; the behaviour is checked by test_h2 (test_get_answered: cache-control arrives not
 * indexed, the client's table holds the constant headers only).
 */
#include <malloc.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long live; /* bytes the server session holds */

static void *m_malloc(size_t n, void *ud)
{
    (void)ud;
    void *p = malloc(n);
    if (p)
        live += (long)malloc_usable_size(p);
    return p;
}

static void m_free(void *p, void *ud)
{
    (void)ud;
    if (p)
        live -= (long)malloc_usable_size(p);
    free(p);
}

static void *m_calloc(size_t k, size_t n, void *ud)
{
    (void)ud;
    void *p = calloc(k, n);
    if (p)
        live += (long)malloc_usable_size(p);
    return p;
}

static void *m_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    if (p)
        live -= (long)malloc_usable_size(p);
    p = realloc(p, n);
    if (p)
        live += (long)malloc_usable_size(p);
    return p;
}

static nghttp2_session *srv, *cli;
static uint8_t wire[1 << 20];
static size_t wire_len;
static long server_bytes;
static unsigned answers;
static uint8_t cc_flags;

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)flags;
    (void)ud;
    if (wire_len + len > sizeof(wire))
        return NGHTTP2_ERR_WOULDBLOCK;
    memcpy(wire + wire_len, data, len);
    wire_len += len;
    if (s == srv)
        server_bytes += (long)len;
    return (ssize_t)len;
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    size_t n = (size_t)src->ptr;
    if (n > len)
        n = len;
    memset(buf, 0x41, n);
    *flags = NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* The server answers every request once its HEADERS (END_STREAM: a GET) have come. */
static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    char cc[32], cl[16];
    size_t body = 60 + answers % 40;
    snprintf(cc, sizeof(cc), "max-age=%u", 300 - (answers * 7) % 300);
    snprintf(cl, sizeof(cl), "%zu", body);
    answers++;
    nghttp2_nv nv[] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/dns-message", 12, 23,
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"cache-control", (uint8_t *)cc, 13, strlen(cc), cc_flags},
        {(uint8_t *)"content-length", (uint8_t *)cl, 14, strlen(cl), NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider prd = {.source.ptr = (void *)body, .read_callback = read_body};
    return nghttp2_submit_response(s, f->hd.stream_id, nv, 4, &prd) == 0
               ? 0
               : NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* Everything @p from has to send, into @p to. */
static int transfer(nghttp2_session *from, nghttp2_session *to)
{
    wire_len = 0;
    if (nghttp2_session_send(from) != 0)
        return -1;
    return wire_len && nghttp2_session_mem_recv(to, wire, wire_len) != (ssize_t)wire_len ? -1 : 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 1000;
    const char *mode = argc > 2 ? argv[2] : "noindex";
    long table = argc > 3 ? strtol(argv[3], NULL, 10) : 4096;
    if (n < 1 || n > 1000000 || table < 0 || table > 65536 ||
        (strcmp(mode, "index") != 0 && strcmp(mode, "noindex") != 0)) {
        fprintf(stderr, "usage: hpack_growth [REQUESTS] [index|noindex] [DEFLATE_TABLE]\n");
        return 2;
    }
    cc_flags = strcmp(mode, "noindex") == 0 ? NGHTTP2_NV_FLAG_NO_INDEX : NGHTTP2_NV_FLAG_NONE;

    nghttp2_mem mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};
    nghttp2_session_callbacks *scb, *ccb;
    nghttp2_option *opt;
    if (nghttp2_session_callbacks_new(&scb) || nghttp2_session_callbacks_new(&ccb) ||
        nghttp2_option_new(&opt))
        return 2;
    nghttp2_session_callbacks_set_send_callback(scb, on_send);
    nghttp2_session_callbacks_set_on_frame_recv_callback(scb, on_frame_recv);
    nghttp2_session_callbacks_set_send_callback(ccb, on_send);
    /* as h2.c sets them, for what bears on memory */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, (size_t)table);
    nghttp2_option_set_no_closed_streams(opt, 1);
    if (nghttp2_session_server_new3(&srv, scb, NULL, opt, &mem) ||
        nghttp2_session_client_new(&cli, ccb, NULL))
        return 2;
    nghttp2_settings_entry se = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
    if (nghttp2_submit_settings(srv, NGHTTP2_FLAG_NONE, &se, 1) ||
        nghttp2_submit_settings(cli, NGHTTP2_FLAG_NONE, NULL, 0))
        return 2;
    for (int i = 0; i < 2; i++)
        if (transfer(cli, srv) || transfer(srv, cli))
            return 1;

    long after_first = 0;
    for (long i = 0; i < n; i++) {
        char path[96];
        snprintf(path, sizeof(path), "/dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxl%06ld", i);
        nghttp2_nv req[] = {
            {(uint8_t *)":method", (uint8_t *)"GET", 7, 3, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":scheme", (uint8_t *)"https", 7, 5, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":authority", (uint8_t *)"dns.example.net", 10, 15, NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)":path", (uint8_t *)path, 5, strlen(path), NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"accept", (uint8_t *)"application/dns-message", 6, 23,
             NGHTTP2_NV_FLAG_NONE},
        };
        if (nghttp2_submit_request(cli, NULL, req, 5, NULL, NULL) < 0 || transfer(cli, srv) ||
            transfer(srv, cli))
            return 1;
        if (i == 0) {
            after_first = live;
            server_bytes = 0;
        }
    }
    if (answers != (unsigned)n) {
        fprintf(stderr, "hpack_growth: %u answers to %ld requests\n", answers, n);
        return 1;
    }
    printf("%ld answers, cache-control %s, deflate table %ld: the server session holds %ld bytes "
           "after the first answer, %ld after the last (%+ld); %.1f bytes sent per answer\n",
           n, mode, table, after_first, live, live - after_first,
           n > 1 ? (double)server_bytes / (double)(n - 1) : 0.0);
    nghttp2_session_del(cli);
    nghttp2_session_del(srv);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(scb);
    nghttp2_session_callbacks_del(ccb);
    return 0;
}
