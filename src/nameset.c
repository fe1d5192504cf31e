/*
 * The name set: an arena of records and an open-addressing table over it.
 *
 * Arena: records [value u32][len u8][lower-cased wire name, len octets, root included], packed
 * without alignment (read with memcpy), in fixed-size chunks. Chunks rather than one realloc'd
 * block: nothing is copied as the set grows, no record moves, and the capacity held beyond the
 * names is at most one chunk (a doubling block would hold up to twice the names). A record
 * never straddles two chunks. An arena offset is (chunk index << chunk_shift) | position;
 * offset 0 (the first octet of chunk 0, never used) marks an empty table slot.
 *
 * Table: 8-byte slots {arena offset, hash tag}, a power of two of them, linear probing, at most
 * 3/4 full (doubled past that). The tag is the top 32 bits of the name's 64-bit hash and the
 * slot index is taken from the tag's top bits, so growing the table rehashes from the slots
 * alone, without reading a name back. A tag match is confirmed by comparing the bytes.
 *
 * Hash: folded over the labels from the right: h(root) = SEED, h(label.rest) = fold(h(rest),
 * the label's octets lower-cased, length octet included); the table uses finish(h). Both
 * nameset_add() and nameset_match() go through hash_suffixes(), so the hash a lookup computes
 * for any suffix of the query is the hash that suffix was stored with; a lookup lower-cases the
 * name once (8 octets at a time) and folds each label once. The fold is a multiply-xorshift per
 * 8 octets rather than XXH3 per label: XXH3's length classes cost a branch miss per label, and
 * a lookup measured 108 -> 88 ns with the fold (10,000 names, in cache).
 *
 * The hash is not keyed: the names in the table come from the configured lists, not from the
 * clients; a client can only choose query names, whose cost is bounded by the probe chains the
 * list's names made (at most 3/4 load) and a memcmp on a 32-bit tag collision.
 */
#include "dohgate/nameset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NAME   255 /* wire octets, root label included (RFC 1035) */
#define MAX_LABELS 128 /* a 255-octet name has at most 127 labels besides the root */
#define REC_HDR    5   /* value (4) + length (1) */
#define SEED       0x6e616d6573657431ULL
#define MIN_BITS   4
#define MIN_SHIFT  12 /* 4 KiB chunks for small sets (forward zones, a few local zones) */
#define MAX_SHIFT  20 /* 1 MiB chunks for large lists */

struct slot {
    uint32_t off; /* 0: empty */
    uint32_t tag;
};

struct nameset {
    struct slot *slots;
    unsigned bits; /* 1 << bits slots */
    size_t count;
    uint8_t **chunks;
    size_t n_chunks, cap_chunks;
    unsigned chunk_shift;
    size_t used; /* octets used in the last chunk */
};

/* The positions of a well-formed name's labels (root excluded) and its wire length. */
struct labels {
    uint8_t start[MAX_LABELS];
    unsigned n;
    size_t len; /* wire length, root label included */
};

/* Walk the labels of @p name, bounded by @p len, by MAX_NAME and by MAX_LABELS.
 * @return false: a label longer than 63 (or a compression pointer), no root label within len. */
static bool parse_labels(const uint8_t *name, size_t len, struct labels *lb)
{
    size_t i = 0;
    lb->n = 0;
    for (;;) {
        if (i >= len || i >= MAX_NAME)
            return false;
        uint8_t l = name[i];
        if (l == 0)
            break;
        if (l > 63 || lb->n >= MAX_LABELS)
            return false;
        lb->start[lb->n++] = (uint8_t)i;
        i += 1u + l;
    }
    lb->len = i + 1;
    return true;
}

/* Lower-case the @p len octets of @p name into @p low, eight at a time: in each byte, add 0x20
 * where it is 'A'..'Z' (ASCII only; the length octets, 0..63, are never letters). @p low has
 * room for len rounded up to 8, plus 8; the octets past len are zero. */
static void lower_copy(const uint8_t *name, size_t len, uint8_t *low)
{
    const uint64_t ones = 0x0101010101010101ULL, high = 0x8080808080808080ULL;
    memcpy(low, name, len);
    memset(low + len, 0, 8);
    for (size_t i = 0; i < len; i += 8) {
        uint64_t w;
        memcpy(&w, low + i, 8);
        uint64_t seven = w & ~high;                  /* the low 7 bits of each byte */
        uint64_t ge_a = seven + ones * (0x80 - 'A'); /* high bit: >= 'A' */
        uint64_t gt_z = seven + ones * (0x7f - 'Z'); /* high bit: > 'Z' */
        uint64_t upper = (ge_a ^ gt_z) & ~w & high;  /* ... and the byte below 0x80 */
        w |= upper >> 2;                             /* 0x80 >> 2 = 0x20 */
        memcpy(low + i, &w, 8);
    }
}

