/* Routing by exact path: DoH endpoints go to the DNS pipeline (once admitted), everything else to
 * the site. */
#include "dohgate/acmechal.h"
#include "dohgate/admission.h"
#include "dohgate/config.h"
#include "dohgate/doh.h"
#include "dohgate/doh_handler.h"
#include "dohgate/http.h"
#include "dohgate/metrics.h"
#include "dohgate/policy.h"
#include "dohgate/router.h"
#include "dohgate/site.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* The JSON API's own path (Google's), beside the DoH paths. */
#define JSON_PATH "/resolve"

static bool is_json_path(const struct config *cfg, const char *path)
{
    char *const paths[] = {JSON_PATH};
    return cfg->json_api && doh_path_match(path, paths, 1);
}

/* A DoH path, or a DoH path with a client ID (/dns-query/ID, policy.h). */
static bool is_doh_path(const struct config *cfg, const char *path)
{
    const char *id;
    size_t n;
    return doh_path_match(path, cfg->doh_path, cfg->n_doh_path) ||
           doh_path_id(path, cfg->doh_path, cfg->n_doh_path, &id, &n);
}

size_t router_max_body(const struct handler_ctx *ctx, const char *path, bool https, bool metrics)
{
    const struct config *cfg = ctx->cfg;
    /* The metrics listener and the port-80 redirects read no body, and neither do static files
     * nor the landing page: a body there would only be memory held for nothing (issue 14);
     * nor does the JSON API (GET only). */
    if (metrics || !https || is_json_path(cfg, path))
        return 0;
    if (is_doh_path(cfg, path))
        return DOH_MAX_BODY;
    bool proxied = ctx->proxy && !(ctx->site && ctx->site->root.fd >= 0); /* as site_handle() */
    return proxied ? cfg->site_max_body : 0;
}

bool router_body_streams(const struct handler_ctx *ctx, const char *path, bool https, bool metrics)
{
    const struct config *cfg = ctx->cfg;
    if (metrics || !https || is_doh_path(cfg, path) || is_json_path(cfg, path))
        return false;
    return ctx->proxy && !(ctx->site && ctx->site->root.fd >= 0); /* as site_handle() */
}

