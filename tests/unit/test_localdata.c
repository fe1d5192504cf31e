/*
 * Unit tests for localdata.h: hosts entries, local records in zone-file syntax, local and
 * forward zones and their nesting, the default zones, CNAME chains. Queries are built byte by
 * byte (to control case, class and EDNS); every answer is parsed back with ldns (an independent
 * decoder) and checked field by field: header, question, each record in presentation form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/localdata.h"

#define IN 1
#define CH 3

/* Allocation failures (linked with --wrap for the core library's malloc, calloc, realloc; ldns
 * allocates on its own): the Nth call fails when fail_at is N. */
void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static unsigned long fail_at, calls;

static bool fail_now(void)
{
    return fail_at && ++calls == fail_at;
}

void *__wrap_malloc(size_t size)
{
    return fail_now() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return fail_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return fail_now() ? NULL : __real_realloc(p, size);
}

/* A query for @p name (text, case kept) with RD; @p edns: -1 none, else the DO flag (0/1). */
static size_t make_query(uint8_t *q, const char *name, uint16_t type, uint16_t cls, int edns)
{
    static uint16_t id = 0x100;
    size_t n = 0;
    dg_put16(q, ++id);
    q[2] = 0x01; /* RD */
    q[3] = 0;
    dg_put16(q + 4, 1);
    dg_put16(q + 6, 0);
    dg_put16(q + 8, 0);
    dg_put16(q + 10, edns >= 0 ? 1 : 0);
    n = 12;
    const char *p = name;
    while (*p && strcmp(p, ".") != 0) {
        const char *dot = strchr(p, '.');
        size_t lab = dot ? (size_t)(dot - p) : strlen(p);
        q[n++] = (uint8_t)lab;
        memcpy(q + n, p, lab);
        n += lab;
        p += lab + (dot ? 1 : 0);
    }
    q[n++] = 0;
    dg_put16(q + n, type);
    dg_put16(q + n + 2, cls);
    n += 4;
    if (edns >= 0) {
        q[n++] = 0;
        dg_put16(q + n, 41);
        dg_put16(q + n + 2, 4096);
        dg_put16(q + n + 4, 0);
        dg_put16(q + n + 6, edns ? 0x8000 : 0);
        dg_put16(q + n + 8, 0);
        n += 10;
    }
    assert_int_equal(dns_query_check(q, n, NULL), DNS_QUERY_OK);
    return n;
}

/* What one question got. */
struct res {
    int kind;
    uint32_t ttl;
    ldns_pkt *pkt; /* NULL for LOCALDATA_NOT */
};

static struct res ask_edns(const struct localdata *ld, const char *name, uint16_t type,
                           uint16_t cls, int edns)
{
    uint8_t q[512];
    size_t n = make_query(q, name, type, cls, edns);
    struct dg_buf ans = {0};
    assert_int_equal(dg_buf_append(&ans, "pre", 3), 0); /* answers are appended */
    struct res r = {.ttl = 0xdeadbeef};
    r.kind = localdata_answer(ld, q, n, &ans, &r.ttl);
    assert_true(r.kind >= 0);
    assert_memory_equal(ans.data, "pre", 3);
    if (r.kind == LOCALDATA_NOT) {
        assert_int_equal(ans.len, 3);
        assert_int_equal(r.ttl, 0xdeadbeef);
        dg_buf_free(&ans);
        return r;
    }
    const uint8_t *a = ans.data + 3;
    size_t alen = ans.len - 3;
    assert_true(dns_wire_check(a, alen));
    assert_true(dns_answer_matches(q, n, a, alen));
    assert_int_equal(ldns_wire2pkt(&r.pkt, a, alen), LDNS_STATUS_OK);
    /* header: ID, QR, AA, RD copied, RA, no TC/AD/CD */
    assert_int_equal(ldns_pkt_id(r.pkt), dg_get16(q));
    assert_true(ldns_pkt_qr(r.pkt));
    assert_true(ldns_pkt_aa(r.pkt));
    assert_true(ldns_pkt_rd(r.pkt));
    assert_true(ldns_pkt_ra(r.pkt));
    assert_false(ldns_pkt_tc(r.pkt));
    assert_false(ldns_pkt_ad(r.pkt));
    assert_false(ldns_pkt_cd(r.pkt));
    assert_int_equal(ldns_pkt_get_opcode(r.pkt), LDNS_PACKET_QUERY);
    assert_int_equal(ldns_pkt_qdcount(r.pkt), 1);
    assert_int_equal(ldns_pkt_arcount(r.pkt), 0); /* an OPT only (ldns counts it apart) */
    assert_int_equal(ldns_pkt_edns(r.pkt), edns >= 0);
    if (edns >= 0)
        assert_int_equal(ldns_pkt_edns_do(r.pkt), edns > 0);
    /* the question as asked, case kept */
    ldns_rr *qr = ldns_rr_list_rr(ldns_pkt_question(r.pkt), 0);
    char *qn = ldns_rdf2str(ldns_rr_owner(qr));
    size_t nl = strlen(name);
    assert_int_equal(strncmp(qn, name, nl), 0);
    assert_string_equal(qn + nl, name[nl - 1] == '.' ? "" : ".");
    free(qn);
    assert_int_equal(ldns_rr_get_type(qr), type);
    assert_int_equal(ldns_rr_get_class(qr), cls);
    /* the kind agrees with the message */
    switch (r.kind) {
    case LOCALDATA_ANSWER:
        assert_true(ldns_pkt_ancount(r.pkt) > 0);
        break;
    case LOCALDATA_NODATA:
        assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NOERROR);
        assert_int_equal(ldns_pkt_ancount(r.pkt), 0);
        break;
    case LOCALDATA_NXDOMAIN:
        assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NXDOMAIN);
        assert_int_equal(ldns_pkt_ancount(r.pkt), 0);
        break;
    default:
        fail();
    }
    dg_buf_free(&ans);
    return r;
}

