/*
 * Unit tests for policy.h: the policy built from a configuration and real files (local data,
 * the three list formats, allowlists, block answers, named policies), answers parsed back with
 * ldns, and the slot: views picking up a published policy, the file watch (settled files,
 * a broken file kept out once, a fixed one taken).
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
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>

#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/policy.h"

#define ERRLEN 1024
#define T_A    1
#define T_SOA  6
#define T_MX   15
#define T_TXT  16
#define T_AAAA 28

static char dir[64];

static void write_file(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    char tmp[140];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(rename(tmp, path), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/dg_policy_XXXXXX");
    assert_non_null(mkdtemp(dir));
    write_file("hosts.txt", "# a hosts-format blocklist\n0.0.0.0 ads.example\n"
                            "0.0.0.0 tracker.example metrics.example\n");
    write_file("domains.txt", "malware.example\n*.phish.example\n");
    write_file("adblock.txt", "[Adblock Plus 2.0]\n! comment\n||adnet.example^\n"
                              "@@||good.adnet.example^\n/banner/*\n");
    write_file("allow.txt", "ok.ads.example\n");
    write_file("adult.txt", "adult.example\n");
    write_file("etc_hosts", "192.168.1.10 nas.home.arpa nas\n192.168.1.11 printer.lan\n"
                            "fd00::10 nas.home.arpa\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* A configuration with the given extra "name value" pairs (NULL-terminated). */
static struct config *make_cfg(const char *const *kv)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "upstream", "192.0.2.53", "t", 0, err, ERRLEN), 0);
    for (size_t i = 0; kv[i]; i += 2) {
        char v[512];
        /* "@/" in a value is the test directory */
        const char *at = strstr(kv[i + 1], "@/");
        if (at)
            snprintf(v, sizeof(v), "%.*s%s/%s", (int)(at - kv[i + 1]), kv[i + 1], dir, at + 2);
        else
            snprintf(v, sizeof(v), "%s", kv[i + 1]);
        if (config_set(cfg, kv[i], v, "t", 0, err, ERRLEN) != 0)
            fail_msg("%s", err);
    }
    if (config_finish(cfg, err, ERRLEN) != 0)
        fail_msg("%s", err);
    return cfg;
}

static struct policy *make_policy(const char *const *kv)
{
    struct config *cfg = make_cfg(kv);
    char err[ERRLEN];
    struct policy *p = policy_build(cfg, err, ERRLEN);
    if (!p)
        fail_msg("%s", err);
    config_free(cfg);
    return p;
}

/* A query for @p name with EDNS (so that EDE can come back). */
static void query(const char *name, uint16_t type, bool edns, uint8_t **wire, size_t *len)
{
    ldns_pkt *q = NULL;
    assert_int_equal(ldns_pkt_query_new_frm_str(&q, name, type, LDNS_RR_CLASS_IN, LDNS_RD),
                     LDNS_STATUS_OK);
    ldns_pkt_set_id(q, 0x4242);
    if (edns) {
        ldns_pkt_set_edns_udp_size(q, 1232);
        ldns_pkt_set_edns_data(q, ldns_rdf_new_frm_data(LDNS_RDF_TYPE_UNKNOWN, 0, ""));
    }
    assert_int_equal(ldns_pkt2wire(wire, q, len), LDNS_STATUS_OK);
    ldns_pkt_free(q);
}

struct result {
    int outcome;
    ldns_pkt *pkt;
    uint32_t ttl;
};

static struct result ask_as(const struct policy *p, const char *name, uint16_t type,
                            const char *client, const char *id)
{
    uint8_t *q;
    size_t qlen;
    query(name, type, true, &q, &qlen);
    struct client_id c;
    if (client)
        assert_int_equal(client_id_from_string(&c, client), 0);
    struct dg_buf ans = {0};
    struct result r = {0};
    r.outcome =
        policy_apply(p, q, qlen, client ? &c : NULL, id, id ? strlen(id) : 0, &ans, &r.ttl, NULL);
    assert_true(r.outcome >= 0);
    if (r.outcome != POLICY_PASS) {
        assert_int_equal(ldns_wire2pkt(&r.pkt, ans.data, ans.len), LDNS_STATUS_OK);
        assert_int_equal(ldns_pkt_id(r.pkt), 0x4242);
        assert_true(ldns_pkt_qr(r.pkt));
    } else {
        assert_int_equal(ans.len, 0);
    }
    dg_buf_free(&ans);
    free(q);
    return r;
}

