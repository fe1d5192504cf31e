#include "dohgate/doh_handler.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/doh.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"
#include "dohgate/resolver.h"
#include "dohgate/util.h"

/* A query waiting for the resolver. Owned by itself: freed either in on_resolved() or in
 * op_cancel(), never both (whichever runs first unregisters the other path). */
struct doh_op {
    struct http_exchange *ex;
    struct resolver_waiter *w;
    bool pad; /* pad the answer (want_padding() of the query) */
};

/*
 * Pad the answer to this query? RFC 8467 §4.1 and Unbound's rule: when pad-responses is on and
 * the client padded its query, answers go out in 468-byte blocks; a client that did not pad
 * gets none (it did not ask, and it may not expect the option).
 */
static bool want_padding(const struct http_exchange *ex, const struct dg_buf *query)
{
    return ex->ctx->cfg->pad_responses && dns_has_padding(query->data, query->len);
}

/*
 * Pad @p msg in place for a client that padded its query. Every answer to a DoH client goes
 * through here (cache hits, upstream answers, stale answers, the SERVFAIL/FORMERR/NOTIMP/REFUSED
 * and ANY answers made here or in the resolver), always after the resolver made it this
 * client's (ID, name spelling): nothing padded is ever stored. An answer without OPT stays
 * unpadded (dns_pad() invents no EDNS); so does one that cannot get the room (OOM): padding is
 * worth less than the answer.
 */
static void pad_answer(struct dg_buf *msg)
{
    /* Block-length padding adds at most an option header and block - 1 zero bytes. */
    if (dg_buf_reserve(msg, 4 + DNS_PAD_BLOCK_RESPONSE - 1) != 0)
        return;
    (void)dns_pad(msg->data, &msg->len, msg->cap, DNS_PAD_BLOCK_RESPONSE);
}

/* The client as the query log shows it: full, truncated (IPv4 /24, IPv6 /48, as Unbound's
 * and PowerDNS's anonymizing options do), or not at all. */
static void log_client(const struct config *cfg, const struct client_id *id, char *out,
                       size_t outlen)
{
    if (cfg->query_log_client == QLOG_CLIENT_NONE || !client_id_known(id))
        snprintf(out, outlen, "-");
    else if (cfg->query_log_client == QLOG_CLIENT_FULL)
        snprintf(out, outlen, "%s", id->text);
    else
        client_id_text_truncated(id, out, outlen); /* from the binary address: no parse */
}

static void log_query(const struct http_exchange *ex, const struct dg_buf *msg)
{
    char client[64], what[512];
    log_client(ex->ctx->cfg, ex->req.client, client, sizeof(client));
    dns_summary(msg->data, msg->len, what, sizeof(what));
    dg_log_query("query: %s %s %s HTTP/%s", client, what, ex->req.method,
                 ex->req.version >= 20   ? "2"
                 : ex->req.version == 10 ? "1.0"
                                         : "1.1");
}

static void respond_dns(struct http_exchange *ex, struct dg_buf *msg, uint32_t ttl, bool pad)
{
    if (pad)
        pad_answer(msg);
    char cc[32] = "max-age=";
    dg_fmt_u64(cc + 8, ttl);
    const struct http_header hdrs[] = {
        {"content-type", DOH_CONTENT_TYPE},
        {"cache-control", cc},
    };
    /* taken now: on success the body moves into the exchange */
    const struct dg_observer *obs = ex->ctx->obs;
    int rcode = msg->len >= 4 ? msg->data[3] & 0x0f : -1;
    if (ex->ctx->cfg->query_log)
        log_query(ex, msg);
    /* On failure the exchange answers 503 (or resets) by itself: no DNS answer was sent. */
    if (http_respond(ex, 200, hdrs, 2, msg) == 0 && rcode >= 0)
        dg_observe(obs, DG_EV_DNS_ANSWER, (unsigned)rcode, 0);
}

