#include "dohgate/util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int dg_buf_reserve(struct dg_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return -ENOMEM;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap - b->len < extra)
        ncap *= 2;
    uint8_t *p = realloc(b->data, ncap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = ncap;
    return 0;
}

int dg_buf_append(struct dg_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = dg_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void dg_buf_free(struct dg_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

size_t dg_buf_release_if_empty(struct dg_buf *b)
{
    if (b->len)
        return 0;
    size_t cap = b->cap;
    dg_buf_free(b);
    return cap;
}

void dg_buf_consume(struct dg_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Character -> 6-bit value, 255 outside the alphabet: a table and four characters per step
 * (every GET query and cache hit decodes one; the branchy per-character version cost ~25
 * instructions a character in callgrind). */
static const uint8_t b64url_val[256] = {
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 62,  255, 255, 52,  53,  54,  55,  56,  57,  58,  59,  60,
    61,  255, 255, 255, 255, 255, 255, 255, 0,   1,   2,   3,   4,   5,   6,   7,   8,   9,   10,
    11,  12,  13,  14,  15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25,  255, 255, 255, 255,
    63,  255, 26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,  41,  42,
    43,  44,  45,  46,  47,  48,  49,  50,  51,  255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    255, 255, 255, 255, 255, 255, 255, 255, 255,
};

long dg_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap)
{
    /* One leftover character cannot carry a whole byte. */
    if (inlen % 4 == 1)
        return -1;
    size_t need = (inlen / 4) * 3 + (inlen % 4 ? inlen % 4 - 1 : 0);
    if (need > outcap)
        return -1;
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, i = 0;
    for (; i + 4 <= inlen; i += 4) {
        uint32_t a = b64url_val[p[i]], b = b64url_val[p[i + 1]], c = b64url_val[p[i + 2]],
                 d = b64url_val[p[i + 3]];
        if ((a | b | c | d) > 63)
            return -1;
        uint32_t v = a << 18 | b << 12 | c << 6 | d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    size_t rest = inlen - i; /* 0, 2 or 3 */
    if (rest) {
        uint32_t v = 0;
        for (size_t k = 0; k < rest; k++) {
            uint32_t x = b64url_val[p[i + k]];
            if (x > 63)
                return -1;
            v = v << 6 | x;
        }
        /* Non-canonical encodings (set bits in the unused tail) are rejected. */
        if (rest == 2) {
            if (v & 0xfu)
                return -1;
            out[o++] = (uint8_t)(v >> 4);
        } else {
            if (v & 0x3u)
                return -1;
            out[o++] = (uint8_t)(v >> 10);
            out[o++] = (uint8_t)(v >> 2);
        }
    }
    return (long)o;
}

size_t dg_b64url_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

uint64_t dg_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t dg_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

size_t dg_fmt_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return n;
}

void dg_pool_init(struct dg_pool *p, size_t size, size_t max_keep)
{
    *p = (struct dg_pool){.size = size < sizeof(void *) ? sizeof(void *) : size,
                          .max_keep = max_keep};
}

void *dg_pool_get(struct dg_pool *p)
{
    void *b = p->head;
    if (!b)
        return malloc(p->size);
    memcpy(&p->head, b, sizeof(void *));
    p->nfree--;
    return b;
}

void dg_pool_put(struct dg_pool *p, void *blk)
{
    if (!blk)
        return;
    if (p->nfree >= p->max_keep) {
        free(blk);
        return;
    }
    memcpy(blk, &p->head, sizeof(void *));
    p->head = blk;
    p->nfree++;
}

void *dg_pool_alloc(struct dg_pool *p, size_t n, bool *pooled)
{
    *pooled = n <= p->size;
    return *pooled ? dg_pool_get(p) : malloc(n);
}

void dg_pool_free(struct dg_pool *p, void *blk, bool pooled)
{
    if (pooled)
        dg_pool_put(p, blk);
    else
        free(blk);
}

void dg_pool_drain(struct dg_pool *p, void (*fini)(void *blk))
{
    while (p->head) {
        void *b = p->head;
        memcpy(&p->head, b, sizeof(void *));
        if (fini)
            fini(b);
        free(b);
    }
    p->nfree = 0;
}
