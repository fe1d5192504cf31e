/*
 * libFuzzer target: a DoH request as the transport would hand it over, through doh_decode(),
 * then, for the requests that decode, the DNS checks the handler runs next.
 *
 * Input layout: byte 0 picks the method (low 3 bits) and whether a content-type is present
 * (bit 7 clear); then path '\n' content-type '\n' body. A missing '\n' leaves the later parts
 * empty. Also checks invariants the rest of the server relies on.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/doh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *dup_part(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* Split off the part up to the next '\n' (or the end). */
static char *next_part(const uint8_t **p, size_t *left)
{
    const uint8_t *nl = memchr(*p, '\n', *left);
    size_t n = nl ? (size_t)(nl - *p) : *left;
    char *s = dup_part(*p, n);
    *p += nl ? n + 1 : n;
    *left -= nl ? n + 1 : n;
    return s;
}

static void check_dns(const uint8_t *q, size_t len)
{
    const char *why = NULL;
    enum dns_query_verdict v = dns_query_check(q, len, &why);
    if (v == DNS_QUERY_MALFORMED && (!why || !*why))
        abort();
    size_t qend = dns_question_end(q, len);
    if (v != DNS_QUERY_MALFORMED && qend == 0)
        abort(); /* every accepted query has a question the cache can key on */

    static const int rcodes[] = {DNS_RCODE_SERVFAIL, DNS_RCODE_FORMERR, DNS_RCODE_NOTIMP,
                                 DNS_RCODE_REFUSED};
    int rcode = rcodes[v == DNS_QUERY_OK ? 0 : (int)v % 4];
    struct dg_buf out = {0};
    int rc = dns_make_error_answer(q, len, rcode, &out);
    if (len < DNS_HEADER_LEN) {
        if (rc != -EINVAL || out.len != 0)
            abort();
        return;
    }
    if (rc != 0)
        abort();
    if (out.len < DNS_HEADER_LEN || memcmp(out.data, q, 2) != 0 ||
        dns_rcode(out.data, out.len) != rcode || dns_is_truncated(out.data, out.len))
        abort();
    /* the answer we synthesize must pass our own upstream-answer check */
    if (qend && !dns_answer_matches(q, len, out.data, out.len))
        abort();
    /* an error answer carries no TTL (SERVFAIL: cache-servfail-ttl, kept that long) */
    static const struct dnswire_ttl_policy pol = {0, 86400, 3600, 30, 5};
    struct dnswire_answer_info info;
    uint32_t life = dnswire_answer_lifetime(out.data, out.len, DNSWIRE_CHECK, &pol, &info);
    if (rcode == DNS_RCODE_SERVFAIL ? (info.kind != DNSWIRE_SERVFAIL || life != 5)
                                    : (info.kind != DNSWIRE_UNCACHEABLE || life != 0))
        abort();
    dg_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const methods[] = {"GET",     "POST", "HEAD",   "PUT",
                                          "OPTIONS", "get",  "DELETE", ""};
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *p = data + 1;
    size_t left = size - 1;
    char *path = next_part(&p, &left);
    char *ct = next_part(&p, &left);

    struct doh_request req = {
        .method = methods[sel & 7],
        .path = path,
        .content_type = (sel & 0x80) ? NULL : ct,
        .body = left ? p : NULL,
        .body_len = left,
    };
    struct dg_buf out = {0};
    const char *why = NULL;
    int status = doh_decode(&req, &out, &why);
    if (status == 0) {
        if (out.len == 0 || out.len > DNS_MAX_MSG)
            abort();
        check_dns(out.data, out.len);
    } else {
        if (!why || out.len != 0)
            abort();
        if (status != 400 && status != 405 && status != 413 && status != 414 && status != 415 &&
            status != 500)
            abort();
    }
    char dq[] = "/dns-query";
    char *paths[] = {dq};
    (void)doh_path_match(path, paths, 1);

    dg_buf_free(&out);
    free(path);
    free(ct);
    return 0;
}