int router_body_refusal(size_t max_body, const char *method)
{
    if (max_body == 0 && method && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return 405;
    return 413;
}

#define ACME_CHALLENGE_PREFIX "/.well-known/acme-challenge/"

/*
 * http-01 (RFC 8555 §8.3) on the port-80 listener: GET/HEAD of a token the built-in ACME client
 * has pending (acmechal.h) gets its key authorization. Unknown tokens go where they went before
 * the built-in client (acme-webroot's files, or the redirect) unless the built-in client is
 * configured and no webroot is: then a 404, which the CA reports as such, rather than a
 * redirect it would follow to the site. @return whether the request was answered here.
 */
static bool acme_http01(struct http_exchange *ex)
{
    const struct http_request *r = &ex->req;
    const size_t plen = sizeof(ACME_CHALLENGE_PREFIX) - 1;
    if (!r->path || !r->method || strncmp(r->path, ACME_CHALLENGE_PREFIX, plen) != 0 ||
        (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0))
        return false;
    char keyauth[640];
    size_t n = acmechal_pending() ? acmechal_http_get(r->path + plen, keyauth, sizeof(keyauth)) : 0;
    if (n > 0) {
        const struct http_header h = {"content-type", "application/octet-stream"};
        struct dg_buf body = {0};
        if (dg_buf_append(&body, keyauth, n) != 0) {
            http_respond_text(ex, 503, "out of memory", NULL, 0);
            return true;
        }
        http_respond(ex, 200, &h, 1, &body);
        dg_buf_free(&body);
        return true;
    }
    const struct config *cfg = ex->ctx->cfg;
    bool webroot = ex->ctx->site && ex->ctx->site->acme.fd >= 0;
    if (cfg->n_acme_domain > 0 && !webroot) {
        http_respond_text(ex, 404, "no such ACME challenge", NULL, 0);
        return true;
    }
    return false;
}

/* Who may ask, and how often, before any decoding work: the admission verdict in HTTP terms.
 * @return whether the request goes on to its handler (else it was answered here). */
static bool admitted(struct http_exchange *ex)
{
    const struct admission_policy policy = {.acl = ex->ctx->acl, .clients = ex->ctx->clients};
    struct admission_verdict v = admission_check(&policy, ex->req.client);
    switch (v.outcome) {
    case ADMISSION_ALLOW:
        return true;
    case ADMISSION_REFUSE:
        http_respond_text(ex, 403, admission_reason_text(v.reason), NULL, 0);
        return false;
    case ADMISSION_RATE_LIMITED: {
        char secs[16];
        snprintf(secs, sizeof(secs), "%u", v.wait_s);
        const struct http_header retry = {"retry-after", secs};
        http_respond_text(ex, 429, "too many queries from your address: slow down", &retry, 1);
        return false;
    }
    }
    return true;
}

/* Whether a query parameter named @p name (exactly, as written) is in @p path's query string. */
static bool has_param(const char *path, const char *name)
{
    const char *q = strchr(path, '?');
    size_t n = strlen(name);
    for (const char *p = q; p; p = strchr(p + 1, '&')) {
        if (strncmp(p + 1, name, n) == 0 && (p[1 + n] == '=' || p[1 + n] == '&' || !p[1 + n]))
            return true;
    }
    return false;
}

/*
 * A request on a DoH path in the JSON form: the client says so (accept: application/dns-json,
 * as Cloudflare requires), or it is a GET with `name=` and no `dns=` (which RFC 8484 would
 * refuse with 400 anyway). Everything else stays RFC 8484.
 */
static bool wants_json(const struct config *cfg, const struct http_request *r)
{
    if (!cfg->json_api || !r->path)
        return false;
    const char *accept = http_request_header(r, "accept");
    if (accept && strstr(accept, "application/dns-json"))
        return true;
    return r->method && strcmp(r->method, "GET") == 0 && has_param(r->path, "name") &&
           !has_param(r->path, "dns");
}

void router_dispatch(struct http_exchange *ex)
{
    const struct config *cfg = ex->ctx->cfg;
    if (ex->req.metrics) {
        metrics_handle(ex);
        return;
    }
    if (!ex->req.https) {
        /* The plain-HTTP listener never answers DNS: queries in clear text are what DoH is
         * for avoiding, so /dns-query redirects like everything else. Only ACME's http-01
         * tokens are answered here (not on the TLS listeners: the CA asks on port 80). */
        if (!acme_http01(ex))
            site_handle_plain(ex);
        return;
    }
    const char *id = NULL;
    size_t id_len = 0;
    bool doh = doh_path_match(ex->req.path, cfg->doh_path, cfg->n_doh_path) ||
               doh_path_id(ex->req.path, cfg->doh_path, cfg->n_doh_path, &id, &id_len);
    if (doh) {
        /* Only DNS is admission-checked: with acl-scope doh the website stays public. */
        if (!admitted(ex))
            return;
        /* A client ID must name a policy-client: a typo in a device's DoH URL shows at once
         * instead of silently getting the default policy. Checked after admission, so that a
         * refused client cannot probe which IDs exist. */
        const struct policy *p = ex->ctx->policy && id ? policy_view_get(ex->ctx->policy) : NULL;
        if (id && (!p || policy_find_id(p, id, id_len) < 0)) {
            http_respond_text(ex, 404, "no such client ID", NULL, 0);
            return;
        }
        if (wants_json(cfg, &ex->req))
            doh_handle_json(ex);
        else
            doh_handle(ex);
        return;
    }
    if (is_json_path(cfg, ex->req.path)) {
        if (admitted(ex))
            doh_handle_json(ex);
        return;
    }
    site_handle(ex);
}
