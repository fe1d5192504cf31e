/*
 * Unit tests for static.h: the static-file decisions against a real temporary tree.
 *
 *   base/outside.txt, base/outdir/secret.txt     files outside the root (must never be served)
 *   base/root/                                   the document root
 *     index.html hello.txt data.bin (256 bytes 0..255) Style.CSS empty.txt noext ...
 *     sub/index.html sub/page.html sub/uplink.txt -> ../hello.txt, sub/up2 -> ../..
 *     noindex/file.txt, idxdir/index.html/ (a directory)
 *     link.txt -> hello.txt, sublink -> sub                 symlinks that stay inside
 *     out.txt -> ../outside.txt, up -> .., esc_dir -> ../outdir, loop -> loop,
 *     abs_in.txt -> /abs/base/root/hello.txt, abs_out.txt -> /abs/base/outside.txt
 *     fifo, null (a character device, only as root), secret.txt (mode 000)
 *
 * Every result that carries an fd is checked to be one of the regular files inside the root.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/capability.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "dohgate/static.h"

#define MAX_ENTRIES 64

struct file_id {
    dev_t dev;
    ino_t ino;
};

struct fixture {
    char base[PATH_MAX];
    int basefd;
    struct static_root root;
    /* created entries, relative to base, removed in reverse order */
    char *entries[MAX_ENTRIES];
    bool is_dir[MAX_ENTRIES];
    size_t nentries;
    struct file_id inside[MAX_ENTRIES];
    size_t ninside;
    struct file_id outside[4];
    size_t noutside;
    bool have_dev;
};

/* 1994-11-06 08:49:37 UTC, the RFC 9110 example date */
#define RFC_EXAMPLE_TIME 784111777

/* ---- tree building ------------------------------------------------------------------------ */

static void record(struct fixture *f, const char *rel, bool dir)
{
    assert_true(f->nentries < MAX_ENTRIES);
    f->entries[f->nentries] = strdup(rel);
    assert_non_null(f->entries[f->nentries]);
    f->is_dir[f->nentries++] = dir;
}

static struct file_id id_of(int dirfd, const char *rel)
{
    struct stat sb;
    assert_int_equal(fstatat(dirfd, rel, &sb, AT_SYMLINK_NOFOLLOW), 0);
    struct file_id id = {sb.st_dev, sb.st_ino};
    return id;
}

static void mk_dir(struct fixture *f, const char *rel)
{
    assert_int_equal(mkdirat(f->basefd, rel, 0755), 0);
    record(f, rel, true);
}

static void mk_file(struct fixture *f, const char *rel, const void *data, size_t len, bool inside)
{
    int fd = openat(f->basefd, rel, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    record(f, rel, false);
    if (inside)
        f->inside[f->ninside++] = id_of(f->basefd, rel);
    else
        f->outside[f->noutside++] = id_of(f->basefd, rel);
}

static void mk_text(struct fixture *f, const char *rel, const char *text)
{
    mk_file(f, rel, text, strlen(text), true);
}

static void mk_link(struct fixture *f, const char *target, const char *rel)
{
    assert_int_equal(symlinkat(target, f->basefd, rel), 0);
    record(f, rel, false);
}

static void set_mtime(struct fixture *f, const char *rel, time_t sec, long nsec)
{
    struct timespec ts[2] = {{sec, nsec}, {sec, nsec}};
    assert_int_equal(utimensat(f->basefd, rel, ts, 0), 0);
}

static int group_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->base, sizeof(f->base), "%s/dohgate-static-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->base));
    f->basefd = open(f->base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    assert_true(f->basefd >= 0);

    mk_file(f, "outside.txt", "outside secret\n", 15, false);
    mk_dir(f, "outdir");
    mk_file(f, "outdir/secret.txt", "outdir secret\n", 14, false);

    mk_dir(f, "root");
    mk_text(f, "root/index.html", "<h1>root</h1>\n");
    mk_text(f, "root/hello.txt", "hello world\n");
    uint8_t data[256];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)i;
    mk_file(f, "root/data.bin", data, sizeof(data), true);
    /* older than a second, so that its Last-Modified is a strong validator for If-Range */
    set_mtime(f, "root/data.bin", time(NULL) - 1000, 0);
    mk_text(f, "root/Style.CSS", "body{}\n");
    mk_text(f, "root/empty.txt", "");
    mk_text(f, "root/noext", "x");
    mk_text(f, "root/app.mobileconfig", "<plist/>");
    mk_text(f, "root/a b.txt", "space\n");
    mk_text(f, "root/%41.txt", "literal percent\n");
    mk_text(f, "root/\xc3\xbc.txt", "umlaut\n");
    mk_text(f, "root/change.txt", "v1\n");
    mk_text(f, "root/old.txt", "old\n");
    set_mtime(f, "root/old.txt", RFC_EXAMPLE_TIME, 0);
    mk_text(f, "root/future.txt", "future\n");
    set_mtime(f, "root/future.txt", time(NULL) + 86400, 0);
    mk_text(f, "root/secret.txt", "unreadable\n");
    assert_int_equal(fchmodat(f->basefd, "root/secret.txt", 0, 0), 0);

    mk_dir(f, "root/sub");
    mk_text(f, "root/sub/index.html", "<h1>sub</h1>\n");
    mk_text(f, "root/sub/page.html", "<p>page</p>\n");
    mk_link(f, "../hello.txt", "root/sub/uplink.txt");
    mk_link(f, "../..", "root/sub/up2");
    mk_dir(f, "root/noindex");
    mk_text(f, "root/noindex/file.txt", "file\n");
    mk_dir(f, "root/idxdir");
    mk_dir(f, "root/idxdir/index.html");

    mk_link(f, "hello.txt", "root/link.txt");
    mk_link(f, "sub", "root/sublink");
    mk_link(f, "../outside.txt", "root/out.txt");
    mk_link(f, "..", "root/up");
    mk_link(f, "../outdir", "root/esc_dir");
    mk_link(f, "loop", "root/loop");
    char abs[PATH_MAX + 32];
    snprintf(abs, sizeof(abs), "%s/root/hello.txt", f->base);
    mk_link(f, abs, "root/abs_in.txt");
    snprintf(abs, sizeof(abs), "%s/outside.txt", f->base);
    mk_link(f, abs, "root/abs_out.txt");
    snprintf(abs, sizeof(abs), "%s/outdir", f->base);
    mk_link(f, abs, "root/abs_dir");

    assert_int_equal(mkfifoat(f->basefd, "root/fifo", 0644), 0);
    record(f, "root/fifo", false);
    if (geteuid() == 0 && mknodat(f->basefd, "root/null", S_IFCHR | 0666, makedev(1, 3)) == 0) {
        record(f, "root/null", false);
        f->have_dev = true;
    }

    char dir[PATH_MAX + 8];
    snprintf(dir, sizeof(dir), "%s/root", f->base);
    char err[256];
    assert_int_equal(static_root_open(&f->root, dir, err, sizeof(err)), 0);
    if (!f->root.beneath)
        print_message("openat2 unavailable: testing the component walk only\n");
    *state = f;
    return 0;
}

