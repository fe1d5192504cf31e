/**
 * @file nameset.h
 * A compact set of domain names, each with a 32-bit value, answering "which is the longest
 * suffix of this name in the set" in one pass over the name: the blocklists (a value is the
 * mask of the lists that hold the name), the allowlists, the local and forward zones (a value
 * is an index).
 *
 * Built on one thread (nameset_add()), then read-only: any number of threads may look up
 * concurrently without locks. Memory: an open-addressing table of 16-byte slots (a 64-bit
 * fingerprint of the name, its value), 3/8 to 3/4 full, and a split-block Bloom filter in
 * front of it (8 bits per slot, 10.7-21 per name): 23-46 bytes per name; a 1,000,000-name list
 * costs 35.7 (2 MB of it the filter).
 *
 * The names themselves are not kept: a name is in the set when its 64-bit fingerprint is
 * (the hash is seeded at random per set, so a client cannot craft a name to match one). A name
 * not added is taken for one that was with a chance of about 2^-63 per suffix looked up (one
 * wrong answer in ~10^6 years at 10^5 queries/s), and two added names can merge (values OR-ed)
 * with a chance of ~n^2/2^65 (3e-8 for a million names). src/nameset.c has the arithmetic.
 *
 * Names are uncompressed wire form (length-prefixed labels ending in the root label); letters
 * are compared without case (hashed lower-cased).
 */
#ifndef DOHGATE_NAMESET_H
#define DOHGATE_NAMESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nameset;

/** @param expected  names expected (sizes the table; it grows past it). @return NULL on OOM. */
struct nameset *nameset_new(size_t expected);
void nameset_free(struct nameset *s);

/**
 * Add @p name (uncompressed wire form, any case, at most 255 octets) with @p value. A name
 * already present gets its value OR-ed with @p value (a domain in two lists is in both).
 * A value of 0 is held (nameset_get() finds it, nameset_count() counts it) but never matches:
 * nameset_match() wants (value & mask) != 0.
 * @return 0, -EINVAL (not a well-formed wire name, or @p len not exactly its length),
 *         -ENOMEM (the set is unchanged and still usable).
 */
int nameset_add(struct nameset *s, const uint8_t *name, size_t len, uint32_t value);

/** Names held. */
size_t nameset_count(const struct nameset *s);
/** Bytes allocated by the set (table and filter), for the benchmark and the log line. */
size_t nameset_memory(const struct nameset *s);

/**
 * The longest suffix of @p name (uncompressed wire form, any case; the name itself included,
 * the root only if it was added) held with (value & @p mask) != 0.
 * @return the offset in @p name where that suffix starts (its value in @p value), or -1 (none,
 *         or @p name is not well formed). A query name "a.ads.example" finds "ads.example".
 *         Octets of @p name after its root label are ignored (nameset_get() too).
 * Cost: one hash per label, computed right to left in one pass; one check of the filter (in
 * the cache even for a 1,000,000-name set) per label, and a table probe only for the labels
 * that pass it: every suffix held, and ~1% of the others. So a name with no suffix held
 * usually touches no memory outside the cache (~100-140 ns at 1,000,000 names on the build
 * machine, ~260-290 ns without the filter); a hit costs one memory access (its slot: ~250-350
 * ns at 1,000,000 names, where a DRAM access costs ~200 ns).
 */
int nameset_match(const struct nameset *s, const uint8_t *name, size_t len, uint32_t mask,
                  uint32_t *value);

/** Exactly @p name (no suffixes). @return true with its value. */
bool nameset_get(const struct nameset *s, const uint8_t *name, size_t len, uint32_t *value);

#endif
