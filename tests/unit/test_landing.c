/*
 * Unit tests for landing.h: the DoH URL, the HTML landing page and the Apple profile.
 * When python3 is on PATH, the profile is also parsed with plistlib, an independent plist
 * reader, to prove it is well-formed and says what the string checks say it says.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dohgate/landing.h"
#include "dohgate/util.h"

#define DEFAULT_INFO                                                                               \
    {                                                                                              \
        "doh.example.net", 443, "/dns-query", "/dohgate.mobileconfig", 0, NULL                     \
    }

/* Generate into a fresh buffer and NUL-terminate it, so that strstr() can be used. */
static char *gen(int (*fn)(const struct landing_info *, struct dg_buf *),
                 const struct landing_info *li)
{
    struct dg_buf b = {0};
    assert_int_equal(fn(li, &b), 0);
    assert_true(b.len > 0);
    assert_int_equal(dg_buf_append(&b, "", 1), 0);
    return (char *)b.data;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) == tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return false;
}

/* An " onxxx=" attribute anywhere (the text has words like "on" and "On (manual ...)"). */
static bool has_event_attr(const char *s)
{
    for (; *s; s++) {
        if (!isspace((unsigned char)s[0]) || tolower((unsigned char)s[1]) != 'o' ||
            tolower((unsigned char)s[2]) != 'n')
            continue;
        const char *p = s + 3;
        while (isalpha((unsigned char)*p))
            p++;
        if (p > s + 3 && *p == '=')
            return true;
    }
    return false;
}

/* Remove every occurrence of @p needle from @p s in place. */
static void strip_all(char *s, const char *needle)
{
    size_t n = strlen(needle);
    char *p;
    while ((p = strstr(s, needle)) != NULL)
        memmove(p, p + n, strlen(p + n) + 1);
}

/* Copy the value of the first "<key>KEY</key>\n\t...<string>VALUE</string>" after @p from. */
static const char *plist_string(const char *doc, const char *key, const char *from, char *out,
                                size_t outlen)
{
    char k[128];
    snprintf(k, sizeof(k), "<key>%s</key>", key);
    const char *p = strstr(from ? from : doc, k);
    assert_non_null(p);
    p = strstr(p, "<string>");
    assert_non_null(p);
    p += strlen("<string>");
    const char *e = strstr(p, "</string>");
    assert_non_null(e);
    assert_true((size_t)(e - p) < outlen);
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return e;
}

static void assert_uuid_v5(const char *u)
{
    assert_int_equal(strlen(u), 36);
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(u[i], '-');
        else
            assert_true(isdigit((unsigned char)u[i]) || (u[i] >= 'A' && u[i] <= 'F'));
    }
    assert_int_equal(u[14], '5');           /* version 5 */
    assert_non_null(strchr("89AB", u[19])); /* RFC 4122 variant */
}

/* ---- landing_doh_url ------------------------------------------------------------------------ */

static void test_url_default_port(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    char buf[256];
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "https://doh.example.net/dns-query");
}

static void test_url_other_port(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    char buf[256];
    li.port = 8443;
    li.doh_path = "/q";
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "https://doh.example.net:8443/q");
    li.server_name = "192.0.2.1";
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "https://192.0.2.1:8443/q");
}

static void test_url_ipv6(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    char buf[256];
    li.server_name = "2001:db8::1";
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "https://[2001:db8::1]/dns-query");
    /* already bracketed: not bracketed twice */
    li.server_name = "[2001:db8::1]";
    li.port = 853;
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "https://[2001:db8::1]:853/dns-query");
    li.server_name = "::ffff:192.0.2.1";
    li.port = 443;
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "https://[::ffff:192.0.2.1]/dns-query");
}

static void test_url_enospc(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    const char *want = "https://doh.example.net/dns-query";
    size_t n = strlen(want);
    char buf[64];

    assert_int_equal(landing_doh_url(&li, buf, n + 1), 0); /* exact fit */
    assert_string_equal(buf, want);
    memset(buf, 'x', sizeof(buf));
    assert_int_equal(landing_doh_url(&li, buf, n), -ENOSPC); /* no room for the NUL */
    assert_string_equal(buf, "");
    assert_int_equal(landing_doh_url(&li, buf, 1), -ENOSPC);
    assert_string_equal(buf, "");
    assert_int_equal(landing_doh_url(&li, buf, 0), -ENOSPC);
}

