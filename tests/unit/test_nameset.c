/*
 * Unit tests for nameset.h: exact and suffix matches on label boundaries, the longest suffix,
 * value masks, case, malformed names, the root, growth, a randomized comparison with a naive
 * model, and allocation failures (this test is linked with -Wl,--wrap=malloc,calloc,realloc,
 * tests/CMakeLists.txt, so the core library's allocations come through the wrappers below).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dnswire.h"
#include "dohgate/nameset.h"

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

static unsigned long fail_at; /* 0: never fail */
static unsigned long calls;

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

/* Wire form of a text name (test helper: the text must be valid). */
struct wname {
    uint8_t b[DNSWIRE_MAX_NAME];
    size_t len;
};

static struct wname W(const char *text) {
    struct wname w;
    w.len = dnswire_name_from_text(text, strlen(text), w.b);
    assert_true(w.len > 0);
    return w;
}

/* Wire form keeping the case of the text (dnswire_name_from_text lower-cases). */
static struct wname
W_case(const char *text)
{
    struct wname w = W(text);
    size_t i = 0, o = 1;
    for (const char *p = text; *p && i < w.len; p++) {
        if (*p == '.') {
            o++;
            continue;
        }
        w.b[o++] = (uint8_t)*p;
    }
    return w;
}

static int match(const struct nameset *s, const char *text, uint32_t mask, uint32_t *v)
{
    struct wname w = W(text);
    return nameset_match(s, w.b, w.len, mask, v);
}

static void add(struct nameset *s, const char *text, uint32_t value)
{
    struct wname w = W(text);
    assert_int_equal(nameset_add(s, w.b, w.len, value), 0);
}

static void test_exact_and_suffix(void **state)
{
    struct nameset *s = nameset_new(16);
    assert_non_null(s);
    add(s, "ads.example", 1);
    uint32_t v = 0;
    assert_int_equal(match(s, "ads.example", 1, &v), 0);
    assert_int_equal(v, 1);
    /* "a.b.ads.example": the suffix starts after "\1a\1b" = offset 4 */
    assert_int_equal(match(s, "a.b.ads.example", 1, &v), 4);
    assert_int_equal(match(s, "xads.example", 1, &v), -1); /* label boundaries */
    assert_int_equal(match(s, "ads.example.com", 1, &v), -1);
    assert_int_equal(match(s, "example", 1, &v), -1);
    assert_int_equal(match(s, "ads", 1, &v), -1);
    assert_int_equal(nameset_count(s), 1);
    /* exact lookup: no suffixes */
    struct wname q = W("a.ads.example");
    assert_false(nameset_get(s, q.b, q.len, &v));
    q = W("ads.example");
    assert_true(nameset_get(s, q.b, q.len, &v));
    assert_int_equal(v, 1);
    nameset_free(s);
}

static void test_longest_suffix_wins(void **state)
{
    struct nameset *s = nameset_new(16);
    assert_non_null(s);
    add(s, "example", 1);
    add(s, "corp.example", 2);
    uint32_t v = 0;
    assert_int_equal(match(s, "www.corp.example", ~0u, &v), 4);
    assert_int_equal(v, 2);
    assert_int_equal(match(s, "www.other.example", ~0u, &v), 10);
    assert_int_equal(v, 1);
    /* with a mask that excludes the longer one, the shorter suffix is the answer */
    assert_int_equal(match(s, "www.corp.example", 1, &v), 9);
    assert_int_equal(v, 1);
    nameset_free(s);
}

static void test_masks_and_duplicates(void **state)
{
    struct nameset *s = nameset_new(16);
    assert_non_null(s);
    add(s, "ads.example", 1u << 1);
    add(s, "ads.example", 1u << 3); /* the same name in lists 1 and 3: values OR-ed */
    assert_int_equal(nameset_count(s), 1);
    uint32_t v = 0;
    assert_int_equal(match(s, "x.ads.example", 1u << 2, &v), -1);
    assert_int_equal(match(s, "x.ads.example", 1u << 1, &v), 2);
    assert_int_equal(v, (1u << 1) | (1u << 3));
    assert_int_equal(match(s, "x.ads.example", (1u << 2) | (1u << 3), &v), 2);
    assert_int_equal(match(s, "x.ads.example", 0, &v), -1);
    /* value 0 is held (nameset_get finds it) but no mask ever matches it */
    add(s, "zero.example", 0);
    assert_int_equal(match(s, "zero.example", ~0u, &v), -1);
    struct wname q = W("zero.example");
    v = 7;
    assert_true(nameset_get(s, q.b, q.len, &v));
    assert_int_equal(v, 0);
    assert_int_equal(nameset_count(s), 2);
    nameset_free(s);
}

