#include "dohgate/dnsserve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/acl.h"
#include "dohgate/admission.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/ddr.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/policy.h"
#include "dohgate/resolver.h"

/* A query waiting for the resolver. Owned by itself: freed in on_resolved() or in
 * dns_serve_cancel(), whichever runs first (the other path is gone by then). */
struct dns_serve_op {
    const struct handler_ctx *ctx;
    struct resolver_waiter *w;
    dns_serve_cb cb;
    void *arg;
    const struct client_id *client;
    enum dg_transport transport;
    bool pad;
    uint16_t udp_max; /* UDP: the largest answer the client takes; 0 otherwise */
    char how[24];
};

static const char *const transport_names[DG_NTRANSPORT] = {"doh", "json", "dns-udp", "dns-tcp",
                                                           "dot"};

const char *dns_transport_name(enum dg_transport t)
{
    return (unsigned)t < DG_NTRANSPORT ? transport_names[t] : "?";
}

/*
 * Pad answers to this query? RFC 8467 §4.1 and Unbound's rule: when pad-responses is on and the
 * client padded its query, answers go out in 468-byte blocks; a client that did not pad gets
 * none. Only on encrypted transports: padding in clear text hides nothing (RFC 7830 §7).
 */
static bool want_padding(const struct handler_ctx *ctx, enum dg_transport t, const uint8_t *q,
                         size_t len)
{
    return (t == DG_TR_DOH || t == DG_TR_DOT) && ctx->cfg->pad_responses && dns_has_padding(q, len);
}

/* The client as the query log shows it: full, truncated (IPv4 /24, IPv6 /48, as Unbound's
 * and PowerDNS's anonymizing options do), or not at all. */
static void log_client(const struct config *cfg, const struct client_id *id, char *out,
                       size_t outlen)
{
    if (cfg->query_log_client == QLOG_CLIENT_NONE || !id || !client_id_known(id))
        snprintf(out, outlen, "-");
    else if (cfg->query_log_client == QLOG_CLIENT_FULL)
        client_id_text(id, out, outlen); /* UDP's client_ids carry no text (dnsudp.c) */
    else
        client_id_text_truncated(id, out, outlen); /* from the binary address: no parse */
}

/*
 * The last steps of every answer, whatever made it (cache, upstream, stale data, a synthesized
 * error or ANY answer), always on this client's own copy: padding (nothing padded is ever
 * stored), UDP truncation, the count and the query log. A failed pad or truncation leaves the
 * answer as it was: padding is worth less than the answer, and an answer that cannot be
 * truncated does not parse (it goes out; the kernel or the client drops it).
 */
static void finish(const struct handler_ctx *ctx, struct dg_buf *msg, bool pad, size_t udp_max,
                   enum dg_transport t, const struct client_id *client, const char *how)
{
    /* Block-length padding adds at most an option header and block - 1 zero bytes. */
    if (pad && dg_buf_reserve(msg, 4 + DNS_PAD_BLOCK_RESPONSE - 1) == 0)
        (void)dns_pad(msg->data, &msg->len, msg->cap, DNS_PAD_BLOCK_RESPONSE);
    if (udp_max && msg->len > udp_max && dns_truncate(msg->data, &msg->len, udp_max) == 1)
        dg_observe(ctx->obs, DG_EV_DNS_TRUNCATED, 0, 1);
    int rcode = dns_rcode(msg->data, msg->len);
    if (rcode >= 0)
        dg_observe(ctx->obs, DG_EV_DNS_ANSWER, DG_DNS_KEY(t, rcode), 1);
    if (ctx->cfg->query_log) {
        char who[64], what[512];
        log_client(ctx->cfg, client, who, sizeof(who));
        dns_summary(msg->data, msg->len, what, sizeof(what));
        dg_log_query("query: %s %s %s", who, what, how ? how : dns_transport_name(t));
    }
}

