/* The PROXY protocol header parser: see proxyproto.h. */
#include "dohgate/proxyproto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[6] = "PROXY ";

static enum pp_status fail(struct pp_result *out, enum pp_error err)
{
    out->err = err;
    return PP_ERROR;
}

/* The source address of a header: @p addr (4 or 16 bytes by @p af), @p port_be in network
 * order. */
static void set_src(struct pp_result *out, int af, const uint8_t *addr, uint16_t port_be)
{
    out->has_addr = true;
    if (af == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
        s4->sin_family = AF_INET;
        s4->sin_port = port_be;
        memcpy(&s4->sin_addr, addr, 4);
        out->src_len = sizeof(*s4);
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = port_be;
        memcpy(&s6->sin6_addr, addr, 16);
        out->src_len = sizeof(*s6);
    }
}

/* A decimal port: 1 to 5 digits, no leading zero (the spec's form), at most 65535. */
static bool parse_port(const char *s, size_t n, uint16_t *port)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *port = (uint16_t)v;
    return true;
}

/* The next space-separated field of the v1 line [*p, end): exactly one space after it, unless it
 * is the last (then it runs to end). */
static bool next_field(const char **p, const char *end, bool last, const char **f, size_t *n)
{
    const char *s = *p;
    const char *e = s;
    while (e < end && *e != ' ')
        e++;
    if (e == s || (last ? e != end : e == end))
        return false;
    *f = s;
    *n = (size_t)(e - s);
    *p = last ? e : e + 1;
    return true;
}

/* One address of the v1 line, for family @p af (inet_pton: dotted quad without leading zeros,
 * or any IPv6 text form). */
static bool parse_addr(int af, const char *s, size_t n, void *dst)
{
    char tmp[INET6_ADDRSTRLEN];
    if (n >= sizeof(tmp))
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return inet_pton(af, tmp, dst) == 1;
}

/* The whole v1 line is @p line, @p n bytes up to and without its CRLF, "PROXY " included. */
static enum pp_status parse_v1_line(const char *line, size_t n, struct pp_result *out)
{
    const char *p = line + sizeof(v1_sig), *end = line + n;
    const char *f;
    size_t fl;
    /* "UNKNOWN" may be followed by anything up to the CRLF, which the receiver ignores */
    if ((size_t)(end - p) >= 7 && memcmp(p, "UNKNOWN", 7) == 0 && (end - p == 7 || p[7] == ' ')) {
        out->has_addr = false;
        return PP_DONE;
    }
    if (!next_field(&p, end, false, &f, &fl) || fl != 4 ||
        (memcmp(f, "TCP4", 4) != 0 && memcmp(f, "TCP6", 4) != 0))
        return fail(out, PP_ERR_V1_LINE);
    int af = f[3] == '4' ? AF_INET : AF_INET6;
    const char *sa, *da, *sp, *dp;
    size_t sal, dal, spl, dpl;
    if (!next_field(&p, end, false, &sa, &sal) || !next_field(&p, end, false, &da, &dal) ||
        !next_field(&p, end, false, &sp, &spl) || !next_field(&p, end, true, &dp, &dpl))
        return fail(out, PP_ERR_V1_LINE);
    uint8_t srcb[16], dstb[16];
    uint16_t sport, dport;
    if (!parse_addr(af, sa, sal, srcb) || !parse_addr(af, da, dal, dstb) ||
        !parse_port(sp, spl, &sport) || !parse_port(dp, dpl, &dport))
        return fail(out, PP_ERR_V1_LINE);
    set_src(out, af, srcb, htons(sport));
    return PP_DONE;
}

static enum pp_status parse_v1(const uint8_t *buf, size_t len, struct pp_result *out)
{
    out->version = 1;
    size_t scan = len < PP_V1_MAX ? len : PP_V1_MAX;
    const uint8_t *lf = memchr(buf, '\n', scan);
    if (!lf) {
        /* No LF yet: every byte is the line's, unless it is too long already. A CR must be the
         * last byte before the LF, so one earlier (followed by something else) is an error now. */
        const uint8_t *cr = memchr(buf, '\r', scan);
        if (cr && cr + 1 < buf + scan)
            return fail(out, PP_ERR_V1_LINE);
        if (len >= PP_V1_MAX)
            return fail(out, PP_ERR_TOO_LARGE);
        return PP_NEED_MORE;
    }
    size_t n = (size_t)(lf - buf); /* bytes before the LF */
    if (n < sizeof(v1_sig) + 1 || buf[n - 1] != '\r')
        return fail(out, PP_ERR_V1_LINE);
    /* only printable ASCII on the line itself: no NUL, no second CR */
    for (size_t i = 0; i < n - 1; i++)
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return fail(out, PP_ERR_V1_LINE);
    enum pp_status st = parse_v1_line((const char *)buf, n - 1, out);
    if (st == PP_DONE)
        out->len = n + 1;
    return st;
}

