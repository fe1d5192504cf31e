/*
 * Unit tests for ddr.h: which queries are DDR's, and the answers, parsed back with ldns (an
 * independent decoder) and compared with records ldns builds from their presentation form (an
 * independent encoder). Queries are built byte by byte to control every field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ldns/ldns.h>
#include <sys/socket.h>

#include "dohgate/ddr.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"

#define QBUF    600
#define T_A     1
#define T_SOA   6
#define T_AAAA  28
#define T_SVCB  64
#define T_HTTPS 65
#define C_IN    1
#define C_CH    3
#define NO_OPT  (-1)
#define F2_RD   0x01
#define F3_CD   0x10
#define OPT_DO  0x8000
#define OWN     "dns.example.net"

static size_t put16(uint8_t *buf, size_t n, uint16_t v)
{
    buf[n] = (uint8_t)(v >> 8);
    buf[n + 1] = (uint8_t)v;
    return n + 2;
}

/* A query for @p name ("" for the root) with an OPT record unless opt_flags is NO_OPT. */
static size_t make_query_ex(uint8_t *buf, uint16_t id, uint8_t f2, uint8_t f3, const char *name,
                            uint16_t qtype, uint16_t qclass, int opt_flags, uint16_t udp)
{
    size_t n = put16(buf, 0, id);
    buf[n++] = f2;
    buf[n++] = f3;
    n = put16(buf, n, 1);
    n = put16(buf, n, 0);
    n = put16(buf, n, 0);
    n = put16(buf, n, opt_flags == NO_OPT ? 0 : 1);
    const char *p = name;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t lab = dot ? (size_t)(dot - p) : strlen(p);
        assert_true(lab > 0 && lab < 64);
        buf[n++] = (uint8_t)lab;
        memcpy(buf + n, p, lab);
        n += lab;
        p += lab;
        if (*p == '.')
            p++;
    }
    buf[n++] = 0;
    n = put16(buf, n, qtype);
    n = put16(buf, n, qclass);
    if (opt_flags != NO_OPT) {
        buf[n++] = 0;
        n = put16(buf, n, 41);
        n = put16(buf, n, udp);
        n = put16(buf, n, 0);
        n = put16(buf, n, (uint16_t)opt_flags);
        n = put16(buf, n, 0);
    }
    assert_true(n <= QBUF);
    return n;
}

static size_t make_query(uint8_t *buf, const char *name, uint16_t qtype, int opt_flags)
{
    return make_query_ex(buf, 0x1234, F2_RD, 0, name, qtype, C_IN, opt_flags, 4096);
}

static enum ddr_match classify(const char *name, uint16_t qtype, uint16_t qclass, const char *own)
{
    uint8_t q[QBUF];
    size_t n = make_query_ex(q, 1, 0, 0, name, qtype, qclass, NO_OPT, 0);
    return ddr_classify(q, n, own);
}

