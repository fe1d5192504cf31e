/**
 * @file router.h
 * Picks the handler of a complete request by path: the configured DoH path(s) (exact match,
 * query string ignored) go to doh_handler, everything else to the site (site.h). Requests from
 * the plain-HTTP listener all go to site_handle_plain().
 *
 * DoH requests pass admission first (admission.h, with the request's client_id): a refused
 * client gets 403 with the refusal's reason, a rate-limited one 429 with Retry-After, and the
 * handler never sees them. Site pages and the metrics listener are not admission-checked.
 */
#ifndef DOHGATE_ROUTER_H
#define DOHGATE_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

struct http_exchange;

/**
 * Run the handler of @p ex. Never fails: every outcome is a response, now or later (then the
 * handler registered a pending operation on the exchange).
 */
void router_dispatch(struct http_exchange *ex);

struct handler_ctx;
/**
 * The largest request body the handler of @p path accepts (413 above): 65535 on a DoH path,
 * site-max-body when the site is a reverse proxy (site-backend without site-root), and 0
 * everywhere else: static files, the landing page, the plain-HTTP listener (@p https false) and
 * the metrics listener (@p metrics) take no body at all.
 */
size_t router_max_body(const struct handler_ctx *ctx, const char *path, bool https, bool metrics);

/**
 * Whether the handler of @p path takes its request body streamed (http.h, req.body_stream): the
 * reverse proxy does (site paths in site-backend mode), so a body there is dispatched at the
 * end of the head and flows to the backend as it comes. DoH bodies stay buffered whole.
 */
bool router_body_streams(const struct handler_ctx *ctx, const char *path, bool https, bool metrics);

/** The Allow value of a 405 from router_body_refusal(): what the routes without a body take. */
#define ROUTER_NO_BODY_ALLOW "GET, HEAD"

/**
 * The status for a request body over its route's limit @p max_body (router_max_body()): 405
 * (with allow: ROUTER_NO_BODY_ALLOW) when the route takes no body and @p method is not GET or
 * HEAD, since such a route would refuse the method anyway; else 413. Transports answer it at
 * the request head when the length is announced, else at the first byte past the limit.
 */
int router_body_refusal(size_t max_body, const char *method);

#endif