static int group_teardown(void **state)
{
    struct fixture *f = *state;
    static_root_close(&f->root);
    for (size_t i = f->nentries; i-- > 0;) {
        unlinkat(f->basefd, f->entries[i], f->is_dir[i] ? AT_REMOVEDIR : 0);
        free(f->entries[i]);
    }
    close(f->basefd);
    rmdir(f->base);
    free(f);
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* Fails unless an fd in @p r is one of the regular files inside the root. */
static void assert_fd_inside(const struct fixture *f, const struct static_result *r)
{
    if (r->fd < 0)
        return;
    struct stat sb;
    assert_int_equal(fstat(r->fd, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    for (size_t i = 0; i < f->noutside; i++)
        assert_false(sb.st_dev == f->outside[i].dev && sb.st_ino == f->outside[i].ino);
    bool found = false;
    for (size_t i = 0; i < f->ninside; i++)
        found |= sb.st_dev == f->inside[i].dev && sb.st_ino == f->inside[i].ino;
    assert_true(found);
    /* the blocking mode was restored */
    assert_false(fcntl(r->fd, F_GETFL) & O_NONBLOCK);
}

static void resolve_full(const struct fixture *f, const struct static_root *root,
                         const struct static_request *rq, struct static_result *r)
{
    assert_int_equal(static_resolve(root, rq, r), 0);
    assert_fd_inside(f, r);
    /* a body fd only for GET 200/206, and always for those */
    bool body = strcmp(rq->method, "GET") == 0 && (r->status == 200 || r->status == 206);
    assert_int_equal(r->fd >= 0, body);
    assert_int_equal(r->head, strcmp(rq->method, "HEAD") == 0);
}

static void resolve(const struct fixture *f, const char *method, const char *target,
                    struct static_result *r)
{
    struct static_request rq = {.method = method, .target = target};
    resolve_full(f, &f->root, &rq, r);
}

static int status_of(const struct fixture *f, const struct static_root *root, const char *method,
                     const char *target)
{
    struct static_request rq = {.method = method, .target = target};
    struct static_result r;
    resolve_full(f, root, &rq, &r);
    int st = r.status;
    static_result_deinit(&r);
    return st;
}

/* The body the caller would send: [offset, offset + length) of fd. */
static void assert_body(const struct static_result *r, const void *want, size_t len)
{
    char buf[512];
    assert_true(r->fd >= 0);
    assert_int_equal(r->length, (off_t)len);
    assert_true(len <= sizeof(buf));
    assert_int_equal(pread(r->fd, buf, len, r->offset), (ssize_t)len);
    assert_memory_equal(buf, want, len);
}

static void expected_etag(const struct fixture *f, const char *rel, char *out, size_t cap)
{
    struct stat sb;
    assert_int_equal(fstatat(f->basefd, rel, &sb, 0), 0);
    uint64_t ns = (uint64_t)sb.st_mtim.tv_sec * 1000000000u + (uint64_t)sb.st_mtim.tv_nsec;
    snprintf(out, cap, "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", (uint64_t)sb.st_ino,
             (uint64_t)sb.st_size, ns);
}

/* ---- root --------------------------------------------------------------------------------- */

static void test_root_open_errors(void **state)
{
    struct fixture *f = *state;
    struct static_root root;
    char err[PATH_MAX + 64] = "";
    char path[PATH_MAX + 32];

    snprintf(path, sizeof(path), "%s/missing", f->base);
    assert_int_equal(static_root_open(&root, path, err, sizeof(err)), -ENOENT);
    assert_int_equal(root.fd, -1);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));

    snprintf(path, sizeof(path), "%s/outside.txt", f->base);
    assert_int_equal(static_root_open(&root, path, err, sizeof(err)), -ENOTDIR);
    assert_int_equal(root.fd, -1);

    /* the root itself may be a symlink; it is resolved once */
    snprintf(path, sizeof(path), "%s/root/sublink", f->base);
    assert_int_equal(static_root_open(&root, path, NULL, 0), 0);
    struct static_request rq = {.method = "GET", .target = "/page.html"};
    struct static_result r;
    assert_int_equal(static_resolve(&root, &rq, &r), 0);
    assert_int_equal(r.status, 200);
    assert_body(&r, "<p>page</p>\n", 12);
    static_result_deinit(&r);
    assert_int_equal(r.fd, -1);
    static_result_deinit(&r); /* twice is fine */
    static_root_close(&root);
    assert_int_equal(root.fd, -1);
    static_root_close(&root);
    assert_int_equal(static_resolve(&root, &rq, &r), -EINVAL);
    assert_int_equal(static_resolve(&f->root, NULL, &r), -EINVAL);
}

/* ---- plain serving ------------------------------------------------------------------------ */

static void test_get_file(void **state)
{
    struct fixture *f = *state;
    struct static_result r;
    char etag[64];

    resolve(f, "GET", "/hello.txt", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "text/plain; charset=utf-8");
    assert_int_equal(r.size, 12);
    assert_int_equal(r.offset, 0);
    assert_body(&r, "hello world\n", 12);
    expected_etag(f, "root/hello.txt", etag, sizeof(etag));
    assert_string_equal(r.etag, etag);
    assert_int_equal(strlen(r.last_modified), 29);
    assert_string_equal(r.last_modified + 25, " GMT");
    assert_string_equal(r.content_range, "");
    assert_string_equal(r.location, "");
    assert_null(r.allow);
    static_result_deinit(&r);

    /* query dropped for the lookup, whatever it contains */
    resolve(f, "GET", "/hello.txt?x=../../outside.txt&y=%00", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello world\n", 12);
    static_result_deinit(&r);

    /* percent-decoding, exactly once */
    resolve(f, "GET", "/hello%2Etxt", &r);
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);
    resolve(f, "GET", "/a%20b.txt", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "space\n", 6);
    static_result_deinit(&r);
    resolve(f, "GET", "/%C3%BC.txt", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "umlaut\n", 7);
    static_result_deinit(&r);
    resolve(f, "GET", "/%2541.txt", &r); /* the file literally named "%41.txt" */
    assert_int_equal(r.status, 200);
    assert_body(&r, "literal percent\n", 16);
    static_result_deinit(&r);
    assert_int_equal(status_of(f, &f->root, "GET", "/%41.txt"), 404); /* "A.txt" */

    /* an empty file */
    resolve(f, "GET", "/empty.txt", &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.size, 0);
    assert_int_equal(r.length, 0);
    static_result_deinit(&r);
}

static void test_mime_types(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *target, *type;
    } cases[] = {
        {"/index.html", "text/html; charset=utf-8"},
        {"/", "text/html; charset=utf-8"},
        {"/Style.CSS", "text/css; charset=utf-8"},
        {"/noext", "application/octet-stream"},
        {"/data.bin", "application/octet-stream"},
        {"/app.mobileconfig", "application/x-apple-aspen-config"},
        {"/sub/page.html", "text/html; charset=utf-8"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct static_result r;
        resolve(f, "GET", cases[i].target, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.content_type, cases[i].type);
        static_result_deinit(&r);
    }
}

static void test_head(void **state)
{
    struct fixture *f = *state;
    struct static_result g, h;
    resolve(f, "GET", "/hello.txt", &g);
    resolve(f, "HEAD", "/hello.txt", &h);
    assert_int_equal(h.status, 200);
    assert_true(h.head);
    assert_int_equal(h.fd, -1);
    assert_int_equal(h.length, 12);
    assert_int_equal(h.size, 12);
    assert_string_equal(h.etag, g.etag);
    assert_string_equal(h.last_modified, g.last_modified);
    assert_string_equal(h.content_type, g.content_type);
    static_result_deinit(&g);

    /* Range is for GET only */
    struct static_request rq = {.method = "HEAD", .target = "/data.bin", .range = "bytes=0-9"};
    resolve_full(f, &f->root, &rq, &h);
    assert_int_equal(h.status, 200);
    assert_int_equal(h.length, 256);
    assert_string_equal(h.content_range, "");

    /* errors keep the head flag so that no error body goes out */
    resolve(f, "HEAD", "/missing", &h);
    assert_int_equal(h.status, 404);
    assert_true(h.head);
}

static void test_method_not_allowed(void **state)
{
    struct fixture *f = *state;
    static const char *const methods[] = {"POST", "PUT", "DELETE", "OPTIONS", "get", "head", ""};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        struct static_result r;
        resolve(f, methods[i], "/hello.txt", &r);
        assert_int_equal(r.status, 405);
        assert_string_equal(r.allow, "GET, HEAD");
        assert_int_equal(r.fd, -1);
        assert_null(r.content_type);
    }
}

