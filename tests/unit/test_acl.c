/* acl: CIDR parsing, longest-prefix decisions, allow-only and deny-only lists, IPv4-mapped,
 * clients as accept() reports them. */
#include <setjmp.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "dohgate/acl.h"
#include "dohgate/client.h"

/* The decision for a client written as text ("garbage": the unknown client). */
static bool allows(const struct acl *acl, const char *addr)
{
    struct client_id id;
    client_id_from_string(&id, addr);
    return acl_allows_client(acl, &id);
}

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
    assert_true(allows(&acl, "10.1.2.3"));
    assert_false(allows(&acl, "10.9.1.1")); /* the longer deny wins */
    assert_false(allows(&acl, "10.9.9.9"));
    assert_false(allows(&acl, "192.0.2.1")); /* allow list: others are out */
    assert_true(allows(&acl, "2001:db8:5::1"));
    assert_false(allows(&acl, "2001:db9::1"));
    assert_true(allows(&acl, "::ffff:10.1.2.3")); /* mapped = IPv4 */
    assert_false(allows(&acl, "::ffff:10.9.1.1"));
    assert_false(allows(&acl, "garbage"));

    /* deny only: everybody else is in */
    char *d2[] = {"192.0.2.0/24"};
    assert_int_equal(acl_build(&acl, NULL, 0, d2, 1), 0);
    assert_false(allows(&acl, "192.0.2.200"));
    assert_true(allows(&acl, "198.51.100.1"));
    assert_true(allows(&acl, "::1"));

    /* a tie: deny wins; a more specific allow inside a deny: allowed */
    char *a3[] = {"192.0.2.0/24", "192.0.2.128/25"};
    char *d3[] = {"192.0.2.0/24"};
    assert_int_equal(acl_build(&acl, a3, 2, d3, 1), 0);
    assert_false(allows(&acl, "192.0.2.1"));
    assert_true(allows(&acl, "192.0.2.200"));

    /* no list at all */
    assert_int_equal(acl_build(&acl, NULL, 0, NULL, 0), 0);
    assert_false(acl_active(&acl));
    assert_true(allows(&acl, "203.0.113.1"));
    assert_true(allows(NULL, "203.0.113.1"));
}

/* Clients filled from sockaddrs, as at accept: mapped IPv6 is IPv4, other families are refused
 * by a list with entries (and let through by none). */
static void test_sockaddr_clients(void **state)
{
    (void)state;
    struct acl acl;
    char *allow[] = {"10.0.0.0/8"};
    assert_int_equal(acl_build(&acl, allow, 1, NULL, 0), 0);
    struct client_id id;
    struct sockaddr_in v4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a010203)};
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&v4), 0);
    assert_true(acl_allows_client(&acl, &id));
    struct sockaddr_in6 m = {
        .sin6_family = AF_INET6,
        .sin6_addr.s6_addr = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3}};
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&m), 0);
    assert_true(acl_allows_client(&acl, &id));
    m.sin6_addr.s6_addr[12] = 11;
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&m), 0);
    assert_false(acl_allows_client(&acl, &id));
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&un), -EAFNOSUPPORT);
    assert_false(acl_allows_client(&acl, &id));
    assert_false(acl_allows_client(&acl, NULL));
    assert_int_equal(acl_build(&acl, NULL, 0, NULL, 0), 0);
    assert_true(acl_allows_client(&acl, &id)); /* no list: everybody, known or not */
}

/* The open-resolver warning's test: a dns-allow entry is private only when it lies wholly
 * inside one of the default networks. */
static void test_private(void **state)
{
    (void)state;
    const char *priv[] = {
        "10.0.0.0/8",     "10.1.2.0/24",   "10.1.2.3",      "172.16.0.0/12", "172.31.255.1",
        "192.168.1.0/24", "100.64.0.0/10", "100.127.0.1",   "127.0.0.1",     "::1",
        "fd00::/8",       "fe80::1",       "169.254.1.0/24"};
    const char *pub[] = {"0.0.0.0/0",    "8.0.0.0/7",   "172.32.0.0/16", "172.0.0.0/8",
                         "192.0.2.0/24", "100.128.0.1", "2001:db8::/32", "::/0",
                         "fc00::/6",     "11.0.0.1",    "not-a-cidr"};
    for (size_t i = 0; i < sizeof(priv) / sizeof(priv[0]); i++)
        assert_true(acl_cidr_is_private(priv[i]));
    for (size_t i = 0; i < sizeof(pub) / sizeof(pub[0]); i++)
        assert_false(acl_cidr_is_private(pub[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_decide),
        cmocka_unit_test(test_sockaddr_clients),
        cmocka_unit_test(test_private),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
