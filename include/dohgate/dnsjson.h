/**
 * @file dnsjson.h
 * The JSON form of DoH (the Google / Cloudflare "JSON API", content type application/dns-json):
 * a URL query string (`name=example.com&type=AAAA&do=1`) becomes a DNS query in wire form, and
 * a DNS answer in wire form becomes the JSON text of that API. Pure functions: no I/O, no global
 * state, nothing kept between calls, safe from any thread. Routing, admission, the cache and the
 * resolver are the caller's: the query built here goes the way a wire query goes, and its answer
 * comes back through dnsjson_format() (or as is, when the client asked for
 * application/dns-message).
 *
 * Parameters (the part of the URL after '?', percent-decoded, '+' decoded as a space as browsers
 * encode it; parameter names are matched exactly, after decoding):
 *  - `name`  required. Presentation form, trailing dot optional, escapes `\.` and `\DDD`
 *            allowed; labels of at most 63 octets, at most 255 octets in wire form; no empty
 *            label except the root name ".". A raw NUL byte (%00) is refused: write `\000`.
 *  - `type`  a mnemonic (case-insensitive, ldns's table: A, AAAA, MX, ANY, ...), `TYPEnnn`
 *            (RFC 3597) or a number, 1-65535. Default A.
 *  - `do`, `cd`  0, 1, false, true (case-insensitive); empty or without '=' means true (as
 *            Google does). Default false. They set the query's EDNS DO bit and its CD bit.
 *  - `ct`    application/dns-json (the default, also when empty), application/x-javascript
 *            (JSON too, under that content type), or application/dns-message (answer in wire
 *            form: o->wire_answer). Anything else is an error.
 *  - `edns_client_subnet`, `random_padding`  accepted and ignored: the resolver removes the
 *            client's Client Subnet anyway, and the JSON API's padding is not EDNS padding.
 *  - anything else is ignored. `name`, `type`, `do`, `cd` or `ct` given twice is an error (two
 *    values, neither of which wins).
 */
#ifndef DOHGATE_DNSJSON_H
#define DOHGATE_DNSJSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dohgate/util.h"

#define DNSJSON_CT_JSON    "application/dns-json"
#define DNSJSON_CT_JS      "application/x-javascript"
#define DNSJSON_CT_MESSAGE "application/dns-message"

/** EDNS UDP payload size of the queries built here (DNS flag day 2020). */
#define DNSJSON_UDP_SIZE 1232

/** What the parameters asked for besides the query itself. */
struct dnsjson_opts {
    uint16_t qtype;           /**< the question's type */
    bool dnssec_ok;           /**< `do` */
    bool checking_disabled;   /**< `cd` */
    bool wire_answer;         /**< ct=application/dns-message: answer in wire form, no JSON */
    const char *content_type; /**< the answer's content type: one of the DNSJSON_CT_* strings */
    char why_buf[96];         /**< storage of a reason that quotes the request (*why) */
};

/**
 * Parse the query string of a JSON API request and build its DNS query: ID 0, RD=1, CD from
 * `cd`, one question (`name`, `type`, class IN), an OPT record with UDP size DNSJSON_UDP_SIZE
 * and the DO bit from `do`, no options.
 * @param qs    the query string, without the '?'; need not be NUL-terminated.
 * @param wire  the query is appended here (in wire form, as for an RFC 8484 GET).
 * @param o     filled in (on failure too: what was parsed up to the bad parameter).
 * @param why   on a 400, receives a one-line reason naming the parameter ("name: label longer
 *              than 63 bytes", "type: unknown type 'FOO'"); a static string or a pointer into
 *              o->why_buf (valid while @p o is), printable ASCII only (request bytes quoted in
 *              it are sanitised), never NULL then. May be NULL.
 * @return 0; 400 (a missing, bad or duplicated parameter: answer HTTP 400 with *why);
 *         -ENOMEM. @p wire is unchanged unless 0 is returned.
 */
int dnsjson_query_from_params(const char *qs, size_t qslen, struct dg_buf *wire,
                              struct dnsjson_opts *o, const char **why);

/**
 * Render a DNS answer as JSON API text, compact (no white space), appended to @p out:
 * `{"Status":0,"TC":false,"RD":true,"RA":true,"AD":false,"CD":false,
 *   "Question":[{"name":"example.com.","type":1}],
 *   "Answer":[{"name":"example.com.","type":1,"TTL":300,"data":"192.0.2.1"}]}`
 * Status is the RCODE, extended by the OPT record's upper bits when there is one. `Answer`,
 * `Authority` and `Additional` appear only when non-empty; the OPT record never appears. Names
 * are absolute (trailing dot) in ldns's presentation form; `data` is the rdata in ldns's
 * presentation form (MX "10 mail.example.", TXT "\"text\"", SOA with all its fields, unknown
 * types as RFC 3597 "\# 2 0102"; empty rdata gives ""). The text is ASCII: control characters
 * are \u00XX, and a byte above 0x7f (ldns escapes those itself, so this does not happen with
 * ldns 1.8.3) would be written as the DNS escape \DDD, never as raw non-UTF-8.
 * A, AAAA, CNAME, NS, PTR and MX are rendered here directly (the common answers, at a fraction
 * of the cost of ldns's parse); the others through ldns_wire2rdf() + ldns_rdf2buffer_str().
 * The answer is first walked with dnswire's checks (DNSWIRE_CHECK: names followed, at most
 * DNSWIRE_MAX_PTR_HOPS pointer hops), so ldns only ever sees a structurally sound message.
 * Allocation: only @p out's growth (a buffer reused across calls stops allocating) and, for
 * the types ldns renders, ldns's own (a buffer per call, a few per record).
 * @return 0; -EINVAL (the answer does not parse: a malformed message, a record ldns cannot read
 *         or whose rdata has bytes after its last field); -ENOMEM. On error @p out is unchanged
 *         (its length; the bytes past it may have been written).
 */
int dnsjson_format(const uint8_t *ans, size_t len, struct dg_buf *out);

#endif
