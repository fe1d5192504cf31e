/*
 * doh.c: RFC 8484 request decoding (see doh.h). Pure string and byte work on what the transport
 * hands over; the request's own buffers are never modified (no strtok), so the transport may
 * keep using them.
 */
#include "dohgate/doh.h"

#include <assert.h>
#include <stdbool.h>
#include <string.h>

static int refuse(const char **why, int status, const char *text)
{
    if (why)
        *why = text;
    return status;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
}

/*
 * Media types compare case-insensitively (RFC 9110 §8.3.1) and may carry parameters after ';'.
 * Written out instead of strncasecmp() so that the process locale cannot change the result.
 */
static bool content_type_ok(const char *ct)
{
    static const char want[] = DOH_CONTENT_TYPE;
    if (!ct)
        return false;
    while (is_ows(*ct))
        ct++;
    for (size_t i = 0; i < sizeof(want) - 1; i++, ct++) {
        if (ascii_lower(*ct) != want[i])
            return false;
    }
    while (is_ows(*ct))
        ct++;
    return *ct == '\0' || *ct == ';';
}

/*
 * Find the value of the query parameter named exactly "dns".
 * @return 1 found (value may be empty), 0 absent, -1 given more than once.
 */
static int find_dns_param(const char *path, const char **val, size_t *vlen)
{
    const char *p = strchr(path, '?');
    int found = 0;
    if (!p)
        return 0;
    p++;
    for (;;) {
        size_t seg = strcspn(p, "&");
        const char *eq = memchr(p, '=', seg);
        size_t nlen = eq ? (size_t)(eq - p) : seg;
        if (nlen == 3 && memcmp(p, "dns", 3) == 0) {
            if (found)
                return -1;
            found = 1;
            *val = eq ? eq + 1 : p + seg;
            *vlen = eq ? seg - nlen - 1 : 0;
        }
        if (p[seg] == '\0')
            break;
        p += seg + 1;
    }
    return found;
}

static int decode_get(const struct doh_request *req, struct dg_buf *out, const char **why)
{
    if (!req->path)
        return refuse(why, 400, "missing dns parameter");
    if (strnlen(req->path, DOH_MAX_URI + 1) > DOH_MAX_URI)
        return refuse(why, 414, "URI too long");

    const char *val = NULL;
    size_t vlen = 0;
    int found = find_dns_param(req->path, &val, &vlen);
    if (found == 0)
        return refuse(why, 400, "missing dns parameter");
    if (found < 0)
        return refuse(why, 400, "dns parameter given more than once");
    if (vlen == 0)
        return refuse(why, 400, "empty dns parameter");

    if (dg_buf_reserve(out, dg_b64url_decoded_max(vlen)) != 0)
        return refuse(why, 500, "out of memory");
    long n = dg_b64url_decode(val, vlen, out->data + out->len, out->cap - out->len);
    if (n < 0)
        return refuse(why, 400, "dns parameter is not base64url");
    if (n == 0)
        return refuse(why, 400, "empty DNS message");
    out->len += (size_t)n;
    return 0;
}

static int decode_post(const struct doh_request *req, struct dg_buf *out, const char **why)
{
    if (!content_type_ok(req->content_type))
        return refuse(why, 415, "content-type must be " DOH_CONTENT_TYPE);
    if (req->body_len > DOH_MAX_BODY)
        return refuse(why, 413, "request body too large");
    if (req->body_len == 0 || !req->body)
        return refuse(why, 400, "empty request body");
    if (dg_buf_append(out, req->body, req->body_len) != 0)
        return refuse(why, 500, "out of memory");
    return 0;
}

int doh_decode(const struct doh_request *req, struct dg_buf *out, const char **why)
{
    assert(req && out);
    assert(out->len == 0);
    /* Methods are case-sensitive (RFC 9110 §9.1). HEAD is refused: a DoH answer without its
     * body is useless, and answering it would mean resolving for nothing. */
    if (req->method && strcmp(req->method, "GET") == 0)
        return decode_get(req, out, why);
    if (req->method && strcmp(req->method, "POST") == 0)
        return decode_post(req, out, why);
    return refuse(why, 405, "method not allowed");
}

int doh_path_match(const char *path, char *const *paths, size_t n)
{
    if (!path || !paths)
        return 0;
    size_t plen = strcspn(path, "?");
    for (size_t i = 0; i < n; i++) {
        if (paths[i] && strlen(paths[i]) == plen && memcmp(paths[i], path, plen) == 0)
            return 1;
    }
    return 0;
}

bool doh_id_valid(const char *s, size_t n)
{
    if (n == 0 || n > DOH_ID_MAX)
        return false;
    for (size_t j = 0; j < n; j++) {
        char c = s[j];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

int doh_path_id(const char *path, char *const *paths, size_t n, const char **id, size_t *id_len)
{
    if (!path || !paths)
        return 0;
    size_t plen = strcspn(path, "?");
    for (size_t i = 0; i < n; i++) {
        size_t l = paths[i] ? strlen(paths[i]) : 0;
        if (!l || plen < l + 2 || memcmp(paths[i], path, l) != 0 || path[l] != '/')
            continue;
        size_t k = plen - l - 1;
        if (doh_id_valid(path + l + 1, k)) {
            *id = path + l + 1;
            *id_len = k;
            return 1;
        }
    }
    return 0;
}
