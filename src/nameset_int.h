/*
 * nameset_int.h: nameset.c's internals exposed to the unit test only.
 */
#ifndef DOHGATE_NAMESET_INT_H
#define DOHGATE_NAMESET_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/nameset.h"

/**
 * Whether the set's prefilter lets exactly @p name (wire form, any case) through to the table:
 * true for every name added (the filter has no false negatives), and for a small fraction of
 * the others (its false positives, which the table then answers). false if @p name is not well
 * formed.
 */
bool nameset_filter_passes(const struct nameset *s, const uint8_t *name, size_t len);

#endif
