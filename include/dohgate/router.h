/**
 * @file router.h
 * Picks the handler of a complete request by path: the configured DoH path(s) (exact match,
 * query string ignored) go to doh_handler, everything else to the site (404 for now).
 */
#ifndef DOHGATE_ROUTER_H
#define DOHGATE_ROUTER_H

struct http_exchange;

/**
 * Run the handler of @p ex. Never fails: every outcome is a response, now or later (then the
 * handler registered a pending operation on the exchange).
 */
void router_dispatch(struct http_exchange *ex);

#endif