static void test_classify_resolver_arpa(void **state)
{
    (void)state;
    assert_int_equal(classify("_dns.resolver.arpa", T_SVCB, C_IN, NULL), DDR_RESOLVER_ARPA);
    assert_int_equal(classify("_DNS.Resolver.ARPA", T_SVCB, C_IN, NULL), DDR_RESOLVER_ARPA);
    /* Every type, class and name at or under resolver.arpa stays here (RFC 9462 §6.1, §6.4). */
    assert_int_equal(classify("_dns.resolver.arpa", T_A, C_IN, NULL), DDR_RESOLVER_ARPA);
    assert_int_equal(classify("_dns.resolver.arpa", T_SVCB, C_CH, NULL), DDR_RESOLVER_ARPA);
    assert_int_equal(classify("resolver.arpa", T_SOA, C_IN, NULL), DDR_RESOLVER_ARPA);
    assert_int_equal(classify("RESOLVER.ARPA", T_A, C_IN, OWN), DDR_RESOLVER_ARPA);
    assert_int_equal(classify("a.b._dns.resolver.arpa", T_SVCB, C_IN, OWN), DDR_RESOLVER_ARPA);
    assert_int_equal(classify("_dot.resolver.arpa", T_SVCB, C_IN, NULL), DDR_RESOLVER_ARPA);

    /* Names that only contain it, or look like it, go upstream. */
    assert_int_equal(classify("_dns.resolver.arpa.x", T_SVCB, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("resolver.arpa.example.com", T_A, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("xresolver.arpa", T_A, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.xresolver.arpa", T_SVCB, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("resolver.arp", T_A, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("resolverXarpa", T_A, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("arpa", T_SOA, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("ipv4only.arpa", T_A, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("", T_A, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("www.example.com", T_A, C_IN, OWN), DDR_NOT_DDR);
    /* A label holding the suffix's bytes: "\x0fx\x08resolver\x04arpa" is one label. */
    assert_int_equal(classify("x\x08resolver\x04"
                              "arpa",
                              T_A, C_IN, NULL),
                     DDR_NOT_DDR);
}

static void test_classify_own_name(void **state)
{
    (void)state;
    assert_int_equal(classify("_dns.dns.example.net", T_SVCB, C_IN, OWN), DDR_OWN_NAME);
    assert_int_equal(classify("_DNS.Dns.EXAMPLE.net", T_SVCB, C_IN, OWN), DDR_OWN_NAME);
    assert_int_equal(classify("_dns.dns.example.net", T_SVCB, C_IN, "DNS.example.NET."),
                     DDR_OWN_NAME);
    /* Other types and classes there are public data: forwarded. */
    assert_int_equal(classify("_dns.dns.example.net", T_A, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.dns.example.net", T_HTTPS, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.dns.example.net", T_SVCB, C_CH, OWN), DDR_NOT_DDR);
    /* Other names. */
    assert_int_equal(classify("dns.example.net", T_SVCB, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.dns.example.net.evil", T_SVCB, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("x._dns.dns.example.net", T_SVCB, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.example.net", T_SVCB, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("_dot.dns.example.net", T_SVCB, C_IN, OWN), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.xdns.example.net", T_SVCB, C_IN, OWN), DDR_NOT_DDR);
    /* No own name, or one that is not a name. */
    assert_int_equal(classify("_dns.dns.example.net", T_SVCB, C_IN, NULL), DDR_NOT_DDR);
    assert_int_equal(classify("_dns.dns.example.net", T_SVCB, C_IN, "dns..example.net"),
                     DDR_NOT_DDR);
    assert_int_equal(classify("_dns", T_SVCB, C_IN, "."), DDR_NOT_DDR);
    assert_int_equal(classify("_dns", T_SVCB, C_IN, ""), DDR_NOT_DDR);
}

static void std_endpoints(struct ddr_endpoints *ep);

static void test_classify_malformed(void **state)
{
    (void)state;
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);
    assert_int_equal(ddr_classify(q, n, NULL), DDR_RESOLVER_ARPA);
    /* Every truncation of the question is refused without reading past it. */
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        assert_non_null(copy);
        memcpy(copy, q, cut);
        assert_int_equal(ddr_classify(copy, cut, OWN), DDR_NOT_DDR);
        free(copy);
    }
    assert_int_equal(ddr_classify(NULL, 0, OWN), DDR_NOT_DDR);
    /* Not a standard query: a response, NOTIFY (4), UPDATE (5), opcode 15. */
    static const uint8_t f2[] = {0x80 | F2_RD, 4 << 3, 5 << 3, 0x78};
    for (size_t i = 0; i < sizeof(f2); i++) {
        n = make_query_ex(q, 3, f2[i], 0, "_dns.resolver.arpa", T_SVCB, C_IN, NO_OPT, 0);
        assert_int_equal(ddr_classify(q, n, OWN), DDR_NOT_DDR);
        n = make_query_ex(q, 3, f2[i], 0, "_dns.dns.example.net", T_SVCB, C_IN, NO_OPT, 0);
        assert_int_equal(ddr_classify(q, n, OWN), DDR_NOT_DDR);
        struct ddr_endpoints ep;
        std_endpoints(&ep);
        struct dg_buf out = {0};
        assert_int_equal(ddr_answer(q, n, &ep, &out), -EINVAL);
        assert_int_equal(out.len, 0);
    }
    n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);
    /* QDCOUNT 2. */
    q[5] = 2;
    assert_int_equal(ddr_classify(q, n, NULL), DDR_NOT_DDR);
    q[5] = 1;
    /* A compression pointer as the question name. */
    q[12] = 0xc0;
    q[13] = 12;
    assert_int_equal(ddr_classify(q, n, NULL), DDR_NOT_DDR);
}

/* The endpoints most tests use: DoH on 443, DoT on 853, one hint of each family. */
static void std_endpoints(struct ddr_endpoints *ep)
{
    ddr_endpoints_init(ep);
    assert_int_equal(ddr_endpoints_set_target(ep, OWN), 0);
    assert_int_equal(ddr_endpoints_set_doh(ep, 443, "/dns-query{?dns}"), 0);
    ddr_endpoints_set_dot(ep, 853);
    assert_int_equal(ddr_endpoints_add_hint(ep, "192.0.2.1"), 0);
    assert_int_equal(ddr_endpoints_add_hint(ep, "2001:db8::1"), 0);
}

/* ddr_answer() to @p q, checked structurally, parsed with ldns. */
static ldns_pkt *answer_pkt(const uint8_t *q, size_t qlen, const struct ddr_endpoints *ep)
{
    struct dg_buf out = {0};
    assert_int_equal(ddr_answer(q, qlen, ep, &out), 0);
    assert_true(dns_wire_check(out.data, out.len));
    assert_true(dns_answer_matches(q, qlen, out.data, out.len));
    ldns_pkt *pkt = NULL;
    assert_int_equal(ldns_wire2pkt(&pkt, out.data, out.len), LDNS_STATUS_OK);
    dg_buf_free(&out);
    return pkt;
}

/* Record @p i of @p list in presentation form, without the trailing newline. */
static char *rr_text(ldns_rr_list *list, size_t i)
{
    assert_true(i < ldns_rr_list_rr_count(list));
    char *s = ldns_rr2str(ldns_rr_list_rr(list, i));
    assert_non_null(s);
    size_t n = strlen(s);
    if (n && s[n - 1] == '\n')
        s[n - 1] = '\0';
    return s;
}

/* Record @p i of @p list is, byte for byte, what ldns makes of @p text. */
static void assert_rr_is(ldns_rr_list *list, size_t i, const char *text)
{
    ldns_rr *want = NULL;
    assert_int_equal(ldns_rr_new_frm_str(&want, text, 0, NULL, NULL), LDNS_STATUS_OK);
    uint8_t *w1 = NULL, *w2 = NULL;
    size_t n1 = 0, n2 = 0;
    assert_int_equal(ldns_rr2wire(&w1, want, LDNS_SECTION_ANSWER, &n1), LDNS_STATUS_OK);
    assert_int_equal(ldns_rr2wire(&w2, ldns_rr_list_rr(list, i), LDNS_SECTION_ANSWER, &n2),
                     LDNS_STATUS_OK);
    if (n1 != n2 || memcmp(w1, w2, n1) != 0) {
        char *got = rr_text(list, i);
        print_error("want %s\n got %s\n", text, got);
        free(got);
        fail();
    }
    free(w1);
    free(w2);
    ldns_rr_free(want);
}

static void assert_header(const ldns_pkt *pkt, uint16_t id, size_t an, size_t ns)
{
    assert_int_equal(ldns_pkt_id(pkt), id);
    assert_true(ldns_pkt_qr(pkt));
    assert_true(ldns_pkt_aa(pkt));
    assert_true(ldns_pkt_ra(pkt));
    assert_false(ldns_pkt_tc(pkt));
    assert_false(ldns_pkt_ad(pkt));
    assert_int_equal(ldns_pkt_get_rcode(pkt), LDNS_RCODE_NOERROR);
    assert_int_equal(ldns_pkt_qdcount(pkt), 1);
    assert_int_equal(ldns_pkt_ancount(pkt), an);
    assert_int_equal(ldns_pkt_nscount(pkt), ns);
}

#define DOH_RR                                                                                     \
    "_dns.resolver.arpa. 300 IN SVCB 1 dns.example.net. alpn=h2,http/1.1 ipv4hint=192.0.2.1 "      \
    "ipv6hint=2001:db8::1 dohpath=/dns-query{?dns}"
#define DOT_RR                                                                                     \
    "_dns.resolver.arpa. 300 IN SVCB 2 dns.example.net. alpn=dot ipv4hint=192.0.2.1 "              \
    "ipv6hint=2001:db8::1"
#define SOA_RR "resolver.arpa. 300 IN SOA resolver.arpa. nobody.invalid. 1 3600 1200 604800 300"

static void test_answer_resolver_arpa(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    uint8_t q[QBUF];
    size_t n =
        make_query_ex(q, 0xbeef, F2_RD, F3_CD, "_dns.resolver.arpa", T_SVCB, C_IN, NO_OPT, 0);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0xbeef, 2, 0);
    assert_true(ldns_pkt_rd(pkt));
    assert_true(ldns_pkt_cd(pkt));
    assert_int_equal(ldns_pkt_arcount(pkt), 0); /* no OPT asked, none given */
    ldns_rr_list *an = ldns_pkt_answer(pkt);
    assert_rr_is(an, 0, DOH_RR);
    assert_rr_is(an, 1, DOT_RR);
    /* What a user sees (ldns 1.8 knows SVCB and its keys). */
    char *s = rr_text(an, 0);
    assert_string_equal(s, "_dns.resolver.arpa.\t300\tIN\tSVCB\t1 dns.example.net. "
                           "alpn=h2,http/1.1 ipv4hint=192.0.2.1 ipv6hint=2001:db8::1 "
                           "dohpath=/dns-query{?dns}");
    free(s);
    s = rr_text(an, 1);
    assert_string_equal(s, "_dns.resolver.arpa.\t300\tIN\tSVCB\t2 dns.example.net. alpn=dot "
                           "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1");
    free(s);
    ldns_pkt_free(pkt);

    /* The query's spelling of the name comes back (0x20 randomisation). */
    n = make_query(q, "_DnS.ReSoLvEr.ArPa", T_SVCB, NO_OPT);
    pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 2, 0);
    s = rr_text(ldns_pkt_answer(pkt), 0);
    assert_memory_equal(s, "_DnS.ReSoLvEr.ArPa.\t300", 23);
    free(s);
    ldns_pkt_free(pkt);
}

static void test_answer_ports(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 8443, "/q{?dns}"), 0);
    ddr_endpoints_set_dot(&ep, 8853);
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 2, 0);
    assert_rr_is(ldns_pkt_answer(pkt), 0,
                 "_dns.resolver.arpa. 300 IN SVCB 1 dns.example.net. alpn=h2,http/1.1 port=8443 "
                 "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1 dohpath=/q{?dns}");
    assert_rr_is(ldns_pkt_answer(pkt), 1,
                 "_dns.resolver.arpa. 300 IN SVCB 2 dns.example.net. alpn=dot port=8853 "
                 "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1");
    ldns_pkt_free(pkt);

    /* The other transport's default is not a default: DoT on 443, DoH on 853. */
    assert_int_equal(ddr_endpoints_set_doh(&ep, 853, "/dns-query{?dns}"), 0);
    ddr_endpoints_set_dot(&ep, 443);
    pkt = answer_pkt(q, n, &ep);
    assert_rr_is(ldns_pkt_answer(pkt), 0,
                 "_dns.resolver.arpa. 300 IN SVCB 1 dns.example.net. alpn=h2,http/1.1 port=853 "
                 "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1 dohpath=/dns-query{?dns}");
    assert_rr_is(ldns_pkt_answer(pkt), 1,
                 "_dns.resolver.arpa. 300 IN SVCB 2 dns.example.net. alpn=dot port=443 "
                 "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1");
    ldns_pkt_free(pkt);
}