/* h(label.rest) from h(rest): the label's length octet and its letters, read 8 octets at a
 * time. A word may run past the label into the labels to its right, or into the zero octets
 * past the name: those are octets of the same suffix, so equal suffixes still hash equally.
 * Each step (h ^ w) * odd, h ^= h >> 32 is a bijection of h for a given word: two different
 * suffixes of one name never collide in the chain from a common parent. */
static inline uint64_t fold(uint64_t h, const uint8_t *lab)
{
    size_t n = (size_t)lab[0] + 1;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t w;
        memcpy(&w, lab + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ULL;
        h ^= h >> 32;
    }
    return h;
}

/* The hash of every suffix of the lower-cased name @p low: h[k] for the suffix starting at
 * label k (h[n]: the root). Folded from the right, one step per label. */
static void hash_suffixes(const uint8_t *low, const struct labels *lb, uint64_t *h)
{
    uint64_t v = SEED;
    h[lb->n] = v;
    for (unsigned k = lb->n; k-- > 0;) {
        v = fold(v, low + lb->start[k]);
        h[k] = v;
    }
}

/* The table's view of a hash: murmur3's finalizer, so that the tag's high bits (the slot
 * index) depend on every bit of the chain. */
static inline uint64_t finish(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint32_t tag_of(uint64_t h)
{
    return (uint32_t)(finish(h) >> 32);
}

static inline size_t index_of(uint32_t tag, unsigned bits)
{
    return (size_t)(tag >> (32 - bits));
}

static inline const uint8_t *record(const struct nameset *s, uint32_t off)
{
    return s->chunks[off >> s->chunk_shift] + (off & ((1u << s->chunk_shift) - 1));
}

/* The slot holding the lower-cased name @p low (@p len octets) with tag @p tag, or the empty
 * slot where it would go. */
static struct slot *find(const struct nameset *s, const uint8_t *low, size_t len, uint32_t tag)
{
    size_t mask = ((size_t)1 << s->bits) - 1;
    for (size_t i = index_of(tag, s->bits);; i = (i + 1) & mask) {
        struct slot *sl = &s->slots[i];
        if (sl->off == 0)
            return sl;
        if (sl->tag == tag) {
            const uint8_t *r = record(s, sl->off);
            if (r[4] == len && memcmp(r + REC_HDR, low, len) == 0)
                return sl;
        }
    }
}

struct nameset *nameset_new(size_t expected)
{
    struct nameset *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    /* Room for expected names at most 3/4 full. */
    unsigned bits = MIN_BITS;
    while (bits < 31 && ((size_t)1 << bits) / 4 * 3 < expected)
        bits++;
    /* Chunks about a 32nd of the expected arena (names average ~25 octets): small sets stay
     * small, large ones hold few chunks. */
    unsigned shift = MIN_SHIFT;
    while (shift < MAX_SHIFT && ((size_t)1 << shift) < expected)
        shift++;
    s->bits = bits;
    s->chunk_shift = shift;
    s->slots = calloc((size_t)1 << bits, sizeof(*s->slots));
    if (!s->slots) {
        free(s);
        return NULL;
    }
    return s;
}

void nameset_free(struct nameset *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_chunks; i++)
        free(s->chunks[i]);
    free(s->chunks);
    free(s->slots);
    free(s);
}

size_t nameset_count(const struct nameset *s)
{
    return s->count;
}

size_t nameset_memory(const struct nameset *s)
{
    return sizeof(*s) + ((size_t)sizeof(struct slot) << s->bits) +
           s->cap_chunks * sizeof(*s->chunks) + (s->n_chunks << s->chunk_shift);
}

/* Double the table. @return false on OOM (the table unchanged). */
static bool grow_table(struct nameset *s)
{
    if (s->bits >= 31)
        return false;
    unsigned bits = s->bits + 1;
    size_t n = (size_t)1 << bits, mask = n - 1;
    struct slot *slots = calloc(n, sizeof(*slots));
    if (!slots)
        return false;
    for (size_t j = 0; j < ((size_t)1 << s->bits); j++) {
        struct slot sl = s->slots[j];
        if (sl.off == 0)
            continue;
        size_t i = index_of(sl.tag, bits);
        while (slots[i].off != 0)
            i = (i + 1) & mask;
        slots[i] = sl;
    }
    free(s->slots);
    s->slots = slots;
    s->bits = bits;
    return true;
}