static struct res ask(const struct localdata *ld, const char *name, uint16_t type)
{
    return ask_edns(ld, name, type, IN, -1);
}

/* Section @p sec of @p p holds exactly the records @p want (presentation form, ldns's). */
static void check_section(const ldns_rr_list *sec, const char *const *want)
{
    size_t n = 0;
    while (want[n])
        n++;
    assert_int_equal(ldns_rr_list_rr_count(sec), n);
    for (size_t i = 0; i < n; i++) {
        char *t = ldns_rr2str(ldns_rr_list_rr(sec, i));
        assert_non_null(t);
        size_t l = strlen(t);
        if (l && t[l - 1] == '\n')
            t[l - 1] = 0;
        assert_string_equal(t, want[i]);
        free(t);
    }
}

static void expect(struct res r, int kind, int rcode, uint32_t ttl, const char *const *an,
                   const char *const *ns)
{
    assert_int_equal(r.kind, kind);
    assert_non_null(r.pkt);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), rcode);
    assert_int_equal(r.ttl, ttl);
    check_section(ldns_pkt_answer(r.pkt), an);
    check_section(ldns_pkt_authority(r.pkt), ns);
    check_section(ldns_pkt_additional(r.pkt), (const char *const[]){NULL});
    ldns_pkt_free(r.pkt);
}

static void expect_not(struct res r)
{
    assert_int_equal(r.kind, LOCALDATA_NOT);
    assert_null(r.pkt);
}

static const char *const NONE[] = {NULL};

static size_t wire(const char *text, uint8_t out[DNSWIRE_MAX_NAME])
{
    size_t n = dnswire_name_from_text(text, strlen(text), out);
    assert_true(n > 0);
    return n;
}

static void add_zone(struct localdata *ld, const char *name, enum localdata_zone_type t)
{
    uint8_t w[DNSWIRE_MAX_NAME];
    size_t n = wire(name, w);
    assert_int_equal(localdata_add_zone(ld, w, n, t), 0);
}

static void add_rr(struct localdata *ld, const char *text)
{
    char err[128] = "";
    int rc = localdata_add_rr(ld, text, err, sizeof(err));
    if (rc != 0)
        print_error("%s: %s\n", text, err);
    assert_int_equal(rc, 0);
}

static void add_host(struct localdata *ld, const char *addr, const char *name, bool first)
{
    uint8_t a[16], w[DNSWIRE_MAX_NAME];
    int fam = strchr(addr, ':') ? AF_INET6 : AF_INET;
    assert_int_equal(inet_pton(fam, addr, a), 1);
    size_t n = wire(name, w);
    assert_int_equal(localdata_add_host(ld, fam, a, w, n, first), 0);
}

#define SYNTH_SOA(zone) zone "\t300\tIN\tSOA\tlocalhost. nobody.invalid. 1 3600 1200 604800 300"

/* ---- hosts entries ------------------------------------------------------------------------ */

static void test_hosts(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_zone(ld, "home.arpa", LOCALDATA_STATIC);
    add_zone(ld, "168.192.in-addr.arpa", LOCALDATA_STATIC);
    add_host(ld, "192.168.1.10", "nas.home.arpa", true);
    add_host(ld, "192.168.1.10", "files.home.arpa", false); /* an alias on the same line */
    add_host(ld, "192.168.1.11", "nas.home.arpa", true);    /* a second address */
    add_host(ld, "fd00::10", "NAS.home.arpa", true);
    add_host(ld, "192.168.1.10", "other.home.arpa", true); /* a later line: no second PTR */
    add_host(ld, "192.168.1.10", "nas.home.arpa", true);   /* the same line again */
    assert_int_equal(localdata_finish(ld), 0);
    /* nas A 1.10, A 1.11, AAAA, files A, other A, 3 PTRs (duplicates dropped) */
    assert_int_equal(localdata_records(ld), 8);

    expect(ask(ld, "nas.home.arpa", 1), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"nas.home.arpa.\t3600\tIN\tA\t192.168.1.10",
                                 "nas.home.arpa.\t3600\tIN\tA\t192.168.1.11", NULL},
           NONE);
    expect(ask(ld, "nas.home.arpa", 28), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"nas.home.arpa.\t3600\tIN\tAAAA\tfd00::10", NULL}, NONE);
    expect(ask(ld, "files.home.arpa", 1), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"files.home.arpa.\t3600\tIN\tA\t192.168.1.10", NULL}, NONE);
    expect(ask(ld, "10.1.168.192.in-addr.arpa", 12), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"10.1.168.192.in-addr.arpa.\t3600\tIN\tPTR\tnas.home.arpa.", NULL},
           NONE);
    expect(ask(ld, "11.1.168.192.in-addr.arpa", 12), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"11.1.168.192.in-addr.arpa.\t3600\tIN\tPTR\tnas.home.arpa.", NULL},
           NONE);
    const char *v6ptr = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    char want[256];
    snprintf(want, sizeof(want), "%s.\t3600\tIN\tPTR\tnas.home.arpa.", v6ptr);
    expect(ask(ld, v6ptr, 12), LOCALDATA_ANSWER, 0, 3600, (const char *const[]){want, NULL}, NONE);
    /* no PTR for an address nobody named: NXDOMAIN in the reverse zone */
    expect(ask(ld, "12.1.168.192.in-addr.arpa", 12), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("168.192.in-addr.arpa."), NULL});
    /* the IPv6 reverse name is in no zone here: not local */
    expect_not(
        ask(ld, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", 12));
    localdata_free(ld);
}

/* A local-record PTR beats the hosts-made one, whatever the order. */
static void test_hosts_explicit_ptr(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_host(ld, "192.0.2.7", "auto.example", true);
    add_rr(ld, "7.2.0.192.in-addr.arpa. PTR chosen.example.");
    assert_int_equal(localdata_finish(ld), 0);
    expect(ask(ld, "7.2.0.192.in-addr.arpa", 12), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"7.2.0.192.in-addr.arpa.\t3600\tIN\tPTR\tchosen.example.", NULL},
           NONE);
    localdata_free(ld);
}

