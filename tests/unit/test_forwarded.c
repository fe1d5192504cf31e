/* forwarded: X-Forwarded-For and Forwarded (RFC 7239) parsing, the right-to-left walk over
 * trusted hops (nginx real_ip_recursive), and what malformed, unknown and obfuscated elements
 * do (stop, keep the last good address). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dohgate/acl.h"
#include "dohgate/client.h"
#include "dohgate/forwarded.h"

static bool trusted_by_acl(const struct client_id *hop, void *arg)
{
    return acl_allows_client(arg, hop);
}

/* The outcome for lines @p v (NULL-terminated) with trusted networks @p nets (NULL-terminated);
 * the address found into @p addr ("" for none). */
static enum forwarded_outcome walk(enum forwarded_kind kind, const char *const *v,
                                   const char *const *nets, char *addr)
{
    struct acl acl;
    size_t nn = 0, nv = 0;
    while (nets[nn])
        nn++;
    while (v[nv])
        nv++;
    assert_int_equal(acl_build(&acl, (char *const *)nets, nn, NULL, 0), 0);
    struct client_id out;
    memset(&out, 0, sizeof(out));
    enum forwarded_outcome o = forwarded_client(kind, v, nv, false, trusted_by_acl, &acl, &out);
    strcpy(addr, o == FORWARDED_NONE ? "" : out.text);
    return o;
}

static const char *const lo[] = {"127.0.0.0/8", NULL};

#define XFF(expect_o, expect_addr, ...)                                                            \
    do {                                                                                           \
        const char *const v_[] = {__VA_ARGS__, NULL};                                              \
        char a_[64];                                                                               \
        enum forwarded_outcome o_ = walk(FORWARDED_XFF, v_, lo, a_);                               \
        if (o_ != (expect_o) || strcmp(a_, expect_addr) != 0)                                      \
            fail_msg("xff %s: got %s %s", v_[0], forwarded_outcome_name(o_), a_);                  \
    } while (0)

#define FWD(expect_o, expect_addr, ...)                                                            \
    do {                                                                                           \
        const char *const v_[] = {__VA_ARGS__, NULL};                                              \
        char a_[64];                                                                               \
        enum forwarded_outcome o_ = walk(FORWARDED_RFC7239, v_, lo, a_);                           \
        if (o_ != (expect_o) || strcmp(a_, expect_addr) != 0)                                      \
            fail_msg("forwarded %s: got %s %s", v_[0], forwarded_outcome_name(o_), a_);            \
    } while (0)

static void test_xff_walk(void **state)
{
    (void)state;
    XFF(FORWARDED_CLIENT, "203.0.113.7", "203.0.113.7");
    /* right to left, trusted hops skipped: the first untrusted one */
    XFF(FORWARDED_CLIENT, "203.0.113.7", "198.51.100.1, 203.0.113.7, 127.0.0.5");
    XFF(FORWARDED_CLIENT, "203.0.113.7", "198.51.100.1,203.0.113.7,127.0.0.5,127.0.0.1");
    /* several lines joined in order */
    XFF(FORWARDED_CLIENT, "203.0.113.7", "198.51.100.1", "203.0.113.7", "127.0.0.5");
    XFF(FORWARDED_CLIENT, "198.51.100.1", "198.51.100.1, 127.0.0.9", "127.0.0.5");
    /* every hop trusted: the leftmost (nginx) */
    XFF(FORWARDED_ALL_TRUSTED, "127.0.0.9", "127.0.0.9, 127.0.0.5");
    /* ports and IPv6 forms */
    XFF(FORWARDED_CLIENT, "192.0.2.1", "192.0.2.1:4711");
    XFF(FORWARDED_CLIENT, "2001:db8::1", "2001:db8::1");
    XFF(FORWARDED_CLIENT, "2001:db8::1", "[2001:db8::1]");
    XFF(FORWARDED_CLIENT, "2001:db8::1", "[2001:db8::1]:443, 127.0.0.1");
    XFF(FORWARDED_CLIENT, "192.0.2.1", "::ffff:192.0.2.1"); /* mapped: IPv4 */
    /* empty elements are skipped, whitespace trimmed */
    XFF(FORWARDED_CLIENT, "203.0.113.7", " 203.0.113.7 ,, \t127.0.0.5 ,");
}