/* ---- directories -------------------------------------------------------------------------- */

static void test_directories(void **state)
{
    struct fixture *f = *state;
    struct static_result r;

    resolve(f, "GET", "/sub", &r);
    assert_int_equal(r.status, 301);
    assert_string_equal(r.location, "/sub/");
    resolve(f, "GET", "/sub?x=1&y=%2F", &r);
    assert_int_equal(r.status, 301);
    assert_string_equal(r.location, "/sub/?x=1&y=%2F");
    resolve(f, "GET", "/s%75b", &r); /* the location repeats the raw path */
    assert_int_equal(r.status, 301);
    assert_string_equal(r.location, "/s%75b/");
    resolve(f, "HEAD", "/noindex", &r);
    assert_int_equal(r.status, 301);
    assert_string_equal(r.location, "/noindex/");

    /* the longest query still fits the location buffer */
    char *t = malloc(STATIC_TARGET_MAX + 1);
    assert_non_null(t);
    memset(t, 'q', STATIC_TARGET_MAX);
    memcpy(t, "/sub?", 5);
    t[STATIC_TARGET_MAX] = '\0';
    resolve(f, "GET", t, &r);
    assert_int_equal(r.status, 301);
    assert_int_equal(strlen(r.location), STATIC_TARGET_MAX + 1);
    assert_memory_equal(r.location, "/sub/?qqq", 9);
    free(t);

    resolve(f, "GET", "/", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "<h1>root</h1>\n", 14);
    static_result_deinit(&r);
    resolve(f, "GET", "/sub/", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "<h1>sub</h1>\n", 13);
    static_result_deinit(&r);
    resolve(f, "GET", "/sub/?q=1", &r);
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);

    assert_int_equal(status_of(f, &f->root, "GET", "/noindex/"), 404);   /* no listing */
    assert_int_equal(status_of(f, &f->root, "GET", "/idxdir/"), 404);    /* index.html is a dir */
    assert_int_equal(status_of(f, &f->root, "GET", "/hello.txt/"), 404); /* not a directory */
    assert_int_equal(status_of(f, &f->root, "GET", "/missing/"), 404);
    assert_int_equal(status_of(f, &f->root, "GET", "/noindex/file.txt"), 200);
}

