#include "dohgate/doh_handler.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnsjson.h"
#include "dohgate/config.h"
#include "dohgate/dnsserve.h"
#include "dohgate/doh.h"
#include "dohgate/http.h"
#include "dohgate/util.h"

/* "GET HTTP/2", "JSON HTTP/1.1": how the query came, for the query log; NULL when the query log
 * is off, so that no query pays for a text nobody reads. */
static const char *how_text(const struct http_exchange *ex, const char *what, char *out,
                            size_t outlen)
{
    if (!ex->ctx->cfg->query_log)
        return NULL;
    snprintf(out, outlen, "%s HTTP/%s", what ? what : "?",
             ex->req.version >= 20   ? "2"
             : ex->req.version == 10 ? "1.0"
                                     : "1.1");
    return out;
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
    struct dns_serve_req req = {.q = query.data,
                                .len = query.len,
                                .client = r->client,
                                .transport = DG_TR_DOH,
                                .how = how_text(ex, ex->req.method, how, sizeof(how))};
    (void)doh_path_id(r->path, ex->ctx->cfg->doh_path, ex->ctx->cfg->n_doh_path, &req.policy_id,
                      &req.policy_id_len);
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

/* ---- the JSON API --------------------------------------------------------------------------- */

/* A JSON query waiting for its answer: what the answer must look like. Owned by itself: freed
 * in json_on_answer() or json_cancel(), whichever runs first. */
struct json_op {
    struct http_exchange *ex;
    struct dns_serve_op *op;
    bool wire;         /* ct=application/dns-message: the answer as it is */
    const char *ctype; /* static: one of DNSJSON_CT_* */
};

/* Answer in the form the client asked for. CORS: any page may read it (the JSON API is meant
 * for scripts in browsers; it carries nothing a cross-site read could steal: no cookies, no
 * credentials, answers anyone may ask for). */
static void json_respond(struct http_exchange *ex, struct dg_buf *ans, uint32_t ttl, bool wire,
                         const char *ctype)
{
    char cc[32] = "max-age=";
    dg_fmt_u64(cc + 8, ttl);
    struct dg_buf json = {0};
    if (!wire) {
        int rc = dnsjson_format(ans->data, ans->len, &json);
        if (rc != 0) {
            dg_buf_free(&json);
            http_respond_text(
                ex, rc == -ENOMEM ? 503 : 502,
                rc == -ENOMEM ? "out of memory" : "the answer cannot be shown as JSON", NULL, 0);
            return;
        }
    }
    const struct http_header hdrs[] = {
        {"content-type", wire ? DOH_CONTENT_TYPE : ctype},
        {"cache-control", cc},
        {"access-control-allow-origin", "*"},
    };
    (void)http_respond(ex, 200, hdrs, 3, wire ? ans : &json);
    dg_buf_free(&json);
}

static void json_on_answer(void *arg, struct dg_buf *ans, uint32_t ttl)
{
    struct json_op *jo = arg;
    struct http_exchange *ex = jo->ex;
    bool wire = jo->wire;
    const char *ctype = jo->ctype;
    free(jo); /* answering releases the exchange's registration of it */
    if (ans->len == 0)
        http_respond_text(ex, 503, "out of memory", NULL, 0);
    else
        json_respond(ex, ans, ttl, wire, ctype);
}

static void json_cancel(void *arg)
{
    struct json_op *jo = arg;
    dns_serve_cancel(jo->op);
    free(jo);
}

void doh_handle_json(struct http_exchange *ex)
{
    const struct http_request *r = &ex->req;
    if (!r->method || (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)) {
        const struct http_header allow = {"allow", "GET, HEAD"};
        http_respond_text(ex, 405, "the JSON API takes GET", &allow, 1);
        return;
    }
    const char *q = r->path ? strchr(r->path, '?') : NULL;
    const char *qs = q ? q + 1 : "";
    struct dnsjson_opts o;
    const char *why = NULL;
    struct dg_buf query = {0}, ans = {0};
    int st = dnsjson_query_from_params(qs, strlen(qs), &query, &o, &why);
    if (st != 0) {
        if (st < 0)
            http_respond_text(ex, 503, "out of memory", NULL, 0);
        else
            http_respond_text(ex, 400, why ? why : "bad request", NULL, 0);
        goto done;
    }
    char how[40];
    struct dns_serve_req req = {.q = query.data,
                                .len = query.len,
                                .client = r->client,
                                .transport = DG_TR_JSON,
                                .how = how_text(ex, "JSON", how, sizeof(how))};
    (void)doh_path_id(r->path, ex->ctx->cfg->doh_path, ex->ctx->cfg->n_doh_path, &req.policy_id,
                      &req.policy_id_len);
    uint32_t ttl = 0;
    struct dns_serve_op *op = NULL;
    int rc = dns_serve(ex->ctx, &req, &ans, &ttl, json_on_answer, NULL, &op, &why);
    if (rc == DNS_SERVE_PENDING) {
        /* what the answer must look like, kept only for a query that waits */
        struct json_op *jo = calloc(1, sizeof(*jo));
        if (!jo) {
            dns_serve_cancel(op);
            http_respond_text(ex, 503, "out of memory", NULL, 0);
            goto done;
        }
        *jo = (struct json_op){.ex = ex, .op = op, .wire = o.wire_answer, .ctype = o.content_type};
        dns_serve_set_arg(op, jo);
        http_set_pending(ex, json_cancel, jo);
    } else if (rc == DNS_SERVE_ANSWERED) {
        json_respond(ex, &ans, ttl, o.wire_answer, o.content_type);
    } else if (rc == DNS_SERVE_MALFORMED) {
        /* a query built here always parses: kept for completeness */
        http_respond_text(ex, 400, why ? why : "malformed DNS query", NULL, 0);
    } else {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
    }
done:
    dg_buf_free(&query);
    dg_buf_free(&ans);
}