static void test_answer_one_transport(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);

    std_endpoints(&ep);
    ddr_endpoints_set_dot(&ep, 0);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 1, 0);
    assert_rr_is(ldns_pkt_answer(pkt), 0, DOH_RR);
    ldns_pkt_free(pkt);

    std_endpoints(&ep);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 0, NULL), 0);
    pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 1, 0);
    assert_rr_is(ldns_pkt_answer(pkt), 0, DOT_RR);
    ldns_pkt_free(pkt);
}

static void test_answer_hints(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);

    /* No hints: no hint keys. */
    ddr_endpoints_init(&ep);
    assert_int_equal(ddr_endpoints_set_target(&ep, OWN), 0);
    ddr_endpoints_set_dot(&ep, 853);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_rr_is(ldns_pkt_answer(pkt), 0,
                 "_dns.resolver.arpa. 300 IN SVCB 2 dns.example.net. alpn=dot");
    ldns_pkt_free(pkt);

    /* IPv6 only. */
    assert_int_equal(ddr_endpoints_add_hint(&ep, "2001:db8::53"), 0);
    pkt = answer_pkt(q, n, &ep);
    assert_rr_is(ldns_pkt_answer(pkt), 0,
                 "_dns.resolver.arpa. 300 IN SVCB 2 dns.example.net. alpn=dot "
                 "ipv6hint=2001:db8::53");
    ldns_pkt_free(pkt);

    /* Several, in the order given; a repeat is not added twice. */
    assert_int_equal(ddr_endpoints_add_hint(&ep, "192.0.2.2"), 0);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "198.51.100.7"), 0);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "192.0.2.2"), 0);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "2001:db8::53"), 0);
    uint8_t raw6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x54};
    assert_int_equal(ddr_endpoints_add_hint_raw(&ep, AF_INET6, raw6), 0);
    pkt = answer_pkt(q, n, &ep);
    assert_rr_is(ldns_pkt_answer(pkt), 0,
                 "_dns.resolver.arpa. 300 IN SVCB 2 dns.example.net. alpn=dot "
                 "ipv4hint=192.0.2.2,198.51.100.7 ipv6hint=2001:db8::53,2001:db8::54");
    ldns_pkt_free(pkt);
}