static void test_case_insensitive(void **state)
{
    struct nameset *s = nameset_new(16);
    assert_non_null(s);
    struct wname up = W_case("ADS.Example");
    assert_memory_equal(up.b, "\3ADS\7Example\0", up.len);
    assert_int_equal(nameset_add(s, up.b, up.len, 1), 0);
    uint32_t v = 0;
    assert_int_equal(match(s, "ads.example", 1, &v), 0); /* stored lower-cased */
    struct wname q = W_case("WWW.aDs.EXAMPLE");
    assert_int_equal(nameset_match(s, q.b, q.len, 1, &v), 4);
    assert_true(nameset_get(s, up.b, up.len, &v));
    /* not beyond ASCII: 0xC4 and 0xE4 are different octets */
    const uint8_t n1[] = {1, 0xC4, 0}, n2[] = {1, 0xE4, 0};
    assert_int_equal(nameset_add(s, n1, sizeof(n1), 2), 0);
    assert_false(nameset_get(s, n2, sizeof(n2), &v));
    assert_true(nameset_get(s, n1, sizeof(n1), &v));
    /* '@' (0x40) and '`' (0x60), '[' and '{' are not letters */
    const uint8_t at[] = {1, '@', 0}, bq[] = {1, '`', 0};
    assert_int_equal(nameset_add(s, at, sizeof(at), 2), 0);
    assert_false(nameset_get(s, bq, sizeof(bq), &v));
    nameset_free(s);

    /* every octet value at every position of a long label (lower-casing works on 8 octets at
     * a time): found with its case flipped exactly when it is a letter */
    for (unsigned pos = 0; pos < 63; pos += 7) {
        for (unsigned c = 1; c < 256; c++) {
            s = nameset_new(1);
            assert_non_null(s);
            uint8_t n[66], f[66];
            n[0] = 63;
            memset(n + 1, 'k', 63);
            n[1 + pos] = (uint8_t)c;
            n[64] = 0;
            memcpy(f, n, 65);
            f[1 + pos] = (uint8_t)(c ^ 0x20);
            bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
            assert_int_equal(nameset_add(s, n, 65, 1), 0);
            assert_true(nameset_get(s, n, 65, &v));
            assert_int_equal(nameset_get(s, f, 65, &v), letter);
            assert_int_equal(nameset_match(s, f, 65, 1, &v), letter ? 0 : -1);
            nameset_free(s);
        }
    }
}

