#include "dohgate/landing.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* DNS names are at most 253 characters (254 with the root dot); anything longer is a config
 * mistake, and the cap keeps every length below INT_MAX for "%.*s". */
#define NAME_MAX_LEN 255

/* kdig's +https assumes this path, so the command line only names it when it differs. */
#define KDIG_DEFAULT_PATH "/dns-query"

/* The host part of server_name: without brackets, and whether it is an address. */
struct host {
    const char *p;
    size_t len;
    bool ip; /* IPv4 or IPv6 literal: goes into ServerAddresses and the Windows instructions */
    bool v6; /* needs brackets in a URL */
};

static bool visible_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

static bool is_addr(int af, const char *p, size_t len)
{
    char tmp[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];
    if (len >= sizeof(tmp))
        return false;
    memcpy(tmp, p, len);
    tmp[len] = '\0';
    return inet_pton(af, tmp, bin) == 1;
}

/* Validate everything up front, so that the generators below never have to stop half-way
 * for bad input, and parse the host once for all of them. */
static int parse_info(const struct landing_info *li, struct host *h)
{
    if (!li || !li->server_name || !li->doh_path || !li->profile_path)
        return -EINVAL;
    if (li->port == 0 || li->port > 65535)
        return -EINVAL;
    /* Only visible ASCII: XML 1.0 cannot carry most control characters even as references,
     * and a space or non-ASCII byte has no place in a URL host or path unencoded. */
    if (!visible_ascii(li->server_name) || !visible_ascii(li->doh_path) ||
        !visible_ascii(li->profile_path))
        return -EINVAL;
    if (li->doh_path[0] != '/' || li->profile_path[0] != '/')
        return -EINVAL;
    /* "//host/x" and "/\host/x" are network-path references to another origin in browsers;
     * the page promises to link nowhere else. */
    if (li->profile_path[1] == '/' || li->profile_path[1] == '\\')
        return -EINVAL;

    size_t n = strlen(li->server_name);
    if (n == 0 || n > NAME_MAX_LEN)
        return -EINVAL;
    h->p = li->server_name;
    h->len = n;
    h->ip = h->v6 = false;
    if (h->p[0] == '[') {
        /* Bracketed: accepted only around an IPv6 literal, as in a URL. */
        if (n < 3 || h->p[n - 1] != ']' || !is_addr(AF_INET6, h->p + 1, n - 2))
            return -EINVAL;
        h->p++;
        h->len -= 2;
        h->ip = h->v6 = true;
    } else if (is_addr(AF_INET6, h->p, n)) {
        h->ip = h->v6 = true;
    } else if (is_addr(AF_INET, h->p, n)) {
        h->ip = true;
    }
    return 0;
}

/* Returns the length of the URL, or negative on an encoding error (not expected). */
static int format_url(const struct landing_info *li, const struct host *h, char *buf, size_t len)
{
    char port[8] = "";
    if (li->port != 443)
        snprintf(port, sizeof(port), ":%u", li->port);
    return snprintf(buf, len, "https://%s%.*s%s%s%s", h->v6 ? "[" : "", (int)h->len, h->p,
                    h->v6 ? "]" : "", port, li->doh_path);
}

int landing_doh_url(const struct landing_info *li, char *buf, size_t len)
{
    struct host h;
    int rc = parse_info(li, &h);
    if (rc)
        return rc;
    if (!buf || len == 0)
        return -ENOSPC;
    int n = format_url(li, &h, buf, len);
    if (n < 0 || (size_t)n >= len) {
        buf[0] = '\0';
        return -ENOSPC;
    }
    return 0;
}

__attribute__((format(printf, 1, 2))) static char *dup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static char *dup_url(const struct landing_info *li, const struct host *h)
{
    int n = format_url(li, h, NULL, 0);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (s)
        format_url(li, h, s, (size_t)n + 1);
    return s;
}

/* ---- output with a sticky error ------------------------------------------------------------
 * Every append goes through struct emit, which remembers the first failure and turns later
 * appends into no-ops; the generator then checks once at the end and rolls the buffer back to
 * where it started, so a caller never sees a half-written page. */