static void test_hint_limits(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    ddr_endpoints_init(&ep);
    char a[64];
    for (int i = 1; i <= DDR_MAX_HINTS; i++) {
        snprintf(a, sizeof(a), "192.0.2.%d", i);
        assert_int_equal(ddr_endpoints_add_hint(&ep, a), 0);
        snprintf(a, sizeof(a), "2001:db8::%d", i);
        assert_int_equal(ddr_endpoints_add_hint(&ep, a), 0);
    }
    assert_int_equal(ddr_endpoints_add_hint(&ep, "192.0.2.99"), -ENOSPC);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "2001:db8::99"), -ENOSPC);
    /* A repeat is still fine when full. */
    assert_int_equal(ddr_endpoints_add_hint(&ep, "192.0.2.1"), 0);
    assert_int_equal(ep.n_v4, DDR_MAX_HINTS);
    assert_int_equal(ep.n_v6, DDR_MAX_HINTS);

    ddr_endpoints_init(&ep);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "0.0.0.0"), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "::"), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "dns.example.net"), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "192.0.2.1:853"), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "[2001:db8::1]"), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint(&ep, ""), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint(&ep, NULL), -EINVAL);
    assert_int_equal(ddr_endpoints_add_hint_raw(&ep, AF_UNIX, "abcd"), -EINVAL);
    assert_int_equal(ep.n_v4 + ep.n_v6, 0);
}

