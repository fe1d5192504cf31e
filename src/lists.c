/*
 * The list parsers. One pass over the buffer, one line at a time, without copying a line or
 * allocating: a 1,000,000-line hosts blocklist is parsed in a few hundred milliseconds. Each
 * line is scanned once through a table of character classes, which tells whether it looks like
 * an adblock rule (before it is split on whitespace: cosmetic rules may hold spaces) and where
 * its fields are. Names go through dnswire_name_from_text() after a host-name check of our own
 * (letters, digits, '_' and '-', no label starting or ending with '-'): dnswire accepts any
 * visible ASCII, which would let "a/b" or "-x-" into a blocklist as a name that never occurs.
 */
#include "dohgate/lists.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dohgate/dnswire.h"

#define MAX_LINE   4096
#define ERR_TEXT   60 /* octets of a line or field quoted in an error */
#define MAX_ADDR   46 /* INET6_ADDRSTRLEN */
#define READ_CHUNK 65536

/* Character classes. */
enum {
    C_SPACE = 1, /* field separator */
    C_ADB = 2,   /* only in adblock rules: '/', '$', '^', '|', '*' */
    C_HOST = 4,  /* a host name octet: letter, digit, '_', '-' */
    C_HASH = 8,  /* '#' */
};

static uint8_t cls[256];

static void fill_classes(void)
{
    for (int c = 0; c < 256; c++) {
        uint8_t v = 0;
        if (c == ' ' || c == '\t' || c == '\v' || c == '\f')
            v |= C_SPACE;
        if (c == '/' || c == '$' || c == '^' || c == '|' || c == '*')
            v |= C_ADB;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '-')
            v |= C_HOST;
        if (c == '#')
            v |= C_HASH;
        cls[c] = v;
    }
}

/* The parsers may run on several threads at once (a reload thread, the tests): the table is
 * filled once. */
static void init_classes(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fill_classes);
}

/* "TEXT" as an error message quotes it: at most ERR_TEXT octets, control and non-ASCII octets
 * as '?'. */
static void quote(const char *s, size_t n, char out[ERR_TEXT + 1])
{
    if (n > ERR_TEXT)
        n = ERR_TEXT;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = c < 0x20 || c >= 0x7f ? '?' : (char)c;
    }
    out[n] = 0;
}

static int line_err(char *err, size_t errlen, size_t line, const char *what, const char *s,
                    size_t n)
{
    char q[ERR_TEXT + 1];
    quote(s, n, q);
    snprintf(err, errlen, "line %zu: '%s' %s", line, q, what);
    return -EINVAL;
}

/* A host name in text (a trailing '.' allowed, not the root) to lower-cased wire form.
 * @return the wire length, or 0 when it is no host name. */
static size_t host_to_wire(const char *s, size_t n, uint8_t out[DNSWIRE_MAX_NAME])
{
    if (n > 0 && s[n - 1] == '.')
        n--;
    if (n == 0)
        return 0;
    char prev = '.';
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '.') {
            /* an empty label (".x", "a..b"): dnswire would take ".." less its final dot
             * for the root */
            if (prev == '-' || prev == '.')
                return 0;
        } else if (!(cls[(unsigned char)c] & C_HOST) || (c == '-' && prev == '.')) {
            return 0;
        }
        prev = c;
    }
    if (prev == '-')
        return 0;
    return dnswire_name_from_text(s, n, out); /* empty labels, label and name lengths */
}

/* An address literal: AF_INET or AF_INET6 with its bytes in @p addr, or 0. */
static int parse_addr(const char *s, size_t n, uint8_t addr[16])
{
    char tmp[MAX_ADDR + 1];
    if (n == 0 || n > MAX_ADDR)
        return 0;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (inet_pton(AF_INET, tmp, addr) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, tmp, addr) == 1)
        return AF_INET6;
    return 0;
}

static bool ieq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n && lit[i]; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lit[i])
            return false;
    }
    return i == n && lit[i] == 0;
}

/* Names that hosts-format blocklists carry for the machine's own sake. */
static bool machine_name(const char *s, size_t n)
{
    static const char *const names[] = {
        "localhost",     "localhost.localdomain", "local",        "broadcasthost",
        "ip6-localhost", "ip6-loopback",          "ip6-localnet", "ip6-mcastprefix",
        "ip6-allnodes",  "ip6-allrouters",        "ip6-allhosts", "0.0.0.0",
    };
    if (n > 0 && s[n - 1] == '.')
        n--;
    char c = n ? (char)(s[0] | 0x20) : 0;
    if (c != 'l' && c != 'b' && c != 'i' && c != '0')
        return false; /* the common case in one test */
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (ieq(s, n, names[i]))
            return true;
    }
    return false;
}