static struct result ask(const struct policy *p, const char *name, uint16_t type)
{
    return ask_as(p, name, type, NULL, NULL);
}

/* The first answer record's rdata as text ("0.0.0.0"). */
static char *rdata0(const ldns_pkt *pkt)
{
    assert_true(ldns_rr_list_rr_count(ldns_pkt_answer(pkt)) >= 1);
    return ldns_rdf2str(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(pkt), 0), 0));
}

/* The EDE info code of the answer's OPT, or -1. */
static int ede_code(const ldns_pkt *pkt)
{
    ldns_rdf *d = ldns_pkt_edns_data(pkt);
    if (!d)
        return -1;
    const uint8_t *b = ldns_rdf_data(d);
    size_t n = ldns_rdf_size(d);
    for (size_t o = 0; o + 4 <= n;) {
        unsigned code = (unsigned)(b[o] << 8 | b[o + 1]),
                 len = (unsigned)(b[o + 2] << 8 | b[o + 3]);
        if (code == 15 && len >= 2 && o + 4 + len <= n)
            return b[o + 4] << 8 | b[o + 5];
        o += 4 + len;
    }
    return -1;
}

static void expect_null_block(const struct policy *p, const char *name)
{
    struct result r = ask(p, name, T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NOERROR);
    char *t = rdata0(r.pkt);
    assert_string_equal(t, "0.0.0.0");
    free(t);
    assert_int_equal(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(r.pkt), 0)), 10);
    assert_int_equal(r.ttl, 10);
    assert_int_equal(ede_code(r.pkt), DNS_EDE_BLOCKED);
    ldns_pkt_free(r.pkt);
}

static void expect_pass(const struct policy *p, const char *name, uint16_t type)
{
    struct result r = ask(p, name, type);
    if (r.outcome != POLICY_PASS)
        fail_msg("%s was answered (outcome %d)", name, r.outcome);
}

static const char *const all_lists[] = {"blocklist",     "hosts=@/hosts.txt", "blocklist",
                                        "@/domains.txt", "blocklist",         "@/adblock.txt",
                                        "allowlist",     "@/allow.txt",       NULL};

static void test_blocklists(void **state)
{
    (void)state;
    struct policy *p = make_policy(all_lists);
    expect_null_block(p, "ads.example.");
    expect_null_block(p, "deep.sub.ads.example.");
    expect_null_block(p, "METRICS.example.");
    expect_null_block(p, "malware.example.");
    expect_null_block(p, "x.phish.example.");
    expect_null_block(p, "adnet.example.");
    expect_null_block(p, "a.adnet.example.");
    /* not blocked: the parent, a look-alike, the allowlist and the adblock exception */
    expect_pass(p, "example.", T_A);
    expect_pass(p, "xads.example.", T_A);
    expect_pass(p, "ok.ads.example.", T_A);
    expect_pass(p, "x.ok.ads.example.", T_A);
    expect_pass(p, "good.adnet.example.", T_A);

    /* null: :: for AAAA, NODATA for other types, EDE in each */
    struct result r = ask(p, "ads.example.", T_AAAA);
    char *t = rdata0(r.pkt);
    assert_string_equal(t, "::");
    free(t);
    ldns_pkt_free(r.pkt);
    r = ask(p, "ads.example.", T_MX);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NOERROR);
    assert_int_equal(ldns_pkt_ancount(r.pkt), 0);
    assert_int_equal(ede_code(r.pkt), DNS_EDE_BLOCKED);
    ldns_pkt_free(r.pkt);

    /* without EDNS no OPT is invented */
    uint8_t *q;
    size_t qlen;
    query("ads.example.", T_A, false, &q, &qlen);
    struct dg_buf ans = {0};
    uint32_t ttl;
    assert_int_equal(policy_apply(p, q, qlen, NULL, NULL, 0, &ans, &ttl, NULL), POLICY_BLOCKED);
    ldns_pkt *pkt;
    assert_int_equal(ldns_wire2pkt(&pkt, ans.data, ans.len), LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt_arcount(pkt), 0);
    ldns_pkt_free(pkt);
    dg_buf_free(&ans);
    free(q);

    char d[300];
    policy_describe(p, d, sizeof(d));
    assert_non_null(strstr(d, "blocked names in 3 lists"));
    assert_non_null(strstr(d, "1 adblock rules skipped"));
    policy_unref(p);
}

