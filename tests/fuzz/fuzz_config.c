/*
 * libFuzzer target for the config file parser: the input is one config file. It is loaded on
 * top of a config that already has an upstream and a harmless resolv-conf, so config_finish()
 * never reads the host's /etc/resolv.conf.
 *
 * Beyond "no crash, no leak", a file that loads and finishes must survive a round trip:
 * config_dump() of it, loaded again, dumps to the same text.
 */
#include "dohgate/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An anonymous in-memory file; its /proc/self/fd path is what config_load_file() opens. */
static int mem_file(const void *data, size_t size, char *path, size_t cap)
{
    int fd = (int)syscall(SYS_memfd_create, "fuzz_config", 0U);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, (const char *)data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

static struct config *base_config(void)
{
    char err[256];
    struct config *cfg = config_new();
    if (cfg == NULL)
        return NULL;
    if (config_set(cfg, "upstream", "127.0.0.1", "fuzz", 0, err, sizeof(err)) != 0 ||
        config_set(cfg, "resolv-conf", "/dev/null", "fuzz", 0, err, sizeof(err)) != 0) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Dump without the header comments (they name the /proc/self/fd path). */
static char *dump_body(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        abort();
    if (config_dump(cfg, f) != 0)
        abort();
    fclose(f);
    char *p = buf;
    while (strncmp(p, "# dohgate", 9) == 0 || strncmp(p, "# from ", 7) == 0)
        p = strchr(p, '\n') + 1;
    memmove(buf, p, strlen(p) + 1);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64], err[512];
    int fd = mem_file(data, size, path, sizeof(path));
    if (fd < 0)
        return 0;
    struct config *cfg = base_config();
    if (cfg == NULL) {
        close(fd);
        return 0;
    }
    err[0] = '\0';
    int r = config_load_file(cfg, path, err, sizeof(err));
    close(fd);
    if (r != 0 && err[0] == '\0')
        abort(); /* every failure must explain itself */
    if (r == 0 && config_finish(cfg, err, sizeof(err)) == 0) {
        char *d1 = dump_body(cfg);
        int fd2 = mem_file(d1, strlen(d1), path, sizeof(path));
        struct config *cfg2 = config_new();
        if (fd2 >= 0 && cfg2 != NULL) {
            /* the dump already holds the upstream and resolv-conf lines */
            if (config_load_file(cfg2, path, err, sizeof(err)) != 0 ||
                config_finish(cfg2, err, sizeof(err)) != 0) {
                fprintf(stderr, "dump does not load again: %s\n%s", err, d1);
                abort();
            }
            char *d2 = dump_body(cfg2);
            if (strcmp(d1, d2) != 0) {
                fprintf(stderr, "round trip differs:\n%s---\n%s", d1, d2);
                abort();
            }
            free(d2);
        }
        if (fd2 >= 0)
            close(fd2);
        config_free(cfg2);
        free(d1);
    }
    config_free(cfg);
    return 0;
}
