/**
 * @file proxyproto.h
 * The PROXY protocol (HAProxy's spec, versions 1 and 2): the header a load balancer sends first
 * on a connection to name the client it relays. Version 1 is one text line, "PROXY TCP4|TCP6
 * SRC DST SPORT DPORT\r\n" (or "PROXY UNKNOWN...\r\n"), at most 107 bytes; version 2 is binary:
 * a 12-byte signature, version/command, family/protocol, a 16-bit length, the addresses, then
 * TLVs (skipped here).
 *
 * pp_parse() is a pure function over the bytes received so far: it never reads past the
 * header's end, and says how long the header is, so the caller (conn.c) can take exactly those
 * bytes off the socket and leave the rest (a TLS ClientHello) to the protocol after it.
 *
 * Layer: util level. No I/O, no event loop, no other dohgate module; any thread.
 */
#ifndef DOHGATE_PROXYPROTO_H
#define DOHGATE_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/** The longest version 1 header, CRLF included (the spec's bound). */
#define PP_V1_MAX 107
/** Version 2: the fixed part (signature, version/command, family, length). */
#define PP_V2_FIXED 16
/**
 * The longest version 2 header accepted: the fixed part and 2 KiB of addresses and TLVs. The
 * spec allows 65535 after the fixed part, but the largest address block is 216 bytes (UNIX)
 * and the TLVs load balancers send (ALPN, authority, unique ID of at most 128 bytes, SSL
 * details, cloud endpoint IDs) fit many times in 2 KiB; a larger length is a broken or hostile
 * peer, and the cap bounds what a connection makes us buffer before it is known.
 */
#define PP_V2_MAX_LEN 2048
#define PP_MAX        (PP_V2_FIXED + PP_V2_MAX_LEN)

enum pp_status {
    PP_NEED_MORE, /**< a valid beginning: every byte given belongs to the header */
    PP_DONE,      /**< a whole header: see struct pp_result */
    PP_ERROR,     /**< not a header, or a bad one: see pp_result.err */
};

enum pp_error {
    PP_ERR_NONE,
    PP_ERR_SIGNATURE, /**< neither "PROXY " nor the v2 signature: no header at all */
    PP_ERR_V1_LINE,   /**< v1: bad protocol, address, port, spacing, or a LF without CR */
    PP_ERR_VERSION,   /**< v2: version other than 2 */
    PP_ERR_COMMAND,   /**< v2: command other than LOCAL (0) or PROXY (1) */
    PP_ERR_FAMILY,    /**< v2: family above UNIX (3) or transport above DGRAM (2) */
    PP_ERR_ADDRESS,   /**< v2: the length is shorter than the family's addresses */
    PP_ERR_TOO_LARGE, /**< v1: no CRLF within 107 bytes; v2: length above PP_V2_MAX_LEN */
    PP_NERR
};

struct pp_result {
    size_t len;      /**< PP_DONE: the header's length in bytes (what to consume) */
    uint8_t version; /**< 1 or 2 (PP_DONE; PP_ERROR once known, else 0) */
    bool has_addr;   /**< PP_DONE: src holds the client; false: v2 LOCAL (health checks of
                          the proxy itself), v1 UNKNOWN, v2 PROXY with family UNSPEC or UNIX:
                          the connection's own address stands */
    bool local;      /**< PP_DONE: the v2 LOCAL command */
    struct sockaddr_storage src; /**< the client's address and port (AF_INET or AF_INET6) */
    socklen_t src_len;
    enum pp_error err; /**< PP_ERROR: why */
};

/**
 * Parse the header at the start of @p buf (@p len bytes received so far). @p out is filled
 * for PP_DONE and PP_ERROR. PP_NEED_MORE only while every byte given can still be part of a
 * valid header (a prefix of the signature, of a v1 line without its LF, of a v2 header short of
 * its length), so a caller may consume all of them; an empty buffer needs more.
 */
enum pp_status pp_parse(const uint8_t *buf, size_t len, struct pp_result *out);

/**
 * Whether the first @p len bytes of a connection start with a PROXY header's signature ("PROXY "
 * or the v2 one): the check made on peers that may not send one. Fewer bytes than a signature
 * give false (the caller looks once, at what arrived first).
 */
bool pp_has_signature(const uint8_t *buf, size_t len);

/** A short English reason for @p err, for logs ("bad signature", ...). */
const char *pp_error_str(enum pp_error err);

#endif