static void test_block_modes(void **state)
{
    (void)state;
    const char *const nx[] = {"blocklist", "@/hosts.txt", "block-answer", "nxdomain", "block-ttl",
                              "30",        NULL};
    struct policy *p = make_policy(nx);
    struct result r = ask(p, "sub.ads.example.", T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NXDOMAIN);
    assert_int_equal(ldns_pkt_ancount(r.pkt), 0);
    assert_int_equal(ldns_pkt_nscount(r.pkt), 1);
    ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_authority(r.pkt), 0);
    assert_int_equal(ldns_rr_get_type(soa), LDNS_RR_TYPE_SOA);
    char *owner = ldns_rdf2str(ldns_rr_owner(soa));
    assert_string_equal(owner, "ads.example.");
    free(owner);
    assert_int_equal(ldns_rr_ttl(soa), 30);
    assert_int_equal(ede_code(r.pkt), DNS_EDE_BLOCKED);
    ldns_pkt_free(r.pkt);
    policy_unref(p);

    const char *const refused[] = {"blocklist", "@/hosts.txt", "block-answer", "refused", NULL};
    p = make_policy(refused);
    r = ask(p, "ads.example.", T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_REFUSED);
    assert_int_equal(ede_code(r.pkt), DNS_EDE_BLOCKED);
    ldns_pkt_free(r.pkt);
    policy_unref(p);
}

static void test_local_data(void **state)
{
    (void)state;
    const char *const kv[] = {"hosts-file",
                              "@/etc_hosts",
                              "local-record",
                              "mail.home.arpa. 600 IN MX 10 nas.home.arpa.",
                              "local-zone",
                              "corp.internal",
                              NULL};
    struct policy *p = make_policy(kv);
    struct result r = ask(p, "nas.home.arpa.", T_A);
    assert_int_equal(r.outcome, POLICY_LOCAL);
    char *t = rdata0(r.pkt);
    assert_string_equal(t, "192.168.1.10");
    free(t);
    assert_true(ldns_pkt_aa(r.pkt));
    ldns_pkt_free(r.pkt);
    r = ask(p, "NAS.home.arpa.", T_AAAA);
    t = rdata0(r.pkt);
    assert_string_equal(t, "fd00::10");
    free(t);
    ldns_pkt_free(r.pkt);
    r = ask(p, "10.1.168.192.in-addr.arpa.", LDNS_RR_TYPE_PTR);
    assert_int_equal(r.outcome, POLICY_LOCAL);
    t = rdata0(r.pkt);
    assert_string_equal(t, "nas.home.arpa.");
    free(t);
    ldns_pkt_free(r.pkt);
    /* a name outside any local zone with data (printer.lan) is answered; its other types and
     * other .lan names are not ours */
    r = ask(p, "printer.lan.", T_A);
    assert_int_equal(r.outcome, POLICY_LOCAL);
    ldns_pkt_free(r.pkt);
    expect_pass(p, "scanner.lan.", T_A);
    /* a local zone: NXDOMAIN with its SOA, never forwarded */
    r = ask(p, "nothing.corp.internal.", T_A);
    assert_int_equal(r.outcome, POLICY_LOCAL);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NXDOMAIN);
    assert_int_equal(ldns_rr_get_type(ldns_rr_list_rr(ldns_pkt_authority(r.pkt), 0)),
                     LDNS_RR_TYPE_SOA);
    ldns_pkt_free(r.pkt);
    /* defaults: RFC 6303 reverse zones, localhost, home.arpa */
    r = ask(p, "3.2.1.10.in-addr.arpa.", LDNS_RR_TYPE_PTR);
    assert_int_equal(r.outcome, POLICY_LOCAL);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NXDOMAIN);
    ldns_pkt_free(r.pkt);
    r = ask(p, "localhost.", T_A);
    t = rdata0(r.pkt);
    assert_string_equal(t, "127.0.0.1");
    free(t);
    ldns_pkt_free(r.pkt);
    r = ask(p, "other.home.arpa.", T_A);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_NXDOMAIN);
    ldns_pkt_free(r.pkt);
    /* local data wins over a blocklist? not configured here; the public internet passes */
    expect_pass(p, "www.example.com.", T_A);
    policy_unref(p);

    /* a forward-zone takes a default zone over: not answered locally any more */
    const char *const fwd[] = {"forward-zone", "10.in-addr.arpa 192.0.2.1", NULL};
    p = make_policy(fwd);
    expect_pass(p, "3.2.1.10.in-addr.arpa.", LDNS_RR_TYPE_PTR);
    r = ask(p, "3.2.1.168.192.in-addr.arpa.", LDNS_RR_TYPE_PTR);
    assert_int_equal(r.outcome, POLICY_LOCAL); /* the other defaults stay */
    ldns_pkt_free(r.pkt);
    policy_unref(p);
}