/* The Android (DoT) and network (plain DNS) sections appear only with their listeners, with
 * the host and address escaped like every other value. */
static void test_html_lan_sections(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    struct dg_buf b = {0};
    assert_int_equal(landing_html(&li, &b), 0);
    assert_int_equal(dg_buf_append(&b, "", 1), 0);
    assert_null(strstr((char *)b.data, "Private DNS"));
    assert_null(strstr((char *)b.data, "DHCP"));
    assert_non_null(strstr((char *)b.data, "</html>\n"));
    dg_buf_free(&b);

    li.dot_port = 853;
    li.dns_addr = "192.168.1.2<x>";
    assert_int_equal(landing_html(&li, &b), 0);
    assert_int_equal(dg_buf_append(&b, "", 1), 0);
    const char *p = (char *)b.data;
    assert_non_null(strstr(p, "<b>Private DNS</b>"));
    assert_non_null(strstr(p, "hostname: <code>doh.example.net</code>"));
    assert_non_null(strstr(p, "kdig +tls @doh.example.net example.com"));
    assert_non_null(strstr(p, "this server: 853"));
    assert_non_null(strstr(p, "<code>192.168.1.2&lt;x&gt;</code>"));
    assert_non_null(strstr(p, "network.trr.allow-rfc1918"));
    /* the sections sit inside the page, before its end */
    assert_true(strstr(p, "Private DNS") < strstr(p, "</main>"));
    assert_true(strstr(p, "DHCP") < strstr(p, "</main>"));
    assert_non_null(strstr(p, "</html>\n"));
    dg_buf_free(&b);
}

static void test_invalid_input(void **state)
{
    static const struct landing_info bad[] = {
        {NULL, 443, "/dns-query", "/p.mobileconfig", 0, NULL},
        {"doh.example.net", 443, NULL, "/p.mobileconfig", 0, NULL},
        {"doh.example.net", 443, "/dns-query", NULL, 0, NULL},
        {"", 443, "/dns-query", "/p.mobileconfig", 0, NULL},
        {"doh.example.net", 0, "/dns-query", "/p.mobileconfig", 0, NULL},
        {"doh.example.net", 65536, "/dns-query", "/p.mobileconfig", 0, NULL},
        {"doh.example.net", 443, "dns-query", "/p.mobileconfig", 0, NULL},
        {"doh.example.net", 443, "/dns-query", "p.mobileconfig", 0, NULL},
        {"doh.example.net", 443, "/dns-query", "//evil.example/p", 0, NULL}, /* other origin */
        {"doh.example.net", 443, "/dns-query", "/\\evil.example/p", 0,
         NULL}, /* same, to browsers */
        {"doh.example.net", 443, "/dns-query", "https://evil.example/p", 0, NULL},
        {"doh example.net", 443, "/dns-query", "/p.mobileconfig", 0, NULL},    /* space */
        {"doh.example.net\n", 443, "/dns-query", "/p.mobileconfig", 0, NULL},  /* control */
        {"doh.example.net", 443, "/dns\x01query", "/p.mobileconfig", 0, NULL}, /* not XML 1.0 */
        {"d\xc3\xb6h.example", 443, "/dns-query", "/p.mobileconfig", 0,
         NULL}, /* IDN: punycode only */
        {"[doh.example.net]", 443, "/dns-query", "/p.mobileconfig", 0,
         NULL}, /* brackets need IPv6 */
        {"[192.0.2.1]", 443, "/dns-query", "/p.mobileconfig", 0, NULL},
        {"[2001:db8::1", 443, "/dns-query", "/p.mobileconfig", 0, NULL},
    };
    char buf[256];
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dg_buf b = {0};
        assert_int_equal(dg_buf_append(&b, "keep", 4), 0);
        assert_int_equal(landing_doh_url(&bad[i], buf, sizeof(buf)), -EINVAL);
        assert_int_equal(landing_html(&bad[i], &b), -EINVAL);
        assert_int_equal(landing_mobileconfig(&bad[i], &b), -EINVAL);
        assert_int_equal(b.len, 4); /* nothing appended */
        dg_buf_free(&b);
    }
    assert_int_equal(landing_doh_url(NULL, buf, sizeof(buf)), -EINVAL);

    /* a name longer than any DNS name */
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    struct landing_info li = DEFAULT_INFO;
    li.server_name = longname;
    assert_int_equal(landing_doh_url(&li, buf, sizeof(buf)), -EINVAL);
}

