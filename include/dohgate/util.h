/**
 * @file util.h
 * Small helpers with no I/O: a growable byte buffer, base64url (RFC 4648 §5, as RFC 8484 uses it),
 * monotonic time. Every function here is pure or touches only the memory it is given, so the
 * module is safe to call from any worker thread.
 */
#ifndef DOHGATE_UTIL_H
#define DOHGATE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Growable byte buffer. Zero-initialised is empty and valid. The buffer owns data. */
struct dg_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/**
 * Make room for at least @p extra more bytes after len.
 * @return 0, or -ENOMEM (the buffer is unchanged).
 */
int dg_buf_reserve(struct dg_buf *b, size_t extra);
/** Append @p n bytes. @return 0 or -ENOMEM (the buffer is unchanged). */
int dg_buf_append(struct dg_buf *b, const void *p, size_t n);
/** Release the memory; the buffer is empty and reusable afterwards. */
void dg_buf_free(struct dg_buf *b);
/** An idle connection's trim: free the buffer's memory if it holds no byte (a buffer keeps the
 * capacity of its largest burst otherwise). @return the capacity given back (0 if not empty) */
size_t dg_buf_release_if_empty(struct dg_buf *b);
/** Remove the first @p n bytes (n <= len). */
void dg_buf_consume(struct dg_buf *b, size_t n);

/**
 * Decode unpadded base64url (RFC 4648 §5). Trailing '=' padding is rejected, as are characters
 * outside the alphabet and non-zero trailing bits, so that one DNS message has one encoding.
 * @param out     receives up to dg_b64url_decoded_max(inlen) bytes
 * @return decoded length, or -1 on invalid input or when @p outcap is too small.
 */
long dg_b64url_decode(const char *in, size_t inlen, uint8_t *out, size_t outcap);
/** Upper bound of the decoded size of @p inlen characters. */
static inline size_t dg_b64url_decoded_max(size_t inlen)
{
    return (inlen / 4) * 3 + 3;
}
/**
 * Encode without padding. @p out needs dg_b64url_encoded_len(n) + 1 bytes (NUL-terminated).
 * @return the encoded length.
 */
size_t dg_b64url_encode(const uint8_t *in, size_t n, char *out);
static inline size_t dg_b64url_encoded_len(size_t n)
{
    return (n / 3) * 4 + ((n % 3) ? (n % 3) + 1 : 0);
}

/** Milliseconds on CLOCK_MONOTONIC. */
uint64_t dg_now_ms(void);
/** Microseconds on CLOCK_MONOTONIC (latencies). */
uint64_t dg_now_us(void);

/** Read a 16-bit big-endian value. */
static inline uint16_t dg_get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline void dg_put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline uint32_t dg_get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline void dg_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/** RFC 9110 §5.6.2 tchar: a character of a token (field names, methods, parameter names). */
static inline bool dg_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return true;
    switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~':
        return true;
    default:
        return false;
    }
}

/**
 * Write @p v in decimal to @p out (at least 21 bytes) with a terminating NUL; returns the
 * number of digits. For the per-response header values, where snprintf costs ~700
 * instructions each.
 */
size_t dg_fmt_u64(char *out, uint64_t v);

/**
 * A free list of same-size blocks for one thread: a worker's pending queries (upstream.c,
 * resolver.c). dg_pool_get() takes a kept block or mallocs one; dg_pool_put() keeps up to
 * max_keep blocks and frees the others. Why: a worker has tens to hundreds of misses in flight,
 * allocated and freed in bursts, and glibc's per-thread cache keeps only 7 blocks of a size: the
 * rest went through malloc's slow paths (callgrind: ~3,000 instructions per miss in
 * _int_malloc/_int_free). Hidden cost: up to max_keep × size bytes stay allocated after a
 * burst, until dg_pool_drain().
 * A kept block's bytes past its first pointer-sized ones (the pool's link) come back as they
 * were left: a user may keep state there across uses (upstream.c keeps a query's timer). Not
 * zeroed. Not thread-safe: one pool per thread, and a
 * block goes back to the pool it came from. Kept blocks are not poisoned under
 * AddressSanitizer: LeakSanitizer ignores pointers stored in poisoned memory, so the pool's links
 * and the state a user keeps in a block (a timer) looked leaked to the fuzzers' per-input leak
 * check. The price: a use after dg_pool_put() goes unreported, as with any free list.
 */
struct dg_pool {
    void *head;      /* kept blocks, linked through their first bytes */
    size_t size;     /* block size (at least a pointer) */
    size_t nfree;    /* blocks kept */
    size_t max_keep; /* bound of nfree */
};

/** An empty pool of @p size-byte blocks keeping at most @p max_keep (0: a plain malloc). */
void dg_pool_init(struct dg_pool *p, size_t size, size_t max_keep);
/** @return a block of p->size bytes (a new one: contents undefined), or NULL on OOM. */
void *dg_pool_get(struct dg_pool *p);
/** Give back a block of this pool (NULL is ignored): kept, or freed when max_keep are kept. */
void dg_pool_put(struct dg_pool *p, void *blk);
/**
 * A block of at least @p n bytes for a user whose sizes vary: from the pool when it fits
 * (n <= p->size), else malloc'ed; *@p pooled says which, for dg_pool_free(). NULL on OOM.
 */
void *dg_pool_alloc(struct dg_pool *p, size_t n, bool *pooled);
/** Give back a block from dg_pool_alloc() (NULL is ignored): to the pool when @p pooled, else
 * free(). */
void dg_pool_free(struct dg_pool *p, void *blk, bool pooled);
/** Free every kept block, calling @p fini (may be NULL) on each first. */
void dg_pool_drain(struct dg_pool *p, void (*fini)(void *blk));

#endif
