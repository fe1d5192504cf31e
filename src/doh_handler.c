#include "dohgate/doh_handler.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "dohgate/dns.h"
#include "dohgate/doh.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/upstream.h"

/* One forwarded query. Owned by itself: freed either in on_answer() or in op_cancel(), never
 * both (whichever runs first unregisters the other path). */
struct doh_op {
    struct http_exchange *ex;
    struct upstream_query *uq;
    struct dg_buf query; /* kept to synthesize SERVFAIL with the client's ID and question */
};

static void respond_dns(struct http_exchange *ex, struct dg_buf *msg, long ttl)
{
    char cc[32];
    if (ttl < 0)
        ttl = 0;
    snprintf(cc, sizeof(cc), "max-age=%ld", ttl);
    const struct http_header hdrs[] = {
        {"content-type", DOH_CONTENT_TYPE},
        {"cache-control", cc},
    };
    if (http_respond(ex, 200, hdrs, 2, msg) != 0)
        http_respond_text(ex, 503, "out of memory", NULL, 0);
}

static void respond_dns_error(struct http_exchange *ex, const uint8_t *q, size_t len, int rcode)
{
    struct dg_buf ans = {0};
    if (dns_make_error_answer(q, len, rcode, &ans) != 0) {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    /* Error answers must not be cached by HTTP caches for long. */
    respond_dns(ex, &ans, 0);
    dg_buf_free(&ans);
}

static void op_free(struct doh_op *op)
{
    dg_buf_free(&op->query);
    free(op);
}

static void on_answer(void *arg, int status, const uint8_t *ans, size_t len)
{
    struct doh_op *op = arg;
    struct http_exchange *ex = op->ex;
    /* Detach first: answering may end the exchange. */
    http_clear_pending(ex);
    if (status == 0) {
        struct dg_buf msg = {0};
        if (dg_buf_append(&msg, ans, len) == 0)
            respond_dns(ex, &msg, dns_answer_cache_ttl(ans, len));
        else
            http_respond_text(ex, 503, "out of memory", NULL, 0);
        dg_buf_free(&msg);
    } else {
        log_debug("upstream query failed: %d", status);
        respond_dns_error(ex, op->query.data, op->query.len, DNS_RCODE_SERVFAIL);
    }
    op_free(op);
}

static void op_cancel(void *arg)
{
    struct doh_op *op = arg;
    upstream_query_cancel(op->uq);
    op_free(op);
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
    struct doh_op *op = calloc(1, sizeof(*op));
    if (!op) {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    int st = doh_decode(&dr, &op->query, &why);
    if (st != 0) {
        const struct http_header allow = {"allow", DOH_ALLOW};
        http_respond_text(ex, st, why ? why : "bad request", &allow, st == 405 ? 1 : 0);
        goto done;
    }
    switch (dns_query_check(op->query.data, op->query.len, &why)) {
    case DNS_QUERY_OK:
        break;
    case DNS_QUERY_MALFORMED:
        http_respond_text(ex, 400, why ? why : "malformed DNS query", NULL, 0);
        goto done;
    case DNS_QUERY_FORMERR:
        respond_dns_error(ex, op->query.data, op->query.len, DNS_RCODE_FORMERR);
        goto done;
    case DNS_QUERY_NOTIMP:
        respond_dns_error(ex, op->query.data, op->query.len, DNS_RCODE_NOTIMP);
        goto done;
    case DNS_QUERY_REFUSED:
        respond_dns_error(ex, op->query.data, op->query.len, DNS_RCODE_REFUSED);
        goto done;
    }
    op->ex = ex;
    op->uq = upstream_query_start(ex->ctx->upstream, op->query.data, op->query.len, on_answer, op);
    if (!op->uq) {
        respond_dns_error(ex, op->query.data, op->query.len, DNS_RCODE_SERVFAIL);
        goto done;
    }
    http_set_pending(ex, op_cancel, op);
    return;
done:
    op_free(op);
}
