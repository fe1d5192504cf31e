/*
 * Unit tests for dnsjson.h: the JSON API's parameters (every parameter, every error with its
 * reason, escapes, percent-encoding, the name and type limits), the wire query they build (read
 * back with ldns, an independent decoder), and the JSON text of answers built with ldns (an
 * independent encoder), compared as exact strings; every JSON text produced is also fed to
 * python3's strict json parser at the end.
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

#include "dohgate/dnsjson.h"
#include "dohgate/dnswire.h"
#include "../../src/dnsjson_int.h"

/* ---- parameters ---------------------------------------------------------------------------- */

/* Parse @p qs; on success the wire query is parsed back with ldns into *pkt (caller frees). */
static int parse(const char *qs, struct dnsjson_opts *o, const char **why, ldns_pkt **pkt)
{
    struct dg_buf wire = {0};
    *why = "untouched";
    int rc = dnsjson_query_from_params(qs, strlen(qs), &wire, o, why);
    if (rc == 0) {
        assert_null(*why);
        assert_int_equal(ldns_wire2pkt(pkt, wire.data, wire.len), LDNS_STATUS_OK);
    } else {
        assert_int_equal(wire.len, 0);
        assert_non_null(*why);
    }
    dg_buf_free(&wire);
    return rc;
}

/* The one question of @p p: its name in presentation form, its type and class. */
static void check_question(ldns_pkt *p, const char *name, uint16_t type)
{
    assert_int_equal(ldns_pkt_qdcount(p), 1);
    ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(p), 0);
    char *s = ldns_rdf2str(ldns_rr_owner(q));
    assert_string_equal(s, name);
    free(s);
    assert_int_equal(ldns_rr_get_type(q), type);
    assert_int_equal(ldns_rr_get_class(q), LDNS_RR_CLASS_IN);
}

/* A 400 with exactly @p reason. */
static void expect_400(const char *qs, const char *reason)
{
    struct dnsjson_opts o;
    const char *why;
    ldns_pkt *p = NULL;
    assert_int_equal(parse(qs, &o, &why, &p), 400);
    assert_string_equal(why, reason);
}

/* Success; returns the query's type after checking the name. */
static uint16_t expect_ok(const char *qs, const char *name, struct dnsjson_opts *o)
{
    const char *why;
    ldns_pkt *p = NULL;
    assert_int_equal(parse(qs, o, &why, &p), 0);
    ldns_rr *q = ldns_rr_list_rr(ldns_pkt_question(p), 0);
    uint16_t t = (uint16_t)ldns_rr_get_type(q);
    check_question(p, name, t);
    ldns_pkt_free(p);
    return t;
}

static void test_params_defaults(void **state)
{
    struct dnsjson_opts o;
    const char *why;
    ldns_pkt *p = NULL;
    assert_int_equal(parse("name=example.com", &o, &why, &p), 0);
    check_question(p, "example.com.", LDNS_RR_TYPE_A);
    assert_int_equal(ldns_pkt_id(p), 0);
    assert_false(ldns_pkt_qr(p));
    assert_true(ldns_pkt_rd(p));
    assert_false(ldns_pkt_cd(p));
    assert_false(ldns_pkt_ad(p));
    assert_int_equal(ldns_pkt_get_opcode(p), LDNS_PACKET_QUERY);
    assert_int_equal(ldns_pkt_ancount(p), 0);
    assert_int_equal(ldns_pkt_nscount(p), 0);
    assert_true(ldns_pkt_edns(p));
    assert_int_equal(ldns_pkt_edns_udp_size(p), 1232);
    assert_false(ldns_pkt_edns_do(p));
    assert_int_equal(ldns_pkt_edns_version(p), 0);
    assert_null(ldns_pkt_edns_data(p));
    ldns_pkt_free(p);
    assert_int_equal(o.qtype, 1);
    assert_false(o.dnssec_ok);
    assert_false(o.checking_disabled);
    assert_false(o.wire_answer);
    assert_string_equal(o.content_type, "application/dns-json");
}

