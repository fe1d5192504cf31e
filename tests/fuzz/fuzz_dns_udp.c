/*
 * libFuzzer target: arbitrary datagrams into the plain-DNS UDP front end (dnsudp.c) through a
 * real loopback socket: recvmmsg(), the checks (QR, length, source), admission, the rate limit,
 * dns_serve() with the real resolver, cache and upstream module, and sendmmsg() back. The
 * upstream is a UDP socket of this process that never answers, so cache misses stay pending and
 * are cancelled after each input (dnsudp_set_cancel_all(): the lifetimes under test). The cache
 * holds two answers, a.example. A and a large b.example. TXT, so that hits and truncation run.
 *
 * Input: byte 0 = options, then the datagram.
 *   bit 0: a rate limit of 1 answer/s with slip 2 (shared by every input: mostly limited);
 *   bit 1: send the datagram twice (two in one batch); bit 2: dns-allow excludes the source
 *   (UDP: no answer); bit 3: the client ACL refuses it (REFUSED).
 *
 * Invariants: every answer has QR=1, the datagram's ID, and fits dns-udp-max-size (1232).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/acl.h"
#include "dohgate/cache.h"
#include "dohgate/config.h"
#include "dohgate/dnsudp.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/resolver.h"
#include "dohgate/rrl.h"
#include "dohgate/upstream.h"
#include "dohgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct event_base *base;
static struct config *cfg;
static struct upstream *up;
static struct cache *cache;
static struct resolver *res;
static struct rrl *rrl;
static struct acl deny; /* allows 10.0.0.0/8 only: refuses 127.0.0.1 */
static struct handler_ctx hctx;
static struct dnsudp_set set;
static struct dnsudp *u;
static int srv_fd, cli_fd;
static struct sockaddr_in srv_addr;

static int bound_udp(struct sockaddr_in *sa)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    socklen_t sl = sizeof(*sa);
    *sa = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)sa, sl) != 0 ||
        getsockname(fd, (struct sockaddr *)sa, &sl) != 0)
        abort();
    return fd;
}

/* An answer to NAME (wire form) TYPE with @p n records of @p rdlen bytes each, stored. */
static void put_cached(const uint8_t *name, size_t nlen, uint16_t type, unsigned n,
                       const uint8_t *rdata, uint16_t rdlen)
{
    struct dg_buf q = {0}, a = {0};
    const uint8_t hdr_q[12] = {0, 0, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    const uint8_t tail[4] = {(uint8_t)(type >> 8), (uint8_t)type, 0, 1};
    if (dg_buf_append(&q, hdr_q, 12) || dg_buf_append(&q, name, nlen) || dg_buf_append(&q, tail, 4))
        abort();
    const uint8_t hdr_a[12] = {0, 0, 0x81, 0x80, 0, 1, (uint8_t)(n >> 8), (uint8_t)n, 0, 0, 0, 0};
    if (dg_buf_append(&a, hdr_a, 12) || dg_buf_append(&a, q.data + 12, q.len - 12))
        abort();
    for (unsigned i = 0; i < n; i++) {
        const uint8_t rr[12] = {0xc0, 12,   (uint8_t)(type >> 8),  (uint8_t)type, 0, 1, 0, 0,
                                0x0e, 0x10, (uint8_t)(rdlen >> 8), (uint8_t)rdlen};
        if (dg_buf_append(&a, rr, 12) || dg_buf_append(&a, rdata, rdlen))
            abort();
    }
    struct cache_key k;
    if (cache_key_make(cache, q.data, q.len, &k) != 0 ||
        cache_insert(cache, &k, a.data, a.len, dg_now_ms()) != 0)
        abort();
    dg_buf_free(&q);
    dg_buf_free(&a);
}

static void setup(void)
{
    dg_log_set_level(DG_LOG_ERR);
    struct sockaddr_in up_addr, cli_addr;
    int up_fd = bound_udp(&up_addr); /* the silent upstream: stays open for the process */
    (void)up_fd;
    srv_fd = bound_udp(&srv_addr);
    cli_fd = bound_udp(&cli_addr);
    char addr[32], err[256];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ntohs(up_addr.sin_port));
    cfg = config_new();
    if (!cfg || config_set(cfg, "upstream", addr, "fuzz", 0, err, sizeof(err)) != 0 ||
        config_finish(cfg, err, sizeof(err)) != 0)
        abort();
    base = event_base_new();
    if (!base || event_base_priority_init(base, 3) != 0)
        abort();
    up = upstream_new(base, cfg);
    struct cache_config cc;
    cache_config_defaults(&cc);
    cc.max_bytes = 1 << 20;
    cache = cache_new(&cc);
    res = resolver_new(up, cache, cfg);
    struct rrl_config rc = {.rate = 1, .slip = 2, .max_entries = 64};
    rrl = rrl_new(&rc);
    char ten[] = "10.0.0.0/8";
    char *allow[] = {ten};
    if (!up || !cache || !res || !rrl || acl_build(&deny, allow, 1, NULL, 0) != 0)
        abort();
    static const uint8_t a_name[] = {1, 'a', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
    static const uint8_t b_name[] = {1, 'b', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0};
    static const uint8_t a_rdata[4] = {192, 0, 2, 1};
    uint8_t txt[101];
    txt[0] = 100;
    memset(txt + 1, 'x', 100);
    put_cached(a_name, sizeof(a_name), 1, 1, a_rdata, 4);
    put_cached(b_name, sizeof(b_name), 16, 30, txt, sizeof(txt)); /* ~3.4 KB */
    hctx = (struct handler_ctx){.cfg = cfg, .resolver = res};
    set = (struct dnsudp_set){.hctx = &hctx};
    u = dnsudp_new(base, srv_fd, 2, NULL);
    if (!u || dnsudp_enable(u, true) != 0)
        abort();
    dnsudp_use(u, &set);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base)
        setup();
    if (size < 1)
        return 0;
    uint8_t opt = data[0];
    const uint8_t *dg = data + 1;
    size_t len = size - 1;
    if (len > 65507)
        len = 65507;
    set.rrl = (opt & 1) ? rrl : NULL;
    hctx.dns_acl = (opt & 4) ? &deny : NULL;
    hctx.acl = (opt & 8) ? &deny : NULL;
    int copies = (opt & 2) ? 2 : 1;
    for (int i = 0; i < copies; i++)
        if (sendto(cli_fd, dg, len, 0, (struct sockaddr *)&srv_addr, sizeof(srv_addr)) < 0)
            return 0; /* e.g. EMSGSIZE: nothing sent, nothing to check */
    /* the datagrams are queued on loopback already: one turn reads and answers them */
    event_base_loop(base, EVLOOP_NONBLOCK);
    event_base_loop(base, EVLOOP_NONBLOCK); /* the end-of-turn flush, if it was deferred */
    uint8_t ans[65536];
    for (;;) {
        ssize_t n = recv(cli_fd, ans, sizeof(ans), MSG_DONTWAIT);
        if (n < 0)
            break;
        if (n < 12 || !(ans[2] & 0x80) || len < 2 || memcmp(ans, dg, 2) != 0 || n > 1232)
            abort();
        if (opt & 4)
            abort(); /* a source outside dns-allow never gets anything, even slipped */
    }
    /* what went to the silent upstream is cancelled (and must leave nothing behind) */
    dnsudp_set_cancel_all(&set);
    if (set.count != 0 || set.ops.head)
        abort();
    return 0;
}
