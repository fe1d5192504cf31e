/*
 * Unit tests for lists.h: the three formats of domain lists (hosts lines, one domain per line,
 * the adblock subset), comments and CRLF, the adblock rules counted as skipped, allow flags,
 * every error message with its line number; hosts files with aliases and IPv6; a callback error
 * stopping the parse; lists_read_file().
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dohgate/dnswire.h"
#include "dohgate/lists.h"

/* What the callbacks saw: names as text joined by ',', allow entries prefixed by '+', hosts
 * entries as "ADDR=NAME" with '*' after the line's first name. */
struct seen {
    char out[4096];
    int calls;
    int fail_at; /* return -ENOMEM on this call (1-based); 0: never */
};

static void append(struct seen *s, const char *text)
{
    size_t l = strlen(s->out);
    snprintf(s->out + l, sizeof(s->out) - l, "%s%s", l ? "," : "", text);
}

static int on_domain(void *arg, const uint8_t *name, size_t len, bool allow)
{
    struct seen *s = arg;
    if (++s->calls == s->fail_at)
        return -ENOMEM;
    char text[DNSWIRE_MAX_NAME + 2], entry[DNSWIRE_MAX_NAME + 4];
    /* the names come lower-cased and in well-formed wire form */
    for (size_t i = 0; i < len; i++)
        assert_false(name[i] >= 'A' && name[i] <= 'Z');
    uint8_t check[DNSWIRE_MAX_NAME];
    dnswire_name_to_text(name, len, text, sizeof(text));
    assert_int_equal(dnswire_name_from_text(text, strlen(text), check), len);
    assert_memory_equal(check, name, len);
    snprintf(entry, sizeof(entry), "%s%s", allow ? "+" : "", text);
    append(s, entry);
    return 0;
}

static int on_host(void *arg, int family, const uint8_t *addr, const uint8_t *name, size_t len,
                   bool first)
{
    struct seen *s = arg;
    if (++s->calls == s->fail_at)
        return -ENOMEM;
    char a[INET6_ADDRSTRLEN], text[DNSWIRE_MAX_NAME + 2], entry[400];
    assert_true(family == AF_INET || family == AF_INET6);
    assert_non_null(inet_ntop(family, addr, a, sizeof(a)));
    dnswire_name_to_text(name, len, text, sizeof(text));
    snprintf(entry, sizeof(entry), "%s=%s%s", a, text, first ? "*" : "");
    append(s, entry);
    return 0;
}

static int domains(const char *text, size_t len, struct seen *s, struct list_stats *st, char *err)
{
    memset(s->out, 0, sizeof(s->out));
    s->calls = 0;
    err[0] = 0;
    return lists_parse_domains(text, len, on_domain, s, st, err, 256);
}

static int hosts(const char *text, struct seen *s, char *err)
{
    memset(s->out, 0, sizeof(s->out));
    s->calls = 0;
    err[0] = 0;
    return lists_parse_hosts(text, strlen(text), on_host, s, err, 256);
}

static void test_domain_per_line(void **state)
{
    struct seen s = {0};
    struct list_stats st;
    char err[256];
    const char *t = "ads.example\nTrackers.Example.\n*.wild.example\nunder_score.example\n"
                    "x-1.example\n";
    assert_int_equal(domains(t, strlen(t), &s, &st, err), 0);
    assert_string_equal(s.out, "ads.example,trackers.example,wild.example,under_score.example,"
                               "x-1.example");
    assert_int_equal(st.lines, 5);
    assert_int_equal(st.domains, 5);
    assert_int_equal(st.skipped, 0);
}

