#include "dohgate/doh_handler.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnsserve.h"
#include "dohgate/doh.h"
#include "dohgate/http.h"
#include "dohgate/util.h"

/* "GET HTTP/2": how the query came, for the query log. */
static void how_text(const struct http_exchange *ex, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s HTTP/%s", ex->req.method ? ex->req.method : "?",
             ex->req.version >= 20   ? "2"
             : ex->req.version == 10 ? "1.0"
                                     : "1.1");
}

static void respond_dns(struct http_exchange *ex, struct dg_buf *msg, uint32_t ttl)
{
    char cc[32] = "max-age=";
    dg_fmt_u64(cc + 8, ttl);
    const struct http_header hdrs[] = {
        {"content-type", DOH_CONTENT_TYPE},
        {"cache-control", cc},
    };
    /* On failure the exchange answers 503 (or resets) by itself. */
    (void)http_respond(ex, 200, hdrs, 2, msg);
}

/* The answer came (dnsserve padded, counted and logged it). Answering releases the exchange's
 * registration of the pending query. */
static void on_answer(void *arg, struct dg_buf *ans, uint32_t ttl)
{
    struct http_exchange *ex = arg;
    if (ans->len == 0)
        http_respond_text(ex, 503, "out of memory", NULL, 0);
    else
        respond_dns(ex, ans, ttl);
}

static void op_cancel(void *arg)
{
    dns_serve_cancel(arg);
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
    /* Who may ask, and how often, was decided before: the router admits the request first
     * (admission.h). */
    int st = doh_decode(&dr, &query, &why);
    if (st != 0) {
        const struct http_header allow = {"allow", DOH_ALLOW};
        http_respond_text(ex, st, why ? why : "bad request", &allow, st == 405 ? 1 : 0);
        goto done;
    }
    char how[32];
    how_text(ex, how, sizeof(how));
    const struct dns_serve_req req = {
        .q = query.data, .len = query.len, .client = r->client, .transport = DG_TR_DOH, .how = how};
    uint32_t ttl = 0;
    struct dns_serve_op *op = NULL;
    int rc = dns_serve(ex->ctx, &req, &ans, &ttl, on_answer, ex, &op, &why);
    if (rc == DNS_SERVE_PENDING)
        http_set_pending(ex, op_cancel, op);
    else if (rc == DNS_SERVE_ANSWERED)
        respond_dns(ex, &ans, ttl);
    else if (rc == DNS_SERVE_MALFORMED)
        http_respond_text(ex, 400, why ? why : "malformed DNS query", NULL, 0);
    else
        http_respond_text(ex, 503, "out of memory", NULL, 0);
done:
    dg_buf_free(&query);
    dg_buf_free(&ans);
}