static void test_special_files(void **state)
{
    struct fixture *f = *state;
    /* a FIFO is opened non-blocking (no hang) and refused */
    assert_int_equal(status_of(f, &f->root, "GET", "/fifo"), 404);
    assert_int_equal(status_of(f, &f->root, "HEAD", "/fifo"), 404);
    if (f->have_dev) {
        int st = status_of(f, &f->root, "GET", "/null");
        assert_true(st == 404 || st == 403); /* 403 on a nodev mount */
    }
}

static void test_unreadable(void **state)
{
    struct fixture *f = *state;
    /* Root reads mode-000 files through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: as root (CI),
     * those two leave the effective set for the check, as they do for a dohgate that dropped to
     * its user, and come back after it (they stay in the permitted set). */
    cap_t saved = NULL;
    if (geteuid() == 0) {
        saved = cap_get_proc();
        assert_non_null(saved);
        cap_t dropped = cap_dup(saved);
        assert_non_null(dropped);
        const cap_value_t dac[] = {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH};
        assert_int_equal(cap_set_flag(dropped, CAP_EFFECTIVE, 2, dac, CAP_CLEAR), 0);
        assert_int_equal(cap_set_proc(dropped), 0);
        cap_free(dropped);
    }
    int st_get = status_of(f, &f->root, "GET", "/secret.txt");
    int st_head = status_of(f, &f->root, "HEAD", "/secret.txt");
    if (saved) {
        assert_int_equal(cap_set_proc(saved), 0);
        cap_free(saved);
    }
    assert_int_equal(st_get, 403);
    assert_int_equal(st_head, 403);
}

/* ---- confinement ------------------------------------------------------------------------- */

struct expect {
    const char *target;
    int status;
};

/* Refused in both modes. Symlink escapes are 404, malformed paths 400. */
static const struct expect escapes[] = {
    {"/../x", 400},
    {"/../outside.txt", 400},
    {"/%2e%2e/x", 400},
    {"/%2E%2E/outside.txt", 400},
    {"/.%2e/outside.txt", 400},
    {"/a/..%2fb", 400},
    {"/%2e%2e%2fx", 400},
    {"/%2e%2e%2foutside.txt", 400},
    {"/sub/..%2f..%2foutside.txt", 400},
    {"/foo%00.html", 400},
    {"/hello.txt%00", 400},
    {"/a\\b", 400},
    {"/..\\outside.txt", 400},
    {"/a%5cb", 400},
    {"/%5c..%5coutside.txt", 400},
    {"//etc/passwd", 400},
    {"//outside.txt", 400},
    {"/sub//page.html", 400},
    {"/./hello.txt", 400},
    {"/sub/.", 400},
    {"/sub/..", 400},
    {"/sub/../hello.txt", 400},
    {"/sub/%2e%2e", 400},
    {"/sub/%2e", 400},
    {"/sub/.%2E/hello.txt", 400},
    {"/up/outside.txt", 404},
    {"/up", 404},
    {"/up/", 404},
    {"/up/root/hello.txt", 404}, /* leaves the root on the way, even if it comes back */
    {"/sub/up2/outside.txt", 404},
    {"/sub/up2/root/hello.txt", 404},
    {"/out.txt", 404},
    {"/esc_dir/secret.txt", 404},
    {"/esc_dir", 404}, /* no 301: nothing is revealed about the outside */
    {"/esc_dir/", 404},
    {"/abs_out.txt", 404},
    {"/abs_in.txt", 404}, /* absolute symlinks are refused even when they point inside */
    {"/abs_dir/secret.txt", 404},
    {"/abs_dir", 404},
    {"/loop", 404},
    {"/%252e%252e/outside.txt", 404}, /* decoded once: a directory literally named "%2e%2e" */
    {"/...", 404},
    {"/outside.txt", 404},
};

static void check_escapes(const struct fixture *f, const struct static_root *root)
{
    for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
        for (int m = 0; m < 2; m++) {
            struct static_request rq = {.method = m ? "HEAD" : "GET", .target = escapes[i].target};
            struct static_result r;
            resolve_full(f, root, &rq, &r);
            if (r.status != escapes[i].status)
                print_error("%s %s: %d\n", rq.method, rq.target, r.status);
            assert_int_equal(r.status, escapes[i].status);
            assert_int_equal(r.fd, -1);
            assert_string_equal(r.location, "");
        }
    }
}