static void respond_dns_error(struct http_exchange *ex, const uint8_t *q, size_t len, int rcode,
                              bool pad)
{
    struct dg_buf ans = {0};
    if (dns_make_error_answer(q, len, rcode, &ans) != 0) {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    /* Error answers must not be cached by HTTP caches for long. */
    respond_dns(ex, &ans, 0, pad);
    dg_buf_free(&ans);
}

static void on_resolved(void *arg, const uint8_t *ans, size_t len, uint32_t ttl)
{
    struct doh_op *op = arg;
    struct http_exchange *ex = op->ex;
    bool pad = op->pad;
    /* Answering releases the exchange's registration of @p op. */
    free(op);
    struct dg_buf msg = {0};
    if (dg_buf_append(&msg, ans, len) == 0)
        respond_dns(ex, &msg, ttl, pad);
    else
        http_respond_text(ex, 503, "out of memory", NULL, 0);
    dg_buf_free(&msg);
}

static void op_cancel(void *arg)
{
    struct doh_op *op = arg;
    resolver_cancel(op->w);
    free(op);
}

void doh_handle(struct http_exchange *ex)
{
    const struct http_request *r = &ex->req;
    const struct doh_request dr = {
        .method = r->method,
        .path = r->path,
        .content_type = r->content_type,
        .body = r->body,
        .body_len = r->body_len,
    };
    const char *why = NULL;
    struct dg_buf query = {0}, ans = {0};
    struct doh_op *op = NULL;
    /* Who may ask, and how often, was decided before: the router admits the request first
     * (admission.h). */
    int st = doh_decode(&dr, &query, &why);
    if (st != 0) {
        const struct http_header allow = {"allow", DOH_ALLOW};
        http_respond_text(ex, st, why ? why : "bad request", &allow, st == 405 ? 1 : 0);
        goto done;
    }
    enum dns_query_verdict verdict = dns_query_check(query.data, query.len, &why);
    if (verdict == DNS_QUERY_MALFORMED) {
        http_respond_text(ex, 400, why ? why : "malformed DNS query", NULL, 0);
        goto done;
    }
    /* The query parses from here on: its OPT can be read, for the error answers too. */
    bool pad = want_padding(ex, &query);
    switch (verdict) {
    case DNS_QUERY_OK:
    case DNS_QUERY_MALFORMED:
        break;
    case DNS_QUERY_FORMERR:
        respond_dns_error(ex, query.data, query.len, DNS_RCODE_FORMERR, pad);
        goto done;
    case DNS_QUERY_NOTIMP:
        respond_dns_error(ex, query.data, query.len, DNS_RCODE_NOTIMP, pad);
        goto done;
    case DNS_QUERY_REFUSED:
        respond_dns_error(ex, query.data, query.len, DNS_RCODE_REFUSED, pad);
        goto done;
    }
    if (ex->ctx->cfg->minimal_any && dns_qtype(query.data, query.len) == 255) {
        if (dns_make_any_answer(query.data, query.len, 3600, &ans) == 0)
            respond_dns(ex, &ans, 3600, pad);
        else
            http_respond_text(ex, 503, "out of memory", NULL, 0);
        goto done;
    }
    op = calloc(1, sizeof(*op));
    if (!op) {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        goto done;
    }
    op->pad = pad;
    uint32_t ttl = 0;
    int rc = resolver_resolve(ex->ctx->resolver, query.data, query.len, &ans, &ttl, on_resolved, op,
                              &op->w);
    if (rc == RESOLVER_PENDING) {
        op->ex = ex;
        http_set_pending(ex, op_cancel, op);
        op = NULL;
    } else if (rc == RESOLVER_ANSWERED) {
        respond_dns(ex, &ans, ttl, pad);
    } else {
        /* Limits or memory: a DNS failure, answered as DNS (RFC 8484 §4.2.1). */
        respond_dns_error(ex, query.data, query.len, DNS_RCODE_SERVFAIL, pad);
    }
done:
    free(op);
    dg_buf_free(&query);
    dg_buf_free(&ans);
}
