/* libFuzzer target: static_resolve() (request-target decoding, confinement, conditional
 * requests, byte ranges) against a small document root made at start-up, holding files, a
 * sub-directory, a symlink inside and one pointing outside the root, and a file outside it.
 * Input: NUL-separated fields method, target, If-None-Match, If-Modified-Since, Range, If-Range
 * (missing fields are absent headers). Checks that nothing outside the root is ever served and
 * that a served range lies inside the file. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dohgate/static.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct static_root root, walk_root;
static char outside_ino[64];

static void put(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

static void setup(void)
{
    char tmpl[] = "/tmp/fuzz-static.XXXXXX";
    char *d = mkdtemp(tmpl);
    if (!d)
        abort();
    char p[256];
    snprintf(p, sizeof(p), "%s/root", d);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/root/sub", d);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/root/index.html", d);
    put(p, "<p>index</p>\n");
    snprintf(p, sizeof(p), "%s/root/sub/index.html", d);
    put(p, "<p>sub</p>\n");
    snprintf(p, sizeof(p), "%s/root/a.txt", d);
    put(p, "0123456789abcdefghijklmnopqrstuvwxyz\n");
    snprintf(p, sizeof(p), "%s/root/empty", d);
    put(p, "");
    snprintf(p, sizeof(p), "%s/secret", d);
    put(p, "SECRET\n");
    struct stat st;
    if (stat(p, &st) != 0)
        abort();
    snprintf(outside_ino, sizeof(outside_ino), "%lx", (unsigned long)st.st_ino);
    char l[256];
    snprintf(l, sizeof(l), "%s/root/out", d);
    if (symlink("../secret", l) != 0)
        abort();
    snprintf(l, sizeof(l), "%s/root/in", d);
    if (symlink("a.txt", l) != 0)
        abort();
    snprintf(p, sizeof(p), "%s/root", d);
    if (static_root_open(&root, p, NULL, 0) != 0)
        abort();
    walk_root = root;
    walk_root.beneath = false; /* the fallback walk, same root fd */
}

static const char *field(const uint8_t **p, const uint8_t *end, char *buf, size_t cap)
{
    if (*p >= end)
        return NULL;
    size_t n = 0;
    while (*p < end && **p != 0 && n + 1 < cap)
        buf[n++] = (char)*(*p)++;
    buf[n] = '\0';
    while (*p < end && **p != 0)
        (*p)++; /* the rest of an over-long field */
    if (*p < end)
        (*p)++;
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    static char f[6][STATIC_TARGET_MAX + 64];
    const uint8_t *p = data, *end = data + size;
    const char *v[6];
    for (int i = 0; i < 6; i++)
        v[i] = field(&p, end, f[i], sizeof(f[i]));
    if (!v[0] || !v[1])
        return 0;
    const struct static_request rq = {v[0], v[1], v[2], v[3], v[4], v[5]};
    for (int pass = 0; pass < 2; pass++) {
        struct static_result r;
        if (static_resolve(pass ? &walk_root : &root, &rq, &r) != 0)
            abort();
        if (r.fd >= 0) {
            struct stat st;
            if (fstat(r.fd, &st) != 0 || !S_ISREG(st.st_mode))
                abort();
            char ino[64];
            snprintf(ino, sizeof(ino), "%lx", (unsigned long)st.st_ino);
            if (strcmp(ino, outside_ino) == 0)
                abort(); /* served the file outside the root */
            if (r.offset < 0 || r.length < 0 || r.offset + r.length > st.st_size)
                abort();
        }
        if ((r.status == 200 || r.status == 206) && !r.head && r.fd < 0)
            abort();
        static_result_deinit(&r);
    }
    return 0;
}
