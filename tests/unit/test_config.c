/*
 * Unit tests of the config module, through include/dohgate/config.h only.
 * Files are written to mkstemp() temporaries and removed again by each test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "dohgate/config.h"
#include "dohgate/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ERRLEN 512

/* ---- helpers ----------------------------------------------------------------------------- */

struct tmpfile {
    char path[256];
};

static void tmp_write(struct tmpfile *t, const char *content, size_t len)
{
    const char *dir = getenv("TMPDIR");
    snprintf(t->path, sizeof(t->path), "%s/dg_test_config_XXXXXX", dir != NULL ? dir : "/tmp");
    int fd = mkstemp(t->path);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, content + off, len - off);
        assert_true(w > 0);
        off += (size_t)w;
    }
    assert_int_equal(close(fd), 0);
}

static void tmp_str(struct tmpfile *t, const char *content)
{
    tmp_write(t, content, strlen(content));
}

static void tmp_remove(struct tmpfile *t)
{
    unlink(t->path);
}

/* Load @p content as a config file; returns the result, err filled with the message. */
static int load_str(struct config *cfg, const char *content, char *path_out, char *err)
{
    struct tmpfile t;
    tmp_str(&t, content);
    err[0] = '\0';
    int r = config_load_file(cfg, t.path, err, ERRLEN);
    if (path_out != NULL)
        strcpy(path_out, t.path);
    tmp_remove(&t);
    return r;
}

/* Expect loading @p content to fail with exactly "<path>:<expect>". */
static void expect_file_error(const char *content, const char *expect)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN], path[256], want[ERRLEN + 300];
    assert_int_equal(load_str(cfg, content, path, err), -EINVAL);
    snprintf(want, sizeof(want), "%s:%s", path, expect);
    assert_string_equal(err, want);
    config_free(cfg);
}

/* Run config_load_args() on "dohgate" + the arguments up to the terminating NULL. */
__attribute__((sentinel)) static int run_args(struct config *cfg, char *err, ...)
{
    char *argv[32];
    int argc = 0;
    va_list ap;
    argv[argc++] = (char *)"dohgate";
    va_start(ap, err);
    for (char *a = va_arg(ap, char *); a != NULL; a = va_arg(ap, char *)) {
        assert_true(argc < 31);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return config_load_args(cfg, argc, argv, err, ERRLEN);
}

static unsigned addr_port(const struct dg_addr *a)
{
    if (a->ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)&a->ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_port);
}

/* A config whose upstream does not depend on the host's /etc/resolv.conf. */
static struct config *new_with_upstream(void)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "upstream", "192.0.2.53", "test", 0, err, ERRLEN), 0);
    return cfg;
}

/* config_dump() into a malloc'd string. */
static char *dump_str(const struct config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(config_dump(cfg, f), 0);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    return buf;
}

/* Dump without the "# ..." header lines, which name the source file. */
static char *dump_body(const struct config *cfg)
{
    char *d = dump_str(cfg);
    char *p = d;
    while (strncmp(p, "# dohgate", 9) == 0 || strncmp(p, "# from ", 7) == 0) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        p = nl + 1;
    }
    memmove(d, p, strlen(p) + 1);
    return d;
}

static char *help_str(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print_help(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    return buf;
}

/* Option names as listed by --help ("  --name METAVAR ..."). Returns the count. */
static size_t help_option_names(char names[][64], size_t max)
{
    char *h = help_str();
    size_t n = 0;
    for (char *line = h; line != NULL && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, "  --", 4) == 0 && n < max) {
            size_t k = strcspn(line + 4, " \n");
            assert_true(k < 64);
            memcpy(names[n], line + 4, k);
            names[n][k] = '\0';
            n++;
        }
        line = nl != NULL ? nl + 1 : NULL;
    }
    free(h);
    return n;
}

/* ---- defaults ---------------------------------------------------------------------------- */

static void test_defaults_new(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(cfg->n_listen, 0);
    assert_int_equal(cfg->n_upstream, 0);
    assert_int_equal(cfg->n_doh_path, 0);
    assert_string_equal(cfg->resolv_conf, "/etc/resolv.conf");
    assert_int_equal(cfg->n_cert, 0);
    assert_int_equal(cfg->n_key, 0);
    assert_string_equal(cfg->server_name, "localhost");
    assert_int_equal(cfg->workers, 0);
    assert_int_equal(cfg->max_concurrent_streams, 100);
    /* a browser's parallel requests on one connection, many connections behind one NAT
     * address: the source budgets must not refuse them */
    assert_true(cfg->max_sources_per_conn >= cfg->max_concurrent_streams);
    assert_int_equal(cfg->max_sources_per_conn, 100);
    assert_int_equal(cfg->max_sources_per_client, 1024);
    assert_int_equal(cfg->upstream_timeout_ms, 1500);
    assert_int_equal(cfg->query_timeout_ms, 4000);
    assert_int_equal(cfg->idle_timeout_s, 60);
    assert_int_equal(cfg->handshake_timeout_s, 10);
    assert_int_equal(cfg->max_connections, 10000);
    assert_int_equal(cfg->log_level, DG_LOG_INFO);
    assert_null(cfg->config_file);
    config_free(cfg);
    config_free(NULL);
}

static void test_defaults_finish(void **state)
{
    struct tmpfile rc;
    tmp_str(&rc, "nameserver 192.0.2.1\n");
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "resolv-conf", rc.path, "test", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    tmp_remove(&rc);

    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0].text, "[::]:443");
    assert_int_equal(cfg->listen[0].ss.ss_family, AF_INET6);
    assert_int_equal(addr_port(&cfg->listen[0]), 443);
    assert_int_equal(cfg->listen[0].len, sizeof(struct sockaddr_in6));
    assert_int_equal(cfg->n_doh_path, 1);
    assert_string_equal(cfg->doh_path[0], "/dns-query");
    assert_int_equal(cfg->n_upstream, 1);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.1:53");
    assert_int_equal(cfg->workers, 0); /* left for main to turn into a CPU count */
    config_free(cfg);
}

static void test_finish_keeps_given_lists(void **state)
{
    struct config *cfg = new_with_upstream();
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "listen", "127.0.0.1:8443", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "doh-path", "/q", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "resolv-conf", "/nonexistent/resolv", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:8443");
    assert_int_equal(cfg->n_doh_path, 1);
    assert_string_equal(cfg->doh_path[0], "/q");
    /* resolv-conf is not read when an upstream is given */
    assert_int_equal(cfg->n_upstream, 1);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.53:53");
    config_free(cfg);
}

/* ---- config file ------------------------------------------------------------------------- */

static void test_file_all_options(void **state)
{
    const char *conf = "listen 127.0.0.1:8443\n"
                       "listen [::1]:8443\n"
                       "upstream 192.0.2.1\n"
                       "upstream [2001:db8::1]:5353\n"
                       "resolv-conf /tmp/none\n"
                       "doh-path /dns-query\n"
                       "doh-path /resolve\n"
                       "cert /etc/dohgate/cert.pem\n"
                       "key /etc/dohgate/key.pem\n"
                       "server-name doh.example.net\n"
                       "workers 4\n"
                       "max-concurrent-streams 50\n"
                       "upstream-timeout 700\n"
                       "query-timeout 3000\n"
                       "idle-timeout 30\n"
                       "handshake-timeout 5\n"
                       "max-connections 2000\n"
                       "log-level debug\n";
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN], path[256];
    assert_int_equal(load_str(cfg, conf, path, err), 0);
    assert_string_equal(cfg->config_file, path);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);

    assert_int_equal(cfg->n_listen, 2);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:8443");
    assert_int_equal(cfg->listen[0].ss.ss_family, AF_INET);
    assert_string_equal(cfg->listen[1].text, "[::1]:8443");
    assert_int_equal(cfg->n_upstream, 2);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.1:53");
    assert_string_equal(cfg->upstream[1].text, "[2001:db8::1]:5353");
    assert_int_equal(addr_port(&cfg->upstream[1].addr), 5353);
    assert_string_equal(cfg->resolv_conf, "/tmp/none");
    assert_int_equal(cfg->n_doh_path, 2);
    assert_string_equal(cfg->doh_path[0], "/dns-query");
    assert_string_equal(cfg->doh_path[1], "/resolve");
    assert_int_equal(cfg->n_cert, 1);
    assert_int_equal(cfg->n_key, 1);
    assert_string_equal(cfg->cert_file[0], "/etc/dohgate/cert.pem");
    assert_string_equal(cfg->key_file[0], "/etc/dohgate/key.pem");
    assert_string_equal(cfg->server_name, "doh.example.net");
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->max_concurrent_streams, 50);
    assert_int_equal(cfg->upstream_timeout_ms, 700);
    assert_int_equal(cfg->query_timeout_ms, 3000);
    assert_int_equal(cfg->idle_timeout_s, 30);
    assert_int_equal(cfg->handshake_timeout_s, 5);
    assert_int_equal(cfg->max_connections, 2000);
    assert_int_equal(cfg->log_level, DG_LOG_DEBUG);
    config_free(cfg);
}