static void test_malformed(void **state)
{
    struct nameset *s = nameset_new(16);
    assert_non_null(s);
    add(s, "example", 1);
    uint32_t v;
    uint8_t long_label[80] = {64};
    memset(long_label + 1, 'a', 64);
    memcpy(long_label + 65, "\7example\0", 9);
    assert_int_equal(nameset_add(s, long_label, 74, 1), -EINVAL);
    assert_int_equal(nameset_match(s, long_label, 74, 1, &v), -1);
    /* no root label within len */
    const uint8_t overrun[] = {3, 'a', 'b', 'c', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e'};
    assert_int_equal(nameset_add(s, overrun, sizeof(overrun), 1), -EINVAL);
    assert_int_equal(nameset_match(s, overrun, sizeof(overrun), 1, &v), -1);
    assert_int_equal(nameset_match(s, overrun, 3, 1, &v), -1);
    assert_false(nameset_get(s, overrun, sizeof(overrun), &v));
    /* a compression pointer is not an uncompressed name */
    const uint8_t ptr[] = {1, 'a', 0xC0, 0x0C};
    assert_int_equal(nameset_add(s, ptr, sizeof(ptr), 1), -EINVAL);
    assert_int_equal(nameset_match(s, ptr, sizeof(ptr), 1, &v), -1);
    assert_int_equal(nameset_add(s, ptr, 0, 1), -EINVAL);
    assert_int_equal(nameset_match(s, ptr, 0, 1, &v), -1);
    /* add wants exactly the name: a trailing octet is refused */
    const uint8_t trailing[] = {7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 0, 0};
    assert_int_equal(nameset_add(s, trailing, sizeof(trailing), 1), -EINVAL);
    /* 127 one-octet labels: 255 octets, the longest name; one more label is too long */
    uint8_t big[300];
    for (int i = 0; i < 128; i++) {
        big[2 * i] = 1;
        big[2 * i + 1] = 'a';
    }
    big[254] = 0;
    assert_int_equal(nameset_add(s, big, 255, 4), 0);
    assert_int_equal(nameset_match(s, big, 255, 4, &v), 0);
    big[254] = 1;
    big[255] = 'a';
    big[256] = 0;
    assert_int_equal(nameset_add(s, big, 257, 4), -EINVAL);
    assert_int_equal(nameset_match(s, big, 257, 4, &v), -1);
    /* and the set still works */
    assert_int_equal(nameset_count(s), 2);
    assert_int_equal(match(s, "www.example", 1, &v), 4);
    nameset_free(s);
}

static void test_root(void **state)
{
    struct nameset *s = nameset_new(0);
    assert_non_null(s);
    uint32_t v;
    const uint8_t root[] = {0};
    assert_int_equal(nameset_match(s, root, 1, 1, &v), -1);
    assert_int_equal(match(s, "www.example", 1, &v), -1); /* the root only if added */
    assert_int_equal(nameset_add(s, root, 1, 1), 0);
    assert_int_equal(nameset_match(s, root, 1, 1, &v), 0);
    assert_int_equal(match(s, "www.example", 1, &v), 12); /* the root label's offset */
    add(s, "example", 2);
    assert_int_equal(match(s, "www.example", 3, &v), 4);
    assert_int_equal(v, 2);
    assert_int_equal(match(s, "www.example", 1, &v), 12);
    assert_int_equal(v, 1);
    nameset_free(s);
}

static void test_growth(void **state)
{
    struct nameset *s = nameset_new(16);
    assert_non_null(s);
    size_t m0 = nameset_memory(s);
    assert_true(m0 > 0);
    char text[64];
    enum { N = 100000 };
    for (unsigned i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "h%u.zone%u.example.com", i, i % 97);
        add(s, text, 1u << (i % 32));
    }
    assert_int_equal(nameset_count(s), N);
    assert_true(nameset_memory(s) > m0);
    assert_true(nameset_memory(s) / N < 64);
    uint32_t v;
    for (unsigned i = 0; i < N; i++) {
        snprintf(text, sizeof(text), "sub.h%u.zone%u.example.com", i, i % 97);
        assert_int_equal(match(s, text, ~0u, &v), 4);
        assert_int_equal(v, 1u << (i % 32));
        snprintf(text, sizeof(text), "h%u.zone%u.example.com", i + N, i % 97);
        assert_int_equal(match(s, text, ~0u, &v), -1);
    }
    nameset_free(s);
}

/* The randomized check: names over a small alphabet of labels, so that suffix hits, label
 * boundary near misses ("ad" vs "bad") and duplicates are frequent. */
static const char *const alphabet[] = {"a", "b", "ad", "bad", "x1", "ads", "example", "com", "A"};
#define N_ALPHA (sizeof(alphabet) / sizeof(alphabet[0]))

struct model_entry {
    struct wname w;
    uint32_t value;
};

static uint64_t rng = 0x243F6A8885A308D3ULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

static struct wname random_name(unsigned max_labels)
{
    char text[128] = "";
    unsigned n = 1 + rnd(max_labels);
    for (unsigned i = 0; i < n; i++) {
        if (i)
            strcat(text, ".");
        strcat(text, alphabet[rnd(N_ALPHA)]);
    }
    return W_case(text);
}