static void test_named_policies(void **state)
{
    (void)state;
    const char *const kv[] = {"blocklist",
                              "ads=@/hosts.txt",
                              "blocklist",
                              "adult=@/adult.txt",
                              "policy",
                              "kids ads adult",
                              "policy",
                              "default ads",
                              "policy",
                              "open",
                              "policy-client",
                              "tablet kids",
                              "policy-client",
                              "10.0.0.0/8 open",
                              "policy-client",
                              "10.1.0.0/16 kids",
                              NULL};
    struct policy *p = make_policy(kv);
    assert_true(policy_find_id(p, "tablet", 6) >= 0);
    assert_int_equal(policy_find_id(p, "tablet2", 7), -1);
    /* default: ads only */
    assert_int_equal(ask(p, "adult.example.", T_A).outcome, POLICY_PASS);
    struct result r = ask(p, "ads.example.", T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);
    /* the ID's policy */
    r = ask_as(p, "adult.example.", T_A, "192.0.2.1", "tablet");
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);
    /* networks: the longest wins; "open" blocks nothing */
    assert_int_equal(ask_as(p, "ads.example.", T_A, "10.2.3.4", NULL).outcome, POLICY_PASS);
    r = ask_as(p, "adult.example.", T_A, "10.1.3.4", NULL);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);
    /* an ID wins over the network */
    r = ask_as(p, "adult.example.", T_A, "10.2.3.4", "tablet");
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);
    policy_unref(p);
}

static void test_build_errors(void **state)
{
    (void)state;
    char err[ERRLEN];
    write_file("broken.txt", "good.example\nbad..name\n");
    const char *const kv[] = {"blocklist", "@/broken.txt", NULL};
    struct config *cfg = make_cfg(kv);
    assert_null(policy_build(cfg, err, ERRLEN));
    assert_non_null(strstr(err, "broken.txt:2: "));
    config_free(cfg);
    const char *const missing[] = {"hosts-file", "@/no-such-file", NULL};
    cfg = make_cfg(missing);
    assert_null(policy_build(cfg, err, ERRLEN));
    assert_non_null(strstr(err, "no-such-file"));
    config_free(cfg);
}

/* Make the file's mtime differ from what was seen (same-second rewrites). */
static void touch_later(const char *name, int secs)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec += secs;
    ts[1] = ts[0];
    assert_int_equal(utimensat(AT_FDCWD, path, ts, 0), 0);
}

static void test_slot_and_watch(void **state)
{
    (void)state;
    write_file("watched.txt", "first.example\n");
    const char *const kv[] = {"blocklist", "@/watched.txt", NULL};
    struct config *cfg = make_cfg(kv);
    char err[ERRLEN];
    struct policy *p = policy_build(cfg, err, ERRLEN);
    assert_non_null(p);
    struct policy_slot *slot = policy_slot_new(p);
    assert_non_null(slot);
    struct policy_view v = {.slot = slot};
    const struct policy *cur = policy_view_get(&v);
    assert_ptr_equal(cur, p);
    struct result r = ask(cur, "first.example.", T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);

    /* nothing changed: nothing done */
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 0);
    /* a new file: seen once (not settled), then taken */
    write_file("watched.txt", "second.example\n");
    touch_later("watched.txt", 2);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 0);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 1);
    assert_non_null(strstr(err, "1 blocked names"));
    cur = policy_view_get(&v);
    assert_ptr_not_equal(cur, p); /* the view picked the new one up */
    assert_int_equal(ask(cur, "first.example.", T_A).outcome, POLICY_PASS);
    r = ask(cur, "second.example.", T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);
    /* a broken file: one failure, then quiet, the data stays */
    const struct policy *before = cur;
    write_file("watched.txt", "third.example\nbad..name\n");
    touch_later("watched.txt", 4);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 0);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), -1);
    assert_non_null(strstr(err, "watched.txt:2: "));
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 0);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 0);
    assert_ptr_equal(policy_view_get(&v), before);
    /* fixed: taken */
    write_file("watched.txt", "third.example\n");
    touch_later("watched.txt", 6);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 0);
    assert_int_equal(policy_slot_poll(slot, cfg, err, ERRLEN), 1);
    r = ask(policy_view_get(&v), "third.example.", T_A);
    assert_int_equal(r.outcome, POLICY_BLOCKED);
    ldns_pkt_free(r.pkt);

    policy_view_release(&v);
    policy_slot_free(slot);
    config_free(cfg);
}