struct emit {
    struct dg_buf *b;
    size_t start;
    int rc;
};

static void put_n(struct emit *e, const char *s, size_t n)
{
    if (!e->rc)
        e->rc = dg_buf_append(e->b, s, n);
}

static void put(struct emit *e, const char *s)
{
    put_n(e, s, strlen(s));
}

enum esc_mode { ESC_HTML, ESC_XML };

static void put_esc(struct emit *e, const char *s, size_t n, enum esc_mode mode)
{
    size_t run = 0; /* start of the pending run of bytes that need no escaping */
    for (size_t i = 0; i < n; i++) {
        const char *rep;
        switch (s[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            /* &apos; is XML's; HTML4-era parsers only know the numeric form. */
            rep = mode == ESC_XML ? "&apos;" : "&#39;";
            break;
        default:
            continue;
        }
        put_n(e, s + run, i - run);
        put(e, rep);
        run = i + 1;
    }
    put_n(e, s + run, n - run);
}

/* A template variable: its raw (unescaped) value. */
struct var {
    const char *key;
    const char *val;
    size_t len;
};

/*
 * Copy @p tmpl to the output, replacing each "${key}" by the escaped value of that variable.
 * The pages are kept as whole templates rather than as chains of put() calls so that their
 * markup can be read (and reviewed for external references) in one piece, and so that no
 * inserted value can skip escaping: a value is only ever inserted here. "${" does not occur
 * in the HTML, CSS or XML text itself.
 */
static void expand(struct emit *e, const char *tmpl, const struct var *vars, size_t nvars,
                   enum esc_mode mode)
{
    const char *p = tmpl;
    const char *m;
    while ((m = strstr(p, "${")) != NULL) {
        put_n(e, p, (size_t)(m - p));
        const char *key = m + 2;
        const char *end = strchr(key, '}');
        assert(end && "unterminated ${ in a landing template");
        size_t klen = (size_t)(end - key);
        size_t i;
        for (i = 0; i < nvars; i++)
            if (strlen(vars[i].key) == klen && memcmp(vars[i].key, key, klen) == 0)
                break;
        assert(i < nvars && "unknown variable in a landing template");
        if (i < nvars)
            put_esc(e, vars[i].val, vars[i].len, mode);
        p = end + 1;
    }
    put(e, p);
}

static int emit_finish(struct emit *e)
{
    if (e->rc)
        e->b->len = e->start;
    return e->rc;
}

/* ---- HTML page ----------------------------------------------------------------------------- */

/* Variables: host (name without brackets), url, profile, winip, kdig. */
static const char html_tmpl[] =
    "<!DOCTYPE html>\n"
    "<html lang=\"en\">\n"
    "<head>\n"
    "<meta charset=\"utf-8\">\n"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
    "<title>DNS over HTTPS: ${host}</title>\n"
    "<style>\n"
    ":root{color-scheme:light dark}\n"
    "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}\n"
    "h1{font-size:1.6rem;margin-bottom:.5rem}\n"
    "h2{font-size:1.15rem;margin:1.8rem 0 .4rem}\n"
    "code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}\n"
    ".url{font-size:1.25rem;padding:.8rem 1rem;border:2px solid #2a7ae2;border-radius:6px;"
    "overflow-wrap:anywhere}\n"
    ".url code{user-select:all}\n"
    "pre{padding:.6rem .8rem;border:1px solid #8886;border-radius:4px;overflow-x:auto}\n"
    "footer{margin-top:2.5rem;font-size:.85rem;opacity:.7}\n"
    "</style>\n"
    "</head>\n"
    "<body>\n"
    "<main>\n"
    "<h1>DNS over HTTPS on ${host}</h1>\n"
    "<p>This server answers DNS queries sent over HTTPS (RFC 8484), so that the networks in "
    "between can neither read nor change them. Give your browser or system this URL:</p>\n"
    "<p class=\"url\"><code>${url}</code></p>\n"
    "\n"
    "<h2>Firefox</h2>\n"
    "<p>Settings &rarr; Privacy &amp; Security &rarr; DNS over HTTPS &rarr; "
    "<b>Max Protection</b> &rarr; Choose provider: <b>Custom</b>, then paste the URL.</p>\n"
    "\n"
    "<h2>Chrome and Edge</h2>\n"
    "<p>Chrome: Settings &rarr; Privacy and security &rarr; Security &rarr; "
    "<b>Use secure DNS</b> &rarr; Select DNS provider: <b>Add custom DNS service provider</b>, "
    "then paste the URL.<br>\n"
    "Edge: Settings &rarr; Privacy, search, and services &rarr; Security &rarr; "
    "<b>Use secure DNS</b> &rarr; <b>Choose a service provider</b>, then paste the URL.</p>\n"
    "\n"
    "<h2>iPhone, iPad and Mac</h2>\n"
    "<p><a href=\"${profile}\">Download the configuration profile</a>, then install it:</p>\n"
    "<ul>\n"
    "<li>iOS and iPadOS (download it with Safari): Settings &rarr; <b>Profile Downloaded</b> "
    "&rarr; Install. It can be switched off later in Settings &rarr; General &rarr; "
    "VPN &amp; Device Management &rarr; DNS.</li>\n"
    "<li>macOS: System Settings &rarr; General &rarr; <b>Device Management</b> (before macOS 15: "
    "Privacy &amp; Security &rarr; Profiles), double-click the downloaded profile, then "
    "Install.</li>\n"
    "</ul>\n"
    "<p>The profile is not signed, so it is shown as &ldquo;Unverified&rdquo;.</p>\n"
    "\n"
    "<h2>Windows 11</h2>\n"
    "<p>Settings &rarr; Network &amp; internet &rarr; Ethernet, or Wi-Fi &rarr; Hardware "
    "properties &rarr; <b>DNS server assignment: Edit</b> &rarr; Manual. Turn on IPv4 (IPv6 for "
    "an IPv6 address), enter <code>${winip}</code> as Preferred DNS, set DNS over HTTPS to "
    "<b>On (manual template)</b> with the template <code>${url}</code>, and save.</p>\n"
    "<p>Or tell Windows the template from an administrator terminal; the address then offers "
    "<b>On (automatic template)</b>:</p>\n"
    "<pre>netsh dns add encryption server=${winip} dohtemplate=${url}</pre>\n"
    "\n"
    "<h2>Command line</h2>\n"
    "<pre>curl --doh-url ${url} https://example.com\n"
    "${kdig}</pre>\n";

/* Android's Private DNS speaks DoT on port 853 only: shown when a DoT listener exists.
 * Variables: host, dotport. */
static const char html_dot_tmpl[] =
    "\n"
    "<h2>Android</h2>\n"
    "<p>Settings &rarr; Network &amp; internet (or Connections &rarr; More connection "
    "settings) &rarr; <b>Private DNS</b> &rarr; Private DNS provider hostname: "
    "<code>${host}</code>. Android uses DNS over TLS on port 853 (this server: "
    "${dotport}); the name must be one the server's certificate covers.</p>\n"
    "<pre>kdig +tls @${host} example.com</pre>\n";

/* The plain-DNS listener, for a whole network: shown when dns-listen is set.
 * Variables: dnsaddr. */
static const char html_lan_tmpl[] =
    "\n"
    "<h2>Your home or office network</h2>\n"
    "<p>Devices that cannot use encrypted DNS (TVs, consoles, printers) can ask this server "
    "plain DNS at <code>${dnsaddr}</code>. To give it to every device, set it as the DNS "
    "server in your router's DHCP settings (often under LAN &rarr; DHCP server &rarr; DNS "
    "server). Windows 11, Apple devices and Android that receive that address find the "
    "encrypted endpoints of this server by themselves (Discovery of Designated Resolvers, "
    "RFC 9462) when its certificate covers that address.</p>\n"
    "<p>Firefox ignores DNS-over-HTTPS answers that point to private addresses (names of your "
    "own network) unless <code>network.trr.allow-rfc1918</code> is set to <b>true</b> in "
    "<code>about:config</code>.</p>\n";

static const char html_end[] = "</main>\n"
                               "<footer>Served by dohgate.</footer>\n"
                               "</body>\n"
                               "</html>\n";

int landing_html(const struct landing_info *li, struct dg_buf *out)
{
    struct host h;
    int rc = parse_info(li, &h);
    if (rc)
        return rc;

    char *url = dup_url(li, &h);
    char port[16] = "";
    if (li->port != 443)
        snprintf(port, sizeof(port), " -p %u", li->port);
    bool default_path = strcmp(li->doh_path, KDIG_DEFAULT_PATH) == 0;
    /* kdig wants the bare address after '@', and the path and port as options. */
    char *kdig = dup_printf("kdig +https%s%s @%.*s%s example.com", default_path ? "" : "=",
                            default_path ? "" : li->doh_path, (int)h.len, h.p, port);
    /* Windows needs an address; for a name we cannot look one up here (no I/O), so the page
     * says what to put there instead. */
    char *winip = h.ip ? dup_printf("%.*s", (int)h.len, h.p)
                       : dup_printf("<IP address of %.*s>", (int)h.len, h.p);

    rc = -ENOMEM;
    if (url && kdig && winip) {
        const struct var vars[] = {
            {"host", h.p, h.len},
            {"url", url, strlen(url)},
            {"profile", li->profile_path, strlen(li->profile_path)},
            {"winip", winip, strlen(winip)},
            {"kdig", kdig, strlen(kdig)},
        };
        struct emit e = {out, out->len, 0};
        expand(&e, html_tmpl, vars, sizeof(vars) / sizeof(vars[0]), ESC_HTML);
        if (li->dot_port) {
            char dp[16];
            snprintf(dp, sizeof(dp), "%u", li->dot_port);
            const struct var dv[] = {{"host", h.p, h.len}, {"dotport", dp, strlen(dp)}};
            expand(&e, html_dot_tmpl, dv, 2, ESC_HTML);
        }
        if (li->dns_addr) {
            const struct var lv[] = {{"dnsaddr", li->dns_addr, strlen(li->dns_addr)}};
            expand(&e, html_lan_tmpl, lv, 1, ESC_HTML);
        }
        put(&e, html_end);
        rc = emit_finish(&e);
    }
    free(url);
    free(kdig);
    free(winip);
    return rc;
}

/* ---- Apple configuration profile ----------------------------------------------------------- */

/* RFC 4122 Appendix C: the name space for names that are URLs. */
static const unsigned char uuid_ns_url[16] = {0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                              0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8};

/*
 * Name-based UUID, version 5 (RFC 4122 §4.3): SHA-1 over namespace || name, version and variant
 * bits set. A real v5 rather than an ad-hoc hash, so that the value can be checked with any UUID
 * library (Python: uuid.uuid5(uuid.NAMESPACE_URL, name)). SHA-1's weakness does not matter for
 * an identifier. Formatted in upper case, as Apple's tools write PayloadUUIDs.
 */
static int uuid5(const char *name, const char *suffix, char out[37])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) &&
             EVP_DigestUpdate(ctx, uuid_ns_url, sizeof(uuid_ns_url)) &&
             EVP_DigestUpdate(ctx, name, strlen(name)) &&
             EVP_DigestUpdate(ctx, suffix, strlen(suffix)) && EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    if (!ok || mdlen < 16)
        return -ENOMEM;
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);

    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[md[i] >> 4];
        out[o++] = hex[md[i] & 0x0f];
    }
    out[o] = '\0';
    return 0;
}

