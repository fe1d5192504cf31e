/* libFuzzer target: raw client bytes into a server-side HTTP/1.1 session (libhttp-parser plus our
 * limits, pipelining and response framing) with the real router behind it: the DoH handler with
 * a resolver whose upstream never answers (queries stay pending, then are cancelled when the
 * session is freed), and the landing page for every other path. The input is fed in pieces
 * whose sizes come from the first byte, and output is pulled after each piece, so pipelined
 * requests are parsed from the held input as responses complete. */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/cache.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/h1.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct client_id peer = {
    .addr = {192, 0, 2, 1}, .len = 4, .key = {.b = {192, 0, 2, 1}, .len = 4}, .text = "192.0.2.1"};
static struct event_base *base;
static struct config *cfg;
static struct upstream *up;
static struct cache *cache;
static struct resolver *res;
static struct handler_ctx hctx;

static void on_wake(void *owner)
{
    (void)owner;
}

static void setup(void)
{
    dg_log_set_level(DG_LOG_ERR);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sl) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0)
        abort();
    char addr[32], err[256];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
    cfg = config_new();
    if (!cfg || config_set(cfg, "upstream", addr, "fuzz", 0, err, sizeof(err)) != 0 ||
        config_set(cfg, "site-max-body", "100K", "fuzz", 0, err, sizeof(err)) != 0 ||
        config_finish(cfg, err, sizeof(err)) != 0)
        abort();
    base = event_base_new();
    up = upstream_new(base, cfg);
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = 1 << 20;
    cache = cache_new(&cc);
    res = resolver_new(up, cache, cfg);
    if (!base || !up || !cache || !res)
        abort();
    hctx = (struct handler_ctx){.cfg = cfg, .resolver = res};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base)
        setup();
    if (size == 0)
        return 0;
    /* 1..64-byte pieces, or the whole input in one piece when the first byte is 0 */
    size_t piece = data[0] & 63u;
    bool https = data[0] & 64u;
    data++;
    size--;
    const struct h1_settings st = {.https = https, .client = &peer};
    struct h1_session *s = h1_session_new(&st, &hctx, on_wake, NULL);
    if (!s)
        return 0;
    struct dg_buf out = {0};
    size_t off = 0;
    while (off < size && !h1_session_done(s)) {
        size_t n = piece ? piece : size;
        if (n > size - off)
            n = size - off;
        if (h1_session_recv(s, data + off, n) != 0)
            break;
        off += n;
        if (h1_session_send(s, &out, 1 << 20) != 0)
            break;
        out.len = 0; /* the "socket" took it */
    }
    h1_session_timeout(s);
    h1_session_send(s, &out, 1 << 20);
    h1_session_free(s);
    dg_buf_free(&out);
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