static void test_file_comments_quotes_whitespace(void **state)
{
    const char *conf = "\xEF\xBB\xBF# leading BOM and a comment\n"
                       "\n"
                       "   \t\n"
                       "  workers 2  # two\n"
                       "\tserver-name\t\"doh.example.com\"\t# quoted\n"
                       "doh-path \"/a path/with#hash\"\n"
                       "doh-path /x#y\n" /* '#' without whitespace before it: not a comment */
                       "idle-timeout 7\r\n"
                       "log-level warn#\n" /* invalid: "warn#" is one value */
                       "";
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN], path[256];
    /* "/a path/with#hash" has a space: rejected by doh-path validation, at line 6 */
    assert_int_equal(load_str(cfg, conf, path, err), -EINVAL);
    char want[ERRLEN + 300];
    snprintf(want, sizeof(want),
             "%s:6: 'doh-path': '/a path/with#hash' must contain only visible ASCII characters",
             path);
    assert_string_equal(err, want);
    assert_int_equal(cfg->workers, 2);
    assert_string_equal(cfg->server_name, "doh.example.com");
    config_free(cfg);

    cfg = config_new();
    assert_non_null(cfg);
    const char *conf2 = "\xEF\xBB\xBFworkers 3\n"
                        "server-name \"doh.example.com\"   # quoted\n"
                        "resolv-conf \"/tmp/a dir/resolv.conf\"\n"
                        "idle-timeout 7\r\n"
                        "upstream 192.0.2.9 # x\n"
                        "# upstream 192.0.2.10\n"
                        "log-level \"error\"";
    assert_int_equal(load_str(cfg, conf2, path, err), 0);
    assert_int_equal(cfg->workers, 3);
    assert_string_equal(cfg->server_name, "doh.example.com");
    assert_string_equal(cfg->resolv_conf, "/tmp/a dir/resolv.conf");
    assert_int_equal(cfg->idle_timeout_s, 7);
    assert_int_equal(cfg->n_upstream, 1);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.9:53");
    assert_int_equal(cfg->log_level, DG_LOG_ERR); /* last line without a newline */
    config_free(cfg);

    expect_file_error("doh-path /x#y\n", "1: 'doh-path': '/x#y' must not contain '?' or '#'");
    expect_file_error("log-level warn#\n",
                      "1: 'log-level': 'warn#' is not one of error, warn, info, debug");
}

static void test_file_lists_append_scalars_last_wins(void **state)
{
    const char *conf = "upstream 192.0.2.1\n"
                       "workers 2\n"
                       "upstream 192.0.2.2:5300\n"
                       "server-name a.example\n"
                       "upstream ::1\n"
                       "workers 3\n"
                       "server-name b.example\n"
                       "doh-path /one\n"
                       "doh-path /two\n";
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(load_str(cfg, conf, NULL, err), 0);
    assert_int_equal(cfg->n_upstream, 3);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.1:53");
    assert_string_equal(cfg->upstream[1].text, "192.0.2.2:5300");
    assert_string_equal(cfg->upstream[2].text, "[::1]:53");
    assert_int_equal(cfg->workers, 3);
    assert_string_equal(cfg->server_name, "b.example");
    assert_int_equal(cfg->n_doh_path, 2);
    assert_string_equal(cfg->doh_path[1], "/two");

    /* a second file appends to the lists of the first */
    assert_int_equal(load_str(cfg, "upstream 192.0.2.4\n", NULL, err), 0);
    assert_int_equal(cfg->n_upstream, 4);
    assert_string_equal(cfg->upstream[3].text, "192.0.2.4:53");
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_int_equal(cfg->n_doh_path, 2); /* no default added to a given list */
    config_free(cfg);
}

static void test_file_error_unknown_option(void **state)
{
    expect_file_error("# comment\nworkers 2\nlissten [::]:443\n", "3: unknown option 'lissten'");
    expect_file_error("listen=[::]:443\n", "1: unknown option 'listen=[::]:443'");
    expect_file_error("Workers 2\n", "1: unknown option 'Workers'");
}

static void test_file_error_needs_value(void **state)
{
    expect_file_error("workers\n", "1: 'workers' needs a value");
    expect_file_error("\n\nworkers    # comment\n", "3: 'workers' needs a value");
    expect_file_error("server-name \"\"\n", "1: 'server-name' needs a value");
    expect_file_error("upstream \t\r\n", "1: 'upstream' needs a value");
}

static void test_file_error_range(void **state)
{
    expect_file_error("workers 99999\n", "1: 'workers': '99999' is out of range 0..256");
    expect_file_error("workers 257\n", "1: 'workers': '257' is out of range 0..256");
    expect_file_error("max-concurrent-streams 0\n",
                      "1: 'max-concurrent-streams': '0' is out of range 1..1000");
    expect_file_error("max-concurrent-streams 1001\n",
                      "1: 'max-concurrent-streams': '1001' is out of range 1..1000");
    expect_file_error("upstream-timeout 9\n",
                      "1: 'upstream-timeout': '9' is out of range 10..60000");
    expect_file_error("query-timeout 120001\n",
                      "1: 'query-timeout': '120001' is out of range 10..120000");
    expect_file_error("idle-timeout 0\n", "1: 'idle-timeout': '0' is out of range 1..86400");
    expect_file_error("handshake-timeout 301\n",
                      "1: 'handshake-timeout': '301' is out of range 1..300");
    expect_file_error("max-connections 1000001\n",
                      "1: 'max-connections': '1000001' is out of range 1..1000000");
    /* larger than unsigned, and larger than unsigned long */
    expect_file_error("workers 4294967297\n", "1: 'workers': '4294967297' is out of range 0..256");
    expect_file_error("workers 99999999999999999999999\n",
                      "1: 'workers': '99999999999999999999999' is out of range 0..256");

    /* the boundaries themselves are accepted */
    const char *conf = "workers 256\nmax-concurrent-streams 1000\nupstream-timeout 10\n"
                       "query-timeout 120000\nidle-timeout 86400\nhandshake-timeout 1\n"
                       "max-connections 1000000\n";
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(load_str(cfg, conf, NULL, err), 0);
    assert_int_equal(cfg->workers, 256);
    assert_int_equal(cfg->max_concurrent_streams, 1000);
    assert_int_equal(cfg->upstream_timeout_ms, 10);
    assert_int_equal(cfg->query_timeout_ms, 120000);
    assert_int_equal(cfg->idle_timeout_s, 86400);
    assert_int_equal(cfg->handshake_timeout_s, 1);
    assert_int_equal(cfg->max_connections, 1000000);
    assert_int_equal(load_str(cfg, "workers 0\nworkers 007\n", NULL, err), 0);
    assert_int_equal(cfg->workers, 7); /* decimal, not octal */
    config_free(cfg);
}

static void test_file_error_not_a_number(void **state)
{
    static const char *const bad[] = {"-1", "+1", "0x10", "1.5", "2#x", "1e3", "12abc", "abc"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char conf[64], want[128];
        snprintf(conf, sizeof(conf), "workers %s\n", bad[i]);
        snprintf(want, sizeof(want), "1: 'workers': '%s' is not a decimal number", bad[i]);
        expect_file_error(conf, want);
    }
}