static void test_hosts_format_lines(void **state)
{
    struct seen s = {0};
    struct list_stats st;
    char err[256];
    const char *t = "# a hosts blocklist\n"
                    "127.0.0.1 localhost\n"
                    "127.0.0.1 localhost.localdomain Local\n"
                    "255.255.255.255 broadcasthost\n"
                    "::1 ip6-localhost ip6-loopback\n"
                    "fe00::0 ip6-localnet\n"
                    "ff00::0 ip6-mcastprefix\n"
                    "ff02::1 ip6-allnodes\n"
                    "ff02::2 ip6-allrouters\n"
                    "ff02::3 ip6-allhosts\n"
                    "0.0.0.0 0.0.0.0\n"
                    "0.0.0.0 ads.example\n"
                    "0.0.0.0\tA.example \t b.example # c.example\n"
                    "127.0.0.1 localhost.example\n"
                    ":: v6.example\n";
    assert_int_equal(domains(t, strlen(t), &s, &st, err), 0);
    assert_string_equal(s.out, "ads.example,a.example,b.example,localhost.example,v6.example");
    assert_int_equal(st.lines, 15);
    assert_int_equal(st.domains, 5);
}

static void test_adblock(void **state)
{
    struct seen s = {0};
    struct list_stats st;
    char err[256];
    const char *t = "[Adblock Plus 2.0]\n"
                    "! Title: test\n"
                    "||ads.example^\n"
                    "||Imp.example^$important\n"
                    "@@||ok.example^\n"
                    "@@||ok2.example^$document,third-party\n"
                    "||x.example^$third-party\n" /* skipped: options */
                    "||y.example/path^\n"        /* skipped: path */
                    "||*.z.example^\n"           /* skipped: wildcard */
                    "||w.example^|\n"            /* skipped */
                    "||v.example\n"              /* skipped: no '^' */
                    "example.com##.banner\n"     /* skipped: cosmetic */
                    "example.com#@#.ad\n"        /* skipped */
                    "example.com#?#div\n"        /* skipped */
                    "|http://u.example/\n"       /* skipped */
                    "/banner[0-9]+/\n"           /* skipped: regex */
                    "ads.example$script\n"       /* skipped */
                    "t*.example\n"               /* skipped: a wildcard not leading */
                    "*.q*.example\n"             /* skipped */
                    "@@ads.example\n"            /* skipped: exception without "||" */
                    "||ads.example^\n";          /* duplicates are the caller's business */
    assert_int_equal(domains(t, strlen(t), &s, &st, err), 0);
    assert_string_equal(s.out, "ads.example,imp.example,+ok.example,+ok2.example,ads.example");
    assert_int_equal(st.domains, 5);
    assert_int_equal(st.skipped, 14);
    assert_int_equal(st.lines, 21);
}

static void test_comments_crlf_whitespace(void **state)
{
    struct seen s = {0};
    struct list_stats st;
    char err[256];
    const char *t = "# comment\r\n"
                    "\r\n"
                    "   \t \n"
                    "  a.example  \r\n"
                    "b.example # trailing comment\r\n"
                    "\t# indented comment\n"
                    "c.example\t#x\n"
                    "d.example"; /* no final newline */
    assert_int_equal(domains(t, strlen(t), &s, &st, err), 0);
    assert_string_equal(s.out, "a.example,b.example,c.example,d.example");
    assert_int_equal(st.lines, 8);
    /* empty input, a lone newline */
    assert_int_equal(domains("", 0, &s, &st, err), 0);
    assert_int_equal(st.lines, 0);
    assert_int_equal(domains("\n", 1, &s, &st, err), 0);
    assert_int_equal(st.lines, 1);
    assert_int_equal(s.calls, 0);
    /* the stats are optional */
    assert_int_equal(lists_parse_domains("a.example\n", 10, on_domain, &s, NULL, err, 256), 0);
}

struct err_case {
    const char *text;
    size_t len; /* 0: strlen */
    const char *msg;
};