static void test_params_all(void **state)
{
    struct dnsjson_opts o;
    const char *why;
    ldns_pkt *p = NULL;
    assert_int_equal(parse("foo=bar&name=www.example.org.&type=aaaa&do=1&cd=true"
                           "&ct=application/dns-message&edns_client_subnet=192.0.2.0/24"
                           "&random_padding=xxxxxxxx&&=x&bar",
                           &o, &why, &p),
                     0);
    check_question(p, "www.example.org.", LDNS_RR_TYPE_AAAA);
    assert_true(ldns_pkt_cd(p));
    assert_true(ldns_pkt_rd(p));
    assert_true(ldns_pkt_edns_do(p));
    assert_int_equal(ldns_pkt_edns_udp_size(p), 1232);
    ldns_pkt_free(p);
    assert_int_equal(o.qtype, 28);
    assert_true(o.dnssec_ok);
    assert_true(o.checking_disabled);
    assert_true(o.wire_answer);
    assert_string_equal(o.content_type, "application/dns-message");

    /* the wire is appended to what the buffer holds */
    struct dg_buf wire = {0};
    assert_int_equal(dg_buf_append(&wire, "xy", 2), 0);
    assert_int_equal(dnsjson_query_from_params("name=.", 6, &wire, &o, NULL), 0);
    static const uint8_t want[] = {0, 0, 1, 0, 0, 1,  0,    0,    0, 0, 0, 1, 0, 0,
                                   1, 0, 1, 0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
    assert_int_equal(wire.len, 2 + sizeof(want));
    assert_memory_equal(wire.data, "xy", 2);
    assert_memory_equal(wire.data + 2, want, sizeof(want));
    /* a failure leaves it as it was */
    assert_int_equal(dnsjson_query_from_params("name=a..b", 9, &wire, &o, NULL), 400);
    assert_int_equal(wire.len, 2 + sizeof(want));
    dg_buf_free(&wire);
    /* the query string need not be NUL-terminated: only qslen bytes are read */
    assert_int_equal(dnsjson_query_from_params("name=a.b&type=FOO", 8, &wire, &o, NULL), 0);
    assert_int_equal(o.qtype, 1);
    dg_buf_free(&wire);
}

static void test_params_bools(void **state)
{
    struct dnsjson_opts o;
    const char *why;
    static const struct {
        const char *qs;
        bool d, c;
    } cases[] = {
        {"name=a&do=0&cd=0", false, false}, {"name=a&do=false&cd=FALSE", false, false},
        {"name=a&do=1&cd=1", true, true},   {"name=a&do=True&cd=TRUE", true, true},
        {"name=a&do=&cd=", true, true}, /* empty = true, as Google */
        {"name=a&do&cd", true, true},   /* no '=' either */
        {"name=a&do=%31", true, false}, /* percent-encoded "1" */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ldns_pkt *p = NULL;
        assert_int_equal(parse(cases[i].qs, &o, &why, &p), 0);
        assert_int_equal(o.dnssec_ok, cases[i].d);
        assert_int_equal(o.checking_disabled, cases[i].c);
        assert_int_equal(ldns_pkt_edns_do(p), cases[i].d);
        assert_int_equal(ldns_pkt_cd(p), cases[i].c);
        ldns_pkt_free(p);
    }
    expect_400("name=a&do=2", "do: not 0, 1, false or true");
    expect_400("name=a&do=yes", "do: not 0, 1, false or true");
    expect_400("name=a&cd=truex", "cd: not 0, 1, false or true");
    expect_400("name=a&cd=%00", "cd: not 0, 1, false or true");
    expect_400("name=a&cd=1111111111111111111111111111111111111111111111111111111111111111111",
               "cd: not 0, 1, false or true");
}

static void test_params_ct(void **state)
{
    struct dnsjson_opts o;
    expect_ok("name=a&ct=application/dns-json", "a.", &o);
    assert_string_equal(o.content_type, DNSJSON_CT_JSON);
    assert_false(o.wire_answer);
    expect_ok("name=a&ct=application%2Fx-javascript", "a.", &o);
    assert_string_equal(o.content_type, DNSJSON_CT_JS);
    assert_false(o.wire_answer);
    expect_ok("name=a&ct=Application/DNS-Message", "a.", &o);
    assert_string_equal(o.content_type, DNSJSON_CT_MESSAGE);
    assert_true(o.wire_answer);
    expect_ok("name=a&ct=", "a.", &o);
    assert_string_equal(o.content_type, DNSJSON_CT_JSON);
    assert_false(o.wire_answer);
    static const char *const bad = "ct: not application/dns-json, application/x-javascript or "
                                   "application/dns-message";
    expect_400("name=a&ct=text/html", bad);
    expect_400("name=a&ct=application/dns-json;x", bad);
    expect_400("name=a&ct=application/dns-json%00", bad);
    expect_400("name=a&ct=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
               bad);
}

static void test_params_type(void **state)
{
    struct dnsjson_opts o;
    assert_int_equal(expect_ok("name=a&type=A", "a.", &o), 1);
    assert_int_equal(expect_ok("name=a&type=mx", "a.", &o), 15);
    assert_int_equal(expect_ok("name=a&type=Https", "a.", &o), 65);
    assert_int_equal(expect_ok("name=a&type=any", "a.", &o), 255);
    assert_int_equal(expect_ok("name=a&type=1", "a.", &o), 1);
    assert_int_equal(expect_ok("name=a&type=00028", "a.", &o), 28);
    assert_int_equal(expect_ok("name=a&type=65535", "a.", &o), 65535);
    assert_int_equal(o.qtype, 65535);
    assert_int_equal(expect_ok("name=a&type=TYPE65", "a.", &o), 65);
    assert_int_equal(expect_ok("name=a&type=type65535", "a.", &o), 65535);
    assert_int_equal(expect_ok("name=a&type=%41%41%41%41", "a.", &o), 28);

    expect_400("name=a&type=0", "type: out of range (1-65535)");
    expect_400("name=a&type=65536", "type: out of range (1-65535)");
    expect_400("name=a&type=99999999999999999999999", "type: out of range (1-65535)");
    expect_400("name=a&type=TYPE0", "type: out of range (1-65535)");
    expect_400("name=a&type=TYPE65536", "type: out of range (1-65535)");
    /* ldns would read these as 1 and 70000 (atoi) */
    expect_400("name=a&type=TYPE1x", "type: unknown type 'TYPE1x'");
    expect_400("name=a&type=TYPE", "type: unknown type 'TYPE'");
    expect_400("name=a&type=FOO", "type: unknown type 'FOO'");
    expect_400("name=a&type=-1", "type: unknown type '-1'");
    expect_400("name=a&type=A%20", "type: unknown type 'A '");
    expect_400("name=a&type=", "type: empty");
    expect_400("name=a&type", "type: empty");
    /* the reason quotes printable ASCII only, at most 24 characters */
    expect_400("name=a&type=%1b%5b2J'%ff", "type: unknown type '?[2J?\?'");
    expect_400("name=a&type=A%00", "type: unknown type 'A?'");
    expect_400("name=a&type=ABCDEFGHIJKLMNOPQRSTUVWXYZ",
               "type: unknown type 'ABCDEFGHIJKLMNOPQRSTUVWX...'");
    expect_400("name=a&type=A&type=A", "type: given twice");
}

static void test_params_name(void **state)
{
    struct dnsjson_opts o;
    expect_ok("name=example.com.", "example.com.", &o);
    expect_ok("name=.", ".", &o);
    expect_ok("name=%2E", ".", &o);
    expect_ok("name=ExAmPlE.CoM", "ExAmPlE.CoM.", &o); /* case kept (0x20 and the cache's job) */
    /* escapes: \. is a dot inside a label, \065 is 'A' */
    expect_ok("name=a%5C.b.example", "a\\.b.example.", &o);
    expect_ok("name=%5C065%5C066.example", "AB.example.", &o);
    expect_ok("name=%5C000.example", "\\000.example.", &o);
    /* percent-encoding everywhere, '+' as a space (a label byte) */
    expect_ok("n%61me=%65xample%2ecom", "example.com.", &o);
    expect_ok("name=a+b.example", "a\\032b.example.", &o);
    expect_ok("name=a%20b", "a\\032b.", &o);

    expect_400("type=A", "name: missing");
    expect_400("", "name: missing");
    expect_400("nam=a", "name: missing");
    expect_400("Name=a", "name: missing");
    expect_400("name=", "name: empty");
    expect_400("name", "name: empty");
    expect_400("name=a..b", "name: empty label");
    expect_400("name=.a", "name: empty label");
    expect_400("name=a..", "name: empty label");
    expect_400("name=..", "name: empty label");
    expect_400("name=%5C256", "name: bad escape (\\X or \\DDD with DDD at most 255)");
    expect_400("name=a%5C", "name: bad escape (\\X or \\DDD with DDD at most 255)");
    expect_400("name=%5C06", "name: bad escape (\\X or \\DDD with DDD at most 255)");
    expect_400("name=a%00b", "name: NUL byte (write it as \\000)");
    expect_400("name=a%zzb", "name: bad percent-encoding");
    expect_400("name=a%4", "name: bad percent-encoding");
    expect_400("name=a%", "name: bad percent-encoding");
    expect_400("type=%4&name=a", "type: bad percent-encoding");
    expect_400("n%zme=a", "bad percent-encoding in a parameter name");
    expect_400("name=a&name=a", "name: given twice");
    expect_400("name=a&n%61me=b", "name: given twice");
}

/* @p n labels of @p lab bytes each, then a last label of @p last bytes (0: none). */
static char *make_name(int n, int lab, int last, bool dot)
{
    char *s = malloc((size_t)(n * (lab + 1) + last + 2));
    assert_non_null(s);
    char *p = s;
    for (int i = 0; i < n; i++) {
        memset(p, 'a' + i, (size_t)lab);
        p += lab;
        *p++ = '.';
    }
    memset(p, 'z', (size_t)last);
    p += last;
    if (!dot && p > s && p[-1] == '.')
        p--;
    if (dot && last)
        *p++ = '.';
    *p = '\0';
    return s;
}

static void test_params_limits(void **state)
{
    struct dnsjson_opts o;
    char qs[2048];
    /* a 63-byte label passes, 64 does not */
    char *n63 = make_name(1, 63, 0, false);
    snprintf(qs, sizeof(qs), "name=%s", n63);
    char want[1400];
    snprintf(want, sizeof(want), "%s.", n63);
    expect_ok(qs, want, &o);
    char *n64 = make_name(1, 64, 0, false);
    snprintf(qs, sizeof(qs), "name=%s.example", n64);
    expect_400(qs, "name: label longer than 63 bytes");
    /* 64-byte label written with escapes: 63 'a' + \066 */
    snprintf(qs, sizeof(qs), "name=%s%%5C066", n63);
    expect_400(qs, "name: label longer than 63 bytes");
    /* 255 wire bytes: 3 x (1 + 63) + (1 + 61) + root; with and without the trailing dot */
    char *n255 = make_name(3, 63, 61, false);
    snprintf(qs, sizeof(qs), "name=%s", n255);
    snprintf(want, sizeof(want), "%s.", n255);
    expect_ok(qs, want, &o);
    snprintf(qs, sizeof(qs), "name=%s.", n255);
    expect_ok(qs, want, &o);
    char *n256 = make_name(3, 63, 62, false);
    snprintf(qs, sizeof(qs), "name=%s", n256);
    expect_400(qs, "name: longer than 255 bytes");
    /* far too long text stops at the text bound, with the same reason */
    char big[1500];
    memset(big, 'a', sizeof(big) - 1);
    for (size_t i = 50; i < sizeof(big) - 1; i += 51)
        big[i] = '.';
    big[sizeof(big) - 1] = '\0';
    snprintf(qs, sizeof(qs), "name=%s", big);
    expect_400(qs, "name: longer than 255 bytes");
    /* 255 wire bytes written as \DDD escapes (1004 characters of text) still fit */
    char esc[2048];
    char *p = esc;
    for (int l = 0; l < 4; l++) {
        int n = l < 3 ? 63 : 61;
        for (int i = 0; i < n; i++) {
            memcpy(p, "%5C098", 6);
            p += 6;
        }
        *p++ = '.';
    }
    *p = '\0';
    char qs2[8192];
    snprintf(qs2, sizeof(qs2), "name=%s", esc);
    memset(want, 0, sizeof(want));
    char *w = want;
    for (int l = 0; l < 4; l++) {
        int n = l < 3 ? 63 : 61;
        memset(w, 'b', (size_t)n);
        w += n;
        *w++ = '.';
    }
    expect_ok(qs2, want, &o);
    free(n63);
    free(n64);
    free(n255);
    free(n256);
}

/* ---- format -------------------------------------------------------------------------------- */

struct answer_spec {
    const char *qname;
    ldns_rr_type qtype;
    ldns_pkt_rcode rcode;
    const char *const *an;
    const char *const *ns;
    const char *const *ar;
    uint16_t edns_udp; /* 0: no OPT */
    uint8_t edns_xrcode;
    bool tc, rd, ra, ad, cd;
};

static void push_records(ldns_pkt *p, ldns_pkt_section sec, const char *const *lines)
{
    for (size_t i = 0; lines && lines[i]; i++) {
        ldns_rr *rr = NULL;
        assert_int_equal(ldns_rr_new_frm_str(&rr, lines[i], 0, NULL, NULL), LDNS_STATUS_OK);
        assert_true(ldns_pkt_push_rr(p, sec, rr));
    }
}

static uint8_t *build_answer(const struct answer_spec *s, size_t *len)
{
    ldns_pkt *p = ldns_pkt_new();
    assert_non_null(p);
    ldns_pkt_set_id(p, 0x1234);
    ldns_pkt_set_qr(p, true);
    ldns_pkt_set_tc(p, s->tc);
    ldns_pkt_set_rd(p, s->rd);
    ldns_pkt_set_ra(p, s->ra);
    ldns_pkt_set_ad(p, s->ad);
    ldns_pkt_set_cd(p, s->cd);
    ldns_pkt_set_rcode(p, (uint8_t)s->rcode);
    ldns_rr *q = ldns_rr_new();
    ldns_rdf *owner = ldns_dname_new_frm_str(s->qname);
    assert_non_null(q);
    assert_non_null(owner);
    ldns_rr_set_owner(q, owner);
    ldns_rr_set_type(q, s->qtype);
    ldns_rr_set_class(q, LDNS_RR_CLASS_IN);
    ldns_rr_set_question(q, true);
    assert_true(ldns_pkt_push_rr(p, LDNS_SECTION_QUESTION, q));
    push_records(p, LDNS_SECTION_ANSWER, s->an);
    push_records(p, LDNS_SECTION_AUTHORITY, s->ns);
    push_records(p, LDNS_SECTION_ADDITIONAL, s->ar);
    if (s->edns_udp) {
        ldns_pkt_set_edns_udp_size(p, s->edns_udp);
        ldns_pkt_set_edns_extended_rcode(p, s->edns_xrcode);
    }
    uint8_t *wire = NULL;
    assert_int_equal(ldns_pkt2wire(&wire, p, len), LDNS_STATUS_OK);
    ldns_pkt_free(p);
    return wire;
}

/* Every JSON text the tests produced, one per line, for the strict parser at the end. */
static struct dg_buf all_json;

static void keep_json(const struct dg_buf *b)
{
    assert_null(memchr(b->data, '\n', b->len));
    assert_int_equal(dg_buf_append(&all_json, b->data, b->len), 0);
    assert_int_equal(dg_buf_append(&all_json, "\n", 1), 0);
}

/* Format @p wire both ways (hand-written renderers and ldns only); they must agree. */
static void expect_json_wire(const uint8_t *wire, size_t len, const char *want)
{
    struct dg_buf out = {0}, ref = {0};
    assert_int_equal(dg_buf_append(&out, "pre", 3), 0);
    assert_int_equal(dnsjson_format(wire, len, &out), 0);
    assert_int_equal(dnsjson_format_flags(wire, len, &ref, DNSJSON_LDNS_ONLY), 0);
    assert_int_equal(out.len, 3 + strlen(want));
    assert_memory_equal(out.data, "pre", 3);
    if (memcmp(out.data + 3, want, strlen(want)) != 0)
        fail_msg("got  %.*s\nwant %s", (int)out.len - 3, (const char *)out.data + 3, want);
    assert_int_equal(ref.len, strlen(want));
    assert_memory_equal(ref.data, want, ref.len);
    keep_json(&ref);
    dg_buf_free(&out);
    dg_buf_free(&ref);
}

static void expect_json(const struct answer_spec *s, const char *want)
{
    size_t len = 0;
    uint8_t *wire = build_answer(s, &len);
    expect_json_wire(wire, len, want);
    free(wire);
}

#define FLAGS_STD .rd = true, .ra = true

static void test_format_a(void **state)
{
    static const char *const an[] = {"example.com. 300 IN A 192.0.2.1",
                                     "example.com. 300 IN A 198.51.100.255", NULL};
    struct answer_spec s = {
        .qname = "example.com.", .qtype = LDNS_RR_TYPE_A, .an = an, .edns_udp = 1232, FLAGS_STD};
    expect_json(&s, "{\"Status\":0,\"TC\":false,\"RD\":true,\"RA\":true,\"AD\":false,\"CD\":false,"
                    "\"Question\":[{\"name\":\"example.com.\",\"type\":1}],"
                    "\"Answer\":[{\"name\":\"example.com.\",\"type\":1,\"TTL\":300,"
                    "\"data\":\"192.0.2.1\"},{\"name\":\"example.com.\",\"type\":1,\"TTL\":300,"
                    "\"data\":\"198.51.100.255\"}]}");
}

static void test_format_aaaa_cname(void **state)
{
    static const char *const an[] = {"www.example.com. 60 IN CNAME a.example.net.",
                                     "a.example.net. 120 IN CNAME b.example.org.",
                                     "b.example.org. 4294967295 IN AAAA 2001:db8::1", NULL};
    struct answer_spec s = {
        .qname = "www.example.com.", .qtype = LDNS_RR_TYPE_AAAA, .an = an, .ad = true, FLAGS_STD};
    expect_json(&s, "{\"Status\":0,\"TC\":false,\"RD\":true,\"RA\":true,\"AD\":true,\"CD\":false,"
                    "\"Question\":[{\"name\":\"www.example.com.\",\"type\":28}],"
                    "\"Answer\":[{\"name\":\"www.example.com.\",\"type\":5,\"TTL\":60,"
                    "\"data\":\"a.example.net.\"},{\"name\":\"a.example.net.\",\"type\":5,"
                    "\"TTL\":120,\"data\":\"b.example.org.\"},{\"name\":\"b.example.org.\","
                    "\"type\":28,\"TTL\":4294967295,\"data\":\"2001:db8::1\"}]}");
    static const char *const an6[] = {"x. 1 IN AAAA ::ffff:192.0.2.1",
                                      "x. 1 IN AAAA ::", "x. 1 IN AAAA fe80:0:0:1::", NULL};
    struct answer_spec s6 = {.qname = "x.", .qtype = LDNS_RR_TYPE_AAAA, .an = an6};
    expect_json(&s6,
                "{\"Status\":0,\"TC\":false,\"RD\":false,\"RA\":false,\"AD\":false,\"CD\":false,"
                "\"Question\":[{\"name\":\"x.\",\"type\":28}],\"Answer\":["
                "{\"name\":\"x.\",\"type\":28,\"TTL\":1,\"data\":\"::ffff:192.0.2.1\"},"
                "{\"name\":\"x.\",\"type\":28,\"TTL\":1,\"data\":\"::\"},"
                "{\"name\":\"x.\",\"type\":28,\"TTL\":1,\"data\":\"fe80:0:0:1::\"}]}");
}

static void test_format_mx_ns_ptr_additional(void **state)
{
    static const char *const an[] = {"example. 300 IN MX 10 mail.example.",
                                     "example. 300 IN MX 65535 .", NULL};
    static const char *const ns[] = {"example. 3600 IN NS ns1.example.", NULL};
    static const char *const ar[] = {"mail.example. 300 IN A 192.0.2.25",
                                     "1.2.0.192.in-addr.arpa. 5 IN PTR mail.example.", NULL};
    struct answer_spec s = {.qname = "example.",
                            .qtype = LDNS_RR_TYPE_MX,
                            .an = an,
                            .ns = ns,
                            .ar = ar,
                            .edns_udp = 4096,
                            FLAGS_STD};
    expect_json(&s, "{\"Status\":0,\"TC\":false,\"RD\":true,\"RA\":true,\"AD\":false,\"CD\":false,"
                    "\"Question\":[{\"name\":\"example.\",\"type\":15}],"
                    "\"Answer\":[{\"name\":\"example.\",\"type\":15,\"TTL\":300,"
                    "\"data\":\"10 mail.example.\"},{\"name\":\"example.\",\"type\":15,"
                    "\"TTL\":300,\"data\":\"65535 .\"}],"
                    "\"Authority\":[{\"name\":\"example.\",\"type\":2,\"TTL\":3600,"
                    "\"data\":\"ns1.example.\"}],"
                    "\"Additional\":[{\"name\":\"mail.example.\",\"type\":1,\"TTL\":300,"
                    "\"data\":\"192.0.2.25\"},{\"name\":\"1.2.0.192.in-addr.arpa.\",\"type\":12,"
                    "\"TTL\":5,\"data\":\"mail.example.\"}]}");
}

static void test_format_txt_escapes(void **state)
{
    /* a quote, a backslash, control bytes, DEL, a byte above 0x7f, several strings */
    static const char *const an[] = {
        "t.example. 10 IN TXT \"say \\\"hi\\\" \\\\ \\001\\031\\127\\200\" \"second\"",
        "t.example. 10 IN TXT \"\"", NULL};
    struct answer_spec s = {.qname = "t.example.", .qtype = LDNS_RR_TYPE_TXT, .an = an};
    /* ldns: "say \"hi\" \\ \001\031\127\200" "second" (\200 is byte 200); JSON escapes its '"' and
     * '\' */
    expect_json(&s,
                "{\"Status\":0,\"TC\":false,\"RD\":false,\"RA\":false,\"AD\":false,"
                "\"CD\":false,\"Question\":[{\"name\":\"t.example.\",\"type\":16}],"
                "\"Answer\":[{\"name\":\"t.example.\",\"type\":16,\"TTL\":10,"
                "\"data\":\"\\\"say \\\\\\\"hi\\\\\\\" \\\\\\\\ \\\\001\\\\031\\\\127\\\\200\\\""
                " \\\"second\\\"\"},{\"name\":\"t.example.\",\"type\":16,\"TTL\":10,"
                "\"data\":\"\\\"\\\"\"}]}");
}

static void test_format_name_escapes(void **state)
{
    /* owner name bytes: '"', '\', '.', ' ', 0x01, 0xff, and a compression pointer to it */
    static const uint8_t wire[] = {
        0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0,
        /* question: 6 bytes label + "ex" */
        6, '"', '\\', '.', ' ', 0x01, 0xff, 2, 'e', 'x', 0, 0, 5, 0, 1,
        /* answer: pointer to the question name, CNAME to "a;b" + pointer to "ex" */
        0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 7, 0, 6, 3, 'a', ';', 'b', 0xc0, 19};
    expect_json_wire(wire, sizeof(wire),
                     "{\"Status\":0,\"TC\":false,\"RD\":true,\"RA\":true,\"AD\":false,"
                     "\"CD\":false,\"Question\":[{\"name\":"
                     "\"\\\"\\\\\\\\\\\\.\\\\032\\\\001\\\\255.ex.\",\"type\":5}],"
                     "\"Answer\":[{\"name\":\"\\\"\\\\\\\\\\\\.\\\\032\\\\001\\\\255.ex.\","
                     "\"type\":5,\"TTL\":7,\"data\":\"a\\\\;b.ex.\"}]}");
}

static void test_format_nxdomain_soa(void **state)
{
    static const char *const ns[] = {
        "example. 300 IN SOA ns.example. hostmaster.example. 2024010101 7200 3600 1209600 300",
        NULL};
    struct answer_spec s = {.qname = "nope.example.",
                            .qtype = LDNS_RR_TYPE_A,
                            .rcode = LDNS_RCODE_NXDOMAIN,
                            .ns = ns,
                            .edns_udp = 1232,
                            .cd = true,
                            FLAGS_STD};
    expect_json(&s, "{\"Status\":3,\"TC\":false,\"RD\":true,\"RA\":true,\"AD\":false,\"CD\":true,"
                    "\"Question\":[{\"name\":\"nope.example.\",\"type\":1}],"
                    "\"Authority\":[{\"name\":\"example.\",\"type\":6,\"TTL\":300,"
                    "\"data\":\"ns.example. hostmaster.example. 2024010101 7200 3600 1209600 "
                    "300\"}]}");
}

static void test_format_flags_rcodes(void **state)
{
    struct answer_spec s = {.qname = ".",
                            .qtype = LDNS_RR_TYPE_NS,
                            .rcode = LDNS_RCODE_SERVFAIL,
                            .tc = true,
                            .ad = true,
                            .cd = true,
                            .rd = false,
                            .ra = true};
    expect_json(&s, "{\"Status\":2,\"TC\":true,\"RD\":false,\"RA\":true,\"AD\":true,\"CD\":true,"
                    "\"Question\":[{\"name\":\".\",\"type\":2}]}");
    /* the OPT's extended RCODE: BADVERS (16) = ext 1, rcode 0; the OPT itself never shows */
    struct answer_spec x = {.qname = "a.", .qtype = 1, .edns_udp = 512, .edns_xrcode = 1};
    expect_json(&x, "{\"Status\":16,\"TC\":false,\"RD\":false,\"RA\":false,\"AD\":false,"
                    "\"CD\":false,\"Question\":[{\"name\":\"a.\",\"type\":1}]}");
    /* other types through ldns: unknown (RFC 3597), HTTPS, CAA, DS */
    static const char *const an[] = {
        "a. 1 IN TYPE65280 \\# 2 0102", "a. 1 IN HTTPS 1 . alpn=h2,h3 port=443",
        "a. 1 IN CAA 0 issue \"ca.example\"",
        "a. 1 IN DS 12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        NULL};
    struct answer_spec o = {.qname = "a.", .qtype = 255, .an = an};
    expect_json(&o,
                "{\"Status\":0,\"TC\":false,\"RD\":false,\"RA\":false,\"AD\":false,\"CD\":false,"
                "\"Question\":[{\"name\":\"a.\",\"type\":255}],\"Answer\":["
                "{\"name\":\"a.\",\"type\":65280,\"TTL\":1,\"data\":\"\\\\# 2 0102\"},"
                "{\"name\":\"a.\",\"type\":65,\"TTL\":1,\"data\":\"1 . alpn=h2,h3 port=443\"},"
                "{\"name\":\"a.\",\"type\":257,\"TTL\":1,\"data\":\"0 issue \\\"ca.example\\\"\"},"
                "{\"name\":\"a.\",\"type\":43,\"TTL\":1,\"data\":\"12345 13 2 "
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"}]}");
}

static void expect_einval(const uint8_t *wire, size_t len)
{
    struct dg_buf out = {0};
    assert_int_equal(dg_buf_append(&out, "keep", 4), 0);
    assert_int_equal(dnsjson_format(wire, len, &out), -EINVAL);
    assert_int_equal(out.len, 4);
    assert_int_equal(dnsjson_format_flags(wire, len, &out, DNSJSON_LDNS_ONLY), -EINVAL);
    assert_int_equal(out.len, 4);
    dg_buf_free(&out);
}

static void test_format_invalid(void **state)
{
    static const char *const an[] = {"example.com. 300 IN A 192.0.2.1",
                                     "example.com. 300 IN MX 10 mx.example.com.", NULL};
    struct answer_spec s = {.qname = "example.com.", .qtype = 1, .an = an, .edns_udp = 1232};
    size_t len = 0;
    uint8_t *wire = build_answer(&s, &len);
    /* every truncation of a good answer fails, none crashes */
    for (size_t n = 0; n < len; n++)
        expect_einval(wire, n);
    free(wire);
    /* garbage */
    static const uint8_t garbage[] = "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
    expect_einval(garbage, sizeof(garbage));
    expect_einval(NULL, 0);
    /* a pointer loop in the question name */
    static const uint8_t loop[] = {0, 0, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1};
    expect_einval(loop, sizeof(loop));
    /* an A of 5 bytes, an A of 3, a TXT whose string runs past its rdata, a CNAME with a byte
       after its name: the counts and lengths are right, the rdata is not */
    uint8_t bad[64] = {0, 0,    0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 1, 0,
                       1, 0xc0, 12,   0,    1, 0, 1, 0, 0, 0, 9, 0, 5, 1,   2, 3, 4, 5};
    expect_einval(bad, 36);
    bad[30] = 3;
    expect_einval(bad, 34);
    bad[22] = 16; /* TXT */
    bad[30] = 3;
    bad[31] = 5; /* string of 5 in 3 bytes */
    expect_einval(bad, 34);
    bad[22] = 5; /* CNAME "." + a byte */
    bad[30] = 2;
    bad[31] = 0;
    bad[32] = 7;
    expect_einval(bad, 33);
    /* a compression pointer to offset 0 in an MX's name: the message passes the structural
       check (dnswire), ldns refuses the name (a pointer to 0 is invalid), and the hand-written
       MX renderer must too (found by fuzz_json_format) */
    static const uint8_t mx0[] = {0,   0, 0x81, 0x80, 0, 1, 0,    1,  0,   0,    0, 0, 1,
                                  'a', 0, 0,    15,   0, 1, 0xc0, 12, 0,   15,   0, 1, 0,
                                  0,   0, 9,    0,    6, 0, 10,   1,  'm', 0xc0, 0};
    expect_einval(mx0, sizeof(mx0));
    /* the same with a correct CNAME formats */
    bad[30] = 1;
    expect_json_wire(bad, 32,
                     "{\"Status\":0,\"TC\":false,\"RD\":true,\"RA\":true,\"AD\":false,"
                     "\"CD\":false,\"Question\":[{\"name\":\"a.\",\"type\":1}],\"Answer\":["
                     "{\"name\":\"a.\",\"type\":5,\"TTL\":9,\"data\":\".\"}]}");
}

static bool contains(const struct dg_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, s, n) == 0)
            return true;
    return false;
}

