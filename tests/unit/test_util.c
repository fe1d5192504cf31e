/*
 * Unit tests for util.h: base64url (RFC 4648 §5 without padding, as RFC 8484 uses it) and the
 * byte buffer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "dohgate/util.h"

struct vector {
    const char *plain;
    const char *enc;
};

/* RFC 4648 §10 test vectors, padding stripped (RFC 8484 §6). */
static const struct vector rfc4648[] = {
    {"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
    {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
};

static void test_b64url_rfc4648_vectors(void **state)
{
    for (size_t i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
        const struct vector *v = &rfc4648[i];
        size_t n = strlen(v->plain);
        char enc[16];
        uint8_t dec[16];
        assert_int_equal(dg_b64url_encoded_len(n), strlen(v->enc));
        assert_int_equal(dg_b64url_encode((const uint8_t *)v->plain, n, enc), strlen(v->enc));
        assert_string_equal(enc, v->enc);
        assert_int_equal(dg_b64url_decode(v->enc, strlen(v->enc), dec, sizeof(dec)), (long)n);
        assert_memory_equal(dec, v->plain, n);
    }
}

static void test_b64url_url_alphabet(void **state)
{
    /* bytes whose standard encoding uses '+' and '/' ("+/8=" and "///+") */
    static const uint8_t a[] = {0xfb, 0xff};
    static const uint8_t b[] = {0xff, 0xff, 0xfe};
    char enc[8];
    uint8_t dec[8];
    assert_int_equal(dg_b64url_encode(a, sizeof(a), enc), 3);
    assert_string_equal(enc, "-_8");
    assert_int_equal(dg_b64url_encode(b, sizeof(b), enc), 4);
    assert_string_equal(enc, "___-");
    assert_int_equal(dg_b64url_decode("-_8", 3, dec, sizeof(dec)), 2);
    assert_memory_equal(dec, a, sizeof(a));
    assert_int_equal(dg_b64url_decode("___-", 4, dec, sizeof(dec)), 3);
    assert_memory_equal(dec, b, sizeof(b));
    /* the standard alphabet's '+' and '/' are not base64url */
    assert_int_equal(dg_b64url_decode("+/8", 3, dec, sizeof(dec)), -1);
    assert_int_equal(dg_b64url_decode("///+", 4, dec, sizeof(dec)), -1);
}

/* xorshift32: reproducible "random" bytes */
static uint32_t next_rand(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

static void test_b64url_round_trip(void **state)
{
    uint8_t in[300] = {0}, dec[300 + 3];
    char enc[400 + 1];
    uint32_t seed = 0x12345678u;
    for (size_t n = 0; n <= 300; n++) {
        for (size_t i = 0; i < n; i++)
            in[i] = (uint8_t)next_rand(&seed);
        size_t elen = dg_b64url_encode(in, n, enc);
        assert_int_equal(elen, dg_b64url_encoded_len(n));
        assert_int_equal(strlen(enc), elen);
        assert_int_equal(elen % 4 == 1, 0);
        assert_null(strchr(enc, '='));
        assert_true(dg_b64url_decoded_max(elen) >= n);
        memset(dec, 0xa5, sizeof(dec));
        assert_int_equal(dg_b64url_decode(enc, elen, dec, n), (long)n);
        assert_memory_equal(dec, in, n);
        /* nothing written past the decoded length */
        assert_int_equal(dec[n], 0xa5);
    }
}

static void test_b64url_rejects_padding(void **state)
{
    uint8_t out[16];
    assert_int_equal(dg_b64url_decode("Zg==", 4, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zm8=", 4, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zm9vYg==", 8, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zg=", 3, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("====", 4, out, sizeof(out)), -1);
}

static void test_b64url_rejects_bad_chars(void **state)
{
    uint8_t out[16];
    static const char *const bad[] = {"Zm9 ", "Zm9.",       "Zm9\n", "Zm9%",
                                      "Zm9*", "Zm\xc3\xa9", " Zm9v", "Zm9v\r"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dg_b64url_decode(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
    /* an embedded NUL is a character outside the alphabet, not an end */
    assert_int_equal(dg_b64url_decode("Zm\0v", 4, out, sizeof(out)), -1);
}

static void test_b64url_rejects_noncanonical(void **state)
{
    uint8_t out[16];
    /* "Zg" is the encoding of "f"; "Zh".."Zv" differ only in unused trailing bits */
    assert_int_equal(dg_b64url_decode("Zg", 2, out, sizeof(out)), 1);
    assert_int_equal(dg_b64url_decode("Zh", 2, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zv", 2, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zm8", 3, out, sizeof(out)), 2);
    assert_int_equal(dg_b64url_decode("Zm9", 3, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zm_", 3, out, sizeof(out)), -1);
}

static void test_b64url_rejects_length_mod4_1(void **state)
{
    uint8_t out[16];
    assert_int_equal(dg_b64url_decode("A", 1, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zm9vY", 5, out, sizeof(out)), -1);
    assert_int_equal(dg_b64url_decode("Zm9vYmFyA", 9, out, sizeof(out)), -1);
    /* empty input decodes to nothing */
    assert_int_equal(dg_b64url_decode("", 0, out, sizeof(out)), 0);
}

static void test_b64url_small_output(void **state)
{
    uint8_t out[8];
    memset(out, 0x5a, sizeof(out));
    assert_int_equal(dg_b64url_decode("Zm9vYmFy", 8, out, 5), -1);
    /* refused before writing anything */
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(out[i], 0x5a);
    assert_int_equal(dg_b64url_decode("Zm9vYmFy", 8, out, 6), 6);
    assert_memory_equal(out, "foobar", 6);
    assert_int_equal(dg_b64url_decode("Zm9vYmE", 7, out, 4), -1);
    assert_int_equal(dg_b64url_decode("Zm9vYmE", 7, out, 5), 5);
    assert_int_equal(dg_b64url_decode("Zg", 2, NULL, 0), -1);
}

static void test_buf(void **state)
{
    struct dg_buf b = {0};
    assert_int_equal(dg_buf_append(&b, "hello", 5), 0);
    assert_int_equal(dg_buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 5);
    assert_true(b.cap >= 5);
    uint8_t big[1000];
    memset(big, 'x', sizeof(big));
    assert_int_equal(dg_buf_append(&b, big, sizeof(big)), 0);
    assert_int_equal(b.len, 1005);
    assert_memory_equal(b.data, "hellox", 6);
    dg_buf_consume(&b, 3);
    assert_int_equal(b.len, 1002);
    assert_memory_equal(b.data, "lox", 3);
    dg_buf_consume(&b, 5000);
    assert_int_equal(b.len, 0);
    size_t cap = b.cap;
    assert_int_equal(dg_buf_reserve(&b, cap), 0);
    assert_int_equal(b.cap, cap);
    assert_int_equal(dg_buf_reserve(&b, SIZE_MAX), -ENOMEM);
    assert_int_equal(b.cap, cap);
    dg_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* reusable after free */
    assert_int_equal(dg_buf_append(&b, "a", 1), 0);
    /* a buffer holding bytes is kept; an emptied one gives its capacity back */
    assert_int_equal(dg_buf_release_if_empty(&b), 0);
    assert_int_equal(b.len, 1);
    dg_buf_consume(&b, 1);
    cap = b.cap;
    assert_int_equal(dg_buf_release_if_empty(&b), cap);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    assert_int_equal(dg_buf_release_if_empty(&b), 0);
    dg_buf_free(&b);
}

static void test_get_put(void **state)
{
    uint8_t p[4] = {0};
    dg_put16(p, 0xbeef);
    assert_int_equal(p[0], 0xbe);
    assert_int_equal(p[1], 0xef);
    assert_int_equal(dg_get16(p), 0xbeef);
    static const uint8_t q[4] = {0xde, 0xad, 0xbe, 0xef};
    assert_int_equal(dg_get32(q), 0xdeadbeefu);
}

static void test_now_ms_monotonic(void **state)
{
    uint64_t a = dg_now_ms();
    uint64_t b = dg_now_ms();
    assert_true(a > 0);
    assert_true(b >= a);
}

/* The decoder before the table-driven one (per character, branchy): the reference the table
 * must agree with, on valid and invalid input alike. */
static long ref_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap)
{
    if (inlen % 4 == 1)
        return -1;
    size_t need = (inlen / 4) * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
    if (need > outcap)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < inlen; i++) {
        unsigned char c = (unsigned char)in[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '-'             ? 62
                : c == '_'             ? 63
                                       : -1;
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    return acc != 0 ? -1 : (long)o;
}

static void test_b64url_matches_reference(void **state)
{
    (void)state;
    /* mostly the alphabet, sometimes a byte outside it (every byte value reachable) */
    static const char alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    uint32_t seed = 0x5eed1234u;
    char in[48];
    uint8_t a[48], b[48];
    unsigned ok = 0;
    for (int round = 0; round < 200000; round++) {
        size_t n = next_rand(&seed) % sizeof(in);
        for (size_t i = 0; i < n; i++) {
            uint32_t r = next_rand(&seed);
            in[i] = (r & 0xff) < 4 ? (char)(r >> 8) : alpha[(r >> 8) % 64];
        }
        size_t cap = next_rand(&seed) % 8 == 0 ? n / 2 : sizeof(a);
        long ra = dg_b64url_decode(in, n, a, cap);
        long rb = ref_b64url_decode(in, n, b, cap);
        assert_int_equal(ra, rb);
        if (ra > 0) {
            assert_memory_equal(a, b, (size_t)ra);
            ok++;
        }
    }
    /* the comparison covered valid input, not just rejections */
    assert_true(ok > 10000);
}

static void test_pool(void **state)
{
    (void)state;
    struct dg_pool p;
    dg_pool_init(&p, 64, 2);
    uint8_t *a = dg_pool_get(&p), *b = dg_pool_get(&p), *c = dg_pool_get(&p);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_ptr_not_equal(a, b);
    assert_ptr_not_equal(b, c);
    memset(a, 0xaa, 64);
    memset(b, 0xbb, 64);
    dg_pool_put(&p, a);
    dg_pool_put(&p, b);
    dg_pool_put(&p, c); /* over max_keep: freed (ASan/valgrind would report a leak otherwise) */
    dg_pool_put(&p, NULL);
    assert_int_equal(p.nfree, 2);
    /* last in, first out; the bytes past the link are as they were left */
    uint8_t *x = dg_pool_get(&p);
    assert_ptr_equal(x, b);
    for (size_t i = sizeof(void *); i < 64; i++)
        assert_int_equal(x[i], 0xbb);
    uint8_t *y = dg_pool_get(&p);
    assert_ptr_equal(y, a);
    for (size_t i = sizeof(void *); i < 64; i++)
        assert_int_equal(y[i], 0xaa);
    assert_int_equal(p.nfree, 0);
    uint8_t *z = dg_pool_get(&p); /* empty: a new block */
    assert_non_null(z);
    assert_ptr_not_equal(z, a);
    assert_ptr_not_equal(z, b);
    dg_pool_put(&p, x);
    dg_pool_put(&p, y);
    dg_pool_put(&p, z);
    assert_int_equal(p.nfree, 2);
    dg_pool_drain(&p, NULL);
    assert_int_equal(p.nfree, 0);
    assert_null(p.head);
    /* reusable after a drain */
    x = dg_pool_get(&p);
    assert_non_null(x);
    dg_pool_put(&p, x);
    dg_pool_drain(&p, NULL);
}

static unsigned fini_calls;
static void count_fini(void *blk)
{
    assert_non_null(blk);
    fini_calls++;
}

static void test_pool_drain_fini_and_no_keep(void **state)
{
    (void)state;
    struct dg_pool p;
    dg_pool_init(&p, 1, 8); /* rounded up to hold the link */
    assert_true(p.size >= sizeof(void *));
    void *v[5];
    for (int i = 0; i < 5; i++)
        assert_non_null(v[i] = dg_pool_get(&p));
    for (int i = 0; i < 5; i++)
        dg_pool_put(&p, v[i]);
    assert_int_equal(p.nfree, 5);
    fini_calls = 0;
    dg_pool_drain(&p, count_fini);
    assert_int_equal(fini_calls, 5);
    /* max_keep 0: plain malloc and free, nothing kept */
    dg_pool_init(&p, 32, 0);
    void *b = dg_pool_get(&p);
    assert_non_null(b);
    dg_pool_put(&p, b);
    assert_int_equal(p.nfree, 0);
    assert_null(p.head);
    fini_calls = 0;
    dg_pool_drain(&p, count_fini);
    assert_int_equal(fini_calls, 0);
}

/* dg_pool_alloc()/dg_pool_free(): a size that fits comes from the pool (and goes back to it),
 * a larger one is malloc'ed and freed. */
static void test_pool_alloc_sizes(void **state)
{
    (void)state;
    struct dg_pool p;
    dg_pool_init(&p, 64, 4);
    bool pooled = false;
    void *a = dg_pool_alloc(&p, 64, &pooled);
    assert_non_null(a);
    assert_true(pooled);
    bool big_pooled = true;
    void *b = dg_pool_alloc(&p, 65, &big_pooled);
    assert_non_null(b);
    assert_false(big_pooled);
    memset(b, 0x5a, 65);
    dg_pool_free(&p, a, pooled);
    assert_int_equal(p.nfree, 1);
    dg_pool_free(&p, b, big_pooled);
    assert_int_equal(p.nfree, 1); /* the large block was not kept */
    void *c = dg_pool_alloc(&p, 10, &pooled);
    assert_ptr_equal(c, a); /* the kept block again */
    assert_true(pooled);
    dg_pool_free(&p, c, pooled);
    dg_pool_free(&p, NULL, false);
    dg_pool_drain(&p, NULL);
    assert_int_equal(p.nfree, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64url_rfc4648_vectors),
        cmocka_unit_test(test_b64url_url_alphabet),
        cmocka_unit_test(test_b64url_round_trip),
        cmocka_unit_test(test_b64url_rejects_padding),
        cmocka_unit_test(test_b64url_rejects_bad_chars),
        cmocka_unit_test(test_b64url_rejects_noncanonical),
        cmocka_unit_test(test_b64url_rejects_length_mod4_1),
        cmocka_unit_test(test_b64url_small_output),
        cmocka_unit_test(test_buf),
        cmocka_unit_test(test_get_put),
        cmocka_unit_test(test_now_ms_monotonic),
        cmocka_unit_test(test_b64url_matches_reference),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_pool_drain_fini_and_no_keep),
        cmocka_unit_test(test_pool_alloc_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