static void test_domain_errors(void **state)
{
    static char long_word[200], long_line[5000], ok_line[5000];
    memset(long_word, 'x', 70);
    strcpy(long_word + 70, "..y\n");
    memset(long_line, 'a', 4097);
    memcpy(ok_line, "# ", 2);
    memset(ok_line + 2, 'a', 4094); /* 4096 octets: the longest line */
    const struct err_case cases[] = {
        {"ok.example\nbad..name\n", 0, "line 2: 'bad..name' is not a domain name"},
        {"-x-\n", 0, "line 1: '-x-' is not a domain name"},
        {"x-.example\n", 0, "line 1: 'x-.example' is not a domain name"},
        {"a.-x.example\n", 0, "line 1: 'a.-x.example' is not a domain name"},
        {"a b c\n", 0, "line 1: 'a b c' is not a domain name"},
        {"# c\n\nok.example\na\x01"
         "b\n",
         0, "line 4: 'a?b' is not a domain name"},
        {"caf\xc3\xa9.example\n", 0, "line 1: 'caf??.example' is not a domain name"},
        {".\n", 0, "line 1: '.' is not a domain name"},
        {"..\n", 0, "line 1: '..' is not a domain name"}, /* was the root (found by fuzz_lists) */
        {"||..^\n", 0, "line 1: '..' is not a domain name"},
        {".a.example\n", 0, "line 1: '.a.example' is not a domain name"},
        {"*.\n", 0, NULL}, /* counted as skipped, see below */
        {"0.0.0.0 ok.example bad!.example\n", 0, "line 1: 'bad!.example' is not a domain name"},
        {"||bad..name^\n", 0, "line 1: 'bad..name' is not a domain name"},
        {"ok.example\n1.2.3.4\n", 0, "line 2: an address without a name"},
        {"a.example\n\0x\n", 13, "line 2: a NUL byte"},
        {long_word, 0,
         "line 1: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' is not a domain "
         "name"},
        {long_line, 4097, "line 1: longer than 4096 octets"},
        {ok_line, 4096, NULL},
    };
    struct seen s = {0};
    struct list_stats st;
    char err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct err_case *c = &cases[i];
        size_t len = c->len ? c->len : strlen(c->text);
        int rc = domains(c->text, len, &s, &st, err);
        if (!c->msg) {
            assert_int_equal(rc, 0);
            continue;
        }
        assert_int_equal(rc, -EINVAL);
        assert_string_equal(err, c->msg);
    }
    /* a line of 4096 octets and a CR is fine (the CR is not counted) */
    ok_line[4096] = '\r';
    assert_int_equal(domains(ok_line, 4097, &s, &st, err), 0);
}

static void test_domain_callback_error_stops(void **state)
{
    struct seen s = {0};
    struct list_stats st;
    char err[256] = "";
    const char *t = "a.example\n0.0.0.0 b.example c.example\nd.example\n";
    s.fail_at = 2;
    memset(s.out, 0, sizeof(s.out));
    assert_int_equal(lists_parse_domains(t, strlen(t), on_domain, &s, &st, err, sizeof(err)),
                     -ENOMEM);
    assert_int_equal(s.calls, 2);
    assert_string_equal(s.out, "a.example");
    assert_int_equal(st.domains, 1);
}

static void test_hosts_file(void **state)
{
    struct seen s = {0};
    char err[256];
    const char *t = "# /etc/hosts\n"
                    "127.0.0.1\tlocalhost\r\n"
                    "192.0.2.1  Nas.Home.arpa nas  # the NAS\n"
                    "\n"
                    "   # indented\n"
                    "2001:db8::1 v6.example. alias6\n"
                    "::ffff:192.0.2.7 mapped.example";
    assert_int_equal(hosts(t, &s, err), 0);
    assert_string_equal(s.out, "127.0.0.1=localhost*,192.0.2.1=nas.home.arpa*,192.0.2.1=nas,"
                               "2001:db8::1=v6.example*,2001:db8::1=alias6,"
                               "::ffff:192.0.2.7=mapped.example*");
}