/* ---- records from text -------------------------------------------------------------------- */

static void test_records_text(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_rr(ld, "www.example.org. 300 IN A 192.0.2.1");
    add_rr(ld, "www.example.org. 300 IN AAAA 2001:db8::1");
    add_rr(ld, "txt.example.org. 60 TXT \"hello world\" \"two\"");
    add_rr(ld, "example.org. 120 IN MX 10 mail.example.org.");
    add_rr(ld, "_sip._tcp.example.org. 86400 IN SRV 10 60 5060 sip.example.org.");
    add_rr(ld, "alias.example.org. 30 IN CNAME www.example.org.");
    add_rr(ld, "relative A 198.51.100.1"); /* relative owner: absolute; TTL 3600, class IN */
    char err[128] = "";
    bool https =
        localdata_add_rr(ld, "example.org. 300 IN HTTPS 1 . alpn=h2", err, sizeof(err)) == 0;

    /* refused: garbage, meta types and classes, no rdata, a NULL text */
    const char *bad[] = {"this is not a record",
                         "x.example. 300 IN A 999.1.1.1",
                         "x.example. 300 IN ANY 1.2.3.4",
                         "x.example. 300 NONE A 1.2.3.4",
                         "x.example. 300 IN A",
                         "x.example. 300 IN OPT \\# 0",
                         "x.example. 2147483648 IN A 192.0.2.1",
                         NULL};
    for (size_t i = 0; bad[i]; i++) {
        err[0] = 0;
        assert_int_equal(localdata_add_rr(ld, bad[i], err, sizeof(err)), -EINVAL);
        assert_true(err[0] != 0);
    }
    assert_int_equal(localdata_add_rr(ld, NULL, err, sizeof(err)), -EINVAL);
    assert_int_equal(localdata_finish(ld), 0);
    assert_int_equal(localdata_records(ld), 7 + (https ? 1 : 0));
    /* no records added after finish */
    assert_int_equal(localdata_add_rr(ld, "late.example. A 192.0.2.9", err, sizeof(err)), -EINVAL);

    expect(ask(ld, "www.example.org", 1), LOCALDATA_ANSWER, 0, 300,
           (const char *const[]){"www.example.org.\t300\tIN\tA\t192.0.2.1", NULL}, NONE);
    expect(ask(ld, "www.example.org", 28), LOCALDATA_ANSWER, 0, 300,
           (const char *const[]){"www.example.org.\t300\tIN\tAAAA\t2001:db8::1", NULL}, NONE);
    expect(ask(ld, "txt.example.org", 16), LOCALDATA_ANSWER, 0, 60,
           (const char *const[]){"txt.example.org.\t60\tIN\tTXT\t\"hello world\" \"two\"", NULL},
           NONE);
    expect(ask(ld, "example.org", 15), LOCALDATA_ANSWER, 0, 120,
           (const char *const[]){"example.org.\t120\tIN\tMX\t10 mail.example.org.", NULL}, NONE);
    expect(ask(ld, "_sip._tcp.example.org", 33), LOCALDATA_ANSWER, 0, 86400,
           (const char *const[]){
               "_sip._tcp.example.org.\t86400\tIN\tSRV\t10 60 5060 sip.example.org.", NULL},
           NONE);
    expect(ask(ld, "relative", 1), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"relative.\t3600\tIN\tA\t198.51.100.1", NULL}, NONE);
    /* a CNAME is followed within the local data; the TTL is the smallest */
    expect(ask(ld, "alias.example.org", 1), LOCALDATA_ANSWER, 0, 30,
           (const char *const[]){"alias.example.org.\t30\tIN\tCNAME\twww.example.org.",
                                 "www.example.org.\t300\tIN\tA\t192.0.2.1", NULL},
           NONE);
    /* asked for the CNAME itself: not followed */
    expect(ask(ld, "alias.example.org", 5), LOCALDATA_ANSWER, 0, 30,
           (const char *const[]){"alias.example.org.\t30\tIN\tCNAME\twww.example.org.", NULL},
           NONE);
    if (https) {
        expect(ask(ld, "example.org", 65), LOCALDATA_ANSWER, 0, 300,
               (const char *const[]){"example.org.\t300\tIN\tHTTPS\t1 . alpn=h2", NULL}, NONE);
    } else {
        print_message("ldns does not parse HTTPS: %s\n", err);
    }
    /* ANY on a local name: all its records of the class */
    const char *any_mx = "example.org.\t120\tIN\tMX\t10 mail.example.org.";
    const char *any_https = "example.org.\t300\tIN\tHTTPS\t1 . alpn=h2";
    expect(ask(ld, "example.org", 255), LOCALDATA_ANSWER, 0, 120,
           (const char *const[]){any_mx, https ? any_https : NULL, NULL}, NONE);
    /* a local name without the type, outside any static zone: NODATA without SOA, TTL 0 */
    expect(ask(ld, "www.example.org", 16), LOCALDATA_NODATA, 0, 0, NONE, NONE);
    /* an empty non-terminal outside any zone, and a name below the data: not local */
    expect_not(ask(ld, "_tcp.example.org", 33));
    expect_not(ask(ld, "deeper.www.example.org", 1));
    expect_not(ask(ld, "example.com", 1));
    localdata_free(ld);
}

