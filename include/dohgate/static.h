/**
 * @file static.h
 * Static files for the website served on the DoH port: every decision that a request for a file
 * needs (method, path checks, confinement to the document root, index files, MIME type,
 * validators, conditional requests, byte ranges), and nothing of the transport. The result says
 * which status to answer, which headers to send and which byte range of which open fd to stream;
 * the HTTP/1.1 and HTTP/2 layers do the sending, so no file is ever read into memory here.
 *
 * Confinement. The document root is one directory fd (struct static_root), opened once at
 * startup and shared read-only by all workers. Every file is opened relative to it with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): the kernel, not a string check, refuses any
 * resolution that would leave the root, whether through "..", a symlink pointing outside, a
 * symlink to "..", or an absolute symlink. Relative symlinks that stay inside the root are
 * followed; absolute symlinks are always refused (404), even when they point inside, so a
 * docroot that uses symlinks must use relative ones. Where openat2 is missing (kernel < 5.6) or
 * blocked (a seccomp profile answering ENOSYS or EPERM), static_root_open() says so in
 * root->beneath = false and every path is walked one component at a time with
 * openat(O_NOFOLLOW): symlinks are then refused entirely (404), inside the root or not.
 *
 * Path rules, applied to the request-target before any filesystem access:
 * - the target must be in origin-form ("/..."); "*" and absolute-form are 400 (the transport
 *   turns an absolute-form target into origin-form first); longer than STATIC_TARGET_MAX → 414;
 * - the query ("?...") is dropped for the lookup and kept for a redirect's Location;
 * - raw bytes must be visible ASCII: controls, space, DEL, bytes >= 0x80, '#' and '\' → 400
 *   (RFC 3986/9112 grammar; browsers percent-encode all of these);
 * - percent-decoding is done exactly once ("%252e" names a file called "%2e"); an invalid escape,
 *   %00, any decoded control character or DEL, %2F ('/') and %5C ('\') → 400; decoded UTF-8 is
 *   allowed;
 * - a segment that is "." or ".." before or after decoding → 400: conforming clients remove dot
 *   segments (RFC 3986 §5.2.4) before sending, so this is a malformed request, and nothing is
 *   normalised away;
 * - an empty segment ("//", "/a//b") → 400, so that one file has exactly one URL; only the last
 *   segment may be empty, which is the trailing slash of a directory.
 * Names starting with '.' (".well-known", but also ".git") are served like any other: keep
 * what must not be public out of the root.
 *
 * Outcomes:
 * - 200/206 regular file (GET: fd set; HEAD: no fd); only S_ISREG is served, FIFOs, sockets and
 *   devices are 404;
 * - 301 for a directory named without its trailing slash (Location: the same path + "/", query
 *   kept); a path ending in "/" serves index.html in that directory, else 404 (no listings);
 * - 304 when a condition holds: If-None-Match (strong and W/ tags compared weakly, or "*") takes
 *   precedence over If-Modified-Since; an If-Modified-Since date in the future or unparsable is
 *   ignored; all three HTTP-date formats are accepted (IMF-fixdate, RFC 850, asctime), as RFC 9110
 *   §5.6.7 requires of recipients;
 * - 206/416 for a single byte range on GET (bytes=a-b, a-, -n; the unit is case-insensitive).
 *   Several ranges, invalid syntax, a Range on HEAD, a Range on an empty file, or an If-Range that
 *   does not match (strong ETag, or exactly the Last-Modified date) → the Range is ignored: 200;
 * - 400 malformed target, 403 EACCES/EPERM, 404 not found and every escape attempt (nothing is
 *   revealed about what lies outside the root), 405 other methods, 414 long target,
 *   503 out of fds or memory (retryable), 500 anything else (sys_errno says what).
 *
 * Thread-safety: static_resolve() keeps no state and may run concurrently on the same root.
 */
#ifndef DOHGATE_STATIC_H
#define DOHGATE_STATIC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/** Longest request-target (path + query) accepted; longer ones get 414. */
#define STATIC_TARGET_MAX 4096

