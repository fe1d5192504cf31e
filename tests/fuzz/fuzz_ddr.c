/*
 * libFuzzer target: a client's query through DDR (ddr.h). The first byte picks the endpoints
 * (server name or none, DoH, DoT, default or other ports, hints), the rest is the query. Checks:
 * ddr_classify() and ddr_answer() agree (an answer exactly for what classify calls DDR, -EINVAL
 * and the buffer untouched otherwise), and every answer is sound: it walks (dns_wire_check()),
 * matches the query (ID, question), is NOERROR with AA, has a lifetime (positive or negative,
 * never uncacheable), and ldns parses it (SVCB rdata included).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>

#include "dohgate/ddr.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OWN "dns.example.net"

static void endpoints(struct ddr_endpoints *ep, uint8_t sel)
{
    ddr_endpoints_init(ep);
    if (sel & 1) {
        if (ddr_endpoints_set_target(ep, OWN) != 0)
            abort();
    }
    if (sel & 2) {
        if (ddr_endpoints_set_doh(ep, (sel & 8) ? 8443 : 443, "/dns-query{?dns}") != 0)
            abort();
    }
    if (sel & 4)
        ddr_endpoints_set_dot(ep, (sel & 8) ? 8853 : 853);
    unsigned hints = (sel >> 4) & 7u;
    for (unsigned i = 0; i < hints; i++) {
        uint8_t v4[4] = {192, 0, 2, (uint8_t)(i + 1)};
        uint8_t v6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = (uint8_t)(i + 1)};
        if (ddr_endpoints_add_hint_raw(ep, AF_INET, v4) != 0 ||
            ((sel & 0x80) && ddr_endpoints_add_hint_raw(ep, AF_INET6, v6) != 0))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct ddr_endpoints ep;
    endpoints(&ep, data[0]);
    const uint8_t *q = data + 1;
    size_t qlen = size - 1;

    enum ddr_match m = ddr_classify(q, qlen, (data[0] & 1) ? OWN : NULL);
    if (m != DDR_NOT_DDR && m != DDR_RESOLVER_ARPA && m != DDR_OWN_NAME)
        abort();
    /* Without an own name, nothing is OWN_NAME. */
    if (ddr_classify(q, qlen, NULL) == DDR_OWN_NAME)
        abort();

    struct dg_buf out = {0};
    if (dg_buf_append(&out, "x", 1) != 0)
        abort();
    int rc = ddr_answer(q, qlen, &ep, &out);
    if (m == DDR_NOT_DDR) {
        if (rc != -EINVAL || out.len != 1)
            abort();
        dg_buf_free(&out);
        return 0;
    }
    if (rc == -ENOMEM) {
        dg_buf_free(&out);
        return 0;
    }
    if (rc != 0)
        abort();
    const uint8_t *a = out.data + 1;
    size_t alen = out.len - 1;
    if (!dns_wire_check(a, alen) || !dns_answer_matches(q, qlen, a, alen))
        abort();
    if (dns_rcode(a, alen) != DNS_RCODE_NOERROR || !(a[2] & 0x04))
        abort();
    struct dnswire_ttl_policy pol = {0, 86400, 3600, 30, 5};
    struct dnswire_answer_info info;
    if (dnswire_answer_lifetime(a, alen, DNSWIRE_CHECK, &pol, &info) == 0 ||
        (info.kind != DNSWIRE_POSITIVE && info.kind != DNSWIRE_NEGATIVE))
        abort();
    ldns_pkt *pkt = NULL;
    if (ldns_wire2pkt(&pkt, a, alen) != LDNS_STATUS_OK)
        abort();
    ldns_pkt_free(pkt);
    dg_buf_free(&out);
    return 0;
}