static void test_file_error_too_many(void **state)
{
    char conf[2048] = "";
    for (int i = 0; i < DG_CONFIG_MAX_LIST; i++) {
        char line[64];
        snprintf(line, sizeof(line), "upstream 192.0.2.%d\n", i + 1);
        strcat(conf, line);
    }
    /* exactly the maximum loads */
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(load_str(cfg, conf, NULL, err), 0);
    assert_int_equal(cfg->n_upstream, DG_CONFIG_MAX_LIST);
    assert_string_equal(cfg->upstream[15].text, "192.0.2.16:53");
    config_free(cfg);

    strcat(conf, "upstream 192.0.2.200\n");
    expect_file_error(conf, "17: too many 'upstream' entries (max 16)");

    char paths[2048] = "";
    for (int i = 0; i <= DG_CONFIG_MAX_LIST; i++) {
        char line[64];
        snprintf(line, sizeof(line), "doh-path /p%d\n", i);
        strcat(paths, line);
    }
    expect_file_error(paths, "17: too many 'doh-path' entries (max 16)");
}

static void test_file_line_length(void **state)
{
    /* 4096 characters (without the newline) are fine, 4097 are not */
    size_t max = 4096;
    char *conf = malloc(2 * (max + 2) + 32);
    assert_non_null(conf);
    strcpy(conf, "workers 1\n");
    size_t off = strlen(conf);
    conf[off++] = '#';
    memset(conf + off, 'x', max - 1);
    off += max - 1;
    conf[off++] = '\n';
    conf[off] = '\0';
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(load_str(cfg, conf, NULL, err), 0);
    config_free(cfg);

    /* same with a long value: its content reaches the parser intact */
    strcpy(conf, "resolv-conf /");
    off = strlen(conf);
    memset(conf + off, 'r', max - off);
    conf[max] = '\0';
    cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(load_str(cfg, conf, NULL, err), 0);
    assert_int_equal(strlen(cfg->resolv_conf), max - strlen("resolv-conf "));
    config_free(cfg);

    strcpy(conf, "workers 1\n");
    off = strlen(conf);
    conf[off++] = '#';
    memset(conf + off, 'x', max);
    off += max;
    strcpy(conf + off, "\nworkers 2\n");
    expect_file_error(conf, "2: line too long (max 4096 characters)");
    free(conf);
}

static void test_file_error_syntax(void **state)
{
    expect_file_error("server-name \"abc\n", "1: 'server-name': unterminated quoted value");
    expect_file_error("server-name \"abc\"def\n",
                      "1: 'server-name': unexpected 'def' after the closing quote");
    expect_file_error("server-name abc def\n",
                      "1: 'server-name': unexpected 'def' after the value (quote values that "
                      "contain spaces)");
    expect_file_error("workers 1 2 # c\n", "1: 'workers': unexpected '2 # c' after the value "
                                           "(quote values that contain spaces)");
    expect_file_error("server-name \"a\x01\"\n",
                      "1: 'server-name': value contains a control character");
    expect_file_error("server-name a/b\n", "1: 'server-name': 'a/b' must be a host name (visible "
                                           "ASCII, no spaces or '/')");
}

static void test_file_error_nul_byte(void **state)
{
    static const char conf[] = "workers 1\nworkers 2\0junk\n";
    struct tmpfile t;
    tmp_write(&t, conf, sizeof(conf) - 1);
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN], want[ERRLEN + 300];
    assert_int_equal(config_load_file(cfg, t.path, err, ERRLEN), -EINVAL);
    snprintf(want, sizeof(want), "%s:2: NUL byte in line", t.path);
    assert_string_equal(err, want);
    tmp_remove(&t);
    config_free(cfg);
}

static void test_file_error_values(void **state)
{
    expect_file_error("upstream 1.2.3.4:0\n", "1: 'upstream': '1.2.3.4:0' is not a valid address "
                                              "(expected ADDR[:PORT] or [V6]:PORT)");
    expect_file_error("listen 127.0.0.1\n", "1: 'listen': '127.0.0.1' is not a valid address "
                                            "(expected ADDR:PORT, [V6]:PORT)");
    expect_file_error("listen localhost:443\n",
                      "1: 'listen': 'localhost:443' is not a valid address "
                      "(expected ADDR:PORT, [V6]:PORT)");
    expect_file_error("doh-path dns-query\n", "1: 'doh-path': 'dns-query' must start with '/'");
    expect_file_error("doh-path /dns-query?x=1\n",
                      "1: 'doh-path': '/dns-query?x=1' must not contain '?' or '#'");
    expect_file_error("log-level verbose\n",
                      "1: 'log-level': 'verbose' is not one of error, warn, info, debug");
}

/* OPT_ENUM rows: the names map to the enums of config.h, anything else is refused with the
 * list of allowed names, and the dump writes the names back. */
static void test_enum_options(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(cfg->acl_scope, ACL_SCOPE_DOH);
    assert_int_equal(cfg->log_target, LOG_TARGET_STDERR);
    assert_int_equal(cfg->query_log_client, QLOG_CLIENT_TRUNCATE);
    char err[ERRLEN], path[256];
    assert_int_equal(load_str(cfg,
                              "acl-scope all\nlog-target syslog\nquery-log-client none\n"
                              "log-level warn\n",
                              path, err),
                     0);
    assert_int_equal(cfg->acl_scope, ACL_SCOPE_ALL);
    assert_int_equal(cfg->log_target, LOG_TARGET_SYSLOG);
    assert_int_equal(cfg->query_log_client, QLOG_CLIENT_NONE);
    assert_int_equal(cfg->log_level, DG_LOG_WARN);
    assert_int_equal(config_set(cfg, "query-log-client", "full", "t", 0, err, ERRLEN), 0);
    assert_int_equal(cfg->query_log_client, QLOG_CLIENT_FULL);
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    assert_int_equal(config_dump(cfg, out), 0);
    fclose(out);
    assert_non_null(strstr(buf, "\nacl-scope all\n"));
    assert_non_null(strstr(buf, "\nlog-target syslog\n"));
    assert_non_null(strstr(buf, "\nquery-log-client full\n"));
    free(buf);
    config_free(cfg);
    expect_file_error("acl-scope some\n", "1: 'acl-scope': 'some' is not one of doh, all");
    expect_file_error("log-target file\n", "1: 'log-target': 'file' is not one of stderr, syslog");
    expect_file_error("query-log-client Full\n",
                      "1: 'query-log-client': 'Full' is not one of truncate, full, none");
}

static void test_file_open_errors(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(config_load_file(cfg, "/nonexistent/dohgate.conf", err, ERRLEN), -ENOENT);
    assert_string_equal(err, "/nonexistent/dohgate.conf: cannot open: No such file or directory");
    assert_null(cfg->config_file);
    /* a directory opens but cannot be read */
    int r = config_load_file(cfg, "/", err, ERRLEN);
    assert_int_equal(r, -EISDIR);
    assert_string_equal(err, "/:1: read error: Is a directory");
    config_free(cfg);
}

/* ---- config_set -------------------------------------------------------------------------- */

