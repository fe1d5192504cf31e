/*
 * libFuzzer target: arbitrary client bytes into a DNS stream session (dnsstream.c: plain DNS
 * over TCP and DoT, as conn.c drives it) with the real dns_serve, resolver and upstream module
 * behind it. The upstream is a UDP socket of this process on 127.0.0.1 that never answers, so
 * queries stay pending (up to the pipeline limit) and are cancelled when the session is freed:
 * the lifetimes under test. Answers made at once (minimal ANY, FORMERR/NOTIMP/REFUSED, cache
 * misses never finish) come out of dnsstream_session_send().
 *
 * Input: byte 0 = flags: bit 0 DoT (else TCP), bit 1 a dns-allow that refuses this client
 * (REFUSED answers), bit 2 graceful shutdown before the last chunk, bits 4-7 the number k of
 * chunk-size bytes that follow (0: the whole stream in one chunk); then k chunk sizes (b + 1
 * bytes each, used in turn); the rest is the stream. Between chunks the session's output is
 * taken with a small limit (partial takes) and the event loop runs once without blocking.
 *
 * Invariants: the output is whole length-prefixed messages of at least a DNS header, each a
 * response (QR set); done() implies !want_read(); queries in flight never exceed the pipeline.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/acl.h"
#include "dohgate/cache.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnsstream.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/resolver.h"
#include "dohgate/upstream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PIPELINE 8

static struct event_base *base;
static struct config *cfg;
static struct upstream *up;
static struct cache *cache;
static struct resolver *res;
static struct acl refuse_acl;
static struct handler_ctx hctx;
static const struct client_id peer = {
    .addr = {192, 0, 2, 7}, .len = 4, .key = {.b = {192, 0, 2, 7}, .len = 4}, .text = "192.0.2.7"};

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
    char addr[32], err[256], pipe[16];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(sa.sin_port));
    snprintf(pipe, sizeof(pipe), "%u", PIPELINE);
    cfg = config_new();
    if (!cfg || config_set(cfg, "upstream", addr, "fuzz", 0, err, sizeof(err)) != 0 ||
        config_set(cfg, "dns-tcp-pipeline", pipe, "fuzz", 0, err, sizeof(err)) != 0 ||
        config_finish(cfg, err, sizeof(err)) != 0)
        abort();
    base = event_base_new();
    up = upstream_new(base, cfg);
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = 1 << 20;
    cache = cache_new(&cc);
    res = resolver_new(up, cache, cfg);
    char *allow[] = {"10.0.0.0/8"};
    if (!base || !up || !cache || !res || acl_build(&refuse_acl, allow, 1, NULL, 0) != 0)
        abort();
    hctx = (struct handler_ctx){.cfg = cfg, .resolver = res};
    /* fd stays open for the process: it is the silent upstream. */
}

/* Check and drop the whole messages at the start of @p out. */
static void check_output(struct dg_buf *out)
{
    size_t off = 0;
    while (out->len - off >= 2) {
        size_t n = ((size_t)out->data[off] << 8) | out->data[off + 1];
        if (out->len - off - 2 < n)
            break;
        if (n < DNS_HEADER_LEN || !(out->data[off + 2 + 2] & 0x80))
            abort();
        off += 2 + n;
    }
    dg_buf_consume(out, off);
}

static void check_state(const struct dnsstream_session *s)
{
    if (dnsstream_session_done(s) && dnsstream_session_want_read(s))
        abort();
    if (dnsstream_session_inflight(s) > PIPELINE)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base)
        setup();
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    size_t k = flags >> 4;
    if (size < 1 + k)
        return 0;
    const uint8_t *sizes = data + 1;
    const uint8_t *p = data + 1 + k;
    size_t left = size - 1 - k;

    hctx.dns_acl = (flags & 2) ? &refuse_acl : NULL;
    const struct dnsstream_settings st = {.client = &peer,
                                          .transport = (flags & 1) ? DG_TR_DOT : DG_TR_DNS_TCP};
    struct dnsstream_session *s = dnsstream_session_new(&st, &hctx, on_wake, NULL);
    if (!s)
        return 0;
    struct dg_buf out = {0};
    for (size_t i = 0; left > 0; i++) {
        size_t n = k ? (size_t)sizes[i % k] + 1 : left;
        if (n > left)
            n = left;
        if ((flags & 4) && n == left)
            dnsstream_session_shutdown(s);
        if (dnsstream_session_recv(s, p, n) != 0)
            break;
        p += n;
        left -= n;
        check_state(s);
        if (dnsstream_session_send(s, &out, out.len + 512) != 0)
            break;
        check_output(&out);
        event_base_loop(base, EVLOOP_NONBLOCK);
    }
    for (;;) {
        size_t before = out.len;
        if (dnsstream_session_send(s, &out, out.len + 4096) != 0 || out.len == before)
            break;
        check_output(&out);
    }
    check_state(s);
    dnsstream_session_free(s);
    dg_buf_free(&out);
    /* Pending upstream queries lost their waiters; let their timers and sockets run once. */
    event_base_loop(base, EVLOOP_NONBLOCK);
    return 0;
}