/* The JSON string escaper on every byte value (ldns escapes what it prints, so the answers
   above never reach its \u00XX and \DDD branches). */
static void test_json_string_bytes(void **state)
{
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    struct dg_buf out = {0};
    assert_int_equal(dnsjson_json_string(&out, all, sizeof(all)), 0);
    /* expected, built independently: JSON's short escapes are not used, \u00XX for all */
    char want[2048];
    size_t n = 0;
    want[n++] = '"';
    for (int c = 0; c < 256; c++) {
        if (c < 0x20 || c == 0x7f)
            n += (size_t)sprintf(want + n, "\\u%04x", c);
        else if (c == '"' || c == '\\')
            n += (size_t)sprintf(want + n, "\\%c", c);
        else if (c > 0x7f)
            n += (size_t)sprintf(want + n, "\\\\%03d", c);
        else
            want[n++] = (char)c;
    }
    want[n++] = '"';
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, want, n);
    /* spot checks of the rules themselves */
    assert_memory_equal(out.data, "\"\\u0000\\u0001", 13);
    assert_true(contains(&out, "!\\\"#", 4));
    assert_true(contains(&out, "[\\\\]", 4));
    assert_true(contains(&out, "~\\u007f\\\\128", 12));
    assert_memory_equal(out.data + out.len - 6, "\\\\255\"", 6);
    keep_json(&out);
    /* empty */
    out.len = 0;
    assert_int_equal(dnsjson_json_string(&out, all, 0), 0);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "\"\"", 2);
    dg_buf_free(&out);
}

