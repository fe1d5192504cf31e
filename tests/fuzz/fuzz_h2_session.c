/* libFuzzer target: raw client bytes (after the connection preface) into a server-side HTTP/2
 * session with the real router, DoH handler, resolver and upstream module behind it. The
 * upstream is a UDP socket of this process on 127.0.0.1 that never answers, so queries stay
 * pending and are cancelled when the session is freed: the lifetimes under test. */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/cache.h"
#include "dohgate/config.h"
#include "dohgate/h2.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    /* fd stays open for the process: it is the silent upstream. */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (!base)
        setup();
    struct h2_settings st = {.max_concurrent_streams = 100};
    struct h2_session *s = h2_session_new(&st, &hctx, on_wake, NULL);
    if (!s)
        return 0;
    struct dg_buf out = {0};
    if (h2_session_recv(s, (const uint8_t *)preface, sizeof(preface) - 1) == 0) {
        /* Feed in two parts so that state carried between reads is exercised too. */
        size_t half = size / 2;
        if (h2_session_recv(s, data, half) == 0 && h2_session_send(s, &out, 1 << 20) == 0)
            h2_session_recv(s, data + half, size - half);
        h2_session_send(s, &out, 1 << 20);
    }
    h2_session_free(s);
    dg_buf_free(&out);
    /* Pending upstream queries lost their waiters; let their timers and sockets run once. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