/* ---- landing_html --------------------------------------------------------------------------- */

static void test_html_content(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    char *h = gen(landing_html, &li);

    assert_true(strncmp(h, "<!DOCTYPE html>\n", 16) == 0);
    assert_non_null(strstr(h, "<meta charset=\"utf-8\">"));
    assert_non_null(strstr(h, "<code>https://doh.example.net/dns-query</code>"));
    assert_non_null(strstr(h, "<title>DNS over HTTPS: doh.example.net</title>"));
    assert_non_null(strstr(h, "<a href=\"/dohgate.mobileconfig\">"));
    assert_non_null(strstr(h, "Max Protection"));
    assert_non_null(strstr(h, "Use secure DNS"));
    assert_non_null(strstr(h, "Edge"));
    assert_non_null(strstr(h, "On (manual template)"));
    assert_non_null(strstr(h, "DNS server assignment"));
    /* a name, not an address: Windows gets a placeholder */
    assert_non_null(strstr(h, "netsh dns add encryption server=&lt;IP address of "
                              "doh.example.net&gt; dohtemplate=https://doh.example.net/dns-query"));
    assert_non_null(
        strstr(h, "curl --doh-url https://doh.example.net/dns-query https://example.com\n"));
    assert_non_null(strstr(h, "kdig +https @doh.example.net example.com</pre>"));
    assert_true(strstr(h, "</html>\n") != NULL && h[strlen(h) - 1] == '\n');
    free(h);
}

static void test_html_port_path_ip(void **state)
{
    struct landing_info li = {"192.0.2.1", 8443, "/q", "/p.mobileconfig", 0, NULL};
    char *h = gen(landing_html, &li);
    assert_non_null(strstr(h, "<code>https://192.0.2.1:8443/q</code>"));
    assert_non_null(strstr(
        h, "netsh dns add encryption server=192.0.2.1 dohtemplate=https://192.0.2.1:8443/q"));
    assert_non_null(strstr(h, "<code>192.0.2.1</code> as Preferred DNS"));
    assert_non_null(strstr(h, "kdig +https=/q @192.0.2.1 -p 8443 example.com"));
    free(h);

    li.server_name = "[2001:db8::1]";
    li.port = 443;
    li.doh_path = "/dns-query";
    h = gen(landing_html, &li);
    assert_non_null(strstr(h, "<code>https://[2001:db8::1]/dns-query</code>"));
    assert_non_null(strstr(h, "server=2001:db8::1 dohtemplate=https://[2001:db8::1]/dns-query"));
    assert_non_null(strstr(h, "kdig +https @2001:db8::1 example.com")); /* kdig: no brackets */
    free(h);
}

static void test_html_escaped(void **state)
{
    struct landing_info li = {"<script>alert(1)</script>&'\"",    443, "/dns-query?a=1&b=<i>",
                              "/p\"onmouseover='x'.mobileconfig", 0,   NULL};
    char *h = gen(landing_html, &li);
    assert_false(contains_ci(h, "<script"));
    assert_false(contains_ci(h, "<i>"));
    assert_null(strstr(h, "onmouseover='"));
    assert_non_null(strstr(h, "<title>DNS over HTTPS: &lt;script&gt;alert(1)&lt;/script&gt;"
                              "&amp;&#39;&quot;</title>"));
    assert_non_null(strstr(h, "<code>https://&lt;script&gt;alert(1)&lt;/script&gt;&amp;&#39;"
                              "&quot;/dns-query?a=1&amp;b=&lt;i&gt;</code>"));
    assert_non_null(strstr(h, "<a href=\"/p&quot;onmouseover=&#39;x&#39;.mobileconfig\">"));
    /* every '&' in the page starts an entity or character reference */
    for (const char *p = h; (p = strchr(p, '&')) != NULL; p++) {
        const char *q = p + 1;
        if (*q == '#')
            q++;
        while (isalnum((unsigned char)*q))
            q++;
        assert_true(q > p + 1 && *q == ';');
    }
    free(h);
}

