/*
 * The name set: an open-addressing table of 64-bit name fingerprints and values, behind a
 * Bloom filter. The names themselves are not kept.
 *
 * Table: 16-byte slots {tag, check, value, full}, a power of two of them, linear probing, at
 * most 3/4 full (doubled past that). tag:check is the name's 64-bit fingerprint, finish(h) of
 * its hash; the slot index is taken from the tag's top bits, so growing the table rehashes from
 * the slots alone. A lookup probes each suffix's slot once (a DRAM round trip at 1,000,000
 * names) and trusts a fingerprint match: the value is in the slot, there is no record to read
 * back and compare. Until 2026-12 the slots were {arena offset, 32-bit tag} over an arena of
 * the names, and every hit waited for a second round trip to compare the name; measured at
 * 1,000,000 names (nameset_bench, shared machine): hit 580-900 -> 310-540 ns, 250-350 with the
 * table on huge pages (below), and 49 -> 36 bytes per name (16-byte slots at 3/8-3/4 load:
 * 21-43 bytes per name, plus the filter).
 *
 * What trusting 64 bits costs: a name not in the set is taken for one that is when its
 * fingerprint equals that of a name in a slot its probe passes (~2 slots at 3/4 load), about
 * 2^-63 per suffix looked up (the filter does not lower it: its bits come from the same tag):
 * at 10^5 queries per second of 4 suffixes, once in ~10^6 years. Two listed names with one
 * fingerprint (~n^2/2^65: 3e-8 for a million names) are held as one, their values OR-ed. The fold
 * below is not a cryptographic hash: with a known seed a client could craft a query name with the
 * fingerprint of a listed one (solve the last 8 octets of a label for it). So the seed is random
 * per set (getrandom): the state the fold starts each suffix from is then unknown, and a client
 * learns at most one bit (matched or not) per query, at ~2^-44 per guess against a million names.
 *
 * Hash: folded over the labels from the right: h(root) = the seed, h(label.rest) = fold(h(rest),
 * the label's octets lower-cased, length octet included); the table uses finish(h). Both
 * nameset_add() and nameset_match() go through hash_suffixes(), so the hash a lookup computes
 * for any suffix of the query is the hash that suffix was stored with; a lookup lower-cases the
 * name once (8 octets at a time) and folds each label once. The fold is a multiply-xorshift per
 * 8 octets rather than XXH3 per label: XXH3's length classes cost a branch miss per label, and
 * a lookup measured 108 -> 88 ns with the fold (10,000 names, in cache).
 *
 * Filter: a split-block Bloom filter in front of the table, so that a name whose suffixes are
 * not listed (most queries) usually never touches the table, which at 1,000,000 names is 32 MB
 * of slots, far outside the cache: one random access into it costs a DRAM
 * round trip (~200 ns on the build machine). Blocks of 32 octets (eight 32-bit words, one cache
 * line at most: the array is 32-aligned), one per 2^FILTER_SHIFT slots (8 bits per slot:
 * 10.7-21 bits per name as the table fills from 3/8 to 3/4; 2 MB for 1,000,000 names in 2^21
 * slots). At 10.7 bits per name ~1% of the names not in the set pass it (test_nameset). A key sets
 * one bit in each word of one block. Its bits come from the 32-bit tag alone (block from tag * an
 * odd constant, the bit in word i from the top 5 bits of tag * salt[i], the salts of Parquet's
 * split-block filter), so growing the table rebuilds the filter from the slots without reading
 * a name back, and a lookup uses the tags it computes anyway: no second hash pass.
 *
 * Huge pages: the table is advised MADV_HUGEPAGE (transparent huge pages, "madvise" mode on
 * the build machine): with 4 KB pages a random slot in 32 MB also misses the TLB, and the page
 * walk is one more dependent memory access; hit 330-540 -> 250-350 ns in paired runs.
 *
 * Cost a client can cause: query names only, whose probes are bounded by the chains the list's
 * names made (at most 3/4 load).
 */
#include "dohgate/nameset.h"
#include "nameset_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>

#define MAX_NAME     255 /* wire octets, root label included (RFC 1035) */
#define MAX_LABELS   128 /* a 255-octet name has at most 127 labels besides the root */
#define MIN_BITS     4
#define FILTER_SHIFT 5 /* one 256-bit filter block per 32 slots: 8 bits per slot */

struct slot {
    uint32_t tag;   /* fingerprint, high half (the slot index is its top bits) */
    uint32_t check; /* fingerprint, low half */
    uint32_t value;
    uint32_t full; /* 0: empty */
};