static void test_setters(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    struct ddr_endpoints before;
    memcpy(&before, &ep, sizeof(ep));

    assert_int_equal(ddr_endpoints_set_target(&ep, ""), -EINVAL);
    assert_int_equal(ddr_endpoints_set_target(&ep, "."), -EINVAL);
    assert_int_equal(ddr_endpoints_set_target(&ep, "a..b"), -EINVAL);
    assert_int_equal(ddr_endpoints_set_target(&ep, ".a"), -EINVAL);
    assert_int_equal(ddr_endpoints_set_target(&ep, "a b.example"), -EINVAL);
    char label64[80];
    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".net");
    assert_int_equal(ddr_endpoints_set_target(&ep, label64), -EINVAL);
    /* 4 labels of 63 + 3 dots = 255 characters: 257 octets in wire form. */
    char longname[300];
    size_t k = 0;
    for (int l = 0; l < 4; l++) {
        memset(longname + k, 'b', 63);
        k += 63;
        longname[k++] = '.';
    }
    longname[k - 1] = '\0';
    assert_int_equal(ddr_endpoints_set_target(&ep, longname), -EINVAL);
    /* 63.63.63.62: 254 characters, 256 octets, one too many. */
    longname[254] = '\0';
    assert_int_equal(strlen(longname), 254);
    assert_int_equal(ddr_endpoints_set_target(&ep, longname), -EINVAL);

    assert_int_equal(ddr_endpoints_set_doh(&ep, 443, "dns-query{?dns}"), -EINVAL);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 443, "/dns-query"), -EINVAL);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 443, "/dns query{?dns}"), -EINVAL);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 443, NULL), -EINVAL);
    char longpath[DDR_DOHPATH_MAX + 2];
    memset(longpath, 'p', sizeof(longpath) - 1);
    longpath[0] = '/';
    memcpy(longpath + DDR_DOHPATH_MAX + 1 - 6, "{?dns}", 6);
    longpath[DDR_DOHPATH_MAX + 1] = '\0';
    assert_int_equal(ddr_endpoints_set_doh(&ep, 443, longpath), -EINVAL);
    assert_memory_equal(&ep, &before, sizeof(ep));

    /* The longest valid ones are taken: 253 characters, 255 octets. */
    longname[253] = '\0';
    longname[252] = 'c';
    assert_int_equal(ddr_endpoints_set_target(&ep, longname), 0);
    assert_int_equal(ep.target_len, 255);
    memmove(longpath + 1, longpath + 2, DDR_DOHPATH_MAX);
    assert_int_equal(strlen(longpath), DDR_DOHPATH_MAX);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 443, longpath), 0);
    assert_int_equal(ddr_endpoints_set_target(&ep, "dns.example.net."), 0);
    assert_int_equal(ep.target_len, 17);
    assert_int_equal(ddr_endpoints_set_target(&ep, NULL), 0);
    assert_int_equal(ep.target_len, 0);
}