/* The output buffer grows from empty, with names of the greatest length. */
static void test_format_long_names(void **state)
{
    char *name = make_name(3, 63, 61, true);
    char line[2][1200];
    snprintf(line[0], sizeof(line[0]), "%s 1 IN CNAME %s", name, name);
    snprintf(line[1], sizeof(line[1]), "%s 1 IN MX 1 %s", name, name);
    const char *an[] = {line[0], line[1], NULL};
    struct answer_spec s = {.qname = name, .qtype = 1, .an = an};
    size_t len = 0;
    uint8_t *wire = build_answer(&s, &len);
    struct dg_buf out = {0}, ref = {0};
    assert_int_equal(dnsjson_format(wire, len, &out), 0);
    assert_int_equal(dnsjson_format_flags(wire, len, &ref, DNSJSON_LDNS_ONLY), 0);
    assert_int_equal(out.len, ref.len);
    assert_memory_equal(out.data, ref.data, out.len);
    /* 4 names of 255 wire octets, 254 characters each plus the MX preference */
    assert_int_equal(out.len, 5 * 254 + strlen("{\"Status\":0,\"TC\":false,\"RD\":false,"
                                               "\"RA\":false,\"AD\":false,\"CD\":false,"
                                               "\"Question\":[{\"name\":\"\",\"type\":1}],"
                                               "\"Answer\":[{\"name\":\"\",\"type\":5,"
                                               "\"TTL\":1,\"data\":\"\"},{\"name\":\"\","
                                               "\"type\":15,\"TTL\":1,\"data\":\"1 \"}]}"));
    keep_json(&out);
    dg_buf_free(&out);
    dg_buf_free(&ref);
    free(wire);
    free(name);
}

