/**
 * @file forwarded.h
 * The client a chain of trusted proxies names: a parser of `X-Forwarded-For` and `Forwarded`
 * (RFC 7239) request headers and the right-to-left walk over their elements that nginx's
 * `real_ip_recursive on` does. Pure: no I/O, no configuration; the caller says which addresses
 * are trusted proxies with a predicate and applies the result (http.c, only when the
 * connection's peer is itself a trusted proxy: from anybody else the headers are ignored).
 *
 * The walk: the header lines are joined in order into one list of elements (hops), the
 * rightmost added by the proxy nearest to us. From the right, each element's address is read;
 * a trusted one is skipped, and the first untrusted address is the client
 * (FORWARDED_CLIENT). When every element is trusted the leftmost is the client
 * (FORWARDED_ALL_TRUSTED, as nginx does).
 *
 * Malformed, unknown and obfuscated elements: the walk stops there and keeps the last good
 * address it read (a trusted hop, FORWARDED_STOPPED), or none when the rightmost element is
 * already unusable (FORWARDED_NONE: keep the peer). Stopping on the proxy side of a bad element
 * never lets what lies beyond it (which a client may have written) be taken for the client.
 * That covers: an address that does not parse, `unknown` and `_obfuscated` identifiers (RFC
 * 7239 §6.2-6.3: they name no address an ACL could judge), a Forwarded element without `for=`
 * or with two of them, a value longer than any address, and a Forwarded line with a syntax
 * error (that line's elements from the error on, since where the next one begins is not
 * known). Empty list elements ("a, , b") are skipped (RFC 9110 §5.6.1).
 *
 * Element forms: X-Forwarded-For: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
 * `[2001:db8::1]`, `[2001:db8::1]:8080`. Forwarded: pairs `name=value` separated by `;`,
 * elements by `,`, values a token or a quoted-string (backslash escapes); `for=192.0.2.1`,
 * `for="192.0.2.1:8080"`, `for="[2001:db8::1]"`, `for="[2001:db8::1]:4711"`, ports also
 * obfuscated (`:_abc`); parameter names in any case; other parameters (by, proto, host) are
 * ignored. IPv4-mapped IPv6 addresses are read as IPv4 (client.h).
 *
 * Bounds: the last FORWARDED_MAX_HOPS elements are kept; a walk that reaches the leftmost kept
 * element with more before it (or with @p more_before) stops there (FORWARDED_STOPPED) rather
 * than call a trusted proxy the client.
 *
 * Threads: any; no state.
 */
#ifndef DOHGATE_FORWARDED_H
#define DOHGATE_FORWARDED_H

#include <stdbool.h>
#include <stddef.h>

struct client_id;

/** Which header the values come from. */
enum forwarded_kind {
    FORWARDED_XFF,     /**< X-Forwarded-For: comma-separated addresses */
    FORWARDED_RFC7239, /**< Forwarded: for= parameters */
};

/** What the walk found; *out is filled for every outcome but FORWARDED_NONE. */
enum forwarded_outcome {
    FORWARDED_NONE,        /**< no usable address at the right end: keep the peer */
    FORWARDED_CLIENT,      /**< the first untrusted address from the right */
    FORWARDED_ALL_TRUSTED, /**< every element trusted: the leftmost */
    FORWARDED_STOPPED,     /**< a bad element (or the bound) stopped the walk: the last good */
};

/** The most elements kept (the rightmost ones). */
#define FORWARDED_MAX_HOPS 32

/** Whether @p hop is a trusted proxy (an ACL lookup for the server). */
typedef bool (*forwarded_trust_fn)(const struct client_id *hop, void *arg);

/**
 * Walk the header lines @p values[0..@p n) (in the order received) of kind @p kind right to
 * left as described above. @p more_before: lines were left out before values[0] (the caller
 * keeps only the last ones). @return the outcome; *@p out as it says.
 */
enum forwarded_outcome forwarded_client(enum forwarded_kind kind, const char *const *values,
                                        size_t n, bool more_before, forwarded_trust_fn trusted,
                                        void *arg, struct client_id *out);

/** A short word for @p o, for debug logs and tests ("client", "stopped", ...). */
const char *forwarded_outcome_name(enum forwarded_outcome o);

#endif