/* The largest answer: longest name, longest path, every hint. It parses, and every byte is
 * where ldns expects it. */
static void test_answer_largest(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    ddr_endpoints_init(&ep);
    char name[260];
    size_t k = 0;
    for (int l = 0; l < 4; l++) {
        memset(name + k, 'a' + l, 63);
        k += 63;
        name[k++] = '.';
    }
    name[253] = '\0';
    name[252] = 'z';
    assert_int_equal(ddr_endpoints_set_target(&ep, name), 0);
    char path[DDR_DOHPATH_MAX + 1];
    memset(path, 'p', DDR_DOHPATH_MAX);
    path[0] = '/';
    memcpy(path + DDR_DOHPATH_MAX - 6, "{?dns}", 6);
    path[DDR_DOHPATH_MAX] = '\0';
    assert_int_equal(ddr_endpoints_set_doh(&ep, 1, path), 0);
    ddr_endpoints_set_dot(&ep, 65535);
    char v4[16 * DDR_MAX_HINTS] = "", v6[40 * DDR_MAX_HINTS] = "", a[48];
    for (int i = 1; i <= DDR_MAX_HINTS; i++) {
        snprintf(a, sizeof(a), "%s203.0.113.%d", i > 1 ? "," : "", i);
        strcat(v4, a);
        assert_int_equal(ddr_endpoints_add_hint(&ep, a + (i > 1)), 0);
        snprintf(a, sizeof(a), "%s2001:db8:ffff:ffff:ffff:ffff:ffff:%d", i > 1 ? "," : "", i);
        strcat(v6, a);
        assert_int_equal(ddr_endpoints_add_hint(&ep, a + (i > 1)), 0);
    }
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, OPT_DO);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 2, 0);
    char want[2048];
    snprintf(want, sizeof(want),
             "_dns.resolver.arpa. 300 IN SVCB 1 %s. alpn=h2,http/1.1 port=1 ipv4hint=%s "
             "ipv6hint=%s dohpath=%s",
             name, v4, v6, path);
    assert_rr_is(ldns_pkt_answer(pkt), 0, want);
    snprintf(want, sizeof(want),
             "_dns.resolver.arpa. 300 IN SVCB 2 %s. alpn=dot port=65535 ipv4hint=%s ipv6hint=%s",
             name, v4, v6);
    assert_rr_is(ldns_pkt_answer(pkt), 1, want);
    assert_true(ldns_pkt_edns(pkt));
    ldns_pkt_free(pkt);
}

static void test_answer_no_name(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    assert_int_equal(ddr_endpoints_set_target(&ep, NULL), 0);
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);
    /* RFC 9462 §4 forbids "." as the target: nothing to designate, NODATA. */
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 0, 1);
    assert_rr_is(ldns_pkt_authority(pkt), 0, SOA_RR);
    ldns_pkt_free(pkt);

    /* A name but no encrypted listener: the same. */
    ddr_endpoints_init(&ep);
    assert_int_equal(ddr_endpoints_set_target(&ep, OWN), 0);
    assert_int_equal(ddr_endpoints_add_hint(&ep, "192.0.2.1"), 0);
    pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 0, 1);
    assert_rr_is(ldns_pkt_authority(pkt), 0, SOA_RR);
    ldns_pkt_free(pkt);
}