/*
 * Split around ServerAddresses, which appears only for IP literals. Keys of each dict are in
 * sorted order, as Apple's tools write them. Variables: url, host, id,
 * uuid_cfg, uuid_dns.
 */
static const char mc_head[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                              "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" "
                              "\"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
                              "<plist version=\"1.0\">\n"
                              "<dict>\n"
                              "\t<key>PayloadContent</key>\n"
                              "\t<array>\n"
                              "\t\t<dict>\n"
                              "\t\t\t<key>DNSSettings</key>\n"
                              "\t\t\t<dict>\n"
                              "\t\t\t\t<key>DNSProtocol</key>\n"
                              "\t\t\t\t<string>HTTPS</string>\n";

static const char mc_addresses[] = "\t\t\t\t<key>ServerAddresses</key>\n"
                                   "\t\t\t\t<array>\n"
                                   "\t\t\t\t\t<string>${host}</string>\n"
                                   "\t\t\t\t</array>\n";

static const char mc_tail[] =
    "\t\t\t\t<key>ServerURL</key>\n"
    "\t\t\t\t<string>${url}</string>\n"
    "\t\t\t</dict>\n"
    "\t\t\t<key>PayloadDescription</key>\n"
    "\t\t\t<string>Sends all DNS queries to ${host} over HTTPS.</string>\n"
    "\t\t\t<key>PayloadDisplayName</key>\n"
    "\t\t\t<string>dohgate DNS (${host})</string>\n"
    "\t\t\t<key>PayloadIdentifier</key>\n"
    "\t\t\t<string>${id}.dns</string>\n"
    "\t\t\t<key>PayloadType</key>\n"
    "\t\t\t<string>com.apple.dnsSettings.managed</string>\n"
    "\t\t\t<key>PayloadUUID</key>\n"
    "\t\t\t<string>${uuid_dns}</string>\n"
    "\t\t\t<key>PayloadVersion</key>\n"
    "\t\t\t<integer>1</integer>\n"
    "\t\t</dict>\n"
    "\t</array>\n"
    "\t<key>PayloadDescription</key>\n"
    "\t<string>Encrypts DNS with DNS over HTTPS (${url}).</string>\n"
    "\t<key>PayloadDisplayName</key>\n"
    "\t<string>dohgate DNS (${host})</string>\n"
    "\t<key>PayloadIdentifier</key>\n"
    "\t<string>${id}</string>\n"
    "\t<key>PayloadType</key>\n"
    "\t<string>Configuration</string>\n"
    "\t<key>PayloadUUID</key>\n"
    "\t<string>${uuid_cfg}</string>\n"
    "\t<key>PayloadVersion</key>\n"
    "\t<integer>1</integer>\n"
    "</dict>\n"
    "</plist>\n";

int landing_mobileconfig(const struct landing_info *li, struct dg_buf *out)
{
    struct host h;
    int rc = parse_info(li, &h);
    if (rc)
        return rc;

    char *url = dup_url(li, &h);
    if (!url)
        return -ENOMEM;
    /* The URL covers name, port and path: one server endpoint, one profile identity. The
     * fragments only keep the two UUIDs apart; they are never sent anywhere. */
    char uuid_cfg[37], uuid_dns[37], id[64];
    rc = uuid5(url, "#profile", uuid_cfg);
    if (!rc)
        rc = uuid5(url, "#dns-settings", uuid_dns);
    if (rc) {
        free(url);
        return rc;
    }
    /* PayloadIdentifier decides what a new install replaces, so it has to be as stable as the
     * UUID; built from the UUID it stays in a safe character set whatever the server name. */
    snprintf(id, sizeof(id), "dohgate.profile.%s", uuid_cfg);

    const struct var vars[] = {
        {"url", url, strlen(url)},
        {"host", h.p, h.len},
        {"id", id, strlen(id)},
        {"uuid_cfg", uuid_cfg, strlen(uuid_cfg)},
        {"uuid_dns", uuid_dns, strlen(uuid_dns)},
    };
    const size_t nvars = sizeof(vars) / sizeof(vars[0]);
    struct emit e = {out, out->len, 0};
    expand(&e, mc_head, vars, nvars, ESC_XML);
    if (h.ip)
        expand(&e, mc_addresses, vars, nvars, ESC_XML);
    expand(&e, mc_tail, vars, nvars, ESC_XML);
    rc = emit_finish(&e);
    free(url);
    return rc;
}
