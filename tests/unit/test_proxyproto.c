/* proxyproto: the PROXY protocol v1/v2 parser. Every strict prefix of a valid header needs more
 * (and every byte of it may be consumed), the whole one gives its length whatever follows;
 * v1 TCP4/TCP6/UNKNOWN, v2 INET/INET6/LOCAL/UNSPEC/UNIX with TLVs; each error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "dohgate/client.h"
#include "dohgate/proxyproto.h"

static const uint8_t SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* A v2 header into @p out: ver/cmd, fam/proto, then @p n bytes of addresses and TLVs. */
static size_t v2(uint8_t *out, uint8_t vc, uint8_t fp, const uint8_t *body, size_t n)
{
    memcpy(out, SIG, 12);
    out[12] = vc;
    out[13] = fp;
    out[14] = (uint8_t)(n >> 8);
    out[15] = (uint8_t)n;
    if (n)
        memcpy(out + 16, body, n);
    return 16 + n;
}

/* Each strict prefix needs more; the whole header, alone and with bytes after it, is done with
 * its own length. @return the result for the whole header. */
static struct pp_result check_valid(const uint8_t *h, size_t n)
{
    struct pp_result r;
    for (size_t i = 0; i < n; i++) {
        enum pp_status st = pp_parse(h, i, &r);
        if (st != PP_NEED_MORE)
            fail_msg("prefix of %zu bytes (of %zu): status %d err %d", i, n, st, r.err);
    }
    uint8_t buf[PP_MAX + 64];
    memcpy(buf, h, n);
    /* what follows (a TLS ClientHello) never changes the verdict */
    static const char after[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03PROXY \r\n";
    memcpy(buf + n, after, sizeof(after) - 1);
    struct pp_result r2;
    assert_int_equal(pp_parse(buf, n + sizeof(after) - 1, &r2), PP_DONE);
    assert_int_equal(pp_parse(h, n, &r), PP_DONE);
    assert_int_equal(r.len, n);
    assert_int_equal(r2.len, n);
    assert_int_equal(r.err, PP_ERR_NONE);
    return r;
}

static void assert_src(const struct pp_result *r, const char *addr, uint16_t port)
{
    assert_true(r->has_addr);
    struct client_id id;
    assert_int_equal(client_id_from_sockaddr(&id, (const struct sockaddr *)&r->src), 0);
    assert_string_equal(id.text, addr);
    if (r->src.ss_family == AF_INET) {
        assert_int_equal(r->src_len, sizeof(struct sockaddr_in));
        assert_int_equal(ntohs(((const struct sockaddr_in *)&r->src)->sin_port), port);
    } else {
        assert_int_equal(r->src.ss_family, AF_INET6);
        assert_int_equal(r->src_len, sizeof(struct sockaddr_in6));
        assert_int_equal(ntohs(((const struct sockaddr_in6 *)&r->src)->sin6_port), port);
    }
}

static enum pp_error error_of(const void *h, size_t n)
{
    struct pp_result r;
    assert_int_equal(pp_parse(h, n, &r), PP_ERROR);
    return r.err;
}

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static void test_v1_tcp4(void **state)
{
    (void)state;
    struct pp_result r = check_valid(S("PROXY TCP4 192.0.2.9 198.51.100.1 56324 443\r\n"));
    assert_int_equal(r.version, 1);
    assert_false(r.local);
    assert_src(&r, "192.0.2.9", 56324);
    /* the extremes */
    r = check_valid(S("PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"));
    assert_src(&r, "255.255.255.255", 65535);
    r = check_valid(S("PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n"));
    assert_src(&r, "0.0.0.0", 0);
}

static void test_v1_tcp6(void **state)
{
    (void)state;
    struct pp_result r = check_valid(S("PROXY TCP6 2001:db8::7 2001:db8::1 1234 853\r\n"));
    assert_src(&r, "2001:db8::7", 1234);
    /* the longest line the spec allows is 107 bytes, CRLF included */
    static const char longest[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_int_equal(sizeof(longest) - 1, PP_V1_MAX - 3); /* full IPv6 texts are 39, not 45 */
    r = check_valid(S(longest));
    assert_src(&r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535);
    /* IPv4-mapped: the client is IPv4, as a dual-stack socket would say */
    r = check_valid(S("PROXY TCP6 ::ffff:192.0.2.33 ::1 80 443\r\n"));
    assert_src(&r, "192.0.2.33", 80);
}

static void test_v1_unknown(void **state)
{
    (void)state;
    struct pp_result r = check_valid(S("PROXY UNKNOWN\r\n"));
    assert_int_equal(r.version, 1);
    assert_false(r.has_addr);
    /* anything after UNKNOWN up to the CRLF is ignored */
    r = check_valid(S("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"));
    assert_false(r.has_addr);
}

static void test_v1_errors(void **state)
{
    (void)state;
    /* the first byte decides: a TLS ClientHello, an HTTP request, a DNS length */
    assert_int_equal(error_of("\x16\x03\x01", 3), PP_ERR_SIGNATURE);
    assert_int_equal(error_of("G", 1), PP_ERR_SIGNATURE);
    assert_int_equal(error_of("POST / HTTP/1.1\r\n", 17), PP_ERR_SIGNATURE);
    assert_int_equal(error_of("\x00\x1d", 2), PP_ERR_SIGNATURE);
    assert_int_equal(error_of("proxy TCP4", 10), PP_ERR_SIGNATURE);
    assert_int_equal(error_of(S("PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4  1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 1 2 \r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 1 2 3\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3 1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 01.2.3.4 1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 2001:db8::1 1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n")), PP_ERR_V1_LINE);
    /* bad numbers: too large, leading zero, sign, not a digit, empty */
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 65536 443\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 99999 443\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 0443 443\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 -1 443\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 1x 443\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4 1.2.3.5 123456 443\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY \r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY UNKNOWNX\r\n")), PP_ERR_V1_LINE);
    /* a NUL or control byte in the line */
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4\0 1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    assert_int_equal(error_of(S("PROXY TCP4 1.2.3.4\t1.2.3.5 1 2\r\n")), PP_ERR_V1_LINE);
    /* a CR not followed by the LF is an error at once, not after 107 bytes */
    assert_int_equal(error_of(S("PROXY TCP4\rX")), PP_ERR_V1_LINE);
    struct pp_result r;
    assert_int_equal(pp_parse(S("PROXY TCP4 1.2.3.4\r"), &r), PP_NEED_MORE);
    /* no LF within 107 bytes: too large; 106 bytes without one still need more */
    uint8_t big[200];
    memcpy(big, "PROXY UNKNOWN ", 14);
    memset(big + 14, 'a', sizeof(big) - 14);
    assert_int_equal(pp_parse(big, PP_V1_MAX - 1, &r), PP_NEED_MORE);
    assert_int_equal(error_of(big, PP_V1_MAX), PP_ERR_TOO_LARGE);
    assert_int_equal(error_of(big, sizeof(big)), PP_ERR_TOO_LARGE);
    /* the CRLF as the 107th and 108th bytes: too large too */
    big[PP_V1_MAX - 1] = '\r';
    big[PP_V1_MAX] = '\n';
    assert_int_equal(error_of(big, PP_V1_MAX + 1), PP_ERR_TOO_LARGE);
    big[PP_V1_MAX - 2] = '\r';
    big[PP_V1_MAX - 1] = '\n';
    r = check_valid(big, PP_V1_MAX); /* exactly 107 with the CRLF: fine */
    assert_false(r.has_addr);
}

static void test_v2_inet(void **state)
{
    (void)state;
    uint8_t h[64];
    const uint8_t a4[12] = {192, 0, 2, 9, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb};
    size_t n = v2(h, 0x21, 0x11, a4, sizeof(a4));
    struct pp_result r = check_valid(h, n);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.len, 28);
    assert_false(r.local);
    assert_src(&r, "192.0.2.9", 0xdc04);
    /* UNSPEC (0x00) with PROXY: no address, the socket's stays */
    n = v2(h, 0x21, 0x00, NULL, 0);
    r = check_valid(h, n);
    assert_false(r.has_addr);
    /* LOCAL ignores its block, whatever the family byte says */
    n = v2(h, 0x20, 0x12, a4, sizeof(a4));
    r = check_valid(h, n);
    assert_true(r.local);
    assert_false(r.has_addr);
}

static void test_v2_inet6_tlvs(void **state)
{
    (void)state;
    uint8_t body[36 + 300];
    memset(body, 0, sizeof(body));
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::77", body), 1);
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", body + 16), 1);
    body[32] = 0x30; /* src port 12345 */
    body[33] = 0x39;
    body[34] = 0x01;
    body[35] = 0xbb;
    /* TLVs: ALPN "h2", authority, a unique ID of 128 bytes, a NOOP of padding: skipped */
    uint8_t *t = body + 36;
    memcpy(t, "\x01\x00\x02h2", 5);
    t += 5;
    memcpy(t,
           "\x02\x00\x0b"
           "example.net",
           14);
    t += 14;
    t[0] = 0x05;
    t[1] = 0;
    t[2] = 128;
    memset(t + 3, 'u', 128);
    t += 131;
    t[0] = 0x04;
    t[1] = 0;
    t[2] = 10;
    t += 13;
    size_t blen = (size_t)(t - body);
    uint8_t h[PP_MAX];
    size_t n = v2(h, 0x21, 0x21, body, blen);
    struct pp_result r = check_valid(h, n);
    assert_int_equal(r.len, 16 + blen);
    assert_src(&r, "2001:db8::77", 12345);
    /* TLV bytes are not checked (only skipped): garbage is fine within the length */
    memset(body + 36, 0xee, 200);
    n = v2(h, 0x21, 0x21, body, 236);
    r = check_valid(h, n);
    assert_src(&r, "2001:db8::77", 12345);
}

static void test_v2_local_unspec(void **state)
{
    (void)state;
    uint8_t h[PP_MAX];
    /* HAProxy's health checks: LOCAL, family UNSPEC, no addresses */
    size_t n = v2(h, 0x20, 0x00, NULL, 0);
    struct pp_result r = check_valid(h, n);
    assert_int_equal(r.len, 16);
    assert_true(r.local);
    assert_false(r.has_addr);
    /* LOCAL with an address block: ignored, still consumed */
    const uint8_t a4[12] = {10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2};
    n = v2(h, 0x20, 0x11, a4, sizeof(a4));
    r = check_valid(h, n);
    assert_int_equal(r.len, 28);
    assert_true(r.local);
    assert_false(r.has_addr);
    /* LOCAL says nothing about addresses, so a short block is no error */
    n = v2(h, 0x20, 0x11, a4, 4);
    r = check_valid(h, n);
    assert_true(r.local);
    /* PROXY with UNSPEC: the spec says use the connection's own addresses */
    n = v2(h, 0x21, 0x00, NULL, 0);
    r = check_valid(h, n);
    assert_false(r.local);
    assert_false(r.has_addr);
    /* PROXY with UNIX paths (216 bytes): no IP address either */
    uint8_t paths[216] = {0};
    memcpy(paths, "/run/haproxy.sock", 17);
    n = v2(h, 0x21, 0x31, paths, sizeof(paths));
    r = check_valid(h, n);
    assert_false(r.has_addr);
    /* the largest length taken */
    static uint8_t tlvs[PP_V2_MAX_LEN];
    n = v2(h, 0x21, 0x11, tlvs, sizeof(tlvs));
    r = check_valid(h, n);
    assert_int_equal(r.len, PP_MAX);
}

static void test_v2_errors(void **state)
{
    (void)state;
    uint8_t h[PP_MAX + 16];
    const uint8_t a4[12] = {192, 0, 2, 9, 198, 51, 100, 1, 0, 1, 0, 2};
    /* a wrong signature byte, wherever it is */
    for (size_t i = 0; i < 12; i++) {
        v2(h, 0x21, 0x11, a4, sizeof(a4));
        h[i] ^= 0x40;
        struct pp_result r;
        assert_int_equal(pp_parse(h, 28, &r), PP_ERROR);
        assert_int_equal(r.err, PP_ERR_SIGNATURE);
        /* as soon as that byte is there */
        assert_int_equal(pp_parse(h, i + 1, &r), PP_ERROR);
    }
    /* version 1 in the binary form, version 3: refused at their byte */
    v2(h, 0x11, 0x11, a4, sizeof(a4));
    assert_int_equal(error_of(h, 13), PP_ERR_VERSION);
    v2(h, 0x31, 0x11, a4, sizeof(a4));
    assert_int_equal(error_of(h, 28), PP_ERR_VERSION);
    /* commands 2..15 */
    v2(h, 0x22, 0x11, a4, sizeof(a4));
    assert_int_equal(error_of(h, 13), PP_ERR_COMMAND);
    v2(h, 0x2f, 0x11, a4, sizeof(a4));
    assert_int_equal(error_of(h, 28), PP_ERR_COMMAND);
    /* family 4, transport 3 */
    v2(h, 0x21, 0x41, a4, sizeof(a4));
    assert_int_equal(error_of(h, 14), PP_ERR_FAMILY);
    v2(h, 0x21, 0x13, a4, sizeof(a4));
    assert_int_equal(error_of(h, 14), PP_ERR_FAMILY);
    /* DGRAM does not describe a TCP connection; a family without a transport, or a transport
     * without a family, is not in the spec */
    static const uint8_t bad_fp[] = {0x12, 0x22, 0x32, 0x10, 0x20, 0x30, 0x01, 0x02};
    for (size_t i = 0; i < sizeof(bad_fp); i++) {
        v2(h, 0x21, bad_fp[i], a4, sizeof(a4));
        assert_int_equal(error_of(h, 14), PP_ERR_FAMILY);
    }
    /* truncated addresses: INET in 11 bytes, INET6 in 35, UNIX in 215; refused once the length
     * is known, before the bytes it announces */
    v2(h, 0x21, 0x11, a4, 11);
    assert_int_equal(error_of(h, 16), PP_ERR_ADDRESS);
    v2(h, 0x21, 0x21, a4, 0);
    h[15] = 35;
    assert_int_equal(error_of(h, 16), PP_ERR_ADDRESS);
    v2(h, 0x21, 0x31, a4, 0);
    h[15] = 215;
    assert_int_equal(error_of(h, 16), PP_ERR_ADDRESS);
    /* oversized: refused from the fixed part alone */
    v2(h, 0x21, 0x11, a4, 0);
    h[14] = (PP_V2_MAX_LEN + 1) >> 8;
    h[15] = (PP_V2_MAX_LEN + 1) & 0xff;
    assert_int_equal(error_of(h, 16), PP_ERR_TOO_LARGE);
    h[14] = 0xff;
    h[15] = 0xff;
    assert_int_equal(error_of(h, 16), PP_ERR_TOO_LARGE);
    struct pp_result r;
    assert_int_equal(pp_parse(h, 15, &r), PP_NEED_MORE);
}

static void test_signature_peek(void **state)
{
    (void)state;
    assert_true(pp_has_signature(S("PROXY TCP4 ")));
    assert_true(pp_has_signature(S("PROXY ")));
    assert_false(pp_has_signature(S("PROXY")));
    assert_true(pp_has_signature(SIG, 12));
    assert_false(pp_has_signature(SIG, 11));
    assert_false(pp_has_signature(S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00")));
    assert_false(pp_has_signature(S("POST /dns-query HTTP/1.1\r\n")));
    assert_false(pp_has_signature(NULL, 0));
    for (int e = 0; e < PP_NERR; e++)
        assert_non_null(pp_error_str((enum pp_error)e));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4),         cmocka_unit_test(test_v1_tcp6),
        cmocka_unit_test(test_v1_unknown),      cmocka_unit_test(test_v1_errors),
        cmocka_unit_test(test_v2_inet),         cmocka_unit_test(test_v2_inet6_tlvs),
        cmocka_unit_test(test_v2_local_unspec), cmocka_unit_test(test_v2_errors),
        cmocka_unit_test(test_signature_peek),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