/* ---- static zones: NXDOMAIN, NODATA, empty non-terminals, the SOA --------------------------- */

static void test_static_zone(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_zone(ld, "home.arpa", LOCALDATA_STATIC);
    add_rr(ld, "nas.home.arpa. 600 IN A 192.168.1.10");
    add_rr(ld, "printer.office.home.arpa. 600 IN A 192.168.1.20");
    assert_int_equal(localdata_finish(ld), 0);
    const char *const soa[] = {SYNTH_SOA("home.arpa."), NULL};

    expect(ask(ld, "nas.home.arpa", 1), LOCALDATA_ANSWER, 0, 600,
           (const char *const[]){"nas.home.arpa.\t600\tIN\tA\t192.168.1.10", NULL}, NONE);
    /* rule 2: the name, another type: NODATA with the SOA; TTL min(SOA TTL, MINIMUM) */
    expect(ask(ld, "nas.home.arpa", 28), LOCALDATA_NODATA, 0, 300, NONE, soa);
    /* rule 3: no such name */
    expect(ask(ld, "nothere.home.arpa", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE, soa);
    expect(ask(ld, "x.nas.home.arpa", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE, soa);
    /* an empty non-terminal: NODATA */
    expect(ask(ld, "office.home.arpa", 1), LOCALDATA_NODATA, 0, 300, NONE, soa);
    /* the apex: its SOA is answered, other types are NODATA */
    expect(ask(ld, "home.arpa", 6), LOCALDATA_ANSWER, 0, 300, soa, NONE);
    expect(ask(ld, "home.arpa", 1), LOCALDATA_NODATA, 0, 300, NONE, soa);
    /* above the zone: not local */
    expect_not(ask(ld, "arpa", 6));
    localdata_free(ld);
}

/* local-record's SOA at a static zone's apex is the zone's SOA. */
static void test_local_soa(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_rr(ld, "corp.example. 600 IN SOA ns.corp.example. admin.corp.example. 5 3600 600 86400 60");
    add_rr(ld, "www.corp.example. 900 IN A 192.0.2.80");
    add_zone(ld, "corp.example", LOCALDATA_STATIC);
    assert_int_equal(localdata_finish(ld), 0);
    const char *own = "corp.example.\t600\tIN\tSOA\tns.corp.example. admin.corp.example. 5 3600 "
                      "600 86400 60";
    const char *const soa[] = {own, NULL};
    expect(ask(ld, "gone.corp.example", 1), LOCALDATA_NXDOMAIN, 3, 60, NONE, soa);
    expect(ask(ld, "www.corp.example", 28), LOCALDATA_NODATA, 0, 60, NONE, soa);
    expect(ask(ld, "corp.example", 6), LOCALDATA_ANSWER, 0, 600, soa, NONE);
    expect(ask(ld, "Corp.Example", 1), LOCALDATA_NODATA, 0, 60, NONE, soa);
    localdata_free(ld);
}

/* ---- nesting: the longest enclosing zone decides ----------------------------------------- */

static void test_zone_nesting(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_zone(ld, "lan", LOCALDATA_STATIC);
    add_zone(ld, "corp.lan", LOCALDATA_FORWARD);       /* forward under static */
    add_zone(ld, "secret.corp.lan", LOCALDATA_STATIC); /* static under that forward */
    add_zone(ld, "fwd.example", LOCALDATA_STATIC);
    add_zone(ld, "fwd.example", LOCALDATA_FORWARD); /* the same name again: replaced */
    add_rr(ld, "pinned.corp.lan. 60 IN A 10.0.0.1");
    assert_int_equal(localdata_finish(ld), 0);

    expect(ask(ld, "x.lan", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("lan."), NULL});
    /* names under the forward zone: not local, except its local data (rule 1, rule 2 without
     * SOA: a forward zone never has a negative answer of ours) */
    expect_not(ask(ld, "host.corp.lan", 1));
    expect_not(ask(ld, "corp.lan", 6));
    expect(ask(ld, "pinned.corp.lan", 1), LOCALDATA_ANSWER, 0, 60,
           (const char *const[]){"pinned.corp.lan.\t60\tIN\tA\t10.0.0.1", NULL}, NONE);
    expect(ask(ld, "pinned.corp.lan", 28), LOCALDATA_NODATA, 0, 0, NONE, NONE);
    /* the static zone under it */
    expect(ask(ld, "a.secret.corp.lan", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("secret.corp.lan."), NULL});
    expect_not(ask(ld, "a.fwd.example", 1));
    localdata_free(ld);
}

/* ---- the defaults, as policy.c adds them ------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    size_t n = 0;
    for (const char *const *z = localdata_default_zones; *z; z++, n++)
        add_zone(ld, *z, LOCALDATA_STATIC);
    /* RFC 6303 §4 (18 + 7 + 8 names), RFC 7793 (64), localhost, invalid, home.arpa, alt,
     * onion (not test: labs and dohgate's own tests serve it) */
    assert_int_equal(n, 18 + 7 + 8 + 64 + 5);
    assert_int_equal(localdata_add_localhost(ld), 0);
    assert_int_equal(localdata_finish(ld), 0);
    assert_int_equal(localdata_records(ld), 4);

    expect(ask(ld, "1.0.0.10.in-addr.arpa", 12), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("10.in-addr.arpa."), NULL});
    expect(ask(ld, "5.0.64.100.in-addr.arpa", 12), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("64.100.in-addr.arpa."), NULL});
    expect(ask(ld, "1.1.31.172.in-addr.arpa", 12), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("31.172.in-addr.arpa."), NULL});
    expect_not(ask(ld, "1.1.32.172.in-addr.arpa", 12));
    expect_not(ask(ld, "1.0.128.100.in-addr.arpa", 12));
    expect(ask(ld, "localhost", 1), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"localhost.\t3600\tIN\tA\t127.0.0.1", NULL}, NONE);
    expect(ask(ld, "localhost", 28), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"localhost.\t3600\tIN\tAAAA\t::1", NULL}, NONE);
    expect(ask(ld, "1.0.0.127.in-addr.arpa", 12), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"1.0.0.127.in-addr.arpa.\t3600\tIN\tPTR\tlocalhost.", NULL}, NONE);
    const char *v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa";
    char want[256];
    snprintf(want, sizeof(want), "%s.\t3600\tIN\tPTR\tlocalhost.", v6);
    expect(ask(ld, v6, 12), LOCALDATA_ANSWER, 0, 3600, (const char *const[]){want, NULL}, NONE);
    expect(ask(ld, "x.onion", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("onion."), NULL});
    expect(ask(ld, "printer.home.arpa", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("home.arpa."), NULL});
    expect(ask(ld, "a.b.invalid", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("invalid."), NULL});
    expect_not(ask(ld, "a.b.test", 1)); /* left to the upstreams */
    expect(ask(ld, "x.8.b.d.0.1.0.0.2.ip6.arpa", 12), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("8.b.d.0.1.0.0.2.ip6.arpa."), NULL});
    expect_not(ask(ld, "www.example.com", 1));
    expect_not(ask(ld, "arpa", 2));
    localdata_free(ld);
}

