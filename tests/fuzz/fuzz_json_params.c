/*
 * libFuzzer target: bytes as the query string of a JSON API request, through
 * dnsjson_query_from_params(). Invariants: the result is 0 or 400 (no -ENOMEM here); a 400 has
 * a printable one-line reason naming a parameter and leaves the wire buffer as it was; a 0 gives
 * a query that ldns parses (ID 0, RD, one question of class IN with the type, DO and CD that
 * o reports, an OPT of 1232), that dns_query_check() accepts (or refuses, for AXFR/IXFR), and
 * whose name, printed by ldns and given back as `name` with the type as a number, builds the
 * same bytes again.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dohgate/dns.h"
#include "dohgate/dnsjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_why(const char *why)
{
    static const char *const prefixes[] = {
        "name: ", "type: ", "do: ", "cd: ", "ct: ", "bad percent-encoding in a parameter name"};
    if (!why)
        abort();
    bool known = false;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        known |= strncmp(why, prefixes[i], strlen(prefixes[i])) == 0;
    if (!known || strlen(why) > 120)
        abort();
    for (const char *p = why; *p; p++)
        if (*p < 0x20 || *p > 0x7e)
            abort();
}

/* Percent-encode every byte of @p s: the name comes back exactly as ldns printed it. */
static size_t pct_all(const char *s, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (; *s; s++) {
        out[n++] = '%';
        out[n++] = hex[(unsigned char)*s >> 4];
        out[n++] = hex[(unsigned char)*s & 15];
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dg_buf wire = {0};
    struct dnsjson_opts o;
    const char *why = NULL;
    int rc = dnsjson_query_from_params((const char *)data, size, &wire, &o, &why);
    if (rc == 400) {
        check_why(why);
        if (wire.len != 0)
            abort();
        dg_buf_free(&wire);
        return 0;
    }
    if (rc != 0 || why != NULL)
        abort();
    if (o.wire_answer != (strcmp(o.content_type, DNSJSON_CT_MESSAGE) == 0))
        abort();

    ldns_pkt *p = NULL;
    if (ldns_wire2pkt(&p, wire.data, wire.len) != LDNS_STATUS_OK)
        abort();
    if (ldns_pkt_id(p) != 0 || ldns_pkt_qr(p) || !ldns_pkt_rd(p) ||
        ldns_pkt_cd(p) != o.checking_disabled || ldns_pkt_qdcount(p) != 1 ||
        ldns_pkt_ancount(p) != 0 || ldns_pkt_nscount(p) != 0 || !ldns_pkt_edns(p) ||
        ldns_pkt_edns_udp_size(p) != DNSJSON_UDP_SIZE || ldns_pkt_edns_do(p) != o.dnssec_ok)
        abort();
    ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(p), 0);
    if ((uint16_t)ldns_rr_get_type(q) != o.qtype || ldns_rr_get_class(q) != LDNS_RR_CLASS_IN)
        abort();
    enum dns_query_verdict v = dns_query_check(wire.data, wire.len, NULL);
    if (v != DNS_QUERY_OK && !(v == DNS_QUERY_REFUSED && (o.qtype == 251 || o.qtype == 252)))
        abort();

    /* round trip of the name through ldns's presentation form */
    char *name = ldns_rdf2str(ldns_rr_owner(q));
    if (!name)
        abort();
    char *qs = malloc(strlen(name) * 3 + 64);
    if (!qs)
        abort();
    size_t n = (size_t)sprintf(qs, "type=%u&name=", (unsigned)o.qtype);
    n += pct_all(name, qs + n);
    n += (size_t)sprintf(qs + n, "&do=%d&cd=%d", o.dnssec_ok, o.checking_disabled);
    struct dg_buf again = {0};
    struct dnsjson_opts o2;
    if (dnsjson_query_from_params(qs, n, &again, &o2, NULL) != 0 || again.len != wire.len ||
        memcmp(again.data, wire.data, wire.len) != 0)
        abort();
    dg_buf_free(&again);
    free(qs);
    free(name);
    ldns_pkt_free(p);
    dg_buf_free(&wire);
    return 0;
}