/* The page loads nothing and links nowhere: after removing the server's own URL and the curl
 * example target, no absolute or network-path URL is left, and nothing is embedded. */
static void check_no_external(const struct landing_info *li, const char *escaped_url)
{
    char *h = gen(landing_html, li);
    assert_true(count(h, escaped_url) >= 3); /* shown, Windows template, netsh, curl */
    strip_all(h, escaped_url);
    assert_int_equal(count(h, "https://example.com"), 1);
    strip_all(h, "https://example.com");
    assert_false(contains_ci(h, "http://"));
    assert_false(contains_ci(h, "https://"));
    assert_false(contains_ci(h, "//"));
    assert_false(contains_ci(h, "<script"));
    assert_false(contains_ci(h, "<link"));
    assert_false(contains_ci(h, "<img"));
    assert_false(contains_ci(h, "<iframe"));
    assert_false(contains_ci(h, "<object"));
    assert_false(contains_ci(h, "<embed"));
    assert_false(contains_ci(h, "src="));
    assert_false(contains_ci(h, "url("));
    assert_false(contains_ci(h, "@import"));
    assert_false(contains_ci(h, "javascript:"));
    assert_false(has_event_attr(h));
    /* the one link is the relative profile path */
    assert_int_equal(count(h, "href="), 1);
    free(h);
}

static void test_html_no_external(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    check_no_external(&li, "https://doh.example.net/dns-query");
    struct landing_info li6 = {"2001:db8::53", 8443, "/q", "/p.mobileconfig", 0, NULL};
    check_no_external(&li6, "https://[2001:db8::53]:8443/q");
}

static void test_html_appends(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    struct dg_buf b = {0};
    assert_int_equal(dg_buf_append(&b, "HTTP", 4), 0);
    assert_int_equal(landing_html(&li, &b), 0);
    assert_true(b.len > 4 && memcmp(b.data, "HTTP<!DOCTYPE html>", 19) == 0);
    dg_buf_free(&b);
}

/* ---- landing_mobileconfig ------------------------------------------------------------------- */

