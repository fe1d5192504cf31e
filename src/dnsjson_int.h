/*
 * dnsjson_int.h: dnsjson.c's internals exposed to the fuzz target and the unit test only.
 */
#ifndef DOHGATE_DNSJSON_INT_H
#define DOHGATE_DNSJSON_INT_H

#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

/** Render every record's rdata through ldns, skipping the hand-written renderers. */
#define DNSJSON_LDNS_ONLY 1u

/**
 * dnsjson_format() with @p flags. With DNSJSON_LDNS_ONLY the output (and the return value) must
 * be the same as without: the fuzz target checks the hand-written renderers against ldns so.
 */
int dnsjson_format_flags(const uint8_t *ans, size_t len, struct dg_buf *out, unsigned flags);

/**
 * Append @p s as a JSON string (quotes included): '"' and '\\' escaped, control characters and
 * DEL as \u00XX, bytes above 0x7f as the DNS escape \DDD (its backslash escaped), the rest as
 * is: the text is ASCII. @return 0 or -ENOMEM (@p b unchanged).
 */
int dnsjson_json_string(struct dg_buf *b, const uint8_t *s, size_t n);

#endif