/* ---- EDNS, case, class -------------------------------------------------------------------- */

static void test_edns_case_class(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_zone(ld, "home.arpa", LOCALDATA_STATIC);
    add_rr(ld, "NAS.Home.Arpa. 60 IN A 192.168.1.10");
    add_rr(ld, "version.server. 0 CH TXT \"dohgate\"");
    assert_int_equal(localdata_finish(ld), 0);
    const char *const a[] = {"nas.home.arpa.\t60\tIN\tA\t192.168.1.10", NULL};
    /* the answer's owner is the question's name (a pointer to it): the query's case */
    const char *const a_case[] = {"nAs.HOME.arpa.\t60\tIN\tA\t192.168.1.10", NULL};
    expect(ask_edns(ld, "nas.home.arpa", 1, IN, 1), LOCALDATA_ANSWER, 0, 60, a, NONE);
    expect(ask_edns(ld, "nas.home.arpa", 1, IN, 0), LOCALDATA_ANSWER, 0, 60, a, NONE);
    expect(ask_edns(ld, "nAs.HOME.arpa", 1, IN, -1), LOCALDATA_ANSWER, 0, 60, a_case, NONE);
    expect(ask_edns(ld, "x.HOME.ARPA", 1, IN, 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){SYNTH_SOA("home.arpa."), NULL});
    /* another class: zones are IN's, records answer their own class only */
    expect_not(ask_edns(ld, "nas.home.arpa", 1, CH, -1));
    expect_not(ask_edns(ld, "x.home.arpa", 1, CH, 0));
    expect(ask_edns(ld, "version.server", 16, CH, -1), LOCALDATA_ANSWER, 0, 0,
           (const char *const[]){"version.server.\t0\tCH\tTXT\t\"dohgate\"", NULL}, NONE);
    expect_not(ask_edns(ld, "version.server", 16, IN, -1));
    localdata_free(ld);
}

/* ---- CNAME chains ------------------------------------------------------------------------- */