static void test_xff_bad(void **state)
{
    (void)state;
    /* nothing usable at the right end: keep the peer */
    XFF(FORWARDED_NONE, "", "");
    XFF(FORWARDED_NONE, "", "garbage");
    XFF(FORWARDED_NONE, "", "203.0.113.7, unknown");
    XFF(FORWARDED_NONE, "", "203.0.113.7, _hidden");
    /* a bad element behind trusted hops: stop at the last good (trusted) one */
    XFF(FORWARDED_STOPPED, "127.0.0.5", "203.0.113.7, bogus, 127.0.0.5");
    XFF(FORWARDED_STOPPED, "127.0.0.5", "203.0.113.7, 1.2.3.4.5, 127.0.0.5");
    XFF(FORWARDED_STOPPED, "127.0.0.5", "203.0.113.7, 192.0.2.1:99999, 127.0.0.5");
    XFF(FORWARDED_STOPPED, "127.0.0.5", "203.0.113.7, [2001:db8::1, 127.0.0.5");
    XFF(FORWARDED_STOPPED, "127.0.0.5", "203.0.113.7, [2001:db8::1]x, 127.0.0.5");
    XFF(FORWARDED_STOPPED, "127.0.0.5", "203.0.113.7, 2001:db8::g, 127.0.0.5");
    XFF(FORWARDED_STOPPED, "127.0.0.5",
        "203.0.113.7, "
        "11111111111111111111111111111111111111111111111111111111111111111111111, 127.0.0.5");
    /* a bad element left of the client does not matter */
    XFF(FORWARDED_CLIENT, "203.0.113.7", "junk, 203.0.113.7, 127.0.0.5");
}

static void test_forwarded(void **state)
{
    (void)state;
    FWD(FORWARDED_CLIENT, "192.0.2.43", "for=192.0.2.43");
    FWD(FORWARDED_CLIENT, "2001:db8::1", "for=\"[2001:db8::1]:4711\"");
    FWD(FORWARDED_CLIENT, "2001:db8:cafe::17", "For=\"[2001:db8:cafe::17]\";proto=https");
    FWD(FORWARDED_CLIENT, "192.0.2.43",
        "for=192.0.2.43;proto=https;by=203.0.113.43, for=\"127.0.0.5:80\"");
    FWD(FORWARDED_CLIENT, "198.51.100.17", "for=198.51.100.17 ; by=127.0.0.1", "for=127.0.0.1");
    FWD(FORWARDED_CLIENT, "192.0.2.1", "for=\"192.0.2.1:_port\"");
    /* a quoted comma does not split; escapes are read */
    FWD(FORWARDED_CLIENT, "192.0.2.1", "for=192.0.2.1;host=\"a,b\", for=\"127.0.0\\.1\"");
    FWD(FORWARDED_ALL_TRUSTED, "127.0.0.2", "for=127.0.0.2, for=127.0.0.3");
    /* unknown and obfuscated identifiers, no for=, two for=: stop */
    FWD(FORWARDED_NONE, "", "for=unknown");
    FWD(FORWARDED_NONE, "", "for=_hidden");
    FWD(FORWARDED_STOPPED, "127.0.0.5", "for=192.0.2.1, for=unknown, for=127.0.0.5");
    FWD(FORWARDED_STOPPED, "127.0.0.5", "for=192.0.2.1, proto=https, for=127.0.0.5");
    FWD(FORWARDED_STOPPED, "127.0.0.5", "for=192.0.2.1, for=1.1.1.1;for=2.2.2.2, for=127.0.0.5");
    /* RFC 7239 wants IPv6 in brackets and quoted, and ports quoted */
    FWD(FORWARDED_STOPPED, "127.0.0.5", "for=192.0.2.1, for=\"2001:db8::1\"", "for=127.0.0.5");
    FWD(FORWARDED_NONE, "", "for=192.0.2.1:80");
    /* a syntax error drops the rest of its line; later lines still count */
    FWD(FORWARDED_STOPPED, "127.0.0.5", "for=192.0.2.1, for=\"127.0.0.1", "for=127.0.0.5");
    FWD(FORWARDED_NONE, "", "for=192.0.2.1 junk");
    FWD(FORWARDED_NONE, "", "=1.2.3.4");
    FWD(FORWARDED_NONE, "", "for=");
}

/* More elements than are kept: a walk through all kept trusted ones does not call the
 * leftmost kept one the client. */
static void test_bounds(void **state)
{
    (void)state;
    char line[2048] = "203.0.113.7";
    for (int i = 0; i < FORWARDED_MAX_HOPS; i++)
        strcat(line, ", 127.0.0.1");
    XFF(FORWARDED_STOPPED, "127.0.0.1", line);
    char line2[2048] = "203.0.113.7";
    for (int i = 0; i < FORWARDED_MAX_HOPS - 1; i++)
        strcat(line2, ", 127.0.0.1");
    XFF(FORWARDED_CLIENT, "203.0.113.7", line2);
    /* lines the caller left out */
    struct acl acl;
    char *const nets[] = {"127.0.0.0/8"};
    assert_int_equal(acl_build(&acl, nets, 1, NULL, 0), 0);
    const char *const v[] = {"127.0.0.2"};
    struct client_id out;
    assert_int_equal(forwarded_client(FORWARDED_XFF, v, 1, true, trusted_by_acl, &acl, &out),
                     FORWARDED_STOPPED);
    assert_string_equal(out.text, "127.0.0.2");
    assert_int_equal(forwarded_client(FORWARDED_XFF, v, 1, false, trusted_by_acl, &acl, &out),
                     FORWARDED_ALL_TRUSTED);
    assert_int_equal(forwarded_client(FORWARDED_XFF, NULL, 0, false, trusted_by_acl, &acl, &out),
                     FORWARDED_NONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xff_walk),
        cmocka_unit_test(test_xff_bad),
        cmocka_unit_test(test_forwarded),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
