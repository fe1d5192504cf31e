/* O_PATH, O_NOFOLLOW, syscall() for openat2 (glibc 2.36 has no wrapper) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dohgate/static.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define INDEX_NAME "index.html"
/* decoded path (never longer than the raw one) + "index.html" + NUL */
#define REL_CAP (STATIC_TARGET_MAX + sizeof(INDEX_NAME))
/* openat2 gives EAGAIN when it cannot rule out a racing rename under a ".." from a symlink */
#define OPENAT2_TRIES 4

/* O_NONBLOCK so that a FIFO in the tree cannot block the worker in open(); cleared once the file
 * is known to be regular. O_NOCTTY in case a terminal device was put into the tree. */
#define FILE_FLAGS (O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)

/* ---- MIME types -------------------------------------------------------------------------- */

struct mime_type {
    const char *ext;
    const char *type;
};

static const struct mime_type mime_types[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"xml", "application/xml"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"avif", "image/avif"},
    {"ico", "image/x-icon"},
    {"woff2", "font/woff2"},
    {"woff", "font/woff"},
    {"pdf", "application/pdf"},
    {"wasm", "application/wasm"},
    {"mobileconfig", "application/x-apple-aspen-config"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
};

static int ascii_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

/* Locale-independent, unlike strcasecmp(). */
static bool ascii_ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b))
            return false;
    }
    return *a == *b;
}

static const char *mime_for(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (dot) {
        for (size_t i = 0; i < sizeof(mime_types) / sizeof(mime_types[0]); i++) {
            if (ascii_ieq(dot + 1, mime_types[i].ext))
                return mime_types[i].type;
        }
    }
    return "application/octet-stream";
}

/* ---- HTTP dates --------------------------------------------------------------------------- */

static const char wkday[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const weekday_long[7] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                            "Thursday", "Friday", "Saturday"};
static const char month_name[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return (m == 2 && leap) ? 29 : dim[m - 1];
}

/* Case-insensitive literal prefix; advances *p on a match. */
static bool take_lit(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    for (size_t i = 0; i < n; i++) {
        if ((*p)[i] == '\0' ||
            ascii_lower((unsigned char)(*p)[i]) != ascii_lower((unsigned char)lit[i]))
            return false;
    }
    *p += n;
    return true;
}

/* Exactly @p n digits. */
static bool take_digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        x = x * 10 + (c - '0');
    }
    *p += n;
    *v = x;
    return true;
}

static bool take_month(const char **p, int *m)
{
    for (int i = 0; i < 12; i++) {
        if (take_lit(p, month_name[i])) {
            *m = i + 1;
            return true;
        }
    }
    return false;
}

static bool take_time(const char **p, int *h, int *mi, int *s)
{
    return take_digits(p, 2, h) && take_lit(p, ":") && take_digits(p, 2, mi) && take_lit(p, ":") &&
           take_digits(p, 2, s) && *h <= 23 && *mi <= 59 && *s <= 60;
}

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/*
 * HTTP-date (RFC 9110 §5.6.7) in any of its three formats: IMF-fixdate
 * "Sun, 06 Nov 1994 08:49:37 GMT", RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT" (two-digit year taken
 * within 50 years of now) and asctime "Sun Nov  6 08:49:37 1994". The day name is checked for
 * spelling, not against the date.
 */