/* One line: [s, s + n), no '\n'. Shared checks of both parsers: length, NUL, CR. Sets *n to
 * the line without its CR and surrounding whitespace. */
static int line_prologue(const char **s, size_t *n, size_t lineno, char *err, size_t errlen)
{
    if (*n > 0 && (*s)[*n - 1] == '\r')
        (*n)--;
    if (*n > MAX_LINE) {
        snprintf(err, errlen, "line %zu: longer than %d octets", lineno, MAX_LINE);
        return -EINVAL;
    }
    if (memchr(*s, 0, *n)) {
        snprintf(err, errlen, "line %zu: a NUL byte", lineno);
        return -EINVAL;
    }
    const char *p = *s, *e = *s + *n;
    while (p < e && (cls[(unsigned char)*p] & C_SPACE))
        p++;
    while (e > p && (cls[(unsigned char)e[-1]] & C_SPACE))
        e--;
    *s = p;
    *n = (size_t)(e - p);
    return 0;
}

/* Does [s, s + n) contain the cosmetic-filter separators "##", "#@#", "#?#", "#$#"? */
static bool cosmetic(const char *s, size_t n)
{
    for (const char *p = memchr(s, '#', n); p; p = memchr(p + 1, '#', n - (size_t)(p + 1 - s))) {
        size_t left = n - (size_t)(p - s);
        if (left >= 2 && p[1] == '#')
            return true;
        if (left >= 3 && (p[1] == '@' || p[1] == '?' || p[1] == '$') && p[2] == '#')
            return true;
        if (left < 2)
            break;
    }
    return false;
}

struct dparse {
    list_domain_cb cb;
    void *arg;
    struct list_stats *st;
    char *err;
    size_t errlen;
    size_t line;
};

static int report(struct dparse *d, const char *name, size_t n, bool allow)
{
    uint8_t w[DNSWIRE_MAX_NAME];
    size_t wl = host_to_wire(name, n, w);
    if (wl == 0)
        return line_err(d->err, d->errlen, d->line, "is not a domain name", name, n);
    int rc = d->cb(d->arg, w, wl, allow);
    if (rc < 0)
        return rc;
    d->st->domains++;
    return 0;
}

/* An adblock-looking line: "||name^", "||name^$important", "@@||name^[$options]" apply;
 * anything else is counted as skipped. */
static int adblock_line(struct dparse *d, const char *s, size_t n)
{
    bool allow = false;
    if (n >= 2 && s[0] == '@' && s[1] == '@') {
        allow = true;
        s += 2;
        n -= 2;
    }
    if (n < 3 || s[0] != '|' || s[1] != '|')
        goto skip;
    s += 2;
    n -= 2;
    const char *caret = memchr(s, '^', n);
    if (!caret)
        goto skip; /* "||ads.example" also matches "ads.example.net/...": not a DNS rule */
    size_t nl = (size_t)(caret - s);
    const char *rest = caret + 1;
    size_t rl = n - nl - 1;
    if (rl > 0) {
        if (rest[0] != '$')
            goto skip; /* "^|", "^/path"... */
        if (!allow && !(rl == 10 && memcmp(rest, "$important", 10) == 0))
            goto skip; /* "$third-party", "$domain=..." restrict to some requests */
    }
    for (size_t i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(cls[c] & C_HOST) && c != '.')
            goto skip; /* a wildcard, a path, a port: a URL pattern */
    }
    return report(d, s, nl, allow);
skip:
    d->st->skipped++;
    return 0;
}

