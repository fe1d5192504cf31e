/* acl: CIDR parsing, longest-prefix decisions, allow-only and deny-only lists, IPv4-mapped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dohgate/acl.h"

static void test_parse(void **state)
{
    (void)state;
    struct acl_entry e;
    assert_int_equal(acl_parse("10.1.2.3/8", true, &e), 0);
    assert_int_equal(e.len, 4);
    assert_int_equal(e.bits, 8);
    assert_int_equal(e.addr[0], 10);
    assert_int_equal(e.addr[1], 0); /* host bits cleared */
    assert_int_equal(acl_parse("192.0.2.1", false, &e), 0);
    assert_int_equal(e.bits, 32);
    assert_int_equal(acl_parse("2001:db8::/32", true, &e), 0);
    assert_int_equal(e.len, 16);
    assert_int_equal(e.bits, 32);
    assert_int_equal(acl_parse("::ffff:10.0.0.0/104", true, &e), 0);
    assert_int_equal(e.len, 4);
    assert_int_equal(e.bits, 8);
    assert_int_equal(acl_parse("::ffff:10.0.0.1", true, &e), 0);
    assert_int_equal(e.bits, 32);
    const char *bad[] = {"",
                         "/8",
                         "10.0.0.0/",
                         "10.0.0.0/33",
                         "10.0.0.0/8x",
                         "10.0.0.0/-1",
                         "2001:db8::/129",
                         "host.example",
                         "::ffff:10.0.0.0/64",
                         "10.0.0/8"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(acl_parse(bad[i], true, &e), -1);
}

static void test_decide(void **state)
{
    (void)state;
    struct acl acl;
    char *allow[] = {"10.0.0.0/8", "2001:db8::/32"};
    char *deny[] = {"10.9.0.0/16", "10.9.9.9"};
    assert_int_equal(acl_build(&acl, allow, 2, deny, 2), 0);
    assert_true(acl_allows(&acl, "10.1.2.3"));
    assert_false(acl_allows(&acl, "10.9.1.1")); /* the longer deny wins */
    assert_false(acl_allows(&acl, "10.9.9.9"));
    assert_false(acl_allows(&acl, "192.0.2.1")); /* allow list: others are out */
    assert_true(acl_allows(&acl, "2001:db8:5::1"));
    assert_false(acl_allows(&acl, "2001:db9::1"));
    assert_true(acl_allows(&acl, "::ffff:10.1.2.3")); /* mapped = IPv4 */
    assert_false(acl_allows(&acl, "::ffff:10.9.1.1"));
    assert_false(acl_allows(&acl, "garbage"));

    /* deny only: everybody else is in */
    char *d2[] = {"192.0.2.0/24"};
    assert_int_equal(acl_build(&acl, NULL, 0, d2, 1), 0);
    assert_false(acl_allows(&acl, "192.0.2.200"));
    assert_true(acl_allows(&acl, "198.51.100.1"));
    assert_true(acl_allows(&acl, "::1"));

    /* a tie: deny wins; a more specific allow inside a deny: allowed */
    char *a3[] = {"192.0.2.0/24", "192.0.2.128/25"};
    char *d3[] = {"192.0.2.0/24"};
    assert_int_equal(acl_build(&acl, a3, 2, d3, 1), 0);
    assert_false(acl_allows(&acl, "192.0.2.1"));
    assert_true(acl_allows(&acl, "192.0.2.200"));

    /* no list at all */
    assert_int_equal(acl_build(&acl, NULL, 0, NULL, 0), 0);
    assert_false(acl_active(&acl));
    assert_true(acl_allows(&acl, "203.0.113.1"));
    assert_true(acl_allows(NULL, "203.0.113.1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_decide),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