/* Every JSON text above through python3's strict parser (and ASCII only). */
static void test_json_strict(void **state)
{
    assert_true(all_json.len > 0);
    FILE *f = popen("python3 -c 'import json,sys\n"
                    "n=0\n"
                    "for l in sys.stdin.buffer:\n"
                    "    l.decode(\"ascii\"); json.loads(l); n+=1\n"
                    "sys.exit(0 if n else 3)'",
                    "w");
    assert_non_null(f);
    assert_int_equal(fwrite(all_json.data, 1, all_json.len, f), all_json.len);
    assert_int_equal(pclose(f), 0);
    dg_buf_free(&all_json);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params_defaults),
        cmocka_unit_test(test_params_all),
        cmocka_unit_test(test_params_bools),
        cmocka_unit_test(test_params_ct),
        cmocka_unit_test(test_params_type),
        cmocka_unit_test(test_params_name),
        cmocka_unit_test(test_params_limits),
        cmocka_unit_test(test_format_a),
        cmocka_unit_test(test_format_aaaa_cname),
        cmocka_unit_test(test_format_mx_ns_ptr_additional),
        cmocka_unit_test(test_format_txt_escapes),
        cmocka_unit_test(test_format_name_escapes),
        cmocka_unit_test(test_format_nxdomain_soa),
        cmocka_unit_test(test_format_flags_rcodes),
        cmocka_unit_test(test_format_invalid),
        cmocka_unit_test(test_format_long_names),
        cmocka_unit_test(test_json_string_bytes),
        cmocka_unit_test(test_json_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