static void test_hosts_errors(void **state)
{
    const struct err_case cases[] = {
        {"1.2.3 x\n", 0, "line 1: '1.2.3' is not an IP address"},
        {"# c\nfe80::1%eth0 x\n", 0, "line 2: 'fe80::1%eth0' is not an IP address"},
        {"x.example 1.2.3.4\n", 0, "line 1: 'x.example' is not an IP address"},
        {"192.0.2.1 ok a..b\n", 0, "line 1: 'a..b' is not a host name"},
        {"192.0.2.1 -x-\n", 0, "line 1: '-x-' is not a host name"},
        {"192.0.2.1 .\n", 0, "line 1: '.' is not a host name"},
        {"192.0.2.1 ..\n", 0, "line 1: '..' is not a host name"},
        {"\n192.0.2.1\n", 0, "line 2: an address without a name"},
        {"192.0.2.1   # nothing\n", 0, "line 1: an address without a name"},
        {"192.0.2.1 a\n\0", 13, "line 2: a NUL byte"},
    };
    struct seen s = {0};
    char err[256];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct err_case *c = &cases[i];
        memset(s.out, 0, sizeof(s.out));
        s.calls = 0;
        size_t len = c->len ? c->len : strlen(c->text);
        assert_int_equal(lists_parse_hosts(c->text, len, on_host, &s, err, sizeof(err)), -EINVAL);
        assert_string_equal(err, c->msg);
    }
    static char long_line[5000];
    memset(long_line, ' ', 4097);
    assert_int_equal(lists_parse_hosts(long_line, 4097, on_host, &s, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "line 1: longer than 4096 octets");
    /* a callback error stops the parse */
    s.fail_at = 2;
    assert_int_equal(hosts("192.0.2.1 a b c\n192.0.2.2 d\n", &s, err), -ENOMEM);
    assert_int_equal(s.calls, 2);
    assert_string_equal(s.out, "192.0.2.1=a*");
}

static void test_read_file(void **state)
{
    char dir[] = "/tmp/test_lists.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128], err[256];
    snprintf(path, sizeof(path), "%s/list", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("ads.example\n", f);
    fclose(f);
    char *buf;
    size_t len;
    assert_int_equal(lists_read_file(path, 100, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(len, 12);
    assert_string_equal(buf, "ads.example\n"); /* NUL-terminated */
    free(buf);
    assert_int_equal(lists_read_file(path, 12, &buf, &len, err, sizeof(err)), 0);
    free(buf);
    assert_int_equal(lists_read_file(path, 11, &buf, &len, err, sizeof(err)), -EFBIG);
    assert_null(buf);
    char want[256];
    snprintf(want, sizeof(want), "%s: larger than 11 bytes", path);
    assert_string_equal(err, want);
    /* an empty file */
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
    assert_int_equal(lists_read_file(path, 0, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);
    unlink(path);
    assert_int_equal(lists_read_file(path, 100, &buf, &len, err, sizeof(err)), -ENOENT);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(lists_read_file(dir, 100, &buf, &len, err, sizeof(err)), -EISDIR);
    snprintf(want, sizeof(want), "%s: Is a directory", dir);
    assert_string_equal(err, want);
    /* not a regular file: read to the end, bounded by max all the same */
    assert_int_equal(lists_read_file("/dev/zero", 1000, &buf, &len, err, sizeof(err)), -EFBIG);
    assert_int_equal(lists_read_file("/dev/null", 1000, &buf, &len, err, sizeof(err)), 0);
    assert_int_equal(len, 0);
    free(buf);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_domain_per_line), cmocka_unit_test(test_hosts_format_lines),
        cmocka_unit_test(test_adblock),         cmocka_unit_test(test_comments_crlf_whitespace),
        cmocka_unit_test(test_domain_errors),   cmocka_unit_test(test_domain_callback_error_stops),
        cmocka_unit_test(test_hosts_file),      cmocka_unit_test(test_hosts_errors),
        cmocka_unit_test(test_read_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