static void test_mc_content(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    char *m = gen(landing_mobileconfig, &li);
    char v[256], u1[64], u2[64];

    static const char head[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                               "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
                               "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
                               "<plist version=\"1.0\">\n";
    assert_true(strncmp(m, head, sizeof(head) - 1) == 0);
    assert_non_null(strstr(m, "<string>https://doh.example.net/dns-query</string>"));
    plist_string(m, "ServerURL", NULL, v, sizeof(v));
    assert_string_equal(v, "https://doh.example.net/dns-query");
    plist_string(m, "DNSProtocol", NULL, v, sizeof(v));
    assert_string_equal(v, "HTTPS");
    assert_null(strstr(m, "ServerAddresses")); /* a name: no addresses */

    /* the inner payload comes first in the text, then the outer one */
    const char *inner = strstr(m, "<key>PayloadType</key>");
    plist_string(m, "PayloadType", NULL, v, sizeof(v));
    assert_string_equal(v, "com.apple.dnsSettings.managed");
    plist_string(m, "PayloadType", inner + 1, v, sizeof(v));
    assert_string_equal(v, "Configuration");
    assert_int_equal(count(m, "<key>PayloadVersion</key>\n\t\t\t<integer>1</integer>"), 1);
    assert_int_equal(count(m, "<key>PayloadVersion</key>\n\t<integer>1</integer>"), 1);
    assert_int_equal(count(m, "<string>dohgate DNS (doh.example.net)</string>"), 2);

    const char *after = plist_string(m, "PayloadUUID", NULL, u1, sizeof(u1));
    plist_string(m, "PayloadUUID", after, u2, sizeof(u2));
    assert_uuid_v5(u1);
    assert_uuid_v5(u2);
    assert_string_not_equal(u1, u2);
    /* independent values: Python's uuid.uuid5(uuid.NAMESPACE_URL, url + "#dns-settings") and
     * url + "#profile" */
    assert_string_equal(u1, "D4A356D8-4841-5D77-983E-F4791A066169");
    assert_string_equal(u2, "5CFE359C-FD39-5EF3-82AF-AB342C0172F1");

    char id1[128], id2[128];
    after = plist_string(m, "PayloadIdentifier", NULL, id1, sizeof(id1));
    plist_string(m, "PayloadIdentifier", after, id2, sizeof(id2));
    assert_string_not_equal(id1, id2);
    assert_string_equal(id2, "dohgate.profile.5CFE359C-FD39-5EF3-82AF-AB342C0172F1");
    assert_non_null(strstr(m, "<key>PayloadDescription</key>"));
    assert_true(strstr(m, "</dict>\n</plist>\n") != NULL);
    free(m);
}

static void test_mc_ip_literal(void **state)
{
    struct landing_info li = {"192.0.2.1", 8443, "/dns-query", "/p.mobileconfig", 0, NULL};
    char *m = gen(landing_mobileconfig, &li);
    assert_non_null(strstr(m, "<key>ServerAddresses</key>\n\t\t\t\t<array>\n"
                              "\t\t\t\t\t<string>192.0.2.1</string>\n\t\t\t\t</array>\n"));
    assert_non_null(strstr(m, "<string>https://192.0.2.1:8443/dns-query</string>"));
    free(m);

    li.server_name = "[2001:db8::1]";
    m = gen(landing_mobileconfig, &li);
    assert_non_null(strstr(m, "<string>2001:db8::1</string>")); /* the address, no brackets */
    assert_non_null(strstr(m, "<string>https://[2001:db8::1]:8443/dns-query</string>"));
    free(m);

    /* looks numeric but is not an address */
    li.server_name = "192.0.2.1.example";
    m = gen(landing_mobileconfig, &li);
    assert_null(strstr(m, "ServerAddresses"));
    free(m);
}

static void test_mc_deterministic(void **state)
{
    struct landing_info li = DEFAULT_INFO;
    char *a = gen(landing_mobileconfig, &li);
    char *b = gen(landing_mobileconfig, &li);
    assert_string_equal(a, b);
    free(b);

    /* another endpoint, another profile identity */
    char ua[64], ub[64];
    li.port = 8443;
    b = gen(landing_mobileconfig, &li);
    plist_string(a, "PayloadUUID", NULL, ua, sizeof(ua));
    plist_string(b, "PayloadUUID", NULL, ub, sizeof(ub));
    assert_string_not_equal(ua, ub);
    free(b);
    li.port = 443;
    li.doh_path = "/other";
    b = gen(landing_mobileconfig, &li);
    plist_string(b, "PayloadUUID", NULL, ub, sizeof(ub));
    assert_string_not_equal(ua, ub);
    free(b);
    free(a);
}

static void test_mc_escaped(void **state)
{
    struct landing_info li = {"a&b<c>'\"", 443, "/q?x=1&y=<2>", "/p.mobileconfig", 0, NULL};
    char *m = gen(landing_mobileconfig, &li);
    assert_null(strstr(m, "<c>"));
    assert_null(strstr(m, "<2>"));
    assert_non_null(strstr(m, "<string>https://a&amp;b&lt;c&gt;&apos;&quot;/q?x=1&amp;y=&lt;2&gt;"
                              "</string>"));
    assert_non_null(strstr(m, "<string>dohgate DNS (a&amp;b&lt;c&gt;&apos;&quot;)</string>"));
    free(m);
}

/* ---- plistlib cross-check ------------------------------------------------------------------- */

/* Append @p s to @p cmd in single quotes, for /bin/sh. */
static void shell_quote(char *cmd, size_t cap, const char *s)
{
    size_t n = strlen(cmd);
    assert_true(n + 1 < cap);
    cmd[n++] = '\'';
    for (; *s; s++) {
        if (*s == '\'') {
            assert_true(n + 4 < cap);
            memcpy(cmd + n, "'\\''", 4);
            n += 4;
        } else {
            assert_true(n + 1 < cap);
            cmd[n++] = *s;
        }
    }
    assert_true(n + 2 < cap);
    cmd[n++] = '\'';
    cmd[n] = '\0';
}

static int run_python(const char *script, const char *file, const char *a1, const char *a2)
{
    char cmd[4096] = "python3 -c ";
    shell_quote(cmd, sizeof(cmd), script);
    strcat(cmd, " ");
    shell_quote(cmd, sizeof(cmd), file);
    strcat(cmd, " ");
    shell_quote(cmd, sizeof(cmd), a1);
    if (a2) {
        strcat(cmd, " ");
        shell_quote(cmd, sizeof(cmd), a2);
    }
    return system(cmd);
}

/* The check from the task, verbatim, then a stricter one on the structure. */
static const char py_url[] = "import plistlib,sys; d=plistlib.load(open(sys.argv[1],\"rb\")); "
                             "assert d[\"PayloadContent\"][0][\"DNSSettings\"][\"ServerURL\"]"
                             "==sys.argv[2]";
static const char py_full[] =
    "import plistlib,sys\n"
    "d=plistlib.load(open(sys.argv[1],'rb'))\n"
    "a=sys.argv[3]\n"
    "assert d['PayloadType']=='Configuration' and d['PayloadVersion']==1\n"
    "assert len(d['PayloadContent'])==1\n"
    "p=d['PayloadContent'][0]\n"
    "assert p['PayloadType']=='com.apple.dnsSettings.managed' and p['PayloadVersion']==1\n"
    "s=p['DNSSettings']\n"
    "assert s['DNSProtocol']=='HTTPS' and s['ServerURL']==sys.argv[2]\n"
    "assert s.get('ServerAddresses')==([a] if a else None), s.get('ServerAddresses')\n"
    "assert d['PayloadUUID']!=p['PayloadUUID']\n"
    "assert d['PayloadIdentifier']!=p['PayloadIdentifier']\n"
    "assert d['PayloadDisplayName'].startswith('dohgate DNS (')\n";

static void plist_check(const struct landing_info *li, const char *addr)
{
    char url[512], path[] = "/tmp/test_landing_XXXXXX";
    assert_int_equal(landing_doh_url(li, url, sizeof(url)), 0);
    struct dg_buf b = {0};
    assert_int_equal(landing_mobileconfig(li, &b), 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b.data, b.len), (ssize_t)b.len);
    close(fd);
    dg_buf_free(&b);
    int rc1 = run_python(py_url, path, url, NULL);
    int rc2 = run_python(py_full, path, url, addr);
    unlink(path);
    assert_int_equal(rc1, 0);
    assert_int_equal(rc2, 0);
}