/* Exact comparison without case, as the model's definition of "the same name". */
static bool same_name(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        uint8_t x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (uint8_t)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (uint8_t)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

static void test_random_against_model(void **state)
{
    enum { NADD = 3000, NQUERY = 20000 };
    struct model_entry *model = calloc(NADD, sizeof(*model));
    assert_non_null(model);
    size_t nmodel = 0;
    struct nameset *s = nameset_new(64);
    assert_non_null(s);
    for (int i = 0; i < NADD; i++) {
        struct wname w = random_name(5);
        uint32_t value = 1u << rnd(6);
        assert_int_equal(nameset_add(s, w.b, w.len, value), 0);
        size_t k;
        for (k = 0; k < nmodel; k++) {
            if (same_name(model[k].w.b, model[k].w.len, w.b, w.len))
                break;
        }
        if (k == nmodel)
            model[nmodel++] = (struct model_entry){w, 0};
        model[k].value |= value;
    }
    assert_int_equal(nameset_count(s), nmodel);
    size_t hits = 0;
    for (int i = 0; i < NQUERY; i++) {
        struct wname q = random_name(7);
        uint32_t mask = rnd(64);
        /* the naive answer: suffixes from the longest, each compared with every entry */
        int want = -1;
        uint32_t want_v = 0;
        for (size_t off = 0; off < q.len && want < 0; off += 1u + q.b[off]) {
            for (size_t k = 0; k < nmodel; k++) {
                if ((model[k].value & mask) &&
                    same_name(model[k].w.b, model[k].w.len, q.b + off, q.len - off)) {
                    want = (int)off;
                    want_v = model[k].value;
                    break;
                }
            }
            if (q.b[off] == 0)
                break;
        }
        uint32_t v = 0;
        int got = nameset_match(s, q.b, q.len, mask, &v);
        assert_int_equal(got, want);
        if (want >= 0) {
            assert_int_equal(v, want_v);
            hits++;
        }
    }
    /* the alphabet makes hits common: the check compared both outcomes */
    assert_true(hits > NQUERY / 10);
    assert_true(hits < NQUERY);
    nameset_free(s);
    free(model);
}

/* Fail each allocation in turn during a run of adds: the add that meets the failure returns
 * -ENOMEM and leaves the set as it was (every earlier name found, that one absent), and the
 * same add succeeds once allocations work again. Runs until one pass meets no failure, so
 * every allocation point (table growth, chunk array, chunks) is met. */
static void test_alloc_failure(void **state)
{
    enum { N = 3000 };
    char text[64];
    for (unsigned long n = 1;; n++) {
        struct nameset *s = nameset_new(4);
        assert_non_null(s);
        calls = 0;
        fail_at = n;
        bool failed = false;
        for (unsigned i = 0; i < N; i++) {
            snprintf(text, sizeof(text), "n%u.example", i);
            struct wname w = W(text);
            int rc = nameset_add(s, w.b, w.len, 1);
            if (rc == -ENOMEM) {
                fail_at = 0;
                failed = true;
                assert_int_equal(nameset_count(s), i);
                uint32_t v;
                assert_false(nameset_get(s, w.b, w.len, &v));
                for (unsigned j = 0; j < i; j++) {
                    snprintf(text, sizeof(text), "x.n%u.example", j);
                    assert_int_equal(match(s, text, 1, &v), 2);
                }
                assert_int_equal(nameset_add(s, w.b, w.len, 1), 0);
                continue;
            }
            assert_int_equal(rc, 0);
        }
        fail_at = 0;
        assert_int_equal(nameset_count(s), N);
        uint32_t v;
        for (unsigned j = 0; j < N; j++) {
            snprintf(text, sizeof(text), "n%u.example", j);
            assert_int_equal(match(s, text, 1, &v), 0);
        }
        nameset_free(s);
        if (!failed) {
            assert_true(n > 3); /* table growth, chunk array and chunk were all met */
            break;
        }
    }
    /* nameset_new's own failures: NULL, nothing leaked (ASan build) */
    for (unsigned long n = 1; n <= 2; n++) {
        calls = 0;
        fail_at = n;
        assert_null(nameset_new(16));
        fail_at = 0;
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_and_suffix),
        cmocka_unit_test(test_longest_suffix_wins),
        cmocka_unit_test(test_masks_and_duplicates),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_root),
        cmocka_unit_test(test_growth),
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_alloc_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