static void test_cname_chains(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    add_zone(ld, "home.arpa", LOCALDATA_STATIC);
    add_rr(ld, "a.home.arpa. 100 CNAME b.home.arpa.");
    add_rr(ld, "b.home.arpa. 50 CNAME c.home.arpa.");
    add_rr(ld, "c.home.arpa. 200 A 192.168.0.3");
    add_rr(ld, "loop1.home.arpa. 10 CNAME loop2.home.arpa.");
    add_rr(ld, "loop2.home.arpa. 10 CNAME LOOP1.home.arpa.");
    add_rr(ld, "out.home.arpa. 10 CNAME www.example.com.");
    add_rr(ld, "dangling.home.arpa. 10 CNAME nothing.home.arpa.");
    /* c0 -> c1 -> ... -> c10 (A): longer than 8 links */
    for (int i = 0; i < 10; i++) {
        char t[128];
        snprintf(t, sizeof(t), "c%d.home.arpa. 60 CNAME c%d.home.arpa.", i, i + 1);
        add_rr(ld, t);
    }
    add_rr(ld, "c10.home.arpa. 60 A 192.168.0.10");
    assert_int_equal(localdata_finish(ld), 0);

    expect(ask(ld, "a.home.arpa", 1), LOCALDATA_ANSWER, 0, 50,
           (const char *const[]){"a.home.arpa.\t100\tIN\tCNAME\tb.home.arpa.",
                                 "b.home.arpa.\t50\tIN\tCNAME\tc.home.arpa.",
                                 "c.home.arpa.\t200\tIN\tA\t192.168.0.3", NULL},
           NONE);
    /* the chain ends at a name with other types: NODATA for it, with the zone's SOA */
    expect(ask(ld, "a.home.arpa", 28), LOCALDATA_ANSWER, 0, 50,
           (const char *const[]){"a.home.arpa.\t100\tIN\tCNAME\tb.home.arpa.",
                                 "b.home.arpa.\t50\tIN\tCNAME\tc.home.arpa.", NULL},
           (const char *const[]){SYNTH_SOA("home.arpa."), NULL});
    /* a loop: each link once, then it stops */
    expect(ask(ld, "loop1.home.arpa", 1), LOCALDATA_ANSWER, 0, 10,
           (const char *const[]){"loop1.home.arpa.\t10\tIN\tCNAME\tloop2.home.arpa.",
                                 "loop2.home.arpa.\t10\tIN\tCNAME\tLOOP1.home.arpa.", NULL},
           NONE);
    /* out of the local data: the CNAME alone, the client follows it */
    expect(ask(ld, "out.home.arpa", 1), LOCALDATA_ANSWER, 0, 10,
           (const char *const[]){"out.home.arpa.\t10\tIN\tCNAME\twww.example.com.", NULL}, NONE);
    /* to a name that does not exist in the static zone: NXDOMAIN (RFC 6604) with the SOA */
    expect(ask(ld, "dangling.home.arpa", 1), LOCALDATA_ANSWER, 3, 10,
           (const char *const[]){"dangling.home.arpa.\t10\tIN\tCNAME\tnothing.home.arpa.", NULL},
           (const char *const[]){SYNTH_SOA("home.arpa."), NULL});
    /* 8 links at most */
    struct res r = ask(ld, "c0.home.arpa", 1);
    assert_int_equal(r.kind, LOCALDATA_ANSWER);
    assert_int_equal(ldns_pkt_ancount(r.pkt), 8);
    for (size_t i = 0; i < 8; i++) {
        ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(r.pkt), i);
        assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_CNAME);
    }
    ldns_pkt_free(r.pkt);
    expect(ask(ld, "c3.home.arpa", 1), LOCALDATA_ANSWER, 0, 60,
           (const char *const[]){"c3.home.arpa.\t60\tIN\tCNAME\tc4.home.arpa.",
                                 "c4.home.arpa.\t60\tIN\tCNAME\tc5.home.arpa.",
                                 "c5.home.arpa.\t60\tIN\tCNAME\tc6.home.arpa.",
                                 "c6.home.arpa.\t60\tIN\tCNAME\tc7.home.arpa.",
                                 "c7.home.arpa.\t60\tIN\tCNAME\tc8.home.arpa.",
                                 "c8.home.arpa.\t60\tIN\tCNAME\tc9.home.arpa.",
                                 "c9.home.arpa.\t60\tIN\tCNAME\tc10.home.arpa.",
                                 "c10.home.arpa.\t60\tIN\tA\t192.168.0.10", NULL},
           NONE);
    localdata_free(ld);
}

/* ---- errors and limits -------------------------------------------------------------------- */

