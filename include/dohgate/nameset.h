/**
 * @file nameset.h
 * A compact set of domain names, each with a 32-bit value, answering "which is the longest
 * suffix of this name in the set" in one pass over the name: the blocklists (a value is the
 * mask of the lists that hold the name), the allowlists, the local and forward zones (a value
 * is an index).
 *
 * Built on one thread (nameset_add()), then read-only: any number of threads may look up
 * concurrently without locks. Memory: one arena of names and one open-addressing table of
 * 8-byte slots (arena offset, hash tag); a 1,000,000-name list costs under 64 bytes per name.
 *
 * Names are uncompressed wire form (length-prefixed labels ending in the root label); letters
 * are compared without case (stored lower-cased).
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
/** Bytes allocated by the set (arena and table), for the benchmark and the log line. */
size_t nameset_memory(const struct nameset *s);

/**
 * The longest suffix of @p name (uncompressed wire form, any case; the name itself included,
 * the root only if it was added) held with (value & @p mask) != 0.
 * @return the offset in @p name where that suffix starts (its value in @p value), or -1 (none,
 *         or @p name is not well formed). A query name "a.ads.example" finds "ads.example".
 *         Octets of @p name after its root label are ignored (nameset_get() too).
 * Cost: one hash per label, computed right to left in one pass, one probe per label.
 */
int nameset_match(const struct nameset *s, const uint8_t *name, size_t len, uint32_t mask,
                  uint32_t *value);

/** Exactly @p name (no suffixes). @return true with its value. */
bool nameset_get(const struct nameset *s, const uint8_t *name, size_t len, uint32_t *value);

#endif