static void test_escapes_refused(void **state)
{
    struct fixture *f = *state;
    check_escapes(f, &f->root);
}

static void test_symlinks_inside(void **state)
{
    struct fixture *f = *state;
    /* Debian 12's kernel has openat2 (5.6+); without it (older kernel, or a seccomp profile that
     * predates it) the fallback walk refuses every symlink, which test_fallback_walk covers. This
     * test is about RESOLVE_BENEATH, so on such a machine it fails rather than pass unseen. */
    if (!f->root.beneath)
        fail_msg("openat2(RESOLVE_BENEATH) unavailable on this machine: kernel older than 5.6 or a "
                 "seccomp profile without it; the symlink-inside rules cannot be tested here");
    struct static_result r;
    resolve(f, "GET", "/link.txt", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello world\n", 12);
    static_result_deinit(&r);
    resolve(f, "GET", "/sub/uplink.txt", &r); /* "../hello.txt" stays inside */
    assert_int_equal(r.status, 200);
    assert_body(&r, "hello world\n", 12);
    static_result_deinit(&r);
    resolve(f, "GET", "/sublink/page.html", &r);
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);
    resolve(f, "GET", "/sublink", &r);
    assert_int_equal(r.status, 301);
    assert_string_equal(r.location, "/sublink/");
    resolve(f, "GET", "/sublink/", &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "<h1>sub</h1>\n", 13);
    static_result_deinit(&r);
}

/* The component walk used without openat2: same answers, but no symlink is followed at all. */
static void test_fallback_walk(void **state)
{
    struct fixture *f = *state;
    struct static_root walk = f->root;
    walk.beneath = false;
    check_escapes(f, &walk);

    struct static_request rq = {.method = "GET", .target = "/sub/page.html"};
    struct static_result r;
    resolve_full(f, &walk, &rq, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "<p>page</p>\n", 12);
    static_result_deinit(&r);
    rq.target = "/noindex/file.txt";
    resolve_full(f, &walk, &rq, &r);
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);
    rq.target = "/sub/";
    resolve_full(f, &walk, &rq, &r);
    assert_int_equal(r.status, 200);
    assert_body(&r, "<h1>sub</h1>\n", 13);
    static_result_deinit(&r);
    rq.target = "/sub";
    resolve_full(f, &walk, &rq, &r);
    assert_int_equal(r.status, 301);

    assert_int_equal(status_of(f, &walk, "GET", "/link.txt"), 404);
    assert_int_equal(status_of(f, &walk, "GET", "/sub/uplink.txt"), 404);
    assert_int_equal(status_of(f, &walk, "GET", "/sublink/page.html"), 404);
    assert_int_equal(status_of(f, &walk, "GET", "/sublink"), 404);
    assert_int_equal(status_of(f, &walk, "GET", "/fifo"), 404);
    assert_int_equal(status_of(f, &walk, "GET", "/hello.txt/"), 404);
}