static bool parse_http_date(const char *s, time_t now, int64_t *out)
{
    const char *p = skip_ows(s);
    int y = 0, m = 0, d = 0, h = 0, mi = 0, sec = 0;
    int wd = -1;
    for (int i = 0; i < 7 && wd < 0; i++) {
        if (take_lit(&p, wkday[i]))
            wd = i;
    }
    if (wd < 0)
        return false;
    if (*p == ',') { /* IMF-fixdate */
        p++;
        if (!(take_lit(&p, " ") && take_digits(&p, 2, &d) && take_lit(&p, " ") &&
              take_month(&p, &m) && take_lit(&p, " ") && take_digits(&p, 4, &y) &&
              take_lit(&p, " ") && take_time(&p, &h, &mi, &sec) && take_lit(&p, " GMT")))
            return false;
    } else if (*p == ' ') { /* asctime */
        p++;
        if (!(take_month(&p, &m) && take_lit(&p, " ")))
            return false;
        if (*p == ' ') {
            p++;
            if (!take_digits(&p, 1, &d))
                return false;
        } else if (!take_digits(&p, 2, &d)) {
            return false;
        }
        if (!(take_lit(&p, " ") && take_time(&p, &h, &mi, &sec) && take_lit(&p, " ") &&
              take_digits(&p, 4, &y)))
            return false;
    } else { /* RFC 850: the rest of the long day name */
        if (!take_lit(&p, weekday_long[wd] + 3))
            return false;
        int yy = 0;
        if (!(take_lit(&p, ", ") && take_digits(&p, 2, &d) && take_lit(&p, "-") &&
              take_month(&p, &m) && take_lit(&p, "-") && take_digits(&p, 2, &yy) &&
              take_lit(&p, " ") && take_time(&p, &h, &mi, &sec) && take_lit(&p, " GMT")))
            return false;
        struct tm tm;
        int cur = gmtime_r(&now, &tm) ? tm.tm_year + 1900 : 1970;
        y = cur / 100 * 100 + yy;
        if (y > cur + 50)
            y -= 100;
        else if (y < cur - 50)
            y += 100;
    }
    if (*skip_ows(p) != '\0')
        return false;
    if (d < 1 || d > days_in_month(y, m))
        return false;
    *out = days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + sec;
    return true;
}