/* A view keeps a policy made for its own forward zones: one built for other zones (a reload
 * that changed them) is not taken, one for the same zones is. */
static void test_view_keeps_its_zones(void **state)
{
    (void)state;
    char err[ERRLEN];
    const char *const none[] = {NULL};
    const char *const fwd[] = {"forward-zone", "10.in-addr.arpa 192.0.2.1", NULL};
    struct config *ca = make_cfg(none), *cb = make_cfg(fwd), *cc = make_cfg(none);
    struct policy *pa = policy_build(ca, err, ERRLEN);
    struct policy_slot *slot = policy_slot_new(pa);
    assert_non_null(slot);
    struct policy_view v = {.slot = slot, .cfg = ca};
    assert_ptr_equal(policy_view_get(&v), pa);
    /* a policy for a configuration that forwards 10.in-addr.arpa: this view does not */
    struct policy *pb = policy_build(cb, err, ERRLEN);
    policy_slot_publish(slot, pb);
    assert_ptr_equal(policy_view_get(&v), pa);
    struct result r = ask(policy_view_get(&v), "3.2.1.10.in-addr.arpa.", LDNS_RR_TYPE_PTR);
    assert_int_equal(r.outcome, POLICY_LOCAL); /* still answered here: never sent upstream */
    ldns_pkt_free(r.pkt);
    /* a view of the new configuration takes it */
    struct policy_view vb = {.slot = slot, .cfg = cb};
    assert_ptr_equal(policy_view_get(&vb), pb);
    /* same zones as the first view (a list changed, say): taken */
    struct policy *pc = policy_build(cc, err, ERRLEN);
    policy_slot_publish(slot, pc);
    assert_ptr_equal(policy_view_get(&v), pc);
    policy_view_release(&v);
    policy_view_release(&vb);
    policy_slot_free(slot);
    config_free(ca);
    config_free(cb);
    config_free(cc);
}

/* Blocklists apply to class IN and ANY; local records too many for a message get SERVFAIL. */
static void test_class_and_size(void **state)
{
    (void)state;
    const char *const kv[] = {"blocklist", "@/hosts.txt", NULL};
    struct policy *p = make_policy(kv);
    uint8_t *q;
    size_t qlen;
    ldns_pkt *pkt = NULL;
    assert_int_equal(
        ldns_pkt_query_new_frm_str(&pkt, "ads.example.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_CH, LDNS_RD),
        LDNS_STATUS_OK);
    assert_int_equal(ldns_pkt2wire(&q, pkt, &qlen), LDNS_STATUS_OK);
    ldns_pkt_free(pkt);
    struct dg_buf ans = {0};
    uint32_t ttl;
    assert_int_equal(policy_apply(p, q, qlen, NULL, NULL, 0, &ans, &ttl, NULL), POLICY_PASS);
    free(q);
    policy_unref(p);

    /* 5,000 A records of one name: more than a message holds */
    struct config *cfg = config_new();
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "upstream", "192.0.2.53", "t", 0, err, ERRLEN), 0);
    for (int i = 0; i < 5000; i++) {
        char rr[80];
        snprintf(rr, sizeof(rr), "big.home.arpa. 60 IN A 10.%d.%d.%d", i >> 16, (i >> 8) & 255,
                 i & 255);
        assert_int_equal(config_set(cfg, "local-record", rr, "t", 0, err, ERRLEN), 0);
    }
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    p = policy_build(cfg, err, ERRLEN);
    assert_non_null(p);
    config_free(cfg);
    struct result r = ask(p, "big.home.arpa.", T_A);
    assert_int_equal(r.outcome, POLICY_LOCAL);
    assert_int_equal(ldns_pkt_get_rcode(r.pkt), LDNS_RCODE_SERVFAIL);
    assert_int_equal(r.ttl, 0);
    ldns_pkt_free(r.pkt);
    policy_unref(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocklists),           cmocka_unit_test(test_block_modes),
        cmocka_unit_test(test_local_data),           cmocka_unit_test(test_named_policies),
        cmocka_unit_test(test_build_errors),         cmocka_unit_test(test_slot_and_watch),
        cmocka_unit_test(test_view_keeps_its_zones), cmocka_unit_test(test_class_and_size),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