static void test_mc_plistlib(void **state)
{
    if (system("command -v python3 >/dev/null 2>&1") != 0)
        fail_msg("python3 not found (contrib/deps.sh --test installs it)");
    struct landing_info li = DEFAULT_INFO;
    plist_check(&li, "");
    struct landing_info li4 = {"192.0.2.1", 8443, "/q", "/p.mobileconfig", 0, NULL};
    plist_check(&li4, "192.0.2.1");
    struct landing_info li6 = {"[2001:db8::1]", 443, "/dns-query", "/p.mobileconfig", 0, NULL};
    plist_check(&li6, "2001:db8::1");
    struct landing_info lx = {"a&b<c>'\"", 443, "/q?x=1&y=<2>", "/p.mobileconfig", 0, NULL};
    plist_check(&lx, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_default_port), cmocka_unit_test(test_url_other_port),
        cmocka_unit_test(test_url_ipv6),         cmocka_unit_test(test_url_enospc),
        cmocka_unit_test(test_invalid_input),    cmocka_unit_test(test_html_lan_sections),
        cmocka_unit_test(test_html_content),     cmocka_unit_test(test_html_port_path_ip),
        cmocka_unit_test(test_html_escaped),     cmocka_unit_test(test_html_no_external),
        cmocka_unit_test(test_html_appends),     cmocka_unit_test(test_mc_content),
        cmocka_unit_test(test_mc_ip_literal),    cmocka_unit_test(test_mc_deterministic),
        cmocka_unit_test(test_mc_escaped),       cmocka_unit_test(test_mc_plistlib),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