/* IMF-fixdate, written by hand because strftime's %a and %b follow the locale. */
static void format_http_date(int64_t t, char *buf, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;
    buf[0] = '\0';
    if (!gmtime_r(&tt, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return;
    snprintf(buf, cap, "%s, %02d %s %04d %02d:%02d:%02d GMT", wkday[tm.tm_wday], tm.tm_mday,
             month_name[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* ---- validators and ranges ---------------------------------------------------------------- */

/*
 * If-None-Match: "*" or a list of entity-tags, compared weakly (W/ ignored on both sides; ours
 * is always strong). A malformed list matches nothing, which errs towards sending the file.
 */
static bool inm_matches(const char *list, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = list;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '\0')
            return false;
        if (*p == '*')
            return *skip_ows(p + 1) == '\0';
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p != '"')
            return false;
        const char *q = strchr(p + 1, '"');
        if (!q)
            return false;
        size_t n = (size_t)(q - p) + 1;
        if (n == elen && memcmp(p, etag, n) == 0)
            return true;
        p = skip_ows(q + 1);
        if (*p != ',' && *p != '\0')
            return false;
    }
}

/*
 * If-Range (RFC 9110 §13.1.5): a strong entity-tag compared strongly, or a date equal to our
 * Last-Modified when that is a strong validator (at least a second older than now, §8.8.2.2).
 */
static bool if_range_holds(const char *v, const char *etag, int64_t mtime, time_t now)
{
    const char *p = skip_ows(v);
    if (*p == '"') {
        size_t elen = strlen(etag);
        return strncmp(p, etag, elen) == 0 && *skip_ows(p + elen) == '\0';
    }
    /* A weak tag (W/"...") is neither a strong tag nor a date, so it never matches. */
    int64_t t;
    return parse_http_date(p, now, &t) && t == mtime && mtime < (int64_t)now;
}

enum range_outcome {
    RANGE_IGNORE, /* absent, invalid, several ranges: send the whole file */
    RANGE_PARTIAL,
    RANGE_UNSATISFIABLE,
};

/* Digits into a non-negative off_t, saturating: a huge first-pos is simply unsatisfiable. */
static bool take_pos(const char **p, off_t *v)
{
    const off_t max = (off_t)INT64_MAX;
    off_t x = 0;
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return false;
    for (; *s >= '0' && *s <= '9'; s++) {
        int dgt = *s - '0';
        x = (x > (max - dgt) / 10) ? max : x * 10 + dgt;
    }
    *v = x;
    *p = s;
    return true;
}

/*
 * Range (RFC 9110 §14.2), a single byte range only. Several ranges would need a
 * multipart/byteranges body and open the door to overlapping-range amplification; a server may
 * ignore Range, so they get the whole file.
 */
static enum range_outcome parse_range(const char *v, off_t size, off_t *off, off_t *len)
{
    const char *p = skip_ows(v);
    if (!take_lit(&p, "bytes="))
        return RANGE_IGNORE;
    int count = 0;
    bool suffix = false, has_last = false;
    off_t first = 0, last = 0;
    for (;;) {
        p = skip_ows(p);
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '\0')
            break;
        if (++count > 1)
            return RANGE_IGNORE;
        if (*p == '-') {
            p++;
            suffix = true;
            if (!take_pos(&p, &last))
                return RANGE_IGNORE;
        } else {
            if (!take_pos(&p, &first) || *p != '-')
                return RANGE_IGNORE;
            p++;
            if (*p >= '0' && *p <= '9') {
                has_last = true;
                take_pos(&p, &last);
            }
        }
        p = skip_ows(p);
        if (*p != ',' && *p != '\0')
            return RANGE_IGNORE;
    }
    if (count == 0)
        return RANGE_IGNORE;
    if (has_last && last < first)
        return RANGE_IGNORE;
    /* An empty file cannot be described by a 206 Content-Range; the whole (empty) file it is. */
    if (size == 0)
        return RANGE_IGNORE;
    if (suffix) {
        if (last == 0)
            return RANGE_UNSATISFIABLE;
        *len = last < size ? last : size;
        *off = size - *len;
        return RANGE_PARTIAL;
    }
    if (first >= size)
        return RANGE_UNSATISFIABLE;
    if (!has_last || last > size - 1)
        last = size - 1;
    *off = first;
    *len = last - first + 1;
    return RANGE_PARTIAL;
}

/* ---- path --------------------------------------------------------------------------------- */

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (unsigned char)ascii_lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool is_dot_segment(const char *s, size_t n)
{
    return (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.');
}

/* Raw target bytes: visible ASCII only, no '#' (a fragment is never sent). */
static bool raw_byte_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '#';
}

/*
 * Decode the path part [path, path + plen) (which starts with '/') into @p rel, relative to the
 * root, without the leading '/'. A path ending in '/' gets "index.html" appended and sets
 * *dir_slash. Checking the decoded segments also covers the raw ones: a raw "." or ".." decodes
 * to itself, and "%2e" becomes "." before the check.
 * @return 0, or the HTTP status to answer (400).
 */
static int decode_path(const char *path, size_t plen, char *rel, bool *dir_slash)
{
    size_t j = 0, seg = 0;
    for (size_t i = 1; i < plen; i++) {
        unsigned char c = (unsigned char)path[i];
        if (c == '/') {
            if (j == seg || is_dot_segment(rel + seg, j - seg))
                return 400;
            rel[j++] = '/';
            seg = j;
            continue;
        }
        if (c == '\\')
            return 400;
        if (c == '%') {
            int hi = i + 2 < plen ? hexval((unsigned char)path[i + 1]) : -1;
            int lo = hi >= 0 ? hexval((unsigned char)path[i + 2]) : -1;
            if (lo < 0)
                return 400;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
            /* A decoded '/' or '\' would be a separator the segment checks never saw. */
            if (c < 0x20 || c == 0x7f || c == '/' || c == '\\')
                return 400;
        }
        rel[j++] = (char)c;
    }
    if (j == seg) {
        *dir_slash = true;
        memcpy(rel + j, INDEX_NAME, sizeof(INDEX_NAME));
        return 0;
    }
    if (is_dot_segment(rel + seg, j - seg))
        return 400;
    *dir_slash = false;
    rel[j] = '\0';
    return 0;
}

/* ---- opening beneath the root ------------------------------------------------------------- */

static int sys_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how;
    memset(&how, 0, sizeof(how));
    how.flags = flags;
    how.resolve = resolve;
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

/*
 * Without openat2: one openat() per component, O_NOFOLLOW everywhere, so no symlink is ever
 * followed and, since the segments are plain names (no "", ".", ".." or '/'), nothing can climb
 * out. @p rel is modified temporarily.
 * @return fd, or -errno.
 */
static int open_walk(int rootfd, char *rel)
{
    int dfd = rootfd;
    char *name = rel;
    char *slash;
    while ((slash = strchr(name, '/')) != NULL) {
        *slash = '\0';
        int nfd = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int e = errno;
        *slash = '/';
        if (dfd != rootfd)
            close(dfd);
        if (nfd < 0)
            return -e;
        dfd = nfd;
        name = slash + 1;
    }
    int fd = openat(dfd, name, FILE_FLAGS | O_NOFOLLOW);
    int e = errno;
    if (dfd != rootfd)
        close(dfd);
    return fd >= 0 ? fd : -e;
}

/* @return fd, or -errno. */
static int open_beneath(const struct static_root *root, char *rel)
{
    if (root->beneath) {
        for (int i = 0; i < OPENAT2_TRIES; i++) {
            int fd =
                sys_openat2(root->fd, rel, FILE_FLAGS, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
            if (fd >= 0)
                return fd;
            if (errno == ENOSYS)
                break; /* a seccomp filter added after the probe, or a migrated process */
            if (errno != EAGAIN && errno != EINTR)
                return -errno;
        }
        if (errno != ENOSYS)
            return -errno;
    }
    return open_walk(root->fd, rel);
}

static int status_for_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
    case EXDEV: /* RESOLVE_BENEATH: the path would leave the root */
    case ELOOP: /* symlink loop, magic link, or a symlink in the fallback walk */
    case ENAMETOOLONG:
    case ENXIO: /* a socket, or a device without a driver */
    case ENODEV:
        return 404;
    case EACCES:
    case EPERM:
        return 403;
    case EMFILE:
    case ENFILE:
    case ENOMEM:
        return 503;
    default:
        return 500;
    }
}