static void test_malformed_targets(void **state)
{
    struct fixture *f = *state;
    static const struct expect cases[] = {
        {"", 400},
        {"hello.txt", 400},
        {"*", 400},
        {"http://example.com/hello.txt", 400},
        {"/\xc3\xbc.txt", 400}, /* raw non-ASCII */
        {"/a b.txt", 400},      /* raw space */
        {"/hello.txt\t", 400},
        {"/hello.txt\r\nx: y", 400},
        {"/hello.txt#frag", 400},
        {"/hello\x7f.txt", 400},
        {"/hello.txt%0a", 400},
        {"/%7f", 400},
        {"/%1f", 400},
        {"/%", 400},
        {"/%4", 400},
        {"/hello.txt%", 400},
        {"/%zz", 400},
        {"/%g0", 400},
        {"/%0g", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int st = status_of(f, &f->root, "GET", cases[i].target);
        if (st != cases[i].status)
            print_error("case %zu: %d\n", i, st);
        assert_int_equal(st, cases[i].status);
    }

    char *t = malloc(STATIC_TARGET_MAX + 2);
    assert_non_null(t);
    memset(t, 'a', STATIC_TARGET_MAX + 1);
    t[0] = '/';
    t[STATIC_TARGET_MAX + 1] = '\0';
    assert_int_equal(status_of(f, &f->root, "GET", t), 414);
    t[STATIC_TARGET_MAX] = '\0'; /* at the limit: looked up, the name is too long */
    assert_int_equal(status_of(f, &f->root, "GET", t), 404);
    free(t);
}

/* ---- conditional requests ---------------------------------------------------------------- */

static int cond_status(const struct fixture *f, const char *target, const char *inm,
                       const char *ims)
{
    struct static_request rq = {
        .method = "GET", .target = target, .if_none_match = inm, .if_modified_since = ims};
    struct static_result r;
    resolve_full(f, &f->root, &rq, &r);
    if (r.status == 304) {
        assert_string_not_equal(r.etag, "");
        assert_null(r.content_type);
    }
    static_result_deinit(&r);
    return r.status;
}

static void test_if_none_match(void **state)
{
    struct fixture *f = *state;
    struct static_result r;
    resolve(f, "GET", "/hello.txt", &r);
    char etag[64], list[200];
    strcpy(etag, r.etag);
    static_result_deinit(&r);

    assert_int_equal(cond_status(f, "/hello.txt", etag, NULL), 304);
    snprintf(list, sizeof(list), "W/%s", etag);
    assert_int_equal(cond_status(f, "/hello.txt", list, NULL), 304);
    snprintf(list, sizeof(list), "\"nope\", W/\"x\" ,%s", etag);
    assert_int_equal(cond_status(f, "/hello.txt", list, NULL), 304);
    assert_int_equal(cond_status(f, "/hello.txt", "*", NULL), 304);
    assert_int_equal(cond_status(f, "/hello.txt", "\"nope\"", NULL), 200);
    assert_int_equal(cond_status(f, "/hello.txt", "", NULL), 200);
    /* the tag of another file does not match */
    resolve(f, "GET", "/index.html", &r);
    assert_int_equal(cond_status(f, "/hello.txt", r.etag, NULL), 200);
    static_result_deinit(&r);
    /* unquoted or unterminated: malformed, no match */
    snprintf(list, sizeof(list), "%.*s", (int)strlen(etag) - 2, etag + 1);
    assert_int_equal(cond_status(f, "/hello.txt", list, NULL), 200);
    snprintf(list, sizeof(list), "%.*s", (int)strlen(etag) - 1, etag);
    assert_int_equal(cond_status(f, "/hello.txt", list, NULL), 200);

    /* If-None-Match takes precedence: a non-matching tag and a matching date → 200 */
    assert_int_equal(cond_status(f, "/old.txt", "\"nope\"", "Sun, 06 Nov 1994 08:49:37 GMT"), 200);

    /* HEAD gets the 304 too; a 304 carries no body */
    struct static_request rq = {.method = "HEAD", .target = "/hello.txt", .if_none_match = etag};
    resolve_full(f, &f->root, &rq, &r);
    assert_int_equal(r.status, 304);
    assert_string_equal(r.etag, etag);
}

static void test_if_modified_since(void **state)
{
    struct fixture *f = *state;
    struct static_result r;
    resolve(f, "GET", "/old.txt", &r);
    assert_string_equal(r.last_modified, "Sun, 06 Nov 1994 08:49:37 GMT");
    static_result_deinit(&r);

    /* the three HTTP-date formats */
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sun, 06 Nov 1994 08:49:37 GMT"), 304);
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sunday, 06-Nov-94 08:49:37 GMT"), 304);
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sun Nov  6 08:49:37 1994"), 304);
    assert_int_equal(cond_status(f, "/old.txt", NULL, " Sun, 06 Nov 1994 08:49:37 GMT "), 304);
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Mon, 07 Nov 1994 00:00:00 GMT"), 304);
    /* one second too early */
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sun, 06 Nov 1994 08:49:36 GMT"), 200);
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sunday, 06-Nov-94 08:49:36 GMT"), 200);
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sun Nov  6 08:49:36 1994"), 200);
    /* invalid dates are ignored */
    static const char *const bad[] = {
        "Sun, 31 Feb 1995 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 GMT x",
        "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun, 06 Foo 1994 08:49:37 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "garbage",
        "",
        "Sun, 06 Nov 1994 08:49:37",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int st = cond_status(f, "/old.txt", NULL, bad[i]);
        if (st != 200)
            print_error("\"%s\": %d\n", bad[i], st);
        assert_int_equal(st, 200);
    }
    /* a date in the future is invalid: ignored even though the file is older */
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Fri, 31 Dec 9999 23:59:59 GMT"), 200);
    assert_int_equal(cond_status(f, "/old.txt", NULL, "Sun, 29 Feb 2004 00:00:00 GMT"), 304);
}

static void test_future_mtime(void **state)
{
    struct fixture *f = *state;
    struct static_result r;
    time_t before = time(NULL);
    resolve(f, "GET", "/future.txt", &r);
    /* Last-Modified is clamped to now, not a day ahead */
    struct tm tm;
    char want[2][32];
    for (int i = 0; i < 2; i++) {
        time_t t = before + i;
        gmtime_r(&t, &tm);
        strftime(want[i], sizeof(want[i]), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    }
    assert_true(strcmp(r.last_modified, want[0]) == 0 || strcmp(r.last_modified, want[1]) == 0);
    char lm[32];
    strcpy(lm, r.last_modified);
    static_result_deinit(&r);
    /* and sending it back gives no 304: the file's real mtime is later */
    assert_int_equal(cond_status(f, "/future.txt", NULL, lm), 200);
}

static void test_changed_file(void **state)
{
    struct fixture *f = *state;
    time_t now = time(NULL);
    set_mtime(f, "root/change.txt", now - 100, 0);
    struct static_result r;
    resolve(f, "GET", "/change.txt", &r);
    char etag1[64], lm1[32];
    strcpy(etag1, r.etag);
    strcpy(lm1, r.last_modified);
    static_result_deinit(&r);
    assert_int_equal(cond_status(f, "/change.txt", etag1, NULL), 304);
    assert_int_equal(cond_status(f, "/change.txt", NULL, lm1), 304);

    /* a change within the same second, same size: only the nanoseconds differ */
    set_mtime(f, "root/change.txt", now - 100, 5);
    assert_int_equal(cond_status(f, "/change.txt", etag1, NULL), 200);

    int fd = openat(f->basefd, "root/change.txt", O_WRONLY | O_TRUNC | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "version 2\n", 10), 10);
    close(fd);
    set_mtime(f, "root/change.txt", now - 50, 0);
    assert_int_equal(cond_status(f, "/change.txt", etag1, NULL), 200);
    assert_int_equal(cond_status(f, "/change.txt", NULL, lm1), 200);
    resolve(f, "GET", "/change.txt", &r);
    assert_string_not_equal(r.etag, etag1);
    assert_string_not_equal(r.last_modified, lm1);
    assert_body(&r, "version 2\n", 10);
    static_result_deinit(&r);
}

/* ---- ranges ------------------------------------------------------------------------------- */

static void range_req(const struct fixture *f, const char *range, const char *if_range,
                      struct static_result *r)
{
    struct static_request rq = {
        .method = "GET", .target = "/data.bin", .range = range, .if_range = if_range};
    resolve_full(f, &f->root, &rq, r);
}

static void expect_partial(const struct fixture *f, const char *range, off_t off, off_t len)
{
    struct static_result r;
    range_req(f, range, NULL, &r);
    if (r.status != 206)
        print_error("\"%s\": %d\n", range, r.status);
    assert_int_equal(r.status, 206);
    assert_int_equal(r.offset, off);
    assert_int_equal(r.size, 256);
    uint8_t want[256];
    for (off_t i = 0; i < len; i++)
        want[i] = (uint8_t)(off + i);
    assert_body(&r, want, (size_t)len);
    char cr[80];
    snprintf(cr, sizeof(cr), "bytes %d-%d/256", (int)off, (int)(off + len - 1));
    assert_string_equal(r.content_range, cr);
    assert_string_equal(r.content_type, "application/octet-stream");
    static_result_deinit(&r);
}

static void expect_whole(const struct fixture *f, const char *range)
{
    struct static_result r;
    range_req(f, range, NULL, &r);
    if (r.status != 200)
        print_error("\"%s\": %d\n", range, r.status);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.offset, 0);
    assert_int_equal(r.length, 256);
    assert_string_equal(r.content_range, "");
    static_result_deinit(&r);
}