/** The document root. Owned by whoever opened it (the server); read-only once open. */
struct static_root {
    int fd;       /**< O_PATH directory fd, -1 when closed */
    bool beneath; /**< openat2(RESOLVE_BENEATH) in use; false: component walk, no symlinks
                       (tests clear it on a copy to exercise the walk) */
};

/**
 * Open @p dir as the document root (O_PATH | O_DIRECTORY | O_CLOEXEC; @p dir itself may be a
 * symlink, it is resolved once, now) and probe openat2. A deploy that swaps the directory
 * behind a symlink is seen only after the root is opened again (reload).
 * @param err     receives a one-line reason on failure ("static root /x: No such file or
 *                directory"); may be NULL
 * @return 0, or negative errno (-ENOENT, -ENOTDIR, -EACCES, ...); on failure root->fd is -1.
 */
int static_root_open(struct static_root *root, const char *dir, char *err, size_t errlen);
/** Close the root fd (no-op when already closed). In-flight result fds stay valid. */
void static_root_close(struct static_root *root);

/**
 * One request, as the transport decoded it. Strings are NUL-terminated and only read during
 * static_resolve(). A header that occurs on several lines must be joined with ", " first.
 */
struct static_request {
    const char *method;            /**< case-sensitive: "GET" or "HEAD" are served */
    const char *target;            /**< request-target in origin-form, may have "?query" */
    const char *if_none_match;     /**< or NULL */
    const char *if_modified_since; /**< or NULL */
    const char *range;             /**< or NULL */
    const char *if_range;          /**< or NULL */
};

/**
 * What to answer. Headers to send, by status:
 * - 200/206: content-type, content-length = length, etag, last-modified (when not empty),
 *   accept-ranges: bytes, and content-range for 206. The body is bytes [offset, offset+length)
 *   of fd (pread/sendfile with an explicit offset; the file position is unspecified). The file
 *   may shrink while it is sent: on a short read, reset the stream or close the connection,
 *   never pad. For HEAD (head = true) the same headers, no fd, no body.
 * - 304: etag and last-modified, no body.
 * - 301: location. 405: allow. 416: content-range (the unsatisfied form,
 *   "bytes" SP "*" "/" size).
 * - others: a small error body of the caller's choice (none when head is true).
 */
struct static_result {
    int status;
    int fd; /**< >= 0 only when a body is to be sent; the caller owns and closes it */
    bool head;
    off_t offset;             /**< first byte to send */
    off_t length;             /**< bytes to send (= content-length) */
    off_t size;               /**< size of the whole file */
    const char *content_type; /**< static string, set for 200/206; NULL otherwise */
    const char *allow;        /**< "GET, HEAD" for 405, NULL otherwise */
    int sys_errno;            /**< the errno behind a 403/404/500/503, for the log; 0 if none */
    char etag[64];            /**< quoted strong tag, for 200/206/304; "" otherwise */
    char last_modified[32];   /**< IMF-fixdate, for 200/206/304; "" if not representable */
    char content_range[80];   /**< for 206 and 416, "" otherwise */
    char location[STATIC_TARGET_MAX + 2]; /**< for 301, "" otherwise */
};

/**
 * Decide the answer to @p rq for a file under @p root. Synchronous; the only blocking is the
 * open() and fstat() of one file (and its parent directories in the fallback walk).
 * @param out    filled in completely on return 0; on success takes no ownership of anything,
 *               and out->fd (when >= 0) belongs to the caller
 * @return 0 (every request-dependent outcome, including server-side failures, is out->status),
 *         or -EINVAL when an argument is NULL or the root is closed (programmer error).
 */
int static_resolve(const struct static_root *root, const struct static_request *rq,
                   struct static_result *out);

/** Close out->fd if it is open and set it to -1. Safe to call twice. */
void static_result_deinit(struct static_result *out);

#endif
