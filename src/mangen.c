/*
 * dohgate-mangen: the build's generator of the manual pages (docs/man/CMakeLists.txt), not part
 * of the core library nor installed. `dohgate-mangen TEMPLATE OUTPUT` copies TEMPLATE to OUTPUT,
 * putting config_print_mdoc()'s option list in place of a line that is exactly `@OPTIONS@` and
 * DOHGATE_VERSION in place of every `@VERSION@`, so dohgate.conf(5) is written from the same
 * option table as --help and cannot drift from it.
 *
 * OUTPUT is written beside itself and renamed into place: a failed run leaves no half page that
 * make would take as up to date. Exit status 0, or 1 with one line on stderr.
 */
#include "dohgate/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "dohgate-mangen: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

/* One template line, @VERSION@ replaced. */
static void put_line(FILE *out, const char *line)
{
    static const char tag[] = "@VERSION@";
    for (const char *p; (p = strstr(line, tag)) != NULL; line = p + sizeof(tag) - 1) {
        fwrite(line, 1, (size_t)(p - line), out);
        fputs(DOHGATE_VERSION, out);
    }
    fputs(line, out);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: dohgate-mangen TEMPLATE OUTPUT\n");
        return 2;
    }
    FILE *in = fopen(argv[1], "r");
    if (!in)
        return fail("cannot open", argv[1]);
    size_t n = strlen(argv[2]);
    char *tmp = malloc(n + 5);
    if (!tmp) {
        fclose(in);
        return fail("out of memory for", argv[2]);
    }
    memcpy(tmp, argv[2], n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        int rc = fail("cannot create", tmp);
        fclose(in);
        free(tmp);
        return rc;
    }
    char *line = NULL;
    size_t cap = 0;
    int options = 0;
    while (getline(&line, &cap, in) >= 0) {
        if (strcmp(line, "@OPTIONS@\n") == 0 || strcmp(line, "@OPTIONS@") == 0) {
            config_print_mdoc(out);
            options++;
        } else {
            put_line(out, line);
        }
    }
    int rc = 0;
    if (ferror(in))
        rc = fail("cannot read", argv[1]);
    free(line);
    fclose(in);
    /* a template that asks for the options more than once is a mistake of ours */
    if (rc == 0 && options > 1) {
        fprintf(stderr, "dohgate-mangen: %s: @OPTIONS@ more than once\n", argv[1]);
        rc = 1;
    }
    int werr = ferror(out);
    if ((fclose(out) != 0 || werr) && rc == 0)
        rc = fail("cannot write", tmp);
    if (rc == 0 && rename(tmp, argv[2]) != 0)
        rc = fail("cannot rename to", argv[2]);
    if (rc != 0)
        remove(tmp);
    free(tmp);
    return rc;
}