struct nameset {
    struct slot *slots;
    unsigned bits; /* 1 << bits slots */
    size_t count;
    uint64_t seed;    /* h(root): random per set, see above */
    uint32_t *filter; /* 8 words per block, 1 << fbits blocks, 32-aligned within filter_mem */
    void *filter_mem; /* what calloc gave (freed) */
    unsigned fbits;
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
 * label k (h[n]: the root, the seed). Folded from the right, one step per label. */
static void hash_suffixes(uint64_t seed, const uint8_t *low, const struct labels *lb, uint64_t *h)
{
    uint64_t v = seed;
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

static inline size_t index_of(uint32_t tag, unsigned bits)
{
    return (size_t)(tag >> (32 - bits));
}

static const uint32_t salt[8] = {0x47b6137bU, 0x44974d91U, 0x8824ad5bU, 0xa2b7289dU,
                                 0x705495c7U, 0x2df1424bU, 0x9efc4947U, 0x5c6bfb31U};

static inline unsigned filter_bits_for(unsigned bits)
{
    return bits > FILTER_SHIFT ? bits - FILTER_SHIFT : 0;
}

static inline uint32_t *filter_block(uint32_t *filter, unsigned fbits, uint32_t tag)
{
    /* tag * odd is a bijection of the tag, so the block does not simply repeat the slot index
     * (the tag's top bits); the top fbits of the product depend on all of its bits. */
    uint32_t b = fbits ? (uint32_t)(tag * 0x9E3779B1u) >> (32 - fbits) : 0;
    return filter + ((size_t)b << 3);
}

static inline void filter_set(uint32_t *filter, unsigned fbits, uint32_t tag)
{
    uint32_t *blk = filter_block(filter, fbits, tag);
    for (unsigned i = 0; i < 8; i++)
        blk[i] |= 1u << ((tag * salt[i]) >> 27);
}

static inline bool filter_has(const struct nameset *s, uint32_t tag)
{
    const uint32_t *blk = filter_block(s->filter, s->fbits, tag);
    uint32_t miss = 0;
    for (unsigned i = 0; i < 8; i++)
        miss |= ~blk[i] & (1u << ((tag * salt[i]) >> 27));
    return miss == 0;
}

/* A zeroed filter for a table of 2^@p bits slots. @return false on OOM. */
static bool filter_alloc(unsigned bits, void **mem, uint32_t **filter)
{
    size_t n = (size_t)8 << filter_bits_for(bits);
    /* calloc aligns to 16: 32 more octets let a block start on a 32-octet boundary, so that
     * no block straddles two cache lines. */
    void *m = calloc(n * sizeof(uint32_t) + 32, 1);
    if (!m)
        return false;
    *mem = m;
    *filter = (uint32_t *)(((uintptr_t)m + 31) & ~(uintptr_t)31);
    return true;
}

/* The slot holding the fingerprint @p fp, or the empty slot where it would go. */
static inline struct slot *find(const struct nameset *s, uint64_t fp)
{
    uint32_t tag = (uint32_t)(fp >> 32), check = (uint32_t)fp;
    size_t mask = ((size_t)1 << s->bits) - 1;
    for (size_t i = index_of(tag, s->bits);; i = (i + 1) & mask) {
        struct slot *sl = &s->slots[i];
        if (!sl->full || (sl->tag == tag && sl->check == check))
            return sl;
    }
}

/* Ask for transparent huge pages over the 2 MB-aligned part of a large table: a random access
 * into 16 MB of 4 KB pages also misses the TLB, and the page walk is a second dependent memory
 * access. Advice only: any failure (no THP, a kernel without it) leaves 4 KB pages. */
static void advise_huge(void *p, size_t len)
{
#ifdef MADV_HUGEPAGE
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + len) & ~(huge - 1);
    if (e > a)
        (void)madvise((void *)a, e - a, MADV_HUGEPAGE);
#else
    (void)p;
    (void)len;
#endif
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
    s->bits = bits;
    s->slots = calloc((size_t)1 << bits, sizeof(*s->slots));
    if (!s->slots) {
        free(s);
        return NULL;
    }
    advise_huge(s->slots, sizeof(*s->slots) << bits);
    if (!filter_alloc(bits, &s->filter_mem, &s->filter)) {
        free(s->slots);
        free(s);
        return NULL;
    }
    s->fbits = filter_bits_for(bits);
    /* Without the entropy pool (early boot, a seccomp filter), a seed a client cannot read
     * still: the set's address. */
    if (getrandom(&s->seed, sizeof(s->seed), GRND_NONBLOCK) != sizeof(s->seed))
        s->seed = (uint64_t)(uintptr_t)s ^ 0x6e616d6573657431ULL;
    return s;
}

void nameset_free(struct nameset *s)
{
    if (!s)
        return;
    free(s->slots);
    free(s->filter_mem);
    free(s);
}

size_t nameset_count(const struct nameset *s)
{
    return s->count;
}

size_t nameset_memory(const struct nameset *s)
{
    return sizeof(*s) + ((size_t)sizeof(struct slot) << s->bits) +
           ((size_t)8 * sizeof(uint32_t) << s->fbits) + 32;
}

/* Double the table, and the filter with it (rebuilt from the tags). @return false on OOM
 * (the table and the filter unchanged). */
static bool grow_table(struct nameset *s)
{
    if (s->bits >= 31)
        return false;
    unsigned bits = s->bits + 1;
    size_t n = (size_t)1 << bits, mask = n - 1;
    struct slot *slots = calloc(n, sizeof(*slots));
    if (!slots)
        return false;
    advise_huge(slots, n * sizeof(*slots));
    void *fmem;
    uint32_t *filter;
    if (!filter_alloc(bits, &fmem, &filter)) {
        free(slots);
        return false;
    }
    unsigned fbits = filter_bits_for(bits);
    for (size_t j = 0; j < ((size_t)1 << s->bits); j++) {
        struct slot sl = s->slots[j];
        if (!sl.full)
            continue;
        size_t i = index_of(sl.tag, bits);
        while (slots[i].full)
            i = (i + 1) & mask;
        slots[i] = sl;
        filter_set(filter, fbits, sl.tag);
    }
    free(s->slots);
    free(s->filter_mem);
    s->slots = slots;
    s->bits = bits;
    s->filter_mem = fmem;
    s->filter = filter;
    s->fbits = fbits;
    return true;
}

int nameset_add(struct nameset *s, const uint8_t *name, size_t len, uint32_t value)
{
    struct labels lb;
    if (!parse_labels(name, len, &lb) || lb.len != len)
        return -EINVAL;
    uint8_t low[MAX_NAME + 16];
    uint64_t h[MAX_LABELS + 1];
    lower_copy(name, lb.len, low);
    hash_suffixes(s->seed, low, &lb, h);
    uint64_t fp = finish(h[0]);
    struct slot *sl = find(s, fp);
    if (sl->full) {
        sl->value |= value;
        return 0;
    }
    /* A failed growth leaves the set as it was. */
    if (s->count + 1 > ((size_t)1 << s->bits) / 4 * 3) {
        if (!grow_table(s))
            return -ENOMEM;
        sl = find(s, fp);
    }
    *sl = (struct slot){(uint32_t)(fp >> 32), (uint32_t)fp, value, 1};
    filter_set(s->filter, s->fbits, sl->tag);
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
    hash_suffixes(s->seed, low, &lb, h);
    /* The probes are independent: start every suffix's filter block, then the first slot of
     * every suffix that passes the filter, on its way into the cache before looking at any, so
     * a lookup waits for about one memory access, not one per label; and for none at all when
     * no suffix passes the filter (the filter is small enough to stay in the cache). */
    for (unsigned k = 0; k <= lb.n; k++) {
        h[k] = finish(h[k]);
        __builtin_prefetch(filter_block(s->filter, s->fbits, (uint32_t)(h[k] >> 32)));
    }
    uint8_t pass[MAX_LABELS + 1];
    unsigned n_pass = 0;
    for (unsigned k = 0; k <= lb.n; k++) {
        uint32_t tag = (uint32_t)(h[k] >> 32);
        if (filter_has(s, tag)) {
            __builtin_prefetch(&s->slots[index_of(tag, s->bits)]);
            pass[n_pass++] = (uint8_t)k;
        }
    }
    /* pass[] is in increasing k: the longest suffix first */
    for (unsigned i = 0; i < n_pass; i++) {
        unsigned k = pass[i];
        const struct slot *sl = find(s, h[k]);
        if (sl->full && (sl->value & mask)) {
            if (value)
                *value = sl->value;
            return k < lb.n ? lb.start[k] : (int)lb.len - 1;
        }
    }
    return -1;
}

/* The slot of exactly @p name, or NULL. */
static const struct slot *lookup(const struct nameset *s, const uint8_t *name, size_t len,
                                 bool *passes)
{
    struct labels lb;
    if (!parse_labels(name, len, &lb))
        return NULL;
    uint8_t low[MAX_NAME + 16];
    uint64_t h[MAX_LABELS + 1];
    lower_copy(name, lb.len, low);
    hash_suffixes(s->seed, low, &lb, h);
    uint64_t fp = finish(h[0]);
    *passes = filter_has(s, (uint32_t)(fp >> 32));
    if (!*passes)
        return NULL;
    const struct slot *sl = find(s, fp);
    return sl->full ? sl : NULL;
}

bool nameset_get(const struct nameset *s, const uint8_t *name, size_t len, uint32_t *value)
{
    bool passes;
    const struct slot *sl = lookup(s, name, len, &passes);
    if (!sl)
        return false;
    if (value)
        *value = sl->value;
    return true;
}

bool nameset_filter_passes(const struct nameset *s, const uint8_t *name, size_t len)
{
    bool passes = false;
    (void)lookup(s, name, len, &passes);
    return passes;
}
