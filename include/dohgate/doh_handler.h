/**
 * @file doh_handler.h
 * The DoH request handler: doh_decode() → dns_query_check() → resolver (cache, coalescing,
 * upstream) → answer with
 * content-type application/dns-message and cache-control max-age = smallest TTL. DNS failures are
 * DNS answers with HTTP 200 (SERVFAIL when every upstream try failed, RFC 8484 §4.2.1);
 * HTTP errors only for HTTP problems. With pad-responses, the answer to a query that carries an
 * EDNS Padding option is padded to 468-byte blocks (RFC 8467), whatever made it (cache, upstream,
 * stale data, a synthesized error); the resolver never sees padded answers.
 *
 * Lifetime: while the resolver works, the handler holds a small op object registered on the
 * exchange (http_set_pending). If the exchange dies first, the op cancels its resolver waiter
 * synchronously and frees itself; if the answer comes first, the op unregisters before
 * answering. Cache hits are answered synchronously, with no op at all.
 */
#ifndef DOHGATE_DOH_HANDLER_H
#define DOHGATE_DOH_HANDLER_H

struct http_exchange;

/** Handle a request whose path is a DoH endpoint. May answer synchronously (errors). */
void doh_handle(struct http_exchange *ex);

/**
 * The JSON API (Google's and Cloudflare's application/dns-json; dnsjson.h): GET with
 * `name=&type=&do=&cd=&ct=`, answered as JSON (or wire form for ct=application/dns-message) with
 * cache-control as for wire answers and `access-control-allow-origin: *`; a bad parameter gets
 * 400 with a one-line reason, another method 405. Same lifetime rules as doh_handle().
 */
void doh_handle_json(struct http_exchange *ex);

#endif
