/*
 * libFuzzer target: bytes as a DNS answer, through dnsjson_format(). Invariants: the result is
 * 0 or -EINVAL, and the same with DNSJSON_LDNS_ONLY, whose text must be byte for byte the same
 * (the hand-written renderers of A, AAAA, NS, CNAME, PTR, MX and of names against ldns); a
 * failure leaves the output length as it was; a 0 comes only for a message dns_wire_check()
 * accepts, and its text is ASCII JSON that a strict validator (below: RFC 8259 grammar, no
 * control characters, valid escapes, nesting bounded) accepts, an object whose first member is
 * "Status".
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnsjson.h"
#include "../../src/dnsjson_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- a strict JSON validator: each function returns the position after its value, or 0 ---- */

struct js {
    const uint8_t *s;
    size_t n;
};

static size_t js_value(const struct js *j, size_t i, int depth);

static bool is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static size_t js_string(const struct js *j, size_t i)
{
    if (i >= j->n || j->s[i] != '"')
        return 0;
    for (i++; i < j->n; i++) {
        uint8_t c = j->s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20 || c > 0x7e) /* raw control bytes are invalid JSON; we emit ASCII only */
            return 0;
        if (c == '\\') {
            if (++i >= j->n)
                return 0;
            c = j->s[i];
            if (c == 'u') {
                if (j->n - i < 5 || !is_hex(j->s[i + 1]) || !is_hex(j->s[i + 2]) ||
                    !is_hex(j->s[i + 3]) || !is_hex(j->s[i + 4]))
                    return 0;
                i += 4;
            } else if (!strchr("\"\\/bfnrt", c) || c == 0) {
                return 0;
            }
        }
    }
    return 0;
}

static size_t js_number(const struct js *j, size_t i)
{
    size_t s = i;
    if (i < j->n && j->s[i] == '-')
        i++;
    if (i >= j->n || j->s[i] < '0' || j->s[i] > '9')
        return 0;
    if (j->s[i] == '0' && i + 1 < j->n && j->s[i + 1] >= '0' && j->s[i + 1] <= '9')
        return 0; /* no leading zeros */
    while (i < j->n && j->s[i] >= '0' && j->s[i] <= '9')
        i++;
    return i > s ? i : 0; /* dnsjson writes integers only */
}

static size_t js_lit(const struct js *j, size_t i, const char *lit)
{
    size_t n = strlen(lit);
    return j->n - i >= n && memcmp(j->s + i, lit, n) == 0 ? i + n : 0;
}

static size_t js_array(const struct js *j, size_t i, int depth)
{
    i++; /* '[' */
    if (i < j->n && j->s[i] == ']')
        return i + 1;
    for (;;) {
        if (!(i = js_value(j, i, depth + 1)))
            return 0;
        if (i >= j->n)
            return 0;
        if (j->s[i] == ']')
            return i + 1;
        if (j->s[i++] != ',')
            return 0;
    }
}

static size_t js_object(const struct js *j, size_t i, int depth)
{
    i++; /* '{' */
    if (i < j->n && j->s[i] == '}')
        return i + 1;
    for (;;) {
        if (!(i = js_string(j, i)))
            return 0;
        if (i >= j->n || j->s[i++] != ':')
            return 0;
        if (!(i = js_value(j, i, depth + 1)))
            return 0;
        if (i >= j->n)
            return 0;
        if (j->s[i] == '}')
            return i + 1;
        if (j->s[i++] != ',')
            return 0;
    }
}

static size_t js_value(const struct js *j, size_t i, int depth)
{
    if (depth > 8 || i >= j->n)
        return 0;
    switch (j->s[i]) {
    case '{':
        return js_object(j, i, depth);
    case '[':
        return js_array(j, i, depth);
    case '"':
        return js_string(j, i);
    case 't':
        return js_lit(j, i, "true");
    case 'f':
        return js_lit(j, i, "false");
    case 'n':
        return js_lit(j, i, "null");
    default:
        return js_number(j, i);
    }
}

static void check_json(const uint8_t *s, size_t n)
{
    struct js j = {s, n};
    static const char head[] = "{\"Status\":";
    if (n < sizeof(head) - 1 || memcmp(s, head, sizeof(head) - 1) != 0)
        abort();
    if (js_value(&j, 0, 0) != n) /* one value, nothing after it */
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dg_buf out = {0}, ref = {0};
    if (dg_buf_append(&out, "x", 1) != 0)
        abort();
    int rc = dnsjson_format(data, size, &out);
    int rc2 = dnsjson_format_flags(data, size, &ref, DNSJSON_LDNS_ONLY);
    if (rc != rc2 || (rc != 0 && rc != -EINVAL))
        abort();
    if (rc == 0) {
        if (!dns_wire_check(data, size))
            abort();
        if (out.len != ref.len + 1 || memcmp(out.data + 1, ref.data, ref.len) != 0)
            abort();
        check_json(ref.data, ref.len);
    } else if (out.len != 1 || ref.len != 0) {
        abort();
    }
    dg_buf_free(&out);
    dg_buf_free(&ref);
    return 0;
}