/* Room for @p need octets in the arena. @return its offset, or 0 on OOM (nothing changed). */
static uint32_t arena_reserve(struct nameset *s, size_t need)
{
    size_t csize = (size_t)1 << s->chunk_shift;
    if (s->n_chunks > 0 && s->used + need <= csize)
        return (uint32_t)(((s->n_chunks - 1) << s->chunk_shift) | s->used);
    /* A new chunk; offsets must stay within 32 bits. */
    if ((s->n_chunks + 1) > ((size_t)1 << (32 - s->chunk_shift)))
        return 0;
    if (s->n_chunks == s->cap_chunks) {
        size_t cap = s->cap_chunks ? s->cap_chunks * 2 : 4;
        uint8_t **c = realloc(s->chunks, cap * sizeof(*c));
        if (!c)
            return 0;
        s->chunks = c;
        s->cap_chunks = cap;
    }
    uint8_t *chunk = malloc(csize);
    if (!chunk)
        return 0;
    s->chunks[s->n_chunks++] = chunk;
    /* Octet 0 of chunk 0 stays unused: offset 0 is the empty slot. */
    s->used = s->n_chunks == 1 ? 1 : 0;
    return (uint32_t)(((s->n_chunks - 1) << s->chunk_shift) | s->used);
}

int nameset_add(struct nameset *s, const uint8_t *name, size_t len, uint32_t value)
{
    struct labels lb;
    if (!parse_labels(name, len, &lb) || lb.len != len)
        return -EINVAL;
    uint8_t low[MAX_NAME + 16];
    uint64_t h[MAX_LABELS + 1];
    lower_copy(name, lb.len, low);
    hash_suffixes(low, &lb, h);
    uint32_t tag = tag_of(h[0]);
    struct slot *sl = find(s, low, len, tag);
    if (sl->off != 0) {
        uint8_t *r =
            s->chunks[sl->off >> s->chunk_shift] + (sl->off & ((1u << s->chunk_shift) - 1));
        uint32_t v;
        memcpy(&v, r, 4);
        v |= value;
        memcpy(r, &v, 4);
        return 0;
    }
    /* Grow first, then take arena room: either failure leaves the set as it was (a larger
     * table holds the same names). */
    if (s->count + 1 > ((size_t)1 << s->bits) / 4 * 3) {
        if (!grow_table(s))
            return -ENOMEM;
        sl = find(s, low, len, tag);
    }
    uint32_t off = arena_reserve(s, REC_HDR + len);
    if (off == 0)
        return -ENOMEM;
    uint8_t *r = s->chunks[s->n_chunks - 1] + s->used;
    memcpy(r, &value, 4);
    r[4] = (uint8_t)len;
    memcpy(r + REC_HDR, low, len);
    s->used += REC_HDR + len;
    sl->off = off;
    sl->tag = tag;
    s->count++;
    return 0;
}

int nameset_match(const struct nameset *s, const uint8_t *name, size_t len, uint32_t mask,
                  uint32_t *value)
{
    struct labels lb;
    if (!parse_labels(name, len, &lb))
        return -1;
    uint8_t low[MAX_NAME + 16];
    uint64_t h[MAX_LABELS + 1];
    lower_copy(name, lb.len, low);
    hash_suffixes(low, &lb, h);
    /* The probes are independent: start every suffix's first slot on its way into the cache
     * before looking at any, so a lookup in a table much larger than the cache waits for about
     * one memory access, not one per label. */
    for (unsigned k = 0; k <= lb.n; k++)
        __builtin_prefetch(&s->slots[index_of(tag_of(h[k]), s->bits)]);
    for (unsigned k = 0; k <= lb.n; k++) {
        size_t start = k < lb.n ? lb.start[k] : lb.len - 1;
        const struct slot *sl = find(s, low + start, lb.len - start, tag_of(h[k]));
        if (sl->off == 0)
            continue;
        uint32_t v;
        memcpy(&v, record(s, sl->off), 4);
        if (v & mask) {
            if (value)
                *value = v;
            return (int)start;
        }
    }
    return -1;
}

bool nameset_get(const struct nameset *s, const uint8_t *name, size_t len, uint32_t *value)
{
    struct labels lb;
    if (!parse_labels(name, len, &lb))
        return false;
    uint8_t low[MAX_NAME + 16];
    uint64_t h[MAX_LABELS + 1];
    lower_copy(name, lb.len, low);
    hash_suffixes(low, &lb, h);
    const struct slot *sl = find(s, low, lb.len, tag_of(h[0]));
    if (sl->off == 0)
        return false;
    if (value)
        memcpy(value, record(s, sl->off), 4);
    return true;
}
