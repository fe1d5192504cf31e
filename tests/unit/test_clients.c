/* clients: keys (IPv4, IPv6 /64, mapped), connection limits, token buckets on a fake clock,
 * the bound on tracked clients. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "dohgate/clients.h"

static void test_keys(void **state)
{
    (void)state;
    struct client_key a, b;
    assert_int_equal(client_key_from_string("192.0.2.1", &a), 0);
    assert_int_equal(a.len, 4);
    assert_int_equal(client_key_from_string("::ffff:192.0.2.1", &b), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(a.b, b.b, 4); /* mapped = the IPv4 client */
    assert_int_equal(client_key_from_string("2001:db8:1:2:aaaa::1", &a), 0);
    assert_int_equal(client_key_from_string("2001:db8:1:2:bbbb::9", &b), 0);
    assert_int_equal(a.len, 8);
    assert_memory_equal(a.b, b.b, 8); /* one /64, one client */
    assert_int_equal(client_key_from_string("2001:db8:1:3::1", &b), 0);
    assert_memory_not_equal(a.b, b.b, 8);
    assert_int_equal(client_key_from_string("not an address", &a), -1);
}

static void test_conn_limit(void **state)
{
    (void)state;
    struct clients_config cfg = {.max_conns = 3, .max_entries = 100};
    struct clients *c = clients_new(&cfg);
    assert_non_null(c);
    struct client_key k, other;
    client_key_from_string("192.0.2.1", &k);
    client_key_from_string("192.0.2.2", &other);
    for (int i = 0; i < 3; i++)
        assert_int_equal(clients_conn_open(c, &k, 0), CLIENT_OK);
    assert_int_equal(clients_conn_open(c, &k, 0), CLIENT_TOO_MANY_CONNS);
    assert_int_equal(clients_conn_open(c, &other, 0), CLIENT_OK); /* others unaffected */
    clients_conn_close(c, &k);
    assert_int_equal(clients_conn_open(c, &k, 0), CLIENT_OK);
    assert_int_equal(clients_conn_open(c, &k, 0), CLIENT_TOO_MANY_CONNS);
    clients_free(c);

    /* no limits configured: nothing is tracked at all */
    struct clients_config off = {.max_entries = 100};
    c = clients_new(&off);
    assert_int_equal(clients_conn_open(c, &k, 0), CLIENT_UNTRACKED);
    assert_int_equal(clients_count(c), 0);
    clients_free(c);
}

static void test_conn_rate(void **state)
{
    (void)state;
    struct clients_config cfg = {.conn_rate = 10, .conn_burst = 5, .max_entries = 100};
    struct clients *c = clients_new(&cfg);
    struct client_key k;
    client_key_from_string("2001:db8::1", &k);
    uint64_t t = 1000;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(clients_conn_open(c, &k, t), CLIENT_OK);
        clients_conn_close(c, &k);
    }
    assert_int_equal(clients_conn_open(c, &k, t), CLIENT_CONN_RATE); /* burst spent */
    assert_int_equal(clients_conn_open(c, &k, t + 99), CLIENT_CONN_RATE);
    assert_int_equal(clients_conn_open(c, &k, t + 100), CLIENT_OK); /* 10/s: one per 100 ms */
    clients_free(c);
}

static void test_query_rate(void **state)
{
    (void)state;
    struct clients_config cfg = {.query_rate = 2, .query_burst = 4, .max_entries = 100};
    struct clients *c = clients_new(&cfg);
    struct client_key k, other;
    client_key_from_string("198.51.100.7", &k);
    client_key_from_string("198.51.100.8", &other);
    uint64_t t = 5000;
    for (int i = 0; i < 4; i++)
        assert_int_equal(clients_query(c, &k, t), 0);
    assert_int_equal(clients_query(c, &k, t), 1); /* Retry-After: 500 ms -> 1 s */
    assert_int_equal(clients_query(c, &other, t), 0);
    assert_int_equal(clients_query(c, &k, t + 499), 1);
    assert_int_equal(clients_query(c, &k, t + 500), 0);
    /* a long pause refills to the burst, not beyond */
    t += 100000;
    for (int i = 0; i < 4; i++)
        assert_int_equal(clients_query(c, &k, t), 0);
    assert_int_not_equal(clients_query(c, &k, t), 0);
    clients_free(c);

    /* a slow rate gives a Retry-After of whole seconds */
    struct clients_config slow = {.query_rate = 1, .query_burst = 1, .max_entries = 10};
    c = clients_new(&slow);
    assert_int_equal(clients_query(c, &k, 0), 0);
    assert_int_equal(clients_query(c, &k, 0), 1);
    clients_free(c);
}

static void test_bounded(void **state)
{
    (void)state;
    /* 64 shards of (128 / 64 + 1) = 3 entries: at most 192 clients tracked */
    struct clients_config cfg = {
        .max_conns = 10, .query_rate = 100, .query_burst = 100, .max_entries = 128};
    struct clients *c = clients_new(&cfg);
    char a[32];
    struct client_key k;
    for (int i = 0; i < 5000; i++) {
        snprintf(a, sizeof(a), "10.%d.%d.%d", i >> 16, (i >> 8) & 255, i & 255);
        client_key_from_string(a, &k);
        assert_int_equal(clients_query(c, &k, 0), 0);
    }
    assert_true(clients_count(c) <= 64 * 3);
    /* fill with clients that hold connections: newcomers are let in untracked */
    int untracked = 0;
    for (int i = 0; i < 1000; i++) {
        snprintf(a, sizeof(a), "172.16.%d.%d", i >> 8, i & 255);
        client_key_from_string(a, &k);
        enum client_verdict v = clients_conn_open(c, &k, 0);
        assert_true(v == CLIENT_OK || v == CLIENT_UNTRACKED);
        untracked += v == CLIENT_UNTRACKED;
    }
    assert_true(untracked >= 1000 - 64 * 3);
    assert_true(clients_count(c) <= 64 * 3);
    clients_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),      cmocka_unit_test(test_conn_limit),
        cmocka_unit_test(test_conn_rate), cmocka_unit_test(test_query_rate),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