static void test_answer_nodata(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    static const struct {
        const char *name;
        uint16_t type, class;
    } cases[] = {
        {"_dns.resolver.arpa", T_A, C_IN},
        {"_dns.resolver.arpa", T_AAAA, C_IN},
        {"_dns.resolver.arpa", T_HTTPS, C_IN},
        {"x._dns.resolver.arpa", T_SVCB, C_IN},
        {"foo.resolver.arpa", T_A, C_IN},
        {"_dot.resolver.arpa", T_SVCB, C_IN},
        {"resolver.arpa", T_A, C_IN},
        {"resolver.arpa", T_SVCB, C_IN},
        {"_dns.foo.resolver.arpa", T_SVCB, C_IN},
        {"_dns.resolver.arpa", T_SOA, C_IN},
        {"foo.resolver.arpa", T_SOA, C_IN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t q[QBUF];
        size_t n =
            make_query_ex(q, 7, 0, 0, cases[i].name, cases[i].type, cases[i].class, NO_OPT, 0);
        struct dg_buf out = {0};
        assert_int_equal(ddr_answer(q, n, &ep, &out), 0);
        /* NOERROR, not NXDOMAIN (RFC 9462 §6.4), no answer, the SOA in authority. */
        assert_int_equal(dns_rcode(out.data, out.len), DNS_RCODE_NOERROR);
        assert_int_equal(dg_get16(out.data + 6), 0);
        assert_int_equal(dg_get16(out.data + 8), 1);
        /* The cache and Cache-Control see a 300 s negative answer (RFC 2308 §5). */
        struct dnswire_ttl_policy pol = {.min_ttl = 0,
                                         .max_ttl = 86400,
                                         .max_negative_ttl = 3600,
                                         .nosoa_negative_ttl = 30,
                                         .servfail_ttl = 5};
        struct dnswire_answer_info info;
        assert_int_equal(dnswire_answer_lifetime(out.data, out.len, DNSWIRE_CHECK, &pol, &info),
                         DDR_TTL);
        assert_int_equal(info.kind, DNSWIRE_NEGATIVE);
        ldns_pkt *pkt = NULL;
        assert_int_equal(ldns_wire2pkt(&pkt, out.data, out.len), LDNS_STATUS_OK);
        assert_header(pkt, 7, 0, 1);
        assert_false(ldns_pkt_rd(pkt));
        assert_rr_is(ldns_pkt_authority(pkt), 0, SOA_RR);
        ldns_pkt_free(pkt);
        dg_buf_free(&out);
    }
}

/* Another class: NODATA without the SOA of the (IN) zone. */
static void test_answer_other_class(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    static const struct {
        const char *name;
        uint16_t type;
    } cases[] = {
        {"_dns.resolver.arpa", T_SVCB}, {"Resolver.Arpa", T_SOA}, {"a.resolver.arpa", T_A}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t q[QBUF];
        size_t n = make_query_ex(q, 9, F2_RD, 0, cases[i].name, cases[i].type, C_CH, NO_OPT, 0);
        assert_int_equal(ddr_classify(q, n, OWN), DDR_RESOLVER_ARPA);
        ldns_pkt *pkt = answer_pkt(q, n, &ep);
        assert_header(pkt, 9, 0, 0);
        ldns_pkt_free(pkt);
    }
}

static void test_answer_apex_soa(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    uint8_t q[QBUF];
    size_t n = make_query(q, "resolver.arpa", T_SOA, NO_OPT);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 1, 0);
    assert_rr_is(ldns_pkt_answer(pkt), 0, SOA_RR);
    ldns_pkt_free(pkt);
}

static void test_answer_own_name(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.dns.example.net", T_SVCB, NO_OPT);
    assert_int_equal(ddr_classify(q, n, OWN), DDR_OWN_NAME);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 2, 0);
    assert_rr_is(ldns_pkt_answer(pkt), 0,
                 "_dns.dns.example.net. 300 IN SVCB 1 dns.example.net. alpn=h2,http/1.1 "
                 "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1 dohpath=/dns-query{?dns}");
    assert_rr_is(ldns_pkt_answer(pkt), 1,
                 "_dns.dns.example.net. 300 IN SVCB 2 dns.example.net. alpn=dot "
                 "ipv4hint=192.0.2.1 ipv6hint=2001:db8::1");
    ldns_pkt_free(pkt);

    /* No endpoint: NODATA, and no SOA for example.net, which is not ours. */
    ddr_endpoints_set_dot(&ep, 0);
    assert_int_equal(ddr_endpoints_set_doh(&ep, 0, NULL), 0);
    pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 0, 0);
    ldns_pkt_free(pkt);
}

