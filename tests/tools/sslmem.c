/*
 * sslmem: what OpenSSL keeps per idle server connection of dohgate, by allocation site.
 *
 *   sslmem [N]        (N: connections, default 500)
 *
 * Builds dohgate's own TLS store (tls_store_new() on the default configuration: the self-signed
 * certificate, every context setting dohgate uses), then N times: a server SSL from the store
 * (tls_store_ssl_new(), as a worker makes one per connection) and a plain OpenSSL client (TLS 1.3,
 * ALPN h2) over a socketpair; handshake, one small request and answer each way (so that the
 * session ticket is sent and the record buffers have been used), then the client is freed and
 * the server SSL kept, as an idle connection's is. Every OpenSSL allocation goes through
 * CRYPTO_set_mem_functions(), which passes OpenSSL's file and line: what is still allocated at
 * the end, divided by N, is printed per site, largest first, with the total (requested bytes and
 * malloc_usable_size, i.e. with glibc's rounding; glibc adds 8 bytes of header to each chunk on
 * top of that).
 *
 * Used for docs/benchmarks.md ("Where the idle memory goes"); not a test. The first connection is
 * a warm-up and not counted (OpenSSL fetches and caches its algorithms then).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/tls.h"

/* ---- allocation tracking: an open-addressing table of live blocks, by pointer -------------- */

#define SLOTS (1u << 22) /* power of two; far more than the live blocks of N <= 10,000 */

struct block {
    void *p;
    size_t n;
    const char *file;
    int line;
};

static struct block *blocks;
static bool tracking;

static size_t slot_of(const void *p)
{
    size_t h = (size_t)(((uintptr_t)p >> 4) * UINT64_C(11400714819323198485));
    for (h &= SLOTS - 1; blocks[h].p && blocks[h].p != p; h = (h + 1) & (SLOTS - 1))
        ;
    return h;
}

static void track(void *p, size_t n, const char *file, int line)
{
    if (p && tracking)
        blocks[slot_of(p)] = (struct block){p, n, file, line};
}

/* Remove @p p if tracked; entries after it move back (linear probing's deletion). */
static void untrack(void *p)
{
    if (!p)
        return;
    size_t h = slot_of(p);
    if (!blocks[h].p)
        return;
    blocks[h].p = NULL;
    for (size_t j = (h + 1) & (SLOTS - 1); blocks[j].p; j = (j + 1) & (SLOTS - 1)) {
        struct block b = blocks[j];
        blocks[j].p = NULL;
        blocks[slot_of(b.p)] = b;
    }
}

static void *t_malloc(size_t n, const char *file, int line)
{
    void *p = malloc(n);
    track(p, n, file, line);
    return p;
}

static void *t_realloc(void *old, size_t n, const char *file, int line)
{
    untrack(old);
    void *p = realloc(old, n);
    track(p, n, file, line);
    return p;
}

static void t_free(void *p, const char *file, int line)
{
    (void)file;
    (void)line;
    untrack(p);
    free(p);
}

/* ---- one connection ------------------------------------------------------------------------ */

static int fail(const char *what)
{
    fprintf(stderr, "sslmem: %s\n", what);
    ERR_print_errors_fp(stderr);
    return -1;
}

/* Handshake and one exchange between @p srv and a new client on a socketpair; the client goes,
 * @p srv stays (its descriptor is returned, to be closed at the end). */
static int connect_one(SSL_CTX *cctx, SSL *srv)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return fail("socketpair");
    (void)fcntl(sv[0], F_SETFL, O_NONBLOCK);
    (void)fcntl(sv[1], F_SETFL, O_NONBLOCK);
    SSL *cli = SSL_new(cctx);
    if (!cli || SSL_set_fd(srv, sv[0]) != 1 || SSL_set_fd(cli, sv[1]) != 1)
        return fail("SSL_new/SSL_set_fd");
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    int done = 0;
    for (int i = 0; i < 64 && done != 3; i++) {
        if (SSL_do_handshake(srv) == 1)
            done |= 1;
        if (SSL_do_handshake(cli) == 1)
            done |= 2;
    }
    if (done != 3)
        return fail("handshake did not finish");
    /* a request, its answer (the server's first write also carries the session ticket) */
    char buf[512];
    static const char req[] = "GET /dns-query?dns=AAABAAABAAAAAAAAA3d3dwdleGFtcGxlA2NvbQAAAQAB";
    int n = -1;
    if (SSL_write(cli, req, sizeof(req)) != (int)sizeof(req) ||
        (n = SSL_read(srv, buf, sizeof(buf))) <= 0 || SSL_write(srv, buf, n) != n)
        return fail("exchange");
    for (int i = 0; i < 4 && (n = SSL_read(cli, buf, sizeof(buf))) <= 0; i++)
        ;
    if (n <= 0)
        return fail("the client read no answer");
    SSL_free(cli);
    close(sv[1]);
    return sv[0];
}