static int domain_line(struct dparse *d, const char *s, size_t n)
{
    if (n == 0 || s[0] == '#' || s[0] == '!' || s[0] == '[')
        return 0; /* comments, "[Adblock Plus 2.0]" headers */
    if (s[0] == '|' || (n >= 2 && s[0] == '@' && s[1] == '@'))
        return adblock_line(d, s, n);
    /* One pass: where a comment starts ('#' after whitespace), whether adblock-only octets
     * occur before it. */
    bool adb = false, space = false, gap = false; /* space: a field follows whitespace */
    size_t end = n;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = cls[(unsigned char)s[i]];
        if (c & C_SPACE) {
            gap = true;
            continue;
        }
        if ((c & C_HASH) && gap) {
            end = i;
            break;
        }
        space |= gap;
        gap = false;
        adb |= (c & C_ADB) != 0;
    }
    if (cosmetic(s, end)) {
        d->st->skipped++;
        return 0;
    }
    while (end > 0 && (cls[(unsigned char)s[end - 1]] & C_SPACE))
        end--;
    n = end;
    if (!space) {
        /* one domain per line; "*.ads.example" is the same rule as "ads.example" */
        if (n > 2 && s[0] == '*' && s[1] == '.' && !memchr(s + 2, '*', n - 2)) {
            s += 2;
            n -= 2;
            adb = memchr(s, '/', n) || memchr(s, '$', n) || memchr(s, '^', n) || memchr(s, '|', n);
        }
        if (adb) {
            d->st->skipped++;
            return 0;
        }
        uint8_t a[16];
        if (parse_addr(s, n, a)) {
            snprintf(d->err, d->errlen, "line %zu: an address without a name", d->line);
            return -EINVAL;
        }
        return report(d, s, n, false);
    }
    if (adb) {
        d->st->skipped++;
        return 0;
    }
    /* "ADDRESS NAME [NAME…]": a hosts-format blocklist line (the address is not used) */
    size_t f = 0;
    while (f < n && !(cls[(unsigned char)s[f]] & C_SPACE))
        f++;
    uint8_t a[16];
    if (!parse_addr(s, f, a))
        return line_err(d->err, d->errlen, d->line, "is not a domain name", s, n);
    for (size_t i = f; i < n;) {
        while (i < n && (cls[(unsigned char)s[i]] & C_SPACE))
            i++;
        size_t b = i;
        while (i < n && !(cls[(unsigned char)s[i]] & C_SPACE))
            i++;
        if (i == b || machine_name(s + b, i - b))
            continue;
        int rc = report(d, s + b, i - b, false);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int lists_parse_domains(const char *buf, size_t len, list_domain_cb cb, void *arg,
                        struct list_stats *st, char *err, size_t errlen)
{
    init_classes();
    struct list_stats local;
    if (!st)
        st = &local;
    *st = (struct list_stats){0};
    struct dparse d = {cb, arg, st, err, errlen, 0};
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        size_t n = (size_t)(le - p);
        p = nl ? nl + 1 : end;
        d.line = ++st->lines;
        int rc = line_prologue(&s, &n, d.line, err, errlen);
        if (rc == 0)
            rc = domain_line(&d, s, n);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int lists_parse_hosts(const char *buf, size_t len, hosts_entry_cb cb, void *arg, char *err,
                      size_t errlen)
{
    init_classes();
    const char *p = buf, *end = buf + len;
    size_t line = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *s = p;
        size_t n = (size_t)(le - p);
        p = nl ? nl + 1 : end;
        line++;
        int rc = line_prologue(&s, &n, line, err, errlen);
        if (rc < 0)
            return rc;
        const char *hash = memchr(s, '#', n); /* hosts(5): '#' to the end of the line */
        if (hash)
            n = (size_t)(hash - s);
        size_t i = 0;
        while (i < n && !(cls[(unsigned char)s[i]] & C_SPACE))
            i++;
        if (i == 0)
            continue; /* blank or comment */
        uint8_t addr[16];
        int family = parse_addr(s, i, addr);
        if (!family)
            return line_err(err, errlen, line, "is not an IP address", s, i);
        bool first = true;
        while (i < n) {
            while (i < n && (cls[(unsigned char)s[i]] & C_SPACE))
                i++;
            size_t b = i;
            while (i < n && !(cls[(unsigned char)s[i]] & C_SPACE))
                i++;
            if (i == b)
                break;
            uint8_t w[DNSWIRE_MAX_NAME];
            size_t wl = host_to_wire(s + b, i - b, w);
            if (wl == 0)
                return line_err(err, errlen, line, "is not a host name", s + b, i - b);
            rc = cb(arg, family, addr, w, wl, first);
            if (rc < 0)
                return rc;
            first = false;
        }
        if (first) {
            snprintf(err, errlen, "line %zu: an address without a name", line);
            return -EINVAL;
        }
    }
    return 0;
}

int lists_read_file(const char *path, size_t max, char **buf, size_t *len, char *err, size_t errlen)
{
    *buf = NULL;
    *len = 0;
    if (max > SIZE_MAX / 2)
        max = SIZE_MAX / 2; /* max + 2 below must not wrap */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > max)
        goto too_big;
    /* The size from fstat is a hint only (a file growing while read, a pipe): read to EOF,
     * bounded by max. */
    size_t cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size + 1 : READ_CHUNK;
    size_t n = 0;
    char *b = malloc(cap);
    if (!b)
        goto nomem;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > max + 1)
                goto too_big_free;
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *nb = realloc(b, ncap);
            if (!nb) {
                free(b);
                goto nomem;
            }
            b = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, b + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            snprintf(err, errlen, "%s: %s", path, strerror(e));
            free(b);
            close(fd);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > max)
            goto too_big_free;
    }
    close(fd);
    b[n] = 0;
    *buf = b;
    *len = n;
    return 0;
too_big_free:
    free(b);
too_big:
    snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
    close(fd);
    return -EFBIG;
nomem:
    snprintf(err, errlen, "%s: %s", path, strerror(ENOMEM));
    close(fd);
    return -ENOMEM;
}