static void test_answer_opt(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    uint8_t q[QBUF];
    /* DO set: copied; the client's UDP size is not echoed, ours is 1232. */
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, OPT_DO);
    ldns_pkt *pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 2, 0);
    assert_true(ldns_pkt_edns(pkt));
    assert_true(ldns_pkt_edns_do(pkt));
    assert_int_equal(ldns_pkt_edns_udp_size(pkt), 1232);
    assert_rr_is(ldns_pkt_answer(pkt), 0, DOH_RR);
    assert_rr_is(ldns_pkt_answer(pkt), 1, DOT_RR);
    ldns_pkt_free(pkt);

    n = make_query(q, "foo.resolver.arpa", T_A, 0);
    pkt = answer_pkt(q, n, &ep);
    assert_header(pkt, 0x1234, 0, 1);
    assert_true(ldns_pkt_edns(pkt));
    assert_false(ldns_pkt_edns_do(pkt));
    assert_int_equal(ldns_pkt_edns_udp_size(pkt), 1232);
    assert_rr_is(ldns_pkt_authority(pkt), 0, SOA_RR);
    ldns_pkt_free(pkt);

    /* The OPT is the last record of the message. */
    struct dg_buf out = {0};
    n = make_query(q, "_dns.resolver.arpa", T_SVCB, OPT_DO);
    assert_int_equal(ddr_answer(q, n, &ep, &out), 0);
    assert_int_equal(dg_get16(out.data + 10), 1);
    assert_memory_equal(out.data + out.len - 11, "\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00",
                        11);
    dg_buf_free(&out);
}

static void test_answer_appends_and_refuses(void **state)
{
    (void)state;
    struct ddr_endpoints ep;
    std_endpoints(&ep);
    uint8_t q[QBUF];
    size_t n = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);

    /* Appends after what the buffer holds. */
    struct dg_buf out = {0};
    assert_int_equal(dg_buf_append(&out, "\xab\xcd", 2), 0);
    assert_int_equal(ddr_answer(q, n, &ep, &out), 0);
    assert_memory_equal(out.data, "\xab\xcd", 2);
    assert_true(dns_answer_matches(q, n, out.data + 2, out.len - 2));
    size_t len = out.len;

    /* Not DDR, malformed, NULL: -EINVAL, the buffer as it was. */
    size_t m = make_query(q, "www.example.com", T_A, NO_OPT);
    assert_int_equal(ddr_answer(q, m, &ep, &out), -EINVAL);
    m = make_query(q, "_dns.dns.example.net", T_A, NO_OPT);
    assert_int_equal(ddr_answer(q, m, &ep, &out), -EINVAL);
    m = make_query(q, "_dns.other.example", T_SVCB, NO_OPT);
    assert_int_equal(ddr_answer(q, m, &ep, &out), -EINVAL);
    /* _dns.<target> for endpoints without a target is not DDR for them. */
    struct ddr_endpoints nameless;
    ddr_endpoints_init(&nameless);
    m = make_query(q, "_dns.dns.example.net", T_SVCB, NO_OPT);
    assert_int_equal(ddr_answer(q, m, &nameless, &out), -EINVAL);
    m = make_query(q, "_dns.resolver.arpa", T_SVCB, NO_OPT);
    assert_int_equal(ddr_answer(q, m - 1, &ep, &out), -EINVAL);
    assert_int_equal(ddr_answer(q, 11, &ep, &out), -EINVAL);
    assert_int_equal(ddr_answer(NULL, m, &ep, &out), -EINVAL);
    assert_int_equal(ddr_answer(q, m, NULL, &out), -EINVAL);
    assert_int_equal(ddr_answer(q, m, &ep, NULL), -EINVAL);
    /* Endpoints filled by hand past the limits. */
    struct ddr_endpoints bad = ep;
    bad.n_v6 = DDR_MAX_HINTS + 1;
    assert_int_equal(ddr_answer(q, m, &bad, &out), -EINVAL);
    bad = ep;
    bad.target_len = DDR_NAME_WIRE + 1;
    assert_int_equal(ddr_answer(q, m, &bad, &out), -EINVAL);
    bad = ep;
    memset(bad.doh_path, 'p', sizeof(bad.doh_path));
    assert_int_equal(ddr_answer(q, m, &bad, &out), -EINVAL);
    assert_int_equal(out.len, len);
    dg_buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify_resolver_arpa),
        cmocka_unit_test(test_classify_own_name),
        cmocka_unit_test(test_classify_malformed),
        cmocka_unit_test(test_answer_resolver_arpa),
        cmocka_unit_test(test_answer_ports),
        cmocka_unit_test(test_answer_one_transport),
        cmocka_unit_test(test_answer_hints),
        cmocka_unit_test(test_hint_limits),
        cmocka_unit_test(test_setters),
        cmocka_unit_test(test_answer_largest),
        cmocka_unit_test(test_answer_no_name),
        cmocka_unit_test(test_answer_nodata),
        cmocka_unit_test(test_answer_other_class),
        cmocka_unit_test(test_answer_apex_soa),
        cmocka_unit_test(test_answer_own_name),
        cmocka_unit_test(test_answer_opt),
        cmocka_unit_test(test_answer_appends_and_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