static void on_resolved(void *arg, const uint8_t *a, size_t len, uint32_t ttl)
{
    struct dns_serve_op *op = arg;
    struct dns_serve_op o = *op;
    /* The handle is gone before the callback runs: the callee may free its own state. */
    free(op);
    struct dg_buf msg = {0};
    if (dg_buf_append(&msg, a, len) != 0) {
        /* No copy, no answer: the front end's callback gets an empty buffer and says so
         * its own way (a 503, a SERVFAIL it may also fail to build, a closed stream). */
        o.cb(o.arg, &msg, 0);
        return;
    }
    finish(o.ctx, &msg, o.pad, o.udp_max, o.transport, o.client, o.how[0] ? o.how : NULL);
    o.cb(o.arg, &msg, ttl);
    dg_buf_free(&msg);
}

void dns_serve_set_arg(struct dns_serve_op *op, void *arg)
{
    op->arg = arg;
}

void dns_serve_cancel(struct dns_serve_op *op)
{
    if (!op)
        return;
    resolver_cancel(op->w);
    free(op);
}

/* A synthesized answer to a query that parses (FORMERR, NOTIMP, REFUSED, SERVFAIL).
 * @return 0 or -ENOMEM. */
static int error_answer(const struct dns_serve_req *req, int rcode, struct dg_buf *ans)
{
    return dns_make_error_answer(req->q, req->len, rcode, ans) == 0 ? 0 : -ENOMEM;
}

/* The policy step (policy.h), before ANY and the resolver: what dohgate answers itself.
 * @return 1 (not answered here), 0 (answered into @p ans), -ENOMEM. */
static int apply_policy(const struct handler_ctx *ctx, const struct dns_serve_req *req,
                        struct dg_buf *ans, uint32_t *ttl)
{
    const struct policy *p = ctx->policy ? policy_view_get(ctx->policy) : NULL;
    if (!p)
        return 1;
    int r = policy_apply(p, req->q, req->len, req->client, req->policy_id, req->policy_id_len, ans,
                         ttl, ctx->obs);
    if (r < 0)
        return -ENOMEM;
    return r == POLICY_PASS ? 1 : 0;
}