static void test_set_origin_in_messages(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "nope", "1", "env", 0, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "env: unknown option 'nope'");
    assert_int_equal(config_set(cfg, "workers", "300", "x.conf", 9, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "x.conf:9: 'workers': '300' is out of range 0..256");
    assert_int_equal(config_set(cfg, "workers", NULL, "x.conf", 2, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "x.conf:2: 'workers' needs a value");
    /* a small buffer truncates but stays terminated */
    char small[8];
    assert_int_equal(config_set(cfg, "nope", "1", "origin", 0, small, sizeof(small)), -EINVAL);
    assert_string_equal(small, "origin:");
    /* no buffer at all is allowed */
    assert_int_equal(config_set(cfg, "nope", "1", "origin", 0, NULL, 0), -EINVAL);
    assert_int_equal(config_set(cfg, "workers", "5", "origin", 0, NULL, 0), 0);
    assert_int_equal(cfg->workers, 5);
    config_free(cfg);
}

/* ---- command line ------------------------------------------------------------------------ */

static void test_args_basic(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    int r = run_args(cfg, err, "-c", "/etc/dohgate.conf", "--workers", "4", "--check-config",
                     "--server-name=doh.example.org", "--config", "other.conf", "-V", "--log-level",
                     "warn", "--help", "-h", "--version", "--config=x.conf", "-cfile.conf",
                     (char *)NULL);
    assert_int_equal(r, 0);
    assert_int_equal(cfg->workers, 4);
    assert_string_equal(cfg->server_name, "doh.example.org");
    assert_int_equal(cfg->log_level, DG_LOG_WARN);
    assert_null(cfg->config_file); /* -c is main's job */

    /* "--name=value" may carry '=' and spaces in the value */
    assert_int_equal(run_args(cfg, err, "--resolv-conf=/tmp/a=b c", (char *)NULL), 0);
    assert_string_equal(cfg->resolv_conf, "/tmp/a=b c");
    /* later scalar wins */
    assert_int_equal(run_args(cfg, err, "--workers", "1", "--workers=2", (char *)NULL), 0);
    assert_int_equal(cfg->workers, 2);
    assert_int_equal(run_args(cfg, err, (char *)NULL), 0);
    config_free(cfg);
}

static void test_args_lists_replace_file(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(load_str(cfg,
                              "upstream 192.0.2.1\nupstream 192.0.2.2\nlisten 127.0.0.1:443\n"
                              "doh-path /a\n",
                              NULL, err),
                     0);
    int r = run_args(cfg, err, "--upstream", "192.0.2.3", "--upstream=[2001:db8::3]:54",
                     "--doh-path", "/b", (char *)NULL);
    assert_int_equal(r, 0);
    assert_int_equal(cfg->n_upstream, 2);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.3:53");
    assert_string_equal(cfg->upstream[1].text, "[2001:db8::3]:54");
    assert_int_equal(cfg->n_doh_path, 1);
    assert_string_equal(cfg->doh_path[0], "/b");
    /* a list not on the command line keeps the file's entries */
    assert_int_equal(cfg->n_listen, 1);
    assert_string_equal(cfg->listen[0].text, "127.0.0.1:443");
    /* 16 on the command line are fine even though the file had entries */
    char *argv[2 + 2 * DG_CONFIG_MAX_LIST];
    char vals[DG_CONFIG_MAX_LIST + 1][32];
    int argc = 1;
    argv[0] = (char *)"dohgate";
    for (int i = 0; i <= DG_CONFIG_MAX_LIST; i++) {
        snprintf(vals[i], sizeof(vals[i]), "--upstream=192.0.2.%d", 100 + i);
        argv[argc++] = vals[i];
    }
    assert_int_equal(config_load_args(cfg, argc - 1, argv, err, ERRLEN), 0);
    assert_int_equal(cfg->n_upstream, DG_CONFIG_MAX_LIST);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.100:53");
    assert_int_equal(config_load_args(cfg, argc, argv, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "command line: --upstream: too many entries (max 16)");
    config_free(cfg);
}

static void test_args_errors(void **state)
{
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(run_args(cfg, err, "--foo", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --foo: unknown option");
    assert_int_equal(run_args(cfg, err, "--foo=bar", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --foo: unknown option");
    assert_int_equal(run_args(cfg, err, "-x", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: -x: unknown option");
    assert_int_equal(run_args(cfg, err, "--workers", "99999", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --workers: value must be 0..256");
    assert_int_equal(run_args(cfg, err, "--workers=abc", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --workers: 'abc' is not a decimal number");
    assert_int_equal(run_args(cfg, err, "--workers", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --workers: needs a value");
    assert_int_equal(run_args(cfg, err, "--workers=", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --workers: needs a value");
    /* a forgotten value does not swallow the next option */
    assert_int_equal(run_args(cfg, err, "--cert", "--key", "k.pem", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --cert: needs a value");
    assert_int_equal(cfg->n_cert, 0);
    assert_int_equal(run_args(cfg, err, "stray", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: unexpected argument 'stray'");
    assert_int_equal(run_args(cfg, err, "--", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: unexpected argument '--'");
    assert_int_equal(run_args(cfg, err, "--upstream", "[::1", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --upstream: '[::1' is not a valid address "
                             "(expected ADDR[:PORT] or [V6]:PORT)");
    assert_int_equal(run_args(cfg, err, "--doh-path", "x", (char *)NULL), -EINVAL);
    assert_string_equal(err, "command line: --doh-path: 'x' must start with '/'");
    config_free(cfg);
}

/* ---- addresses --------------------------------------------------------------------------- */

/* upstream values: each form, its normalised text/spec, and what is refused */
static void test_parse_upstream(void **state)
{
    (void)state;
    const char *pin = "pin-sha256=7HIpactkIAq2Y49orFOOQKurWxmmSFZhBCoQYcRhJ3Y=";
    static const struct {
        const char *in;
        int proto;
        const char *addr, *name, *authority, *path, *text, *spec;
        size_t pins;
    } ok[] = {
        {"192.0.2.53", DG_UP_DNS, "192.0.2.53:53", "", "", "", "192.0.2.53:53", "192.0.2.53:53", 0},
        {"udp://[2001:db8::1]:5353", DG_UP_DNS, "[2001:db8::1]:5353", "", "", "",
         "[2001:db8::1]:5353", "[2001:db8::1]:5353", 0},
        {"tls://9.9.9.9", DG_UP_TLS, "9.9.9.9:853", "", "", "", "tls://9.9.9.9:853",
         "tls://9.9.9.9:853", 0},
        {"TLS://9.9.9.9:8853#dns.quad9.net.", DG_UP_TLS, "9.9.9.9:8853", "dns.quad9.net", "", "",
         "tls://9.9.9.9:8853#dns.quad9.net", "tls://9.9.9.9:8853#dns.quad9.net", 0},
        {"tls://dns.quad9.net addr=[2620:fe::fe]", DG_UP_TLS, "[2620:fe::fe]:853", "dns.quad9.net",
         "", "", "tls://[2620:fe::fe]:853#dns.quad9.net", "tls://[2620:fe::fe]:853#dns.quad9.net",
         0},
        {"https://dns.quad9.net/dns-query addr=9.9.9.9", DG_UP_HTTPS, "9.9.9.9:443",
         "dns.quad9.net", "dns.quad9.net", "/dns-query", "https://dns.quad9.net/dns-query",
         "https://dns.quad9.net/dns-query addr=9.9.9.9:443", 0},
        {"https://1.1.1.1", DG_UP_HTTPS, "1.1.1.1:443", "", "1.1.1.1", "/dns-query",
         "https://1.1.1.1/dns-query", "https://1.1.1.1/dns-query", 0},
        {"https://[::1]:8443/q?x=1 name=doh.test", DG_UP_HTTPS, "[::1]:8443", "doh.test",
         "[::1]:8443", "/q?x=1", "https://[::1]:8443/q?x=1",
         "https://[::1]:8443/q?x=1 name=doh.test", 0},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct dg_upstream u;
        const char *why = NULL;
        int r = config_parse_upstream(ok[i].in, &u, &why);
        if (r != 0)
            fail_msg("%s: %s", ok[i].in, why);
        assert_int_equal(u.proto, ok[i].proto);
        assert_string_equal(u.addr.text, ok[i].addr);
        assert_string_equal(u.name, ok[i].name);
        assert_string_equal(u.authority, ok[i].authority);
        assert_string_equal(u.path, ok[i].path);
        assert_string_equal(u.text, ok[i].text);
        assert_string_equal(u.spec, ok[i].spec);
        assert_int_equal(u.n_pin, ok[i].pins);
        /* the spec reads back as the same upstream */
        struct dg_upstream again;
        assert_int_equal(config_parse_upstream(u.spec, &again, &why), 0);
        assert_string_equal(again.spec, u.spec);
    }

    /* pins: decoded, kept in order, written back */
    char spec[400];
    snprintf(spec, sizeof(spec), "tls://127.0.0.1:853#doh.test %s %s", pin, pin);
    struct dg_upstream u;
    const char *why = NULL;
    assert_int_equal(config_parse_upstream(spec, &u, &why), 0);
    assert_int_equal(u.n_pin, 2);
    assert_int_equal(u.pin[0][0], 0xec);
    assert_int_equal(u.pin[0][31], 0x76);
    assert_string_equal(u.spec, spec);
    assert_string_equal(u.text, "tls://127.0.0.1:853#doh.test");

    static const struct {
        const char *in, *why;
    } bad[] = {
        {"", "is empty"},
        {"192.0.2.1:0", "is not a valid address"},
        {"dns.quad9.net", "is not a valid address"},
        {"192.0.2.1 name=x.test", "takes no parameters"},
        {"quic://9.9.9.9", "unknown scheme"},
        {"tls://dns.quad9.net", "give addr=ADDR"},
        {"https://dns.quad9.net/dns-query", "give addr=ADDR"},
        {"tls://9.9.9.9 addr=9.9.9.9", "only when its host is a name"},
        {"tls://9.9.9.9#bad_name", "invalid name after '#'"},
        {"tls://9.9.9.9#", "invalid name after '#'"},
        {"tls://9.9.9.9/dns-query", "takes no path"},
        {"https://9.9.9.9/dns query", "unknown parameter"}, /* the space ends the URL */
        {"https://9.9.9.9/a#b", "takes no '#'"},
        {"tls://9.9.9.9:99999", "invalid host"},
        {"tls://-x-.test:853 addr=1.2.3.4", NULL},
        {"tls://9.9.9.9 pin-sha256=abc", "invalid pin-sha256"},
        {"tls://9.9.9.9 pin-sha256=7HIpactkIAq2Y49orFOOQKurWxmmSFZhBCoQYcRhJ3Y", "invalid pin"},
        {"tls://9.9.9.9 port=1", "unknown parameter"},
        {"tls://dns.test addr=dns.test", "invalid addr="},
        {"https://[::1 ", "invalid host"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        int r = config_parse_upstream(bad[i].in, &u, &why);
        if (bad[i].why == NULL) /* accepted: labels may start with '-' for us, CAs decide */
            continue;
        if (r == 0)
            fail_msg("accepted: '%s'", bad[i].in);
        assert_non_null(why);
        if (!strstr(why, bad[i].why))
            fail_msg("'%s': '%s' does not say '%s'", bad[i].in, why, bad[i].why);
    }
    snprintf(spec, sizeof(spec), "tls://9.9.9.9 %s %s %s %s %s", pin, pin, pin, pin, pin);
    assert_int_equal(config_parse_upstream(spec, &u, &why), -EINVAL);
    assert_non_null(strstr(why, "more than 4 pins"));
}

static void test_parse_addr_valid(void **state)
{
    static const struct {
        const char *in;
        unsigned dport;
        const char *text;
        int family;
        unsigned port;
    } ok[] = {
        {"[::1]:443", 0, "[::1]:443", AF_INET6, 443},
        {"[::1]:443", 53, "[::1]:443", AF_INET6, 443},
        {"1.2.3.4", 53, "1.2.3.4:53", AF_INET, 53},
        {"1.2.3.4:1", 0, "1.2.3.4:1", AF_INET, 1},
        {"1.2.3.4:65535", 0, "1.2.3.4:65535", AF_INET, 65535},
        {"1.2.3.4:053", 0, "1.2.3.4:53", AF_INET, 53},
        {"::1", 53, "[::1]:53", AF_INET6, 53},
        {"[::1]", 53, "[::1]:53", AF_INET6, 53},
        {"[0:0:0::1]:53", 0, "[::1]:53", AF_INET6, 53},
        {"[2001:DB8::A]:853", 0, "[2001:db8::a]:853", AF_INET6, 853},
        {"[::ffff:192.0.2.1]:53", 0, "[::ffff:192.0.2.1]:53", AF_INET6, 53},
        {"[::]:443", 0, "[::]:443", AF_INET6, 443},
        {"0.0.0.0:443", 0, "0.0.0.0:443", AF_INET, 443},
        {"[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:65535", 0,
         "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", AF_INET6, 65535},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        struct dg_addr a;
        memset(&a, 0xAA, sizeof(a));
        assert_int_equal(config_parse_addr(ok[i].in, ok[i].dport, &a), 0);
        assert_string_equal(a.text, ok[i].text);
        assert_int_equal(a.ss.ss_family, ok[i].family);
        assert_int_equal(addr_port(&a), ok[i].port);
        if (ok[i].family == AF_INET) {
            assert_int_equal(a.len, sizeof(struct sockaddr_in));
            char buf[INET_ADDRSTRLEN];
            const struct sockaddr_in *sin = (const void *)&a.ss;
            assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
            assert_true(strncmp(ok[i].text, buf, strlen(buf)) == 0);
        } else {
            assert_int_equal(a.len, sizeof(struct sockaddr_in6));
            const struct sockaddr_in6 *sin6 = (const void *)&a.ss;
            assert_int_equal(sin6->sin6_scope_id, 0);
            assert_int_equal(sin6->sin6_flowinfo, 0);
        }
    }
}

static void test_parse_addr_invalid(void **state)
{
    static const struct {
        const char *in;
        unsigned dport;
    } bad[] = {
        {"1.2.3.4:0", 0},
        {"1.2.3.4:0", 53},
        {"1.2.3.4:65536", 0},
        {"1.2.3.4:99999999999999999999", 0},
        {"1.2.3.4", 0}, /* port required without a default */
        {"[::1", 53},
        {"[::1", 0},
        {"::1", 0}, /* bare v6 only with a default port */
        {"::1:53", 0},
        {"[::1]", 0},
        {"[::1]:", 53},
        {"[::1]x", 53},
        {"[::1]:53x", 53},
        {"[::1]]:53", 53},
        {"[]:53", 53},
        {"[1.2.3.4]:53", 53},
        {"1.2.3.4:", 53},
        {"1.2.3.4: 53", 53},
        {"1.2.3.4:+53", 53},
        {"1.2.3.4:-1", 53},
        {"1.2.3.4:0x35", 53},
        {" 1.2.3.4", 53},
        {"1.2.3.4 ", 53},
        {":53", 53},
        {"", 53},
        {"1.2.3", 53},
        {"1.2.3.256", 53},
        {"localhost", 53},
        {"localhost:53", 53},
        {"fe80::1%eth0", 53},
        {"[fe80::1%eth0]:53", 53},
        {"1.2.3.4:53:53", 53},
        {"1.2.3.4", 70000}, /* impossible default port */
        {"[0000:0000:0000:0000:0000:0000:0000:0000:0000:0001]:53", 53},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dg_addr a, before;
        memset(&a, 0x5A, sizeof(a));
        memcpy(&before, &a, sizeof(a));
        if (config_parse_addr(bad[i].in, bad[i].dport, &a) != -EINVAL)
            fail_msg("accepted '%s' (default port %u)", bad[i].in, bad[i].dport);
        /* a failed parse leaves the output alone */
        assert_memory_equal(&a, &before, sizeof(a));
    }
    struct dg_addr a;
    assert_int_equal(config_parse_addr(NULL, 53, &a), -EINVAL);
}

/* ---- resolv.conf ------------------------------------------------------------------------- */

static void test_resolv_conf(void **state)
{
    const char *rc = "# generated by something\n"
                     "; nameserver 192.0.2.99\n"
                     "# nameserver 192.0.2.98\n"
                     "search example.com example.net\n"
                     "options ndots:2 edns0 timeout:1\n"
                     "nameservers 192.0.2.97\n"
                     "nameserver192.0.2.96\n"
                     "nameserver 192.0.2.1\n"
                     "  nameserver\t2001:db8::1   # trailing comment\n"
                     "nameserver fe80::1%eth0\n"
                     "nameserver bogus\n"
                     "nameserver\n"
                     "nameserver 192.0.2.2:5353\n"
                     "nameserver [2001:db8::2]\n"
                     "nameserver 127.0.0.53\r\n"
                     "domain example.org\n"
                     "nameserver ::1";
    struct tmpfile t;
    tmp_str(&t, rc);
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_read_resolv_conf(cfg, t.path), 4);
    assert_int_equal(cfg->n_upstream, 4);
    assert_string_equal(cfg->upstream[0].text, "192.0.2.1:53");
    assert_string_equal(cfg->upstream[1].text, "[2001:db8::1]:53");
    assert_int_equal(cfg->upstream[1].addr.ss.ss_family, AF_INET6);
    assert_string_equal(cfg->upstream[2].text, "127.0.0.53:53");
    assert_string_equal(cfg->upstream[3].text, "[::1]:53");
    assert_int_equal(addr_port(&cfg->upstream[3].addr), 53);
    /* reading again appends */
    assert_int_equal(config_read_resolv_conf(cfg, t.path), 4);
    assert_int_equal(cfg->n_upstream, 8);
    tmp_remove(&t);
    config_free(cfg);

    cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_read_resolv_conf(cfg, "/nonexistent/resolv.conf"), -ENOENT);
    assert_int_equal(cfg->n_upstream, 0);
    config_free(cfg);
}

static void test_resolv_conf_cap(void **state)
{
    char rc[2048] = "";
    for (int i = 0; i < 20; i++) {
        char line[64];
        snprintf(line, sizeof(line), "nameserver 192.0.2.%d\n", i + 1);
        strcat(rc, line);
    }
    struct tmpfile t;
    tmp_str(&t, rc);
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    assert_int_equal(config_set(cfg, "upstream", "198.51.100.1", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_read_resolv_conf(cfg, t.path), DG_CONFIG_MAX_LIST - 1);
    assert_int_equal(cfg->n_upstream, DG_CONFIG_MAX_LIST);
    assert_string_equal(cfg->upstream[15].text, "192.0.2.15:53");
    tmp_remove(&t);
    config_free(cfg);
}

static void test_site_options(void **state)
{
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    /* backend URL forms */
    assert_int_equal(config_set(cfg, "site-backend", "http://127.0.0.1:8080/", "f", 3, err, ERRLEN),
                     0);
    const char *bad[] = {"https://127.0.0.1:8080", "127.0.0.1:8080", "http://localhost:8080",
                         "http://127.0.0.1:8080/app", "http://"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(config_set(cfg, "site-backend", bad[i], "f", 3, err, ERRLEN), -EINVAL);
        assert_non_null(strstr(err, "f:3: "));
    }
    /* header lines */
    assert_int_equal(config_set(cfg, "header", "Alt-Svc:  clear  ", "f", 4, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "header", "X-A: 1", "f", 4, err, ERRLEN), 0);
    const char *badh[] = {"NoColon",           ": v",
                          "Bad Name: v",       "Server: x",
                          "content-length: 1", "Strict-Transport-Security: max-age=1"};
    for (size_t i = 0; i < sizeof(badh) / sizeof(badh[0]); i++)
        assert_int_equal(config_set(cfg, "header", badh[i], "f", 5, err, ERRLEN), -EINVAL);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_string_equal(cfg->backend.text, "127.0.0.1:8080");
    assert_int_equal(cfg->n_header, 2);
    assert_string_equal(cfg->header_name[0], "alt-svc");
    assert_string_equal(cfg->header_value[0], "clear");
    assert_string_equal(cfg->header_name[1], "x-a");
    assert_string_equal(cfg->hsts_value, "max-age=31536000");
    assert_int_equal(cfg->site_max_body, 1u << 20);
    assert_int_equal(cfg->request_timeout_s, 10);
    config_free(cfg);

    /* site-root and site-backend exclude each other; hsts 0 turns the header off */
    cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "site-root", "/srv", "f", 1, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "site-backend", "http://[::1]:80", "f", 2, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_non_null(strstr(err, "site-root and site-backend"));
    config_free(cfg);
    cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "hsts-max-age", "0", "f", 1, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "http-listen", "127.0.0.1:80", "f", 1, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_null(cfg->hsts_value);
    assert_int_equal(cfg->n_http_listen, 1);
    config_free(cfg);
}

static void test_finish_no_upstream(void **state)
{
    struct tmpfile t;
    tmp_str(&t, "# nameserver 192.0.2.1\nnameserver fe80::1%eth0\noptions rotate\n");
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN], want[ERRLEN + 300];
    assert_int_equal(config_set(cfg, "resolv-conf", t.path, "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    snprintf(want, sizeof(want), "no upstream: give --upstream or a nameserver in %s", t.path);
    assert_string_equal(err, want);
    tmp_remove(&t);
    config_free(cfg);

    cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_set(cfg, "resolv-conf", "/nonexistent/r", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "no upstream: give --upstream or a nameserver in /nonexistent/r "
                             "(No such file or directory)");
    config_free(cfg);
}

/* ---- cross-option checks ----------------------------------------------------------------- */

static void test_finish_cert_key(void **state)
{
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "cert", "/nonexistent/c.pem", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "cert is given without key: give both or neither");
    /* files are not opened here: nonexistent paths pass once both are given */
    assert_int_equal(config_set(cfg, "key", "/nonexistent/k.pem", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    config_free(cfg);

    cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "key", "/k.pem", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "key is given without cert: give both or neither");
    config_free(cfg);

    /* several pairs (SNI): counts must match, order pairs them */
    cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "cert", "/a.crt", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "key", "/a.key", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "cert", "/b.crt", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "2 cert but 1 key entries: they pair up in order, one key per cert");
    assert_int_equal(config_set(cfg, "key", "/b.key", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_int_equal(cfg->n_cert, 2);
    assert_string_equal(cfg->cert_file[1], "/b.crt");
    assert_string_equal(cfg->key_file[1], "/b.key");
    assert_int_equal(cfg->cert_check_interval_s, 5);
    assert_int_equal(config_set(cfg, "cert-check-interval", "0", "t", 0, err, ERRLEN), 0);
    assert_int_equal(cfg->cert_check_interval_s, 0);
    assert_int_equal(config_set(cfg, "cert-check-interval", "3601", "t", 0, err, ERRLEN), -EINVAL);
    config_free(cfg);
}

static void test_user_group(void **state)
{
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "user", "root;rm", "t", 0, err, ERRLEN), -EINVAL);
    assert_int_equal(config_set(cfg, "group", "dohgate", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "group is given without user: give user too");
    assert_int_equal(config_set(cfg, "user", "dohgate", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_string_equal(cfg->user, "dohgate");
    assert_int_equal(cfg->shutdown_timeout_s, 5);
    assert_int_equal(config_set(cfg, "shutdown-timeout", "0", "t", 0, err, ERRLEN), -EINVAL);
    config_free(cfg);
}

static void test_finish_timeouts(void **state)
{
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "upstream-timeout", "2000", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_set(cfg, "query-timeout", "1999", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "query-timeout (1999 ms) must be >= upstream-timeout (2000 ms)");
    assert_int_equal(config_set(cfg, "query-timeout", "2000", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    config_free(cfg);

    /* the default query-timeout is below a large upstream-timeout */
    cfg = new_with_upstream();
    assert_int_equal(config_set(cfg, "upstream-timeout", "5000", "t", 0, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_string_equal(err, "query-timeout (4000 ms) must be >= upstream-timeout (5000 ms)");
    config_free(cfg);
}

/* ---- dump and help ----------------------------------------------------------------------- */

static void test_dump_round_trip(void **state)
{
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    int r = run_args(cfg, err, "--listen=[::1]:8443", "--listen", "127.0.0.1:8443", "--upstream",
                     "[2001:db8::5]:5353", "--doh-path=/q", "--resolv-conf", "/tmp/with space/#r",
                     "--workers=3", "--log-level", "debug", "--cert=c.pem", "--key=k.pem",
                     (char *)NULL);
    assert_int_equal(r, 0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    char *d1 = dump_str(cfg);
    assert_non_null(strstr(d1, "\nworkers 3\n"));
    assert_non_null(strstr(d1, "\nlisten [::1]:8443\nlisten 127.0.0.1:8443\n"));
    assert_non_null(strstr(d1, "\nresolv-conf \"/tmp/with space/#r\"\n"));
    assert_non_null(strstr(d1, "\nlog-level debug\n"));
    assert_non_null(strstr(d1, "\nquery-timeout 4000\n"));

    struct tmpfile t;
    tmp_str(&t, d1);
    struct config *cfg2 = config_new();
    assert_non_null(cfg2);
    assert_int_equal(config_load_file(cfg2, t.path, err, ERRLEN), 0);
    assert_int_equal(config_finish(cfg2, err, ERRLEN), 0);
    tmp_remove(&t);
    char *b1 = dump_body(cfg);
    char *b2 = dump_body(cfg2);
    assert_string_equal(b1, b2);
    assert_int_equal(cfg2->n_listen, 2);
    assert_int_equal(cfg2->workers, 3);
    free(b1);
    free(b2);
    free(d1);
    config_free(cfg2);
    config_free(cfg);

    /* unset strings are comments, so the dump of defaults still loads */
    cfg = config_new();
    assert_non_null(cfg);
    d1 = dump_str(cfg);
    assert_non_null(strstr(d1, "\n# user (not set)\n"));
    assert_non_null(strstr(d1, "\n# cert (none)\n"));
    assert_non_null(strstr(d1, "\n# upstream (none)\n"));
    free(d1);
    config_free(cfg);
}

static void test_dump_write_error(void **state)
{
    struct config *cfg = new_with_upstream();
    FILE *f = fopen("/dev/full", "w");
    assert_non_null(f); /* /dev/full is on every Linux machine */
    assert_int_equal(config_dump(cfg, f), -EIO);
    fclose(f);
    config_free(cfg);
}

/* Multi-word values (local-record, forward-zone, policy): the rest of the line, a comment
 * after whitespace cut off but not a '#' inside quotes; --check-config's dump reads back the
 * same. */
static void test_words_values(void **state)
{
    (void)state;
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    const char *text = "local-record txt.home.arpa. TXT \"hello # world\"  # a comment\n"
                       "forward-zone corp.example 10.0.0.53 10.0.0.54   # office\n"
                       "blocklist ads=/nonexistent/ads.txt\npolicy kids ads\n";
    if (load_str(cfg, text, NULL, err) != 0)
        fail_msg("%s", err);
    if (config_finish(cfg, err, ERRLEN) != 0)
        fail_msg("%s", err);
    assert_int_equal(cfg->n_local_record, 1);
    assert_string_equal(cfg->local_record[0], "txt.home.arpa. TXT \"hello # world\"");
    assert_string_equal(cfg->forward_zone[0], "corp.example 10.0.0.53 10.0.0.54");
    assert_string_equal(cfg->policy[0], "kids ads");
    config_free(cfg);

    cfg = new_with_upstream();
    if (load_str(cfg,
                 "local-record txt.home.arpa. TXT \"a # b\"\nforward-zone x.example "
                 "192.0.2.1\n",
                 NULL, err) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_int_equal(cfg->fwd[0].n_up, 1);
    char *dump = dump_body(cfg);
    struct config *again = new_with_upstream();
    if (load_str(again, dump, NULL, err) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_finish(again, err, ERRLEN), 0);
    assert_string_equal(again->local_record[0], "txt.home.arpa. TXT \"a # b\"");
    assert_string_equal(again->forward_zone[0], "x.example 192.0.2.1");
    free(dump);
    config_free(again);
    /* ldns would wrap this TTL to 1215752191: refused here */
    assert_int_equal(config_set(cfg, "local-record", "x.home.arpa. 99999999999 A 192.0.2.1", "t", 3,
                                err, ERRLEN),
                     -EINVAL);
    assert_non_null(strstr(err, "t:3: 'local-record': "));
    assert_non_null(strstr(err, "has a TTL over 2147483647"));
    assert_int_equal(config_set(cfg, "local-record", "x.home.arpa. 2147483647 IN A 192.0.2.1", "t",
                                4, err, ERRLEN),
                     0);
    config_free(cfg);

    /* a cross-reference error names the entry's own line, not the option's last one */
    cfg = new_with_upstream();
    assert_int_equal(load_str(cfg,
                              "blocklist ads=/x\npolicy kids ads\npolicy-client tab kids\n"
                              "policy-client tab2 nope\npolicy-client tab3 kids\n",
                              NULL, err),
                     0);
    assert_int_equal(config_finish(cfg, err, ERRLEN), -EINVAL);
    assert_non_null(strstr(err, ":4: policy-client 'tab2 nope': no policy 'nope'"));
    config_free(cfg);
}

static void test_help(void **state)
{
    char *h = help_str();
    assert_non_null(strstr(h, "  --listen ADDR:PORT "));
    assert_non_null(strstr(h, "default: [::]:443"));
    assert_non_null(strstr(h, "--upstream-timeout MS"));
    assert_non_null(strstr(h, "default: 1500, range 10..60000"));
    assert_non_null(strstr(h, "default: /dns-query"));
    free(h);

    char names[128][64];
    size_t n = help_option_names(names, 128);
    assert_int_equal(n, 97);
    /* every option in --help is accepted by config_set */
    struct config *cfg = config_new();
    assert_non_null(cfg);
    char err[ERRLEN];
    for (size_t i = 0; i < n; i++) {
        int r = config_set(cfg, names[i], "", "t", 0, err, ERRLEN);
        assert_int_equal(r, -EINVAL);
        char want[128];
        snprintf(want, sizeof(want), "t: '%s' needs a value", names[i]);
        assert_string_equal(err, want);
    }
    config_free(cfg);
}

/* ---- the manual page (config_print_mdoc, for dohgate.conf(5)) ---------------------------- */

static char *mdoc_str(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    config_print_mdoc(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(buf);
    return buf;
}

/* The entry of option @p name: from its ".It Cm name" line to the next ".It" or ".El". */
static char *mdoc_entry(const char *page, const char *name)
{
    char head[96];
    snprintf(head, sizeof(head), "\n.It Cm %s ", name);
    const char *p = strstr(page, head);
    if (p == NULL) {
        snprintf(head, sizeof(head), "\n.It Cm %s\n", name);
        p = strstr(page, head);
    }
    assert_non_null(p);
    p++;
    const char *end = strstr(p + 1, "\n.It ");
    if (end == NULL)
        end = strstr(p, "\n.El\n");
    assert_non_null(end);
    return strndup(p, (size_t)(end - p) + 1); /* with its last newline */
}

static void test_mdoc(void **state)
{
    char *m = mdoc_str();
    /* one tag list, and every option of --help in it exactly once, in name order */
    assert_int_equal(strncmp(m, ".Bl -tag -width Ds\n", 19), 0);
    size_t len = strlen(m);
    assert_true(len > 6 && strcmp(m + len - 4, ".El\n") == 0);
    char names[128][64];
    size_t n = help_option_names(names, 128);
    assert_int_equal(n, 97);
    size_t items = 0;
    char prev[64] = "";
    for (const char *p = m; (p = strstr(p, "\n.It Cm ")) != NULL; p++, items++) {
        char name[64];
        size_t k = strcspn(p + 8, " \n");
        assert_true(k < sizeof(name));
        memcpy(name, p + 8, k);
        name[k] = '\0';
        assert_true(strcmp(prev, name) < 0);
        memcpy(prev, name, k + 1);
    }
    assert_int_equal(items, n);
    for (size_t i = 0; i < n; i++) {
        char *e = mdoc_entry(m, names[i]);
        free(e);
    }

    /* a range and a default for numbers; restart-only where a reload cannot change it */
    char *e = mdoc_entry(m, "workers");
    assert_non_null(strstr(e, ".It Cm workers Ar N\n"));
    assert_non_null(strstr(e, "Worker threads; 0 = one per CPU.\n"));
    assert_non_null(strstr(e, "The default is 0; the range is 0 to 256.\n"));
    assert_non_null(strstr(e, "Restart-only"));
    free(e);
    e = mdoc_entry(m, "upstream-timeout");
    assert_non_null(strstr(e, "The default is 1500; the range is 10 to 60000.\n"));
    assert_null(strstr(e, "Restart-only"));
    free(e);
    /* enum values as keywords; a literal default, a file default */
    e = mdoc_entry(m, "acl-scope");
    assert_non_null(strstr(e, ".It Cm acl-scope Cm doh | all\n"));
    assert_non_null(strstr(e, "The default is\n.Cm doh .\n"));
    free(e);
    e = mdoc_entry(m, "listen");
    assert_non_null(strstr(e, "The default is\n.Ql [::]:443 .\n"));
    assert_non_null(strstr(e, "Restart-only"));
    free(e);
    e = mdoc_entry(m, "resolv-conf");
    assert_non_null(strstr(e, ".Pa /etc/resolv.conf .\n"));
    free(e);
    /* sizes: the bound in the option's unit; list lengths */
    e = mdoc_entry(m, "cache-size");
    assert_non_null(strstr(e, "at most 64G."));
    assert_non_null(strstr(e, "The default is 64M.\n"));
    free(e);
    e = mdoc_entry(m, "blocklist");
    assert_non_null(strstr(e, ".It Cm blocklist Ar [NAME=]FILE\n"));
    assert_non_null(strstr(e, "At most 32 entries.\n"));
    free(e);
    /* the metavar's shell quotes dropped, "[LIST…]" optional, '…' escaped to ASCII */
    e = mdoc_entry(m, "policy");
    assert_non_null(strstr(e, ".It Cm policy Ar NAME Op Ar LIST\\[u2026]\n"));
    assert_non_null(strstr(e, "Repeatable.\n")); /* its help does not say so */
    free(e);
    /* a sentence inside the help starts a line; an option name is not capitalised */
    e = mdoc_entry(m, "ticket-key-rotation");
    assert_non_null(strstr(e, "0 = never.\nNot used with ticket-key-file.\n"));
    free(e);
    /* "the same" names its referent, which name order does not put before it */
    e = mdoc_entry(m, "max-body-buffer");
    assert_non_null(strstr(e, "The same as max-body-buffer-per-connection, for the whole"));
    free(e);
    e = mdoc_entry(m, "backend-timeout");
    assert_non_null(strstr(e, "\nsite-backend: connect timeout"));
    free(e);

    /* roff safety: ASCII only, no text line that roff could take for a request, no raw
     * backslash but our escapes, lines of at most 80 bytes */
    for (const char *line = m; *line;) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl);
        size_t k = (size_t)(nl - line);
        assert_true(k <= 80);
        if (line[0] == '\'')
            fail_msg("line starts with a quote: %.*s", (int)k, line);
        if (line[0] == '.')
            assert_true(k >= 3 && isupper((unsigned char)line[1])); /* a macro: .It .Cm .El */
        for (size_t i = 0; i < k; i++) {
            assert_true((unsigned char)line[i] < 0x80 && line[i] != '\t');
            if (line[i] == '\\')
                assert_true(line[i + 1] == 'e' || line[i + 1] == '&' || line[i + 1] == '[');
        }
        line = nl + 1;
    }
    free(m);
}

/* ---- the sample config in conf/ ---------------------------------------------------------- */

static FILE *open_sample(char *path, size_t cap)
{
    const char *src = getenv("SRC_DIR");
    if (src != NULL) {
        snprintf(path, cap, "%s/conf/dohgate.conf", src);
        FILE *f = fopen(path, "r");
        if (f != NULL)
            return f;
    }
    /* __FILE__ is absolute in a CMake build and relative to the source root otherwise. */
    snprintf(path, cap, "%s", __FILE__);
    char *slash = strrchr(path, '/');
    if (slash != NULL) {
        snprintf(slash, cap - (size_t)(slash - path), "/../../conf/dohgate.conf");
        FILE *f = fopen(path, "r");
        if (f != NULL)
            return f;
    }
    static const char *const guesses[] = {"conf/dohgate.conf", "../conf/dohgate.conf",
                                          "../../conf/dohgate.conf", "../../../conf/dohgate.conf"};
    for (size_t i = 0; i < sizeof(guesses) / sizeof(guesses[0]); i++) {
        snprintf(path, cap, "%s", guesses[i]);
        FILE *f = fopen(path, "r");
        if (f != NULL)
            return f;
    }
    return NULL;
}

static void test_sample_conf(void **state)
{
    char path[1024];
    FILE *f = open_sample(path, sizeof(path));
    if (f == NULL)
        fail_msg("conf/dohgate.conf not found (ctest sets SRC_DIR to the source tree)");
    char text[32768];
    size_t len = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    assert_true(len > 0 && len < sizeof(text) - 1);
    text[len] = '\0';

    /* it loads, and to exactly the defaults */
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    struct config *dflt = new_with_upstream();
    if (config_load_file(cfg, path, err, ERRLEN) != 0)
        fail_msg("%s", err);
    assert_int_equal(config_finish(cfg, err, ERRLEN), 0);
    assert_int_equal(config_finish(dflt, err, ERRLEN), 0);
    char *a = dump_body(cfg), *b = dump_body(dflt);
    assert_string_equal(a, b);

    /* every option is documented as a commented-out "# name value" line, and the line shows
     * the default where there is one */
    char names[128][64];
    size_t n = help_option_names(names, 128);
    assert_int_equal(n, 97);
    for (size_t i = 0; i < n; i++) {
        char needle[80];
        snprintf(needle, sizeof(needle), "\n#%s ", names[i]);
        if (strstr(text, needle) == NULL)
            fail_msg("option '%s' is missing from %s", names[i], path);
    }
    for (char *line = b; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        *nl = '\0';
        if (line[0] != '#' && strncmp(line, "upstream ", 9) != 0) {
            char needle[300];
            snprintf(needle, sizeof(needle), "\n#%s\n", line);
            if (strstr(text, needle) == NULL)
                fail_msg("default line '#%s' is missing from %s", line, path);
        }
        line = nl + 1;
    }
    free(a);
    free(b);
    config_free(cfg);
    config_free(dflt);
}

static void test_size_and_bool(void **state)
{
    char err[ERRLEN];
    struct config *cfg = new_with_upstream();
    assert_true(cfg->serve_stale);
    assert_int_equal(cfg->cache_size, (size_t)64 << 20);
    assert_int_equal(config_set(cfg, "cache-size", "512K", "t", 0, err, ERRLEN), 0);
    assert_int_equal(cfg->cache_size, (size_t)512 << 10);
    assert_int_equal(config_set(cfg, "cache-size", "2g", "t", 0, err, ERRLEN), 0);
    assert_int_equal(cfg->cache_size, (size_t)2 << 30);
    assert_int_equal(config_set(cfg, "cache-size", "1000", "t", 0, err, ERRLEN), 0);
    assert_int_equal(cfg->cache_size, 1000);
    assert_int_equal(config_set(cfg, "cache-size", "0", "t", 0, err, ERRLEN), 0);
    assert_int_equal(cfg->cache_size, 0);
    assert_int_equal(config_set(cfg, "cache-size", "12MB", "f.conf", 3, err, ERRLEN), -EINVAL);
    assert_non_null(strstr(err, "f.conf:3: "));
    assert_non_null(strstr(err, "is not a size"));
    assert_int_equal(config_set(cfg, "cache-size", "M", "t", 0, err, ERRLEN), -EINVAL);
    assert_int_equal(config_set(cfg, "cache-size", "65G", "t", 0, err, ERRLEN), -EINVAL);
    assert_non_null(strstr(err, "larger than 64G"));
    assert_int_equal(config_set(cfg, "cache-size", "99999999999999999999999", "t", 0, err, ERRLEN),
                     -EINVAL);
    assert_int_equal(cfg->cache_size, 0); /* failed sets leave the value alone */
    assert_int_equal(config_set(cfg, "serve-stale", "no", "t", 0, err, ERRLEN), 0);
    assert_false(cfg->serve_stale);
    assert_int_equal(config_set(cfg, "serve-stale", "on", "t", 0, err, ERRLEN), 0);
    assert_true(cfg->serve_stale);
    assert_int_equal(config_set(cfg, "serve-stale", "maybe", "t", 0, err, ERRLEN), -EINVAL);
    assert_non_null(strstr(err, "is not yes or no"));
    assert_int_equal(config_set(cfg, "cache-servfail-ttl", "31", "t", 0, err, ERRLEN), -EINVAL);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_new),
        cmocka_unit_test(test_defaults_finish),
        cmocka_unit_test(test_finish_keeps_given_lists),
        cmocka_unit_test(test_file_all_options),
        cmocka_unit_test(test_file_comments_quotes_whitespace),
        cmocka_unit_test(test_file_lists_append_scalars_last_wins),
        cmocka_unit_test(test_file_error_unknown_option),
        cmocka_unit_test(test_file_error_needs_value),
        cmocka_unit_test(test_file_error_range),
        cmocka_unit_test(test_file_error_not_a_number),
        cmocka_unit_test(test_file_error_too_many),
        cmocka_unit_test(test_file_line_length),
        cmocka_unit_test(test_file_error_syntax),
        cmocka_unit_test(test_file_error_nul_byte),
        cmocka_unit_test(test_file_error_values),
        cmocka_unit_test(test_file_open_errors),
        cmocka_unit_test(test_set_origin_in_messages),
        cmocka_unit_test(test_args_basic),
        cmocka_unit_test(test_args_lists_replace_file),
        cmocka_unit_test(test_args_errors),
        cmocka_unit_test(test_parse_addr_valid),
        cmocka_unit_test(test_parse_addr_invalid),
        cmocka_unit_test(test_resolv_conf),
        cmocka_unit_test(test_resolv_conf_cap),
        cmocka_unit_test(test_site_options),
        cmocka_unit_test(test_finish_no_upstream),
        cmocka_unit_test(test_finish_cert_key),
        cmocka_unit_test(test_user_group),
        cmocka_unit_test(test_finish_timeouts),
        cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_dump_write_error),
        cmocka_unit_test(test_parse_upstream),
        cmocka_unit_test(test_words_values),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_mdoc),
        cmocka_unit_test(test_enum_options),
        cmocka_unit_test(test_sample_conf),
        cmocka_unit_test(test_size_and_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
