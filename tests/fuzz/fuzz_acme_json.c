/*
 * libFuzzer target: one input, as the ACME CA's answer, through every JSON parser of acmemsg.h
 * (directory, problem document, order, authorization with either challenge type, ARI window,
 * JWK thumbprint) and, as a string, Retry-After and RFC 3339 times. Checks: what a parser
 * accepts holds its promises (https URLs, 1..ACMEMSG_MAX_AUTHZ authorizations, a base64url
 * token, a window with end > start, printable problem text), and what it refuses leaves nothing
 * allocated (ASan's leak check).
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/acmemsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_url(const char *u)
{
    if (u && strncmp(u, "https://", 8) != 0)
        abort();
}

static void check_text(const char *s)
{
    for (; *s; s++)
        if (*s < 0x20 || *s > 0x7e)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *j = (const char *)data;
    char err[128];

    struct acme_directory d;
    if (acmemsg_directory_parse(j, size, &d, err, sizeof(err)) == 0) {
        if (!d.new_nonce || !d.new_account || !d.new_order)
            abort();
        check_url(d.new_nonce);
        check_url(d.renewal_info);
        acmemsg_directory_free(&d);
    }

    struct acme_problem p;
    if (acmemsg_problem_parse(j, size, &p) == 0) {
        check_text(p.type);
        check_text(p.detail);
        if (p.status != 0 && (p.status < 100 || p.status > 599))
            abort();
        (void)acmemsg_problem_is(&p, "badNonce");
    }

    struct acme_order o;
    if (acmemsg_order_parse(j, size, &o, err, sizeof(err)) == 0) {
        if (o.n_authz < 1 || o.n_authz > ACMEMSG_MAX_AUTHZ || o.status == ACME_ST_UNKNOWN)
            abort();
        for (size_t i = 0; i < o.n_authz; i++)
            check_url(o.authz[i]);
        check_url(o.finalize);
        check_url(o.certificate);
        acmemsg_order_free(&o);
    }

    static const char *const types[] = {"http-01", "tls-alpn-01"};
    for (size_t t = 0; t < 2; t++) {
        struct acme_authz a;
        if (acmemsg_authz_parse(j, size, types[t], &a, err, sizeof(err)) != 0)
            continue;
        if (!a.identifier || a.status == ACME_ST_UNKNOWN)
            abort();
        if (a.ch_url) {
            check_url(a.ch_url);
            if (!a.ch_token || strlen(a.ch_token) > 128)
                abort();
            for (const char *c = a.ch_token; *c; c++)
                if (!isalnum((unsigned char)*c) && *c != '-' && *c != '_')
                    abort();
        }
        acmemsg_authz_free(&a);
    }

    struct acme_window w;
    if (acmemsg_ari_parse(j, size, &w) == 0) {
        if (w.end <= w.start)
            abort();
        time_t at = acmemsg_renew_at(0, 0, &w, 0.5, w.start, 0);
        if (at < w.start || at >= w.end)
            abort();
    }

    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char th[44];
    if (acmemsg_thumbprint(s, th) == 0 && strlen(th) != 43)
        abort();
    if (acmemsg_retry_after(s, 0) < -1)
        abort();
    time_t t;
    (void)acmemsg_rfc3339(s, &t);
    free(s);
    return 0;
}