int dns_serve(const struct handler_ctx *ctx, const struct dns_serve_req *req, struct dg_buf *ans,
              uint32_t *ttl, dns_serve_cb cb, void *arg, struct dns_serve_op **op, const char **why)
{
    *ttl = 0;
    *op = NULL;
    enum dns_query_verdict verdict = dns_query_check(req->q, req->len, why);
    if (verdict == DNS_QUERY_MALFORMED)
        return DNS_SERVE_MALFORMED;
    /* The query parses from here on: its OPT can be read, for the error answers too. */
    bool pad = want_padding(ctx, req->transport, req->q, req->len);
    size_t udp_max = 0;
    if (req->transport == DG_TR_DNS_UDP) {
        udp_max = dns_udp_payload_size(req->q, req->len);
        if (udp_max > ctx->cfg->dns_udp_max_size)
            udp_max = ctx->cfg->dns_udp_max_size;
    }
    /* Answered here, without the resolver: the check's own error answers, DDR (RFC 9462:
     * resolver.arpa and _dns.<server-name> are about this server and never forwarded: an
     * upstream would describe itself), RFC 8482 ANY. Error answers get ttl 0 (HTTP caches must
     * not keep them long). */
    int made = 1; /* 1: not answered here */
    switch (verdict) {
    case DNS_QUERY_OK:
    case DNS_QUERY_MALFORMED:
        if (ctx->ddr && ddr_classify_ep(req->q, req->len, ctx->ddr) != DDR_NOT_DDR) {
            made = ddr_answer(req->q, req->len, ctx->ddr, ans);
            *ttl = DDR_TTL;
        } else if ((made = apply_policy(ctx, req, ans, ttl)) != 1) {
            /* local data, a local zone or a blocklist answered (or no memory) */
        } else if (ctx->cfg->minimal_any && dns_qtype(req->q, req->len) == 255) {
            made = dns_make_any_answer(req->q, req->len, 3600, ans);
            *ttl = 3600;
        }
        break;
    case DNS_QUERY_FORMERR:
        made = error_answer(req, DNS_RCODE_FORMERR, ans);
        break;
    case DNS_QUERY_NOTIMP:
        made = error_answer(req, DNS_RCODE_NOTIMP, ans);
        break;
    case DNS_QUERY_REFUSED:
        made = error_answer(req, DNS_RCODE_REFUSED, ans);
        break;
    }
    if (made == 1) {
        struct resolver_waiter *w = NULL;
        /* The callback argument is set once something is pending: a cache hit allocates
         * nothing here. */
        int rc = resolver_resolve(ctx->resolver, req->q, req->len, ans, ttl, on_resolved, NULL, &w);
        if (rc == RESOLVER_PENDING) {
            struct dns_serve_op *o = calloc(1, sizeof(*o));
            if (!o) {
                resolver_cancel(w);
                return -ENOMEM;
            }
            *o = (struct dns_serve_op){.ctx = ctx,
                                       .w = w,
                                       .cb = cb,
                                       .arg = arg,
                                       .client = req->client,
                                       .transport = req->transport,
                                       .pad = pad,
                                       .udp_max = (uint16_t)udp_max};
            if (req->how) /* only with the query log on (doh_handler.c) */
                snprintf(o->how, sizeof(o->how), "%s", req->how);
            resolver_waiter_set_arg(w, o);
            *op = o;
            return DNS_SERVE_PENDING;
        }
        made = 0;
        if (rc != RESOLVER_ANSWERED) {
            /* Limits or memory in the resolver: a DNS failure, answered as DNS (RFC 8484
             * §4.2.1). */
            dg_buf_free(ans);
            *ttl = 0;
            made = error_answer(req, DNS_RCODE_SERVFAIL, ans);
        }
    }
    if (made != 0)
        return -ENOMEM;
    finish(ctx, ans, pad, udp_max, req->transport, req->client, req->how);
    return DNS_SERVE_ANSWERED;
}

int dns_serve_error(const struct handler_ctx *ctx, const struct dns_serve_req *req, int rcode,
                    bool tc, struct dg_buf *ans)
{
    /* no answer of ours echoes bytes that are no query */
    if (dns_query_check(req->q, req->len, NULL) == DNS_QUERY_MALFORMED)
        return DNS_SERVE_MALFORMED;
    if (error_answer(req, rcode, ans) != 0)
        return -ENOMEM;
    if (tc) {
        ans->data[2] |= DNS_F2_TC;
        dg_observe(ctx->obs, DG_EV_DNS_TRUNCATED, 0, 1);
    }
    bool pad = want_padding(ctx, req->transport, req->q, req->len);
    finish(ctx, ans, pad, 0, req->transport, req->client, req->how);
    return DNS_SERVE_ANSWERED;
}

enum dns_admit dns_serve_admit(const struct handler_ctx *ctx, const struct client_id *client,
                               enum dg_transport transport)
{
    bool plain = transport == DG_TR_DNS_UDP || transport == DG_TR_DNS_TCP;
    bool udp = transport == DG_TR_DNS_UDP;
    if (plain && !acl_allows_client(ctx->dns_acl, client)) {
        if (udp)
            dg_observe(ctx->obs, DG_EV_DNS_DROPPED, DG_DROP_SOURCE, 1);
        return udp ? DNS_ADMIT_DROP : DNS_ADMIT_REFUSED;
    }
    const struct admission_policy pol = {.acl = ctx->acl, .clients = ctx->clients};
    struct admission_verdict v = admission_check(&pol, client);
    if (v.outcome == ADMISSION_ALLOW)
        return DNS_ADMIT_OK;
    /* The ACL or the query rate: REFUSED says "not from you, not now" on every transport
     * (a UDP source that passed dns-allow is one we serve, so no reflection concern). */
    return DNS_ADMIT_REFUSED;
}