/* ---- public ------------------------------------------------------------------------------- */

int static_root_open(struct static_root *root, const char *dir, char *err, size_t errlen)
{
    root->fd = -1;
    root->beneath = false;
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "static root %s: %s", dir, strerror(e));
        return -e;
    }
    /* Probe once: ENOSYS is an old kernel, EPERM a seccomp profile that predates openat2
     * (opening "." with O_PATH has no other reason to be refused with EPERM). */
    int probe = sys_openat2(fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC,
                            RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS);
    if (probe >= 0) {
        close(probe);
        root->beneath = true;
    } else if (errno != ENOSYS && errno != EPERM) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "static root %s: %s", dir, strerror(e));
        close(fd);
        return -e;
    }
    root->fd = fd;
    return 0;
}

void static_root_close(struct static_root *root)
{
    if (root->fd >= 0)
        close(root->fd);
    root->fd = -1;
}

void static_result_deinit(struct static_result *out)
{
    if (out->fd >= 0)
        close(out->fd);
    out->fd = -1;
}

static void result_init(struct static_result *out, bool head)
{
    out->status = 500;
    out->fd = -1;
    out->head = head;
    out->offset = 0;
    out->length = 0;
    out->size = 0;
    out->content_type = NULL;
    out->allow = NULL;
    out->sys_errno = 0;
    out->etag[0] = '\0';
    out->last_modified[0] = '\0';
    out->content_range[0] = '\0';
    out->location[0] = '\0';
}

/* Answer without a file: a status (and maybe errno), the fd closed. */
static int finish(struct static_result *out, int fd, int status, int e)
{
    if (fd >= 0)
        close(fd);
    out->fd = -1;
    out->status = status;
    out->sys_errno = e;
    out->content_type = NULL;
    out->length = 0;
    return 0;
}