static void expect_unsatisfiable(const struct fixture *f, const char *range)
{
    struct static_result r;
    range_req(f, range, NULL, &r);
    if (r.status != 416)
        print_error("\"%s\": %d\n", range, r.status);
    assert_int_equal(r.status, 416);
    assert_int_equal(r.fd, -1);
    assert_string_equal(r.content_range, "bytes */256");
}

static void test_ranges(void **state)
{
    struct fixture *f = *state;
    expect_partial(f, "bytes=0-9", 0, 10);
    expect_partial(f, "bytes=10-19", 10, 10);
    expect_partial(f, "bytes=255-255", 255, 1);
    expect_partial(f, "bytes=250-", 250, 6);
    expect_partial(f, "bytes=0-", 0, 256);
    expect_partial(f, "bytes=-10", 246, 10);
    expect_partial(f, "bytes=-256", 0, 256);
    expect_partial(f, "bytes=-1000", 0, 256);
    expect_partial(f, "bytes=10-1000", 10, 246);
    expect_partial(f, "bytes=0-99999999999999999999999", 0, 256);
    expect_partial(f, "BYTES=1-2", 1, 2);
    expect_partial(f, "bytes=1-2,", 1, 2);
    expect_partial(f, "bytes= 1-2 ", 1, 2);
    expect_partial(f, "bytes=007-008", 7, 2);

    expect_unsatisfiable(f, "bytes=256-");
    expect_unsatisfiable(f, "bytes=256-300");
    expect_unsatisfiable(f, "bytes=-0");
    expect_unsatisfiable(f, "bytes=99999999999999999999999-");

    expect_whole(f, "bytes=5-1");          /* last < first: invalid */
    expect_whole(f, "bytes=0-1,5-6");      /* several ranges */
    expect_whole(f, "bytes=0-1, 300-400"); /* several, even if one is unsatisfiable */
    expect_whole(f, "bytes=abc");
    expect_whole(f, "bytes=");
    expect_whole(f, "bytes=,");
    expect_whole(f, "bytes=1");
    expect_whole(f, "bytes=-");
    expect_whole(f, "bytes=--1");
    expect_whole(f, "bytes=1-2-3");
    expect_whole(f, "bytes=1-x");
    expect_whole(f, "bytes =1-2");
    expect_whole(f, "items=0-1");
    expect_whole(f, "");

    /* an empty file has no satisfiable 206 */
    struct static_request rq = {.method = "GET", .target = "/empty.txt", .range = "bytes=-5"};
    struct static_result r;
    resolve_full(f, &f->root, &rq, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.length, 0);
    static_result_deinit(&r);

    /* conditions come first: a matching If-None-Match gives 304, not 206 */
    resolve(f, "GET", "/data.bin", &r);
    char etag[64];
    strcpy(etag, r.etag);
    static_result_deinit(&r);
    rq = (struct static_request){
        .method = "GET", .target = "/data.bin", .range = "bytes=0-1", .if_none_match = etag};
    resolve_full(f, &f->root, &rq, &r);
    assert_int_equal(r.status, 304);
}

static void test_if_range(void **state)
{
    struct fixture *f = *state;
    struct static_result r;
    resolve(f, "GET", "/data.bin", &r);
    char etag[64], weak[80], lm[32];
    strcpy(etag, r.etag);
    strcpy(lm, r.last_modified);
    static_result_deinit(&r);
    snprintf(weak, sizeof(weak), "W/%s", etag);

    range_req(f, "bytes=0-1", etag, &r);
    assert_int_equal(r.status, 206);
    static_result_deinit(&r);
    range_req(f, "bytes=0-1", "\"other\"", &r); /* changed since: the whole file */
    assert_int_equal(r.status, 200);
    assert_int_equal(r.length, 256);
    static_result_deinit(&r);
    range_req(f, "bytes=0-1", weak, &r); /* If-Range compares strongly */
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);
    range_req(f, "bytes=0-1", "garbage", &r);
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);
    range_req(f, "bytes=0-1", lm, &r); /* the file is older than a second: a strong date */
    assert_int_equal(r.status, 206);
    static_result_deinit(&r);
    range_req(f, "bytes=0-1", "Sun, 06 Nov 1994 08:49:37 GMT", &r); /* not exactly ours */
    assert_int_equal(r.status, 200);
    static_result_deinit(&r);
}