static void test_errors(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    uint8_t a[4] = {192, 0, 2, 1};
    static const uint8_t bad[] = {3, 'a', 'b', 0};
    static const uint8_t good[] = {1, 'a', 0};
    assert_int_equal(localdata_add_host(ld, AF_INET, a, bad, sizeof(bad), true), -EINVAL);
    assert_int_equal(localdata_add_host(ld, AF_UNIX, a, good, sizeof(good), true), -EINVAL);
    assert_int_equal(localdata_add_host(ld, AF_INET, a, good, 2, true), -EINVAL);
    assert_int_equal(localdata_add_zone(ld, bad, sizeof(bad), LOCALDATA_STATIC), -EINVAL);
    assert_int_equal(localdata_add_zone(ld, good, sizeof(good), (enum localdata_zone_type)7),
                     -EINVAL);
    assert_int_equal(localdata_records(ld), 0);
    /* a large RRset: 300 TXT records of 250 bytes do not fit one message */
    for (int i = 0; i < 300; i++) {
        char t[400];
        int n = snprintf(t, sizeof(t), "big.example. TXT \"%03d", i);
        memset(t + n, 'x', 246);
        snprintf(t + n + 246, sizeof(t) - (size_t)n - 246, "\"");
        add_rr(ld, t);
    }
    for (int i = 0; i < 40; i++) {
        char t[64];
        snprintf(t, sizeof(t), "many.example. A 192.0.2.%d", i);
        add_rr(ld, t);
    }
    assert_int_equal(localdata_finish(ld), 0);
    assert_int_equal(localdata_finish(ld), -EINVAL);
    uint8_t q[512];
    size_t n = make_query(q, "big.example", 16, IN, -1);
    struct dg_buf ans = {0};
    assert_int_equal(localdata_answer(ld, q, n, &ans, NULL), -EMSGSIZE);
    assert_int_equal(ans.len, 0);
    /* more records than the stack array holds */
    expect(ask(ld, "many.example", 255), LOCALDATA_ANSWER, 0, 3600,
           (const char *const[]){"many.example.\t3600\tIN\tA\t192.0.2.0",
                                 "many.example.\t3600\tIN\tA\t192.0.2.1",
                                 "many.example.\t3600\tIN\tA\t192.0.2.2",
                                 "many.example.\t3600\tIN\tA\t192.0.2.3",
                                 "many.example.\t3600\tIN\tA\t192.0.2.4",
                                 "many.example.\t3600\tIN\tA\t192.0.2.5",
                                 "many.example.\t3600\tIN\tA\t192.0.2.6",
                                 "many.example.\t3600\tIN\tA\t192.0.2.7",
                                 "many.example.\t3600\tIN\tA\t192.0.2.8",
                                 "many.example.\t3600\tIN\tA\t192.0.2.9",
                                 "many.example.\t3600\tIN\tA\t192.0.2.10",
                                 "many.example.\t3600\tIN\tA\t192.0.2.11",
                                 "many.example.\t3600\tIN\tA\t192.0.2.12",
                                 "many.example.\t3600\tIN\tA\t192.0.2.13",
                                 "many.example.\t3600\tIN\tA\t192.0.2.14",
                                 "many.example.\t3600\tIN\tA\t192.0.2.15",
                                 "many.example.\t3600\tIN\tA\t192.0.2.16",
                                 "many.example.\t3600\tIN\tA\t192.0.2.17",
                                 "many.example.\t3600\tIN\tA\t192.0.2.18",
                                 "many.example.\t3600\tIN\tA\t192.0.2.19",
                                 "many.example.\t3600\tIN\tA\t192.0.2.20",
                                 "many.example.\t3600\tIN\tA\t192.0.2.21",
                                 "many.example.\t3600\tIN\tA\t192.0.2.22",
                                 "many.example.\t3600\tIN\tA\t192.0.2.23",
                                 "many.example.\t3600\tIN\tA\t192.0.2.24",
                                 "many.example.\t3600\tIN\tA\t192.0.2.25",
                                 "many.example.\t3600\tIN\tA\t192.0.2.26",
                                 "many.example.\t3600\tIN\tA\t192.0.2.27",
                                 "many.example.\t3600\tIN\tA\t192.0.2.28",
                                 "many.example.\t3600\tIN\tA\t192.0.2.29",
                                 "many.example.\t3600\tIN\tA\t192.0.2.30",
                                 "many.example.\t3600\tIN\tA\t192.0.2.31",
                                 "many.example.\t3600\tIN\tA\t192.0.2.32",
                                 "many.example.\t3600\tIN\tA\t192.0.2.33",
                                 "many.example.\t3600\tIN\tA\t192.0.2.34",
                                 "many.example.\t3600\tIN\tA\t192.0.2.35",
                                 "many.example.\t3600\tIN\tA\t192.0.2.36",
                                 "many.example.\t3600\tIN\tA\t192.0.2.37",
                                 "many.example.\t3600\tIN\tA\t192.0.2.38",
                                 "many.example.\t3600\tIN\tA\t192.0.2.39",
                                 NULL},
           NONE);
    dg_buf_free(&ans);
    localdata_free(ld);

    /* not finished: nothing is local yet */
    ld = localdata_new();
    assert_non_null(ld);
    add_zone(ld, "home.arpa", LOCALDATA_STATIC);
    expect_not(ask(ld, "x.home.arpa", 1));
    localdata_free(ld);
    localdata_free(NULL);
}

/* Every allocation of building, finishing and answering fails in turn: each call fails
 * cleanly (-ENOMEM, nothing taken, nothing appended), nothing leaks (ASan build), and a run
 * without a failure answers as it should. */