int static_resolve(const struct static_root *root, const struct static_request *rq,
                   struct static_result *out)
{
    if (!root || !rq || !out || !rq->method || !rq->target || root->fd < 0)
        return -EINVAL;
    bool get = strcmp(rq->method, "GET") == 0;
    bool head = strcmp(rq->method, "HEAD") == 0;
    result_init(out, head);
    if (!get && !head) {
        out->allow = "GET, HEAD";
        return finish(out, -1, 405, 0);
    }

    const char *target = rq->target;
    size_t tlen = strlen(target);
    if (tlen > STATIC_TARGET_MAX)
        return finish(out, -1, 414, 0);
    if (target[0] != '/')
        return finish(out, -1, 400, 0);
    for (size_t i = 0; i < tlen; i++) {
        if (!raw_byte_ok((unsigned char)target[i]))
            return finish(out, -1, 400, 0);
    }
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : tlen;

    char rel[REL_CAP];
    bool dir_slash = false;
    int st = decode_path(target, plen, rel, &dir_slash);
    if (st)
        return finish(out, -1, st, 0);

    int fd = open_beneath(root, rel);
    if (fd < 0)
        return finish(out, -1, status_for_errno(-fd), -fd);
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return finish(out, fd, 500, errno);
    if (S_ISDIR(sb.st_mode) && !dir_slash) {
        /* Same path plus '/', query kept: the raw bytes were checked to be visible ASCII and
         * no '#', so they are safe in a header; the buffer holds tlen + 1 + NUL. */
        memcpy(out->location, target, plen);
        out->location[plen] = '/';
        memcpy(out->location + plen + 1, target + plen, tlen - plen + 1);
        return finish(out, fd, 301, 0);
    }
    if (!S_ISREG(sb.st_mode))
        return finish(out, fd, 404, 0);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
        return finish(out, fd, 500, errno);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t now = ts.tv_sec;
    int64_t mtime = (int64_t)sb.st_mtim.tv_sec;
    uint64_t mtime_ns =
        (uint64_t)sb.st_mtim.tv_sec * UINT64_C(1000000000) + (uint64_t)sb.st_mtim.tv_nsec;
    snprintf(out->etag, sizeof(out->etag), "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"",
             (uint64_t)sb.st_ino, (uint64_t)sb.st_size, mtime_ns);
    /* RFC 9110 §8.8.2.1: never announce a modification in the future. */
    format_http_date(mtime < (int64_t)now ? mtime : (int64_t)now, out->last_modified,
                     sizeof(out->last_modified));
    out->size = sb.st_size;

    bool not_modified;
    if (rq->if_none_match) {
        not_modified = inm_matches(rq->if_none_match, out->etag);
    } else {
        int64_t ims;
        not_modified = rq->if_modified_since && parse_http_date(rq->if_modified_since, now, &ims) &&
                       ims <= (int64_t)now && mtime <= ims;
    }
    if (not_modified)
        return finish(out, fd, 304, 0);

    /* The type follows the name in the URL, not the target of a symlink. */
    const char *base = strrchr(rel, '/');
    out->content_type = mime_for(base ? base + 1 : rel);
    out->status = 200;
    out->offset = 0;
    out->length = sb.st_size;
    if (head) {
        close(fd);
        return 0;
    }
    if (rq->range && (!rq->if_range || if_range_holds(rq->if_range, out->etag, mtime, now))) {
        off_t off = 0, len = 0;
        switch (parse_range(rq->range, sb.st_size, &off, &len)) {
        case RANGE_PARTIAL:
            out->status = 206;
            out->offset = off;
            out->length = len;
            snprintf(out->content_range, sizeof(out->content_range),
                     "bytes %" PRIdMAX "-%" PRIdMAX "/%" PRIdMAX, (intmax_t)off,
                     (intmax_t)(off + len - 1), (intmax_t)sb.st_size);
            break;
        case RANGE_UNSATISFIABLE:
            snprintf(out->content_range, sizeof(out->content_range), "bytes */%" PRIdMAX,
                     (intmax_t)sb.st_size);
            return finish(out, fd, 416, 0);
        case RANGE_IGNORE:
            break;
        }
    }
    out->fd = fd;
    return 0;
}