/* ---- random targets ----------------------------------------------------------------------- */

static uint64_t rnd_next(uint64_t *s)
{
    /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static const char *const tokens[] = {
    "/",       "/",           "/",           "//",         ".",          "..",         "%2e",
    "%2E",     "%2f",         "%2F",         "%5c",        "%00",        "%",          "%zz",
    "?",       "?a=b",        "#",           "\\",         "hello.txt",  "sub",        "up",
    "esc_dir", "out.txt",     "abs_out.txt", "abs_in.txt", "abs_dir",    "link.txt",   "sublink",
    "up2",     "outside.txt", "outdir",      "secret.txt", "root",       "index.html", "fifo",
    "loop",    "data.bin",    "noindex",     "%252e",      "%20",        "%C3%BC",     "%2e%2e",
    "..%2f",   "%2e%2e%2f",   "null",        "page.html",  "uplink.txt", "%25",        "%41.txt",
};

static void random_target(uint64_t *s, char *buf, size_t cap)
{
    size_t n = 0;
    if (rnd_next(s) % 10 != 0)
        buf[n++] = '/';
    unsigned parts = 1 + (unsigned)(rnd_next(s) % 8);
    for (unsigned i = 0; i < parts; i++) {
        if (rnd_next(s) % 6 == 0) {
            unsigned char c = (unsigned char)(1 + rnd_next(s) % 255);
            if (n + 1 < cap)
                buf[n++] = (char)c;
        } else {
            const char *t = tokens[rnd_next(s) % (sizeof(tokens) / sizeof(tokens[0]))];
            size_t l = strlen(t);
            if (n + l < cap) {
                memcpy(buf + n, t, l);
                n += l;
            }
        }
    }
    buf[n] = '\0';
}

static void random_bytes(uint64_t *s, char *buf, size_t cap)
{
    size_t n = (size_t)(rnd_next(s) % (cap - 1));
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)(1 + rnd_next(s) % 255);
    buf[n] = '\0';
}

static void random_run(const struct fixture *f, const struct static_root *root, uint64_t seed)
{
    unsigned seen200 = 0, seen301 = 0, seen400 = 0, seen404 = 0;
    for (int iter = 0; iter < 10000; iter++) {
        char target[128], h1[48], h2[48];
        if (rnd_next(&seed) % 4 == 0)
            random_bytes(&seed, target, sizeof(target));
        else
            random_target(&seed, target, sizeof(target));
        random_bytes(&seed, h1, sizeof(h1));
        random_bytes(&seed, h2, sizeof(h2));
        unsigned hdr = (unsigned)(rnd_next(&seed) % 8);
        struct static_request rq = {
            .method = rnd_next(&seed) % 3 ? "GET" : "HEAD",
            .target = target,
            .range = hdr == 1 ? h1 : NULL,
            .if_none_match = hdr == 2 ? h1 : NULL,
            .if_modified_since = hdr == 3 ? h1 : NULL,
            .if_range = hdr == 4 ? h2 : NULL,
        };
        if (hdr == 4)
            rq.range = h1;
        struct static_result r;
        resolve_full(f, root, &rq, &r); /* asserts any fd is inside */
        switch (r.status) {
        case 200:
        case 206:
            seen200++;
            assert_non_null(r.content_type);
            assert_true(r.offset >= 0 && r.length >= 0 && r.offset + r.length <= r.size);
            break;
        case 301:
            seen301++;
            assert_int_equal(r.location[0], '/');
            assert_int_equal(strlen(r.location), strlen(target) + 1);
            break;
        case 400:
            seen400++;
            break;
        case 404:
            seen404++;
            break;
        case 304:
        case 403:
        case 416:
            break;
        default:
            print_error("%s \"%s\": %d\n", rq.method, target, r.status);
            fail();
        }
        static_result_deinit(&r);
    }
    /* the generator reaches every kind of outcome, so the run means something */
    assert_true(seen200 > 50 && seen301 > 10 && seen400 > 1000 && seen404 > 100);
}

static void test_random_targets(void **state)
{
    struct fixture *f = *state;
    uint64_t seed = UINT64_C(0x9e3779b97f4a7c15);
    const char *env = getenv("DOHGATE_TEST_SEED");
    if (env && *env)
        seed = strtoull(env, NULL, 0) | 1;
    int probe = dup(0);
    close(probe);

    random_run(f, &f->root, seed);
    struct static_root walk = f->root;
    walk.beneath = false;
    random_run(f, &walk, seed + 2);

    /* no fd leaked: the lowest free descriptor is the same as before */
    int after = dup(0);
    close(after);
    assert_int_equal(after, probe);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_open_errors),
        cmocka_unit_test(test_get_file),
        cmocka_unit_test(test_mime_types),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_method_not_allowed),
        cmocka_unit_test(test_directories),
        cmocka_unit_test(test_special_files),
        cmocka_unit_test(test_unreadable),
        cmocka_unit_test(test_escapes_refused),
        cmocka_unit_test(test_symlinks_inside),
        cmocka_unit_test(test_fallback_walk),
        cmocka_unit_test(test_malformed_targets),
        cmocka_unit_test(test_if_none_match),
        cmocka_unit_test(test_if_modified_since),
        cmocka_unit_test(test_future_mtime),
        cmocka_unit_test(test_changed_file),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_if_range),
        cmocka_unit_test(test_random_targets),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