/* ---- report -------------------------------------------------------------------------------- */

struct site {
    const char *file;
    int line;
    size_t bytes, usable, count;
};

static int by_bytes(const void *a, const void *b)
{
    const struct site *x = a, *y = b;
    return (y->usable > x->usable) - (y->usable < x->usable);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 500;
    if (n < 1 || n > 10000) {
        fprintf(stderr, "usage: sslmem [N]   (1 <= N <= 10000)\n");
        return 2;
    }
    blocks = calloc(SLOTS, sizeof(*blocks));
    /* before OpenSSL's first allocation, or it refuses */
    if (!blocks || !CRYPTO_set_mem_functions(t_malloc, t_realloc, t_free)) {
        fprintf(stderr, "sslmem: cannot install the allocation hooks\n");
        return 2;
    }
    dg_log_set_level(DG_LOG_WARN);
    char err[256] = "", fp[96];
    struct config *cfg = config_new();
    if (!cfg || config_finish(cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "sslmem: configuration: %s\n", err);
        return 2;
    }
    struct tls_store *ts = tls_store_new(cfg, fp, err, sizeof(err));
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    if (!ts || !cctx || SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_alpn_protos(cctx, (const unsigned char *)"\x02h2", 3) != 0) {
        fprintf(stderr, "sslmem: TLS set-up: %s\n", err);
        return 2;
    }
    SSL **ssl = calloc((size_t)n, sizeof(*ssl));
    int *fds = calloc((size_t)n, sizeof(*fds));
    if (!ssl || !fds)
        return 2;
    for (long i = -1; i < n; i++) {
        tracking = i >= 0;
        SSL *s = tls_store_ssl_new(ts);
        int fd = s ? connect_one(cctx, s) : fail("tls_store_ssl_new");
        if (fd < 0)
            return 1;
        if (i < 0) { /* the warm-up */
            SSL_free(s);
            close(fd);
            continue;
        }
        ssl[i] = s;
        fds[i] = fd;
    }
    tracking = false;

    size_t nsites = 0, cap = 256, total = 0, usable = 0, count = 0;
    struct site *sites = calloc(cap, sizeof(*sites));
    for (size_t i = 0; sites && i < SLOTS; i++) {
        const struct block *b = &blocks[i];
        if (!b->p)
            continue;
        size_t k = 0;
        while (k < nsites && !(sites[k].line == b->line && strcmp(sites[k].file, b->file) == 0))
            k++;
        if (k == nsites) {
            if (nsites == cap) {
                struct site *bigger = realloc(sites, 2 * cap * sizeof(*sites));
                if (!bigger)
                    return 2;
                sites = bigger;
                cap *= 2;
            }
            sites[nsites++] = (struct site){.file = b->file, .line = b->line};
        }
        size_t u = malloc_usable_size(b->p);
        sites[k].bytes += b->n;
        sites[k].usable += u;
        sites[k].count++;
        total += b->n;
        usable += u;
        count++;
    }
    if (!sites)
        return 2;
    qsort(sites, nsites, sizeof(*sites), by_bytes);
    printf("%ld idle server connections (dohgate's TLS store, TLS 1.3, ALPN h2): OpenSSL keeps per "
           "connection %.0f bytes requested, %.0f usable, in %.1f allocations (+ %.0f of malloc "
           "headers)\n",
           n, (double)total / n, (double)usable / n, (double)count / n, 8.0 * count / n);
    printf("%10s %10s %8s  %s\n", "requested", "usable", "allocs", "site");
    for (size_t k = 0; k < nsites && (double)sites[k].usable / n >= 1.0; k++)
        printf("%10.1f %10.1f %8.2f  %s:%d\n", (double)sites[k].bytes / n,
               (double)sites[k].usable / n, (double)sites[k].count / n, sites[k].file,
               sites[k].line);
    for (long i = 0; i < n; i++) {
        SSL_free(ssl[i]);
        close(fds[i]);
    }
    free(ssl);
    free(fds);
    free(sites);
    SSL_CTX_free(cctx);
    tls_store_free(ts);
    config_free(cfg);
    return 0;
}
