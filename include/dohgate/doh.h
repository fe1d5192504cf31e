/**
 * @file doh.h
 * RFC 8484 request decoding and response header values, as pure functions. The transport (h2,
 * h1) hands over the request's method, :path (with query string), content-type and body; this
 * module returns the DNS message or the HTTP status that refuses the request. No I/O.
 */
#ifndef DOHGATE_DOH_H
#define DOHGATE_DOH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

#define DOH_MAX_URI      4096  /**< longer :path → 414 */
#define DOH_MAX_BODY     65535 /**< longer POST body → 413 */
#define DOH_CONTENT_TYPE "application/dns-message"

struct doh_request {
    const char *method;       /**< "GET", "POST", ... (NUL-terminated) */
    const char *path;         /**< full :path incl. query string (NUL-terminated) */
    const char *content_type; /**< may be NULL */
    const uint8_t *body;      /**< POST body, may be NULL */
    size_t body_len;
};

/**
 * Decode a DoH request whose path already matched a DoH endpoint.
 *   GET  path?dns=<base64url, no padding> (other parameters ignored; `dns` given twice → 400)
 *   POST content-type application/dns-message (parameters after ';' allowed), body = message
 *   HEAD → 405 too (no DNS answer without a body).
 * On success the message is appended to @p out (which must be empty).
 * @param why  receives a one-line static reason for a refusal (HTTP body text).
 * @return 0, or the HTTP status: 400 (missing/undecodable dns, empty body), 405 (method),
 *         413 (body > 65535), 414 (path > DOH_MAX_URI), 415 (POST content-type), 500 (OOM).
 *         The DNS content itself is not checked here (see dns_query_check()).
 */
int doh_decode(const struct doh_request *req, struct dg_buf *out, const char **why);

/** "GET, POST": the Allow header value sent with 405. */
#define DOH_ALLOW "GET, POST"

/** Does the path (query string ignored) equal one of the configured DoH paths? */
int doh_path_match(const char *path, char *const *paths, size_t n);

#define DOH_ID_MAX 63 /**< longest client ID in a DoH path */
/**
 * Is the path (query string ignored) one of the DoH paths followed by "/ID", a client ID of 1..63
 * letters, digits, '-' or '_' (as AdGuard Home and NextDNS put a client's identity in its DoH
 * URL: https://dns.example/dns-query/kids-tablet)? @return 1 with the ID at @p id (not
 * NUL-terminated, inside @p path) and its length, else 0.
 */
int doh_path_id(const char *path, char *const *paths, size_t n, const char **id, size_t *id_len);

/** Is [@p s, @p s + @p n) a client ID: 1..DOH_ID_MAX letters, digits, '-' or '_'? */
bool doh_id_valid(const char *s, size_t n);
#endif