static void test_alloc_failure(void **state)
{
    (void)state;
    const char *const rrs[] = {"a.home.arpa. 60 A 192.168.0.1",
                               "b.home.arpa. 60 CNAME a.home.arpa.", "x.y.z.home.arpa. TXT \"t\"",
                               NULL};
    bool clean = false;
    unsigned long n;
    for (n = 1; !clean && n < 100000; n++) {
        calls = 0;
        fail_at = n;
        struct localdata *ld = localdata_new();
        if (!ld)
            continue;
        bool failed = false;
        for (size_t i = 0; rrs[i]; i++) {
            char err[64];
            size_t before = localdata_records(ld);
            int rc = localdata_add_rr(ld, rrs[i], err, sizeof(err));
            assert_true(rc == 0 || rc == -ENOMEM);
            assert_int_equal(localdata_records(ld), before + (rc == 0));
            failed |= rc != 0;
        }
        for (int i = 0; i < 20; i++) {
            uint8_t addr[4] = {192, 0, 2, (uint8_t)i};
            static const uint8_t name[] = {4,   'm', 'a', 'n', 'y', 4,   'h', 'o',
                                           'm', 'e', 4,   'a', 'r', 'p', 'a', 0};
            size_t before = localdata_records(ld);
            int rc = localdata_add_host(ld, AF_INET, addr, name, sizeof(name), true);
            assert_true(rc == 0 || rc == -ENOMEM);
            assert_int_equal(localdata_records(ld), before + (rc == 0 ? 2 : 0));
            failed |= rc != 0;
        }
        size_t before = localdata_records(ld);
        int rc = localdata_add_localhost(ld);
        assert_true(rc == 0 || rc == -ENOMEM);
        assert_int_equal(localdata_records(ld), before + (rc == 0 ? 4 : 0));
        failed |= rc != 0;
        for (const char *const *z = localdata_default_zones; *z; z++) {
            uint8_t w[DNSWIRE_MAX_NAME];
            size_t wl = dnswire_name_from_text(*z, strlen(*z), w);
            rc = localdata_add_zone(ld, w, wl, LOCALDATA_STATIC);
            assert_true(rc == 0 || rc == -ENOMEM);
            failed |= rc != 0;
        }
        rc = localdata_finish(ld);
        assert_true(rc == 0 || rc == -ENOMEM);
        if (rc != 0) {
            fail_at = 0;
            localdata_free(ld);
            continue;
        }
        const struct {
            const char *name;
            uint16_t type;
        } qs[] = {{"b.home.arpa", 1},
                  {"many.home.arpa", 1},
                  {"y.z.home.arpa", 1},
                  {"nx.home.arpa", 1},
                  {"www.example.com", 1}};
        int kinds[5];
        for (size_t i = 0; i < 5; i++) {
            uint8_t q[512];
            size_t qn = make_query(q, qs[i].name, qs[i].type, IN, 0);
            struct dg_buf ans = {0};
            kinds[i] = localdata_answer(ld, q, qn, &ans, NULL);
            assert_true(kinds[i] >= 0 || kinds[i] == -ENOMEM);
            if (kinds[i] < 0) {
                assert_int_equal(ans.len, 0);
                failed = true;
            }
            fail_at = 0;
            dg_buf_free(&ans);
            fail_at = n;
        }
        fail_at = 0;
        if (!failed && calls < n) {
            /* nothing failed: the answers are the real ones */
            clean = true;
            assert_int_equal(kinds[0], LOCALDATA_ANSWER);
            assert_int_equal(kinds[1], LOCALDATA_ANSWER);
            assert_int_equal(kinds[2], LOCALDATA_NODATA);
            assert_int_equal(kinds[3], LOCALDATA_NXDOMAIN);
            assert_int_equal(kinds[4], LOCALDATA_NOT);
        }
        localdata_free(ld);
    }
    assert_true(clean);
    /* the loop went through the allocations of every stage (34 when written) */
    assert_true(n > 20);
}

/* The top-level-label shortcut never hides local data: names under 40 different top-level
 * labels (past its 32 entries), in any case, a static root zone, and names under no local
 * label stay not local. */
static void test_tld_shortcut(void **state)
{
    (void)state;
    struct localdata *ld = localdata_new();
    assert_non_null(ld);
    char rr[80];
    for (int i = 0; i < 40; i++) {
        snprintf(rr, sizeof(rr), "h.tld%d. 60 IN A 192.0.2.%d", i, i + 1);
        add_rr(ld, rr);
    }
    add_zone(ld, "corp", LOCALDATA_STATIC);
    assert_int_equal(localdata_finish(ld), 0);
    for (int i = 0; i < 40; i++) {
        char name[32], want[64];
        snprintf(name, sizeof(name), "H.TLD%d", i);
        snprintf(want, sizeof(want), "H.TLD%d.\t60\tIN\tA\t192.0.2.%d", i, i + 1);
        expect(ask(ld, name, 1), LOCALDATA_ANSWER, 0, 60, (const char *const[]){want, NULL}, NONE);
    }
    expect(ask(ld, "X.Corp", 1), LOCALDATA_NXDOMAIN, 3, 300, NONE,
           (const char *const[]){"corp.\t300\tIN\tSOA\tlocalhost. nobody.invalid. 1 3600 1200 "
                                 "604800 300",
                                 NULL});
    expect_not(ask(ld, "www.example.com", 1));
    localdata_free(ld);

    /* few labels (the shortcut in force): still case-insensitive; the root asked: not local */
    ld = localdata_new();
    add_rr(ld, "nas.home.arpa. 60 IN A 192.0.2.1");
    assert_int_equal(localdata_finish(ld), 0);
    expect(ask(ld, "NAS.HOME.ARPA", 1), LOCALDATA_ANSWER, 0, 60,
           (const char *const[]){"NAS.HOME.ARPA.\t60\tIN\tA\t192.0.2.1", NULL}, NONE);
    expect_not(ask(ld, "nas.home.arpanet", 1));
    expect_not(ask(ld, "", 2));
    localdata_free(ld);

    /* a static root zone: everything is local */
    ld = localdata_new();
    add_zone(ld, ".", LOCALDATA_STATIC);
    assert_int_equal(localdata_finish(ld), 0);
    struct res r = ask(ld, "www.example.com", 1);
    assert_int_equal(r.kind, LOCALDATA_NXDOMAIN);
    ldns_pkt_free(r.pkt);
    localdata_free(ld);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hosts),           cmocka_unit_test(test_hosts_explicit_ptr),
        cmocka_unit_test(test_records_text),    cmocka_unit_test(test_static_zone),
        cmocka_unit_test(test_local_soa),       cmocka_unit_test(test_zone_nesting),
        cmocka_unit_test(test_defaults),        cmocka_unit_test(test_tld_shortcut),
        cmocka_unit_test(test_edns_case_class), cmocka_unit_test(test_cname_chains),
        cmocka_unit_test(test_errors),          cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