static enum pp_status parse_v2(const uint8_t *buf, size_t len, struct pp_result *out)
{
    out->version = 2;
    /* Reject what can be rejected as soon as its byte is here, so a bad peer is closed before it
     * sends its length's worth. */
    if (len > 12 && (buf[12] >> 4) != 2) {
        out->version = 0;
        return fail(out, PP_ERR_VERSION);
    }
    if (len > 12 && (buf[12] & 0x0F) > 1)
        return fail(out, PP_ERR_COMMAND);
    /* PROXY: family/transport one of UNSPEC (0x00) or INET, INET6, UNIX over STREAM; DGRAM
     * does not describe a TCP connection, and a family without a transport (or the other way
     * round) is not in the spec. LOCAL's block is ignored whatever it says. */
    if (len > 13 && (buf[12] & 0x0F) == 1) {
        unsigned f = buf[13] >> 4, t = buf[13] & 0x0F;
        if (f > 3 || t > 1 || (f == 0) != (t == 0))
            return fail(out, PP_ERR_FAMILY);
    }
    if (len < PP_V2_FIXED)
        return PP_NEED_MORE;
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    if (body > PP_V2_MAX_LEN)
        return fail(out, PP_ERR_TOO_LARGE);
    bool local = (buf[12] & 0x0F) == 0;
    unsigned fam = buf[13] >> 4;
    /* a PROXY command's address block must fit in the length, whatever the TLVs */
    size_t need = local ? 0 : fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
    if (body < need)
        return fail(out, PP_ERR_ADDRESS);
    if (len < PP_V2_FIXED + body)
        return PP_NEED_MORE;
    out->len = PP_V2_FIXED + body;
    out->local = local;
    /* the block: src addr, dst addr, src port, dst port */
    const uint8_t *a = buf + PP_V2_FIXED;
    uint16_t port_be;
    if (!local && fam == 1) {
        memcpy(&port_be, a + 8, 2);
        set_src(out, AF_INET, a, port_be);
    } else if (!local && fam == 2) {
        memcpy(&port_be, a + 32, 2);
        set_src(out, AF_INET6, a, port_be);
    }
    return PP_DONE;
}

enum pp_status pp_parse(const uint8_t *buf, size_t len, struct pp_result *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return PP_NEED_MORE;
    /* which signature: each byte must match the one it began */
    if (buf[0] == 'P') {
        size_t m = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
        if (memcmp(buf, v1_sig, m) != 0)
            return fail(out, PP_ERR_SIGNATURE);
        return len <= sizeof(v1_sig) ? PP_NEED_MORE : parse_v1(buf, len, out);
    }
    size_t m = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(buf, v2_sig, m) != 0)
        return fail(out, PP_ERR_SIGNATURE);
    return len <= sizeof(v2_sig) ? PP_NEED_MORE : parse_v2(buf, len, out);
}

bool pp_has_signature(const uint8_t *buf, size_t len)
{
    return (len >= sizeof(v1_sig) && memcmp(buf, v1_sig, sizeof(v1_sig)) == 0) ||
           (len >= sizeof(v2_sig) && memcmp(buf, v2_sig, sizeof(v2_sig)) == 0);
}

const char *pp_error_str(enum pp_error err)
{
    switch (err) {
    case PP_ERR_NONE:
        return "no error";
    case PP_ERR_SIGNATURE:
        return "no PROXY protocol signature";
    case PP_ERR_V1_LINE:
        return "invalid version 1 line";
    case PP_ERR_VERSION:
        return "version 2 header with another version";
    case PP_ERR_COMMAND:
        return "version 2 header with an unknown command";
    case PP_ERR_FAMILY:
        return "version 2 header with an unknown family or transport";
    case PP_ERR_ADDRESS:
        return "version 2 header shorter than its addresses";
    case PP_ERR_TOO_LARGE:
        return "header too large";
    default:
        return "?";
    }
}
