/* client: the client_id filled once at accept (IPv4, IPv6, IPv4-mapped IPv6, other families),
 * its key (IPv4 address, IPv6 /64) and texts (full, truncated for the query log). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "dohgate/client.h"

static struct sockaddr_in6 v6(const char *s)
{
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    assert_int_equal(inet_pton(AF_INET6, s, &sa.sin6_addr), 1);
    return sa;
}

static void test_v4(void **state)
{
    (void)state;
    struct client_id id;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(5353)};
    assert_int_equal(inet_pton(AF_INET, "192.0.2.77", &sa.sin_addr), 1);
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&sa), 0);
    assert_true(client_id_known(&id));
    assert_int_equal(id.len, 4);
    assert_memory_equal(id.addr, "\xc0\x00\x02\x4d", 4);
    assert_string_equal(id.text, "192.0.2.77");
    assert_int_equal(id.key.len, 4);
    assert_memory_equal(id.key.b, id.addr, 4);
    char t[CLIENT_TEXT_MAX];
    client_id_text_truncated(&id, t, sizeof(t));
    assert_string_equal(t, "192.0.2.0");
}

static void test_v6(void **state)
{
    (void)state;
    struct client_id id;
    struct sockaddr_in6 sa = v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&sa), 0);
    assert_int_equal(id.len, 16);
    assert_memory_equal(id.addr, &sa.sin6_addr, 16);
    assert_string_equal(id.text, "2001:db8:1:2:aaaa:bbbb:cccc:dddd");
    char t[CLIENT_TEXT_MAX];
    client_id_text_truncated(&id, t, sizeof(t));
    assert_string_equal(t, "2001:db8:1::"); /* the /48 */
    /* the longest text inet_ntop writes for a non-mapped address fits */
    sa = v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&sa), 0);
    assert_string_equal(id.text, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
}

static void test_v4_mapped(void **state)
{
    (void)state;
    /* a dual-stack listener's IPv4 client: IPv4 in every respect */
    struct client_id m, plain;
    struct sockaddr_in6 sa = v6("::ffff:198.51.100.9");
    assert_int_equal(client_id_from_sockaddr(&m, (struct sockaddr *)&sa), 0);
    assert_int_equal(client_id_from_string(&plain, "198.51.100.9"), 0);
    assert_int_equal(m.len, 4);
    assert_string_equal(m.text, "198.51.100.9");
    assert_memory_equal(&m, &plain, sizeof(m));
    char t[CLIENT_TEXT_MAX];
    client_id_text_truncated(&m, t, sizeof(t));
    assert_string_equal(t, "198.51.100.0");
    /* ::ffff:0:0/96 only: the IPv4-compatible ::c633:6409 stays IPv6 */
    sa = v6("::198.51.100.9");
    assert_int_equal(client_id_from_sockaddr(&m, (struct sockaddr *)&sa), 0);
    assert_int_equal(m.len, 16);
}

static void test_key_64(void **state)
{
    (void)state;
    struct client_id a, b;
    assert_int_equal(client_id_from_string(&a, "2001:db8:1:2:aaaa::1"), 0);
    assert_int_equal(client_id_from_string(&b, "2001:db8:1:2:bbbb::9"), 0);
    assert_int_equal(a.key.len, 8);
    assert_memory_equal(&a.key, &b.key, sizeof(a.key)); /* one /64, one client */
    assert_memory_not_equal(a.addr, b.addr, 16);        /* but two addresses for the ACL */
    assert_int_equal(client_id_from_string(&b, "2001:db8:1:3::1"), 0);
    assert_memory_not_equal(a.key.b, b.key.b, 8);
    /* the key's unused bytes are zero, so keys compare as a whole */
    for (size_t i = a.key.len; i < sizeof(a.key.b); i++)
        assert_int_equal(a.key.b[i], 0);
    /* client_key_from_string gives the same key */
    struct client_key k;
    assert_int_equal(client_key_from_string("2001:db8:1:2::ffff", &k), 0);
    assert_memory_equal(&k, &a.key, sizeof(k));
}

static void test_unknown(void **state)
{
    (void)state;
    struct client_id id;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    memset(&id, 0x5a, sizeof(id));
    assert_int_equal(client_id_from_sockaddr(&id, (struct sockaddr *)&un), -EAFNOSUPPORT);
    assert_false(client_id_known(&id));
    assert_int_equal(id.len, 0);
    assert_string_equal(id.text, "");
    assert_false(client_id_known(NULL));
    memset(&id, 0x5a, sizeof(id));
    assert_int_equal(client_id_from_string(&id, "not an address"), -EINVAL);
    assert_false(client_id_known(&id));
    assert_string_equal(id.text, "");
    char t[8] = "x";
    client_id_text_truncated(&id, t, sizeof(t));
    assert_string_equal(t, "");
    client_id_text_truncated(NULL, t, sizeof(t));
    assert_string_equal(t, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4),        cmocka_unit_test(test_v6),
        cmocka_unit_test(test_v4_mapped), cmocka_unit_test(test_key_64),
        cmocka_unit_test(test_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
