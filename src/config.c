/*
 * Configuration table and parsers. Every option is one row of `options[]`; parsing (file and
 * command line), defaults, --help, the dump and freeing all walk that table, so adding an option
 * is one row plus one struct field.
 *
 * Nothing here keeps state between calls: the table is const and every function works only on
 * the struct config it is given.
 */
#include "dohgate/config.h"

#include "dohgate/acl.h"
#include "dohgate/dnswire.h"
#include "dohgate/doh.h"
#include "dohgate/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ldns/ldns.h>
#include <openssl/evp.h>

/* Longest accepted config line, without its newline. */
#define CONFIG_LINE_MAX 4096

#define DEFAULT_RESOLV_CONF "/etc/resolv.conf"

enum opt_type {
    OPT_UINT,      /* unsigned, decimal, min..max */
    OPT_STRING,    /* char *, strdup'd */
    OPT_ADDRS,     /* struct dg_addr[DG_CONFIG_MAX_LIST] + size_t count */
    OPT_UPSTREAMS, /* struct dg_upstream[DG_CONFIG_MAX_LIST] + size_t count */
    OPT_PATHS,     /* char *[DG_CONFIG_MAX_LIST] + size_t count */
    OPT_BOOL,      /* bool, yes|no */
    OPT_SIZE,      /* size_t, bytes with optional K/M/G suffix (powers of 1024), min..max in MiB */
    OPT_ENUM,      /* int: the index of the value in the row's NULL-terminated names[] */
    OPT_STRLIST,   /* char ** (grown as needed) + size_t count, at most the row's max entries */
};

/* Extra check for a string value. @return NULL when valid, else why not (static text). */
typedef const char *(*opt_validate_cb)(const char *value);

struct option_def {
    const char *name;
    enum opt_type type;
    size_t off;       /* the field in struct config */
    size_t count_off; /* list types: the n_* field */
    const char *dflt; /* NULL: no default (or computed in config_finish) */
    unsigned min;     /* OPT_UINT range */
    unsigned max;
    unsigned port; /* OPT_ADDRS: default port; 0 = the port must be given */
    opt_validate_cb validate;
    const char *const *names; /* OPT_ENUM: the allowed values, NULL-terminated; index = value */
    bool restart;             /* a reload cannot change it (sockets, threads, privileges) */
    bool words; /* in the file, an unquoted value is the rest of the line (several words) */
    const char *metavar;
    const char *help;
};

static const char *validate_doh_path(const char *v)
{
    if (v[0] != '/')
        return "must start with '/'";
    for (const char *p = v; *p; p++) {
        /* A query string or fragment can never match a :path we compare against, and a
         * space or non-ASCII byte is not a valid request target. */
        if (*p == '?' || *p == '#')
            return "must not contain '?' or '#'";
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "must contain only visible ASCII characters";
    }
    return NULL;
}

static const char *validate_server_name(const char *v)
{
    /* Used as certificate CN/SAN and in the printed URL: keep it one word of printable ASCII. */
    if (strlen(v) > 253)
        return "is longer than 253 characters";
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '/')
            return "must be a host name (visible ASCII, no spaces or '/')";
    }
    return NULL;
}

/* An ACME identifier: a DNS name the CA can look up and connect to. No wildcard: those need the
 * dns-01 challenge, which dohgate does not do. */
static const char *validate_acme_domain(const char *v)
{
    size_t n = strlen(v);
    if (n == 0 || n > 253)
        return "must be a domain name of 1..253 characters";
    if (v[0] == '*')
        return "cannot be a wildcard: those need the dns-01 challenge (use cert and key)";
    struct in6_addr a6;
    if (inet_pton(AF_INET6, v, &a6) == 1 || strspn(v, "0123456789.") == n)
        return "must be a domain name, not an address";
    if (v[0] == '.' || v[n - 1] == '.' || strstr(v, ".."))
        return "must be a domain name without empty labels or a trailing dot";
    if (!strchr(v, '.'))
        return "must be a fully qualified domain name (a CA issues no certificate for one label)";
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.')
            return "must be a domain name (letters, digits, '-' and '.')";
    return NULL;
}

static const char *validate_acme_email(const char *v)
{
    const char *at = strchr(v, '@');
    if (strlen(v) > 254) /* RFC 5321's path limit; and it must fit the account's mailto: */
        return "is longer than 254 characters";
    if (!at || at == v || !at[1] || strchr(at + 1, '@'))
        return "must be an e-mail address (name@domain)";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || strchr("<>\"'\\", *p))
            return "must be a plain e-mail address (visible ASCII, no quotes or brackets)";
    return NULL;
}

static const char *validate_https_url(const char *v)
{
    if (strncmp(v, "https://", 8) != 0 || !v[8])
        return "must be an https:// URL";
    for (const char *p = v; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return "must be a URL of visible ASCII characters";
    return NULL;
}

static const char *validate_account(const char *v)
{
    /* A user or group name as useradd(8) accepts it; looked up at start-up, not here. */
    if (!*v || strlen(v) > 32)
        return "must be 1..32 characters";
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("._-", *p))
            return "must be a user or group name (letters, digits, '.', '_', '-')";
    return NULL;
}

static const char *validate_cidr(const char *v)
{
    struct acl_entry e;
    return acl_parse(v, true, &e) == 0
               ? NULL
               : "is not an address or network (192.0.2.0/24, 2001:db8::/32)";
}

static const char *validate_domain(const char *v)
{
    uint8_t wire[DNSWIRE_MAX_NAME];
    return dnswire_name_from_text(v, strlen(v), wire) ? NULL : "is not a domain name";
}

/* Zone-file syntax, as the local data will parse it (a relative owner is taken as absolute). */
static const char *validate_local_record(const char *v)
{
    /* ldns wraps a TTL past 32 bits: check the numbers before the type ourselves (RFC 2181
     * §8: at most 2^31 - 1) */
    const char *p = v + strcspn(v, " \t");
    for (int k = 0; k < 2 && *p; k++) {
        p += strspn(p, " \t");
        size_t n = strcspn(p, " \t");
        if (n && strspn(p, "0123456789") == n && (n > 10 || strtoull(p, NULL, 10) > 2147483647ULL))
            return "has a TTL over 2147483647 (RFC 2181)";
        p += n;
    }
    ldns_rdf *root = ldns_dname_new_frm_str(".");
    ldns_rr *rr = NULL;
    ldns_status st = root ? ldns_rr_new_frm_str(&rr, v, 3600, root, NULL) : LDNS_STATUS_MEM_ERR;
    ldns_rr_free(rr);
    ldns_rdf_deep_free(root);
    if (st == LDNS_STATUS_OK)
        return NULL;
    /* ldns's error texts are static */
    return ldns_get_errorstr_by_id(st) ? ldns_get_errorstr_by_id(st) : "is not a resource record";
}

/* A list or policy name: a word for metric labels and configuration references. */
static bool list_word_valid(const char *p, size_t n)
{
    if (n == 0 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)p[i]) && p[i] != '-' && p[i] != '_')
            return false;
    }
    return true;
}

void config_list_name(const char *spec, char *out, size_t outlen, const char **file)
{
    const char *eq = strchr(spec, '=');
    const char *slash = strchr(spec, '/');
    if (eq && (!slash || eq < slash)) {
        snprintf(out, outlen, "%.*s", (int)(eq - spec), spec);
        *file = eq + 1;
        return;
    }
    *file = spec;
    const char *base = strrchr(spec, '/');
    base = base ? base + 1 : spec;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    if (n > 32)
        n = 32; /* a label, not the whole file name: two lists alike in 32 need a NAME= */
    if (n >= outlen)
        n = outlen - 1;
    /* characters a label cannot hold become '_' */
    for (size_t i = 0; i < n; i++)
        out[i] = isalnum((unsigned char)base[i]) || base[i] == '-' ? base[i] : '_';
    out[n] = '\0';
}

/* allowlist FILE: no name needed (nothing labels or selects an allowlist) */
static const char *validate_file(const char *v)
{
    return v[0] ? NULL : "names no file";
}

static const char *validate_list_spec(const char *v)
{
    char name[64];
    const char *file;
    config_list_name(v, name, sizeof(name), &file);
    if (strchr(v, '=') && (!strchr(v, '/') || strchr(v, '=') < strchr(v, '/')) &&
        !list_word_valid(name, strlen(name)))
        return "has a bad list name (1..32 letters, digits, '-', '_' before '=')";
    if (!list_word_valid(name, strlen(name)))
        return "needs a NAME= (the file name makes no list name)";
    if (*file == '\0')
        return "names no file";
    return NULL;
}

static const char *validate_forward_zone(const char *v)
{
    struct dg_fwd_zone *z = malloc(sizeof(*z));
    if (!z)
        return "out of memory";
    const char *why = NULL;
    (void)config_parse_forward_zone(v, z, &why);
    free(z);
    return why;
}

/* "NAME [LIST…]" */
static const char *validate_policy(const char *v)
{
    size_t n = strcspn(v, " \t");
    if (!list_word_valid(v, n))
        return "must start with a policy name (1..32 letters, digits, '-', '_')";
    for (const char *p = v + n; *p;) {
        p += strspn(p, " \t");
        size_t k = strcspn(p, " \t");
        if (k && !list_word_valid(p, k))
            return "names a list that is not a list name";
        p += k;
    }
    return NULL;
}

/* "CIDR|ID POLICY" */
static const char *validate_policy_client(const char *v)
{
    size_t n = strcspn(v, " \t");
    const char *p = v + n + strspn(v + n, " \t");
    size_t k = strcspn(p, " \t");
    if (n == 0 || k == 0 || p[k + strspn(p + k, " \t")] != '\0')
        return "must be 'CIDR POLICY' or 'ID POLICY'";
    if (!list_word_valid(p, k))
        return "names no policy (1..32 letters, digits, '-', '_')";
    char who[128];
    if (n >= sizeof(who))
        return "has a client longer than 127 characters";
    memcpy(who, v, n);
    who[n] = '\0';
    struct acl_entry e;
    if (acl_parse(who, true, &e) == 0)
        return NULL;
    /* a DoH path ID: /dns-query/ID, as the router will take it */
    if (!doh_id_valid(who, n))
        return "is neither a network (10.0.1.0/24) nor a client ID (1..63 letters, digits, '-', "
               "'_')";
    return NULL;
}

static const char *validate_header(const char *v)
{
    /* "Name: value": a token name (RFC 9110 tchar), a colon, a value of visible ASCII. */
    const char *colon = strchr(v, ':');
    if (colon == NULL || colon == v)
        return "must look like 'Name: value'";
    for (const char *p = v; p < colon; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("!#$%&'*+-.^_`|~", *p))
            return "has an invalid character in the header name";
    }
    for (const char *p = colon + 1; *p; p++) {
        if ((unsigned char)*p >= 0x7f)
            return "must contain only ASCII characters";
    }
    static const char *const reserved[] = {"content-length", "transfer-encoding",
                                           "connection",     "strict-transport-security",
                                           "server",         "date"};
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
        if ((size_t)(colon - v) == strlen(reserved[i]) &&
            strncasecmp(v, reserved[i], strlen(reserved[i])) == 0)
            return "names a header dohgate sets itself (use hsts-max-age / server-header)";
    }
    return NULL;
}

static const char *validate_backend(const char *v)
{
    struct dg_addr a;
    if (strncmp(v, "http://", 7) != 0)
        return "must be http://ADDR:PORT (a numeric address; https backends are not supported)";
    char tmp[80];
    size_t n = strlen(v + 7);
    if (n > 0 && v[7 + n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(tmp))
        return "must be http://ADDR:PORT";
    memcpy(tmp, v + 7, n);
    tmp[n] = '\0';
    if (strchr(tmp, '/'))
        return "must not have a path (requests keep their own path)";
    if (config_parse_addr(tmp, 80, &a) != 0)
        return "must be http://ADDR[:PORT] with a numeric address, e.g. http://127.0.0.1:8080";
    return NULL;
}

static const char *validate_server_header(const char *v)
{
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p >= 0x7f)
            return "must contain only ASCII characters";
    }
    return NULL;
}

#define FIELD(f) offsetof(struct config, f)

/* OPT_ENUM value lists: the order is the enum's in config.h (log.h for log-level). */
static const char *const acl_scope_names[] = {"doh", "all", NULL};
static const char *const log_target_names[] = {"stderr", "syslog", NULL};
static const char *const query_log_client_names[] = {"truncate", "full", "none", NULL};
static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const block_answer_names[] = {"null", "nxdomain", "refused", NULL};
static const char *const fwd_header_names[] = {"x-forwarded-for", "forwarded", NULL};
static const char *const acme_challenge_names[] = {"tls-alpn-01", "http-01", NULL};

static const struct option_def options[] = {
    {.name = "listen",
     .restart = true,
     .type = OPT_ADDRS,
     .off = FIELD(listen),
     .count_off = FIELD(n_listen),
     .dflt = "[::]:443",
     .metavar = "ADDR:PORT",
     .help = "address and port to accept DoH connections on (repeatable)"},
    {.name = "upstream",
     .type = OPT_UPSTREAMS,
     .off = FIELD(upstream),
     .count_off = FIELD(n_upstream),
     .metavar = "URL",
     .help = "DNS server to forward queries to (repeatable): ADDR[:PORT] (plain DNS, port 53), "
             "tls://ADDR[:PORT][#NAME] (DNS over TLS, 853), https://HOST[:PORT][/PATH] (DNS over "
             "HTTPS, 443); then name=NAME, addr=ADDR[:PORT], pin-sha256=BASE64; "
             "default: the nameservers in resolv-conf"},
    {.name = "upstream-ca",
     .type = OPT_STRING,
     .off = FIELD(upstream_ca),
     .metavar = "FILE",
     .help = "PEM file of the CAs that TLS and HTTPS upstreams' certificates must chain to; "
             "default: the system's store"},
    {.name = "pad-responses",
     .type = OPT_BOOL,
     .off = FIELD(pad_responses),
     .dflt = "yes",
     .metavar = "yes|no",
     .help = "pad answers to 468-byte blocks when the query was padded (RFC 7830, RFC 8467)"},
    {.name = "resolv-conf",
     .type = OPT_STRING,
     .off = FIELD(resolv_conf),
     .dflt = DEFAULT_RESOLV_CONF,
     .metavar = "FILE",
     .help = "file whose nameserver lines are used when no upstream is given"},
    {.name = "doh-path",
     .type = OPT_PATHS,
     .off = FIELD(doh_path),
     .count_off = FIELD(n_doh_path),
     .dflt = "/dns-query",
     .validate = validate_doh_path,
     .metavar = "PATH",
     .help = "URL path that answers DoH requests, starting with '/' (repeatable)"},
    {.name = "cert",
     .type = OPT_PATHS,
     .off = FIELD(cert_file),
     .count_off = FIELD(n_cert),
     .metavar = "FILE",
     .help = "TLS certificate chain (PEM), repeatable: the n-th cert goes with the n-th key, the "
             "first is the default, the others are chosen by SNI; without cert and key a "
             "self-signed one is generated"},
    {.name = "key",
     .type = OPT_PATHS,
     .off = FIELD(key_file),
     .count_off = FIELD(n_key),
     .metavar = "FILE",
     .help = "private key of the cert at the same position (PEM), repeatable"},
    {.name = "ticket-key-file",
     .type = OPT_PATHS,
     .off = FIELD(ticket_key_file),
     .count_off = FIELD(n_ticket_key_file),
     .metavar = "FILE",
     .help = "session-ticket key shared by several servers behind one name: 80 random bytes "
             "(openssl rand 80 > FILE), repeatable, the first encrypts, the others still "
             "decrypt; reloaded with the certificates. Default: random keys in memory"},
    {.name = "ticket-key-rotation",
     .type = OPT_UINT,
     .off = FIELD(ticket_key_rotation_s),
     .dflt = "3600",
     .min = 0,
     .max = 604800,
     .metavar = "SECONDS",
     .help = "replace the in-memory session-ticket key this often (the two before it still "
             "decrypt); 0 = never. Not used with ticket-key-file"},
    {.name = "cert-check-interval",
     .type = OPT_UINT,
     .off = FIELD(cert_check_interval_s),
     .dflt = "5",
     .min = 0,
     .max = 3600,
     .metavar = "SECONDS",
     .help = "how often the cert, key, hosts and list files are checked for changes, which are "
             "loaded without a restart; 0 = only on SIGHUP"},
    {.name = "server-name",
     .type = OPT_STRING,
     .off = FIELD(server_name),
     .dflt = "localhost",
     .validate = validate_server_name,
     .metavar = "NAME",
     .help = "host name of the self-signed certificate and the printed URL"},
    {.name = "workers",
     .restart = true,
     .type = OPT_UINT,
     .off = FIELD(workers),
     .dflt = "0",
     .min = 0,
     .max = 256,
     .metavar = "N",
     .help = "worker threads; 0 = one per CPU"},
    {.name = "max-concurrent-streams",
     .type = OPT_UINT,
     .off = FIELD(max_concurrent_streams),
     .dflt = "100",
     .min = 1,
     .max = 1000,
     .metavar = "N",
     .help = "HTTP/2 streams a client may have open at once on one connection"},
    {.name = "upstream-timeout",
     .type = OPT_UINT,
     .off = FIELD(upstream_timeout_ms),
     .dflt = "1500",
     .min = 10,
     .max = 60000,
     .metavar = "MS",
     .help = "milliseconds to wait for one upstream before trying the next"},
    {.name = "query-timeout",
     .type = OPT_UINT,
     .off = FIELD(query_timeout_ms),
     .dflt = "4000",
     .min = 10,
     .max = 120000,
     .metavar = "MS",
     .help = "milliseconds before a query is answered with SERVFAIL; >= upstream-timeout"},
    {.name = "idle-timeout",
     .type = OPT_UINT,
     .off = FIELD(idle_timeout_s),
     .dflt = "60",
     .min = 1,
     .max = 86400,
     .metavar = "SECONDS",
     .help = "seconds an idle client connection is kept open"},
    {.name = "handshake-timeout",
     .type = OPT_UINT,
     .off = FIELD(handshake_timeout_s),
     .dflt = "10",
     .min = 1,
     .max = 300,
     .metavar = "SECONDS",
     .help = "seconds a client has to complete the TLS handshake"},
    {.name = "max-connections",
     .type = OPT_UINT,
     .off = FIELD(max_connections),
     .dflt = "10000",
     .min = 1,
     .max = 1000000,
     .metavar = "N",
     .help = "open client connections per worker; more are refused"},
    {.name = "max-upstream-queries",
     .type = OPT_UINT,
     .off = FIELD(max_upstream_queries),
     .dflt = "10000",
     .min = 1,
     .max = 1000000,
     .metavar = "N",
     .help = "distinct queries forwarded upstream at once, per worker; past it new questions "
             "get SERVFAIL (dohgate_rejected_total)"},
    {.name = "max-connections-per-client",
     .type = OPT_UINT,
     .off = FIELD(max_conns_per_client),
     .dflt = "256",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "open connections per client address (IPv6: per /64); more are refused at once. "
             "Generous for NATs; 0 = no limit"},
    {.name = "connection-rate-limit",
     .type = OPT_UINT,
     .off = FIELD(conn_rate),
     .dflt = "100",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "new connections per second per client (TLS handshakes are the costliest work); "
             "more are refused at once; 0 = no limit"},
    {.name = "connection-rate-burst",
     .type = OPT_UINT,
     .off = FIELD(conn_burst),
     .dflt = "0",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "new connections a client may open at once before connection-rate-limit applies; "
             "0 = twice the rate"},
    {.name = "rate-limit",
     .type = OPT_UINT,
     .off = FIELD(query_rate),
     .dflt = "0",
     .min = 0,
     .max = 10000000,
     .metavar = "N",
     .help = "DoH queries per second per client; more get HTTP 429 with Retry-After; 0 = no "
             "limit"},
    {.name = "rate-limit-burst",
     .type = OPT_UINT,
     .off = FIELD(query_burst),
     .dflt = "0",
     .min = 0,
     .max = 10000000,
     .metavar = "N",
     .help = "queries a client may send at once before rate-limit applies; 0 = twice the rate"},
    {.name = "minimal-any",
     .type = OPT_BOOL,
     .off = FIELD(minimal_any),
     .dflt = "yes",
     .metavar = "yes|no",
     .help = "answer ANY queries at once with one synthesized HINFO record (RFC 8482) instead "
             "of forwarding them"},
    {.name = "allow-client",
     .type = OPT_PATHS,
     .off = FIELD(allow_client),
     .count_off = FIELD(n_allow_client),
     .validate = validate_cidr,
     .metavar = "CIDR",
     .help = "client network allowed to use DoH (repeatable); with any, others are refused"},
    {.name = "deny-client",
     .type = OPT_PATHS,
     .off = FIELD(deny_client),
     .count_off = FIELD(n_deny_client),
     .validate = validate_cidr,
     .metavar = "CIDR",
     .help = "client network refused (repeatable); the longest matching prefix decides"},
    {.name = "acl-scope",
     .type = OPT_ENUM,
     .off = FIELD(acl_scope),
     .dflt = "doh",
     .names = acl_scope_names,
     .metavar = "doh|all",
     .help = "what allow-client/deny-client guard: doh (refused queries get 403, the website "
             "stays public) or all (refused clients' connections are closed at once)"},
    {.name = "log-level",
     .type = OPT_ENUM,
     .names = log_level_names,
     .off = FIELD(log_level),
     .dflt = "info",
     .metavar = "LEVEL",
     .help = "how much is logged: error, warn, info or debug (no level logs query data: see "
             "query-log)"},
    {.name = "log-target",
     .restart = true,
     .type = OPT_ENUM,
     .off = FIELD(log_target),
     .dflt = "stderr",
     .names = log_target_names,
     .metavar = "stderr|syslog",
     .help = "where log lines go: stderr (journald under systemd) or syslog (facility daemon)"},
    {.name = "query-log",
     .type = OPT_BOOL,
     .off = FIELD(query_log),
     .dflt = "no",
     .metavar = "yes|no",
     .help = "log one line per DoH answer: client, name, type, rcode, HTTP version. Off by "
             "default: no query data is logged otherwise"},
    {.name = "query-log-client",
     .type = OPT_ENUM,
     .off = FIELD(query_log_client),
     .dflt = "truncate",
     .names = query_log_client_names,
     .metavar = "truncate|full|none",
     .help = "client address in the query log: truncate (IPv4 /24, IPv6 /48), full, or none"},
    {.name = "cache-size",
     .type = OPT_SIZE,
     .off = FIELD(cache_size),
     .dflt = "64M",
     .min = 0,
     .max = 65536,
     .metavar = "BYTES",
     .help = "answer cache bound (entries and index included), K/M/G suffixes; 0 = no cache"},
    {.name = "cache-min-ttl",
     .type = OPT_UINT,
     .off = FIELD(cache_min_ttl),
     .dflt = "0",
     .min = 0,
     .max = 86400,
     .metavar = "SECONDS",
     .help = "cache answers at least this long (raises smaller TTLs)"},
    {.name = "cache-max-ttl",
     .type = OPT_UINT,
     .off = FIELD(cache_max_ttl),
     .dflt = "86400",
     .min = 1,
     .max = 604800,
     .metavar = "SECONDS",
     .help = "cache answers at most this long"},
    {.name = "cache-max-negative-ttl",
     .type = OPT_UINT,
     .off = FIELD(cache_max_negative_ttl),
     .dflt = "3600",
     .min = 0,
     .max = 86400,
     .metavar = "SECONDS",
     .help = "cache NXDOMAIN/NODATA at most this long (RFC 2308: SOA TTL, SOA MINIMUM)"},
    {.name = "cache-nosoa-ttl",
     .type = OPT_UINT,
     .off = FIELD(cache_nosoa_ttl),
     .dflt = "30",
     .min = 0,
     .max = 3600,
     .metavar = "SECONDS",
     .help = "cache negative answers that carry no SOA this long"},
    {.name = "cache-servfail-ttl",
     .type = OPT_UINT,
     .off = FIELD(cache_servfail_ttl),
     .dflt = "5",
     .min = 0,
     .max = 30,
     .metavar = "SECONDS",
     .help = "cache SERVFAIL answers from upstream this long (0 = never)"},
    {.name = "serve-stale",
     .type = OPT_BOOL,
     .off = FIELD(serve_stale),
     .dflt = "yes",
     .metavar = "yes|no",
     .help = "answer from expired entries when every upstream fails (RFC 8767)"},
    {.name = "stale-max-age",
     .type = OPT_UINT,
     .off = FIELD(stale_max_age),
     .dflt = "86400",
     .min = 0,
     .max = 604800,
     .metavar = "SECONDS",
     .help = "how long after expiry an entry may still be served stale"},
    {.name = "stale-answer-ttl",
     .type = OPT_UINT,
     .off = FIELD(stale_answer_ttl),
     .dflt = "30",
     .min = 1,
     .max = 3600,
     .metavar = "SECONDS",
     .help = "TTL of the records in a stale answer"},
    {.name = "prefetch",
     .type = OPT_UINT,
     .off = FIELD(prefetch),
     .dflt = "10",
     .min = 0,
     .max = 50,
     .metavar = "PERCENT",
     .help = "refresh an entry asked for in the last PERCENT of its TTL; 0 = off"},
    {.name = "site-root",
     .type = OPT_STRING,
     .off = FIELD(site_root),
     .metavar = "DIR",
     .help = "serve the website from static files in DIR (paths other than doh-path)"},
    {.name = "site-backend",
     .type = OPT_STRING,
     .off = FIELD(site_backend),
     .validate = validate_backend,
     .metavar = "URL",
     .help = "reverse-proxy the website to an HTTP/1.1 backend, e.g. http://127.0.0.1:8080; "
             "without site-root and site-backend a built-in landing page is served"},
    {.name = "site-max-body",
     .type = OPT_SIZE,
     .off = FIELD(site_max_body),
     .dflt = "1M",
     .min = 0,
     .max = 1024,
     .metavar = "BYTES",
     .help = "largest request body accepted for the website (413 above)"},
    {.name = "send-timeout",
     .type = OPT_UINT,
     .off = FIELD(send_timeout_s),
     .dflt = "30",
     .min = 1,
     .max = 3600,
     .metavar = "SECONDS",
     .help = "a connection with response data waiting that accepts none of it for this long is "
             "closed; a stream holding a file, a backend connection or a request body that "
             "makes no progress for this long is reset (PINGs are not progress)"},
    {.name = "max-sources-per-connection",
     .type = OPT_UINT,
     .off = FIELD(max_sources_per_conn),
     .dflt = "100",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "open files (larger than 16 KiB) and backend connections streaming responses on "
             "one connection; past it HTTP/2 refuses the stream (REFUSED_STREAM: clients retry), "
             "HTTP/1.1 answers 503 (retry-after: 1); keep it at least max-concurrent-streams: "
             "a browser opens that many requests at once; 0 = no limit"},
    {.name = "max-sources-per-client",
     .type = OPT_UINT,
     .off = FIELD(max_sources_per_client),
     .dflt = "1024",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "the same, for all connections of one client address (IPv6: per /64); 0 = no "
             "limit"},
    {.name = "max-body-buffer-per-connection",
     .type = OPT_SIZE,
     .off = FIELD(body_buffer_per_conn),
     .dflt = "2M",
     .min = 0,
     .max = 1024,
     .metavar = "BYTES",
     .help = "request-body bytes buffered for one connection; a body past it gets 503 "
             "(HTTP/2: REFUSED_STREAM before any byte was taken); 0 = no limit"},
    {.name = "max-body-buffer-per-client",
     .type = OPT_SIZE,
     .off = FIELD(body_buffer_per_client),
     .dflt = "16M",
     .min = 0,
     .max = 1024,
     .metavar = "BYTES",
     .help = "the same, for all connections of one client address; 0 = no limit"},
    {.name = "max-body-buffer",
     .type = OPT_SIZE,
     .off = FIELD(body_buffer_total),
     .dflt = "256M",
     .min = 0,
     .max = 1024,
     .metavar = "BYTES",
     .help = "the same, for the whole process; 0 = no limit"},
    {.name = "descriptor-reserve",
     .type = OPT_UINT,
     .off = FIELD(fd_reserve),
     .dflt = "1024",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "descriptors kept free for accepting and answering DNS: website work that would "
             "leave fewer gets 503"},
    {.name = "backend-timeout",
     .type = OPT_UINT,
     .off = FIELD(backend_timeout_s),
     .dflt = "60",
     .min = 1,
     .max = 3600,
     .metavar = "SECONDS",
     .help = "site-backend: connect timeout and longest wait for each read (then 504)"},
    {.name = "http-listen",
     .restart = true,
     .type = OPT_ADDRS,
     .off = FIELD(http_listen),
     .count_off = FIELD(n_http_listen),
     .metavar = "ADDR:PORT",
     .help = "plain-HTTP listener (e.g. [::]:80): 301 to https, and ACME challenges "
             "(repeatable; default: none)"},
    {.name = "metrics-listen",
     .restart = true,
     .type = OPT_ADDRS,
     .off = FIELD(metrics_listen),
     .count_off = FIELD(n_metrics_listen),
     .metavar = "ADDR:PORT",
     .help = "plain-HTTP listener for Prometheus (/metrics) and health checks (/healthz), e.g. "
             "127.0.0.1:9153 (repeatable; default: none)"},
    {.name = "dns-listen",
     .restart = true,
     .type = OPT_ADDRS,
     .off = FIELD(dns_listen),
     .count_off = FIELD(n_dns_listen),
     .port = 53,
     .metavar = "ADDR[:PORT]",
     .help = "plain DNS listener, UDP and TCP on the same address (repeatable; port 53; "
             "default: none). Answers only dns-allow sources"},
    {.name = "dot-listen",
     .restart = true,
     .type = OPT_ADDRS,
     .off = FIELD(dot_listen),
     .count_off = FIELD(n_dot_listen),
     .port = 853,
     .metavar = "ADDR[:PORT]",
     .help = "DNS-over-TLS listener (RFC 7858; repeatable; port 853; default: none), with the "
             "certificates of the DoH listener"},
    {.name = "plain-listen",
     .restart = true,
     .type = OPT_ADDRS,
     .off = FIELD(plain_listen),
     .count_off = FIELD(n_plain_listen),
     .metavar = "ADDR:PORT",
     .help = "clear-text listener for a TLS-terminating proxy in front (repeatable; default: "
             "none): DoH, JSON and the website over HTTP/1.1 and h2c (prior knowledge). Keep it "
             "on loopback or a private network"},
    {.name = "proxy-protocol-from",
     .type = OPT_PATHS,
     .off = FIELD(proxy_protocol_from),
     .count_off = FIELD(n_proxy_protocol_from),
     .validate = validate_cidr,
     .metavar = "CIDR",
     .help = "load balancers whose connections start with a PROXY protocol v1 or v2 header, "
             "whose address is then the client's (repeatable; default: none). Their connections "
             "without one, and headers from anyone else, are closed"},
    {.name = "trusted-proxy",
     .type = OPT_PATHS,
     .off = FIELD(trusted_proxy),
     .count_off = FIELD(n_trusted_proxy),
     .validate = validate_cidr,
     .metavar = "CIDR",
     .help = "proxies whose X-Forwarded-For and Forwarded headers name the client: read right "
             "to left, the first address not in a trusted-proxy network is the client "
             "(repeatable; default: none, the headers are ignored)"},
    {.name = "trusted-proxy-header",
     .type = OPT_ENUM,
     .off = FIELD(trusted_proxy_header),
     .dflt = "x-forwarded-for",
     .names = fwd_header_names,
     .metavar = "x-forwarded-for|forwarded",
     .help = "the one header a trusted-proxy's client address is read from; the other is "
             "ignored, since a proxy that appends to one passes a client's own copy of the "
             "other through unchanged"},
    {.name = "dns-allow",
     .type = OPT_PATHS,
     .off = FIELD(dns_allow),
     .count_off = FIELD(n_dns_allow),
     .validate = validate_cidr,
     .metavar = "CIDR",
     .help = "sources plain DNS (UDP, TCP) answers (repeatable); others get REFUSED on TCP and "
             "nothing on UDP. Default: loopback, 10/8, 172.16/12, 192.168/16, 100.64/10, "
             "fc00::/7, link-local"},
    {.name = "dns-rate-limit",
     .type = OPT_UINT,
     .off = FIELD(dns_rate_limit),
     .dflt = "0",
     .min = 0,
     .max = 1000000,
     .metavar = "N",
     .help = "plain-DNS UDP answers per second per client (IPv4 /24, IPv6 /56), so that spoofed "
             "sources cannot use the server as an amplifier; 0 = no limit"},
    {.name = "dns-rate-slip",
     .type = OPT_UINT,
     .off = FIELD(dns_rate_slip),
     .dflt = "2",
     .min = 0,
     .max = 10,
     .metavar = "N",
     .help = "every Nth answer over dns-rate-limit goes out truncated (TC=1: a real client "
             "retries over TCP); 0 = drop them all"},
    {.name = "dns-udp-max-size",
     .type = OPT_UINT,
     .off = FIELD(dns_udp_max_size),
     .dflt = "1232",
     .min = 512,
     .max = 4096,
     .metavar = "BYTES",
     .help = "largest UDP answer whatever the client's EDNS buffer says (DNS flag day 2020); "
             "larger answers are truncated (TC=1)"},
    {.name = "dns-tcp-pipeline",
     .type = OPT_UINT,
     .off = FIELD(dns_tcp_pipeline),
     .dflt = "100",
     .min = 1,
     .max = 1000,
     .metavar = "N",
     .help = "queries in flight per plain-DNS TCP or DoT connection; reading waits beyond it"},
    {.name = "json-api",
     .type = OPT_BOOL,
     .off = FIELD(json_api),
     .dflt = "yes",
     .metavar = "yes|no",
     .help = "answer GET ?name=&type= on the DoH paths (accept: application/dns-json) and at "
             "/resolve in the JSON form of Google and Cloudflare"},
    {.name = "ddr",
     .type = OPT_BOOL,
     .off = FIELD(ddr),
     .dflt = "yes",
     .metavar = "yes|no",
     .help = "answer _dns.resolver.arpa SVCB with this server's DoH and DoT endpoints "
             "(RFC 9462), so clients given its plain-DNS address upgrade by themselves"},
    {.name = "hosts-file",
     .type = OPT_STRLIST,
     .off = FIELD(hosts_file),
     .count_off = FIELD(n_hosts_file),
     .max = 64,
     .metavar = "FILE",
     .help = "names and addresses in /etc/hosts format, answered locally (A, AAAA and the "
             "matching PTR; repeatable; reloaded when the file changes)"},
    {.name = "local-record",
     .type = OPT_STRLIST,
     .words = true,
     .off = FIELD(local_record),
     .count_off = FIELD(n_local_record),
     .max = 100000,
     .validate = validate_local_record,
     .metavar = "'RR'",
     .help = "a record answered locally, in zone-file syntax, e.g. 'nas.home.arpa. 3600 IN A "
             "192.168.1.10' (any type; repeatable)"},
    {.name = "local-zone",
     .type = OPT_STRLIST,
     .off = FIELD(local_zone),
     .count_off = FIELD(n_local_zone),
     .max = 10000,
     .validate = validate_domain,
     .metavar = "NAME",
     .help = "names under NAME without local data get NXDOMAIN (NODATA when the name has other "
             "types) with a SOA and are never forwarded (repeatable). RFC 6303 zones (private "
             "reverse zones, localhost, invalid, home.arpa...) are local by default"},
    {.name = "blocklist",
     .type = OPT_STRLIST,
     .off = FIELD(blocklist),
     .count_off = FIELD(n_blocklist),
     .max = 32,
     .validate = validate_list_spec,
     .metavar = "[NAME=]FILE",
     .help = "names to block, with their subdomains: hosts lines (0.0.0.0 ads.example), one "
             "domain per line, or adblock rules (||ads.example^) (repeatable; NAME: the label "
             "in metrics and policies, default the file's name; reloaded when it changes)"},
    {.name = "allowlist",
     .type = OPT_STRLIST,
     .off = FIELD(allowlist),
     .count_off = FIELD(n_allowlist),
     .max = 32,
     .validate = validate_file,
     .metavar = "FILE",
     .help = "names never blocked, with their subdomains (the blocklist formats; repeatable)"},
    {.name = "block-answer",
     .type = OPT_ENUM,
     .off = FIELD(block_answer),
     .dflt = "null",
     .names = block_answer_names,
     .metavar = "null|nxdomain|refused",
     .help = "what a blocked name gets: null (0.0.0.0 and ::, NODATA for other types), NXDOMAIN "
             "or REFUSED; with an Extended DNS Error 'Blocked' (RFC 8914)"},
    {.name = "block-ttl",
     .type = OPT_UINT,
     .off = FIELD(block_ttl),
     .dflt = "10",
     .min = 0,
     .max = 86400,
     .metavar = "SECONDS",
     .help = "TTL of blocked answers (short: an unblocked name works again soon)"},
    {.name = "forward-zone",
     .type = OPT_STRLIST,
     .words = true,
     .off = FIELD(forward_zone),
     .count_off = FIELD(n_forward_zone),
     .max = 256,
     .validate = validate_forward_zone,
     .metavar = "'NAME UPSTREAM…'",
     .help = "queries at or under NAME go to these upstreams (as for upstream, up to 8), the "
             "longest NAME wins; e.g. 'corp.example 10.0.0.53' (repeatable)"},
    {.name = "policy",
     .type = OPT_STRLIST,
     .words = true,
     .off = FIELD(policy),
     .count_off = FIELD(n_policy),
     .max = 64,
     .validate = validate_policy,
     .metavar = "'NAME [LIST…]'",
     .help = "a named policy applying these blocklists (none: no blocking); the policy named "
             "'default' applies to clients policy-client does not name; without a 'default' "
             "policy they get every blocklist"},
    {.name = "policy-client",
     .type = OPT_STRLIST,
     .words = true,
     .off = FIELD(policy_client),
     .count_off = FIELD(n_policy_client),
     .max = 4096,
     .validate = validate_policy_client,
     .metavar = "'CIDR|ID POLICY'",
     .help = "clients of a network, or asking at the DoH path /dns-query/ID, get POLICY (an ID "
             "wins over a network, the longest network wins; repeatable)"},
    {.name = "acme-webroot",
     .type = OPT_STRING,
     .off = FIELD(acme_webroot),
     .metavar = "DIR",
     .help = "serve /.well-known/acme-challenge/ from DIR/.well-known/acme-challenge/ on "
             "http-listen (certbot --webroot -w DIR)"},
    {.name = "hsts-max-age",
     .type = OPT_UINT,
     .off = FIELD(hsts_max_age),
     .dflt = "31536000",
     .min = 0,
     .max = 63072000,
     .metavar = "SECONDS",
     .help = "Strict-Transport-Security max-age on every HTTPS response; 0 = no header"},
    {.name = "header",
     .type = OPT_PATHS,
     .off = FIELD(header),
     .count_off = FIELD(n_header),
     .validate = validate_header,
     .metavar = "'NAME: VALUE'",
     .help = "extra header on every response, e.g. 'Alt-Svc: clear' (repeatable)"},
    {.name = "server-header",
     .type = OPT_STRING,
     .off = FIELD(server_header),
     .validate = validate_server_header,
     .metavar = "TEXT",
     .help = "value of the Server header; default: no Server header"},
    {.name = "user",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(user),
     .validate = validate_account,
     .metavar = "NAME",
     .help = "after binding the ports as root, run as this user (and its group); "
             "default: stay as started"},
    {.name = "group",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(group),
     .validate = validate_account,
     .metavar = "NAME",
     .help = "with user: run with this group instead of the user's own"},
    {.name = "cache-redis",
     .type = OPT_STRING,
     .off = FIELD(cache_redis),
     .metavar = "ADDR:PORT",
     .help = "Redis server shared by several instances as a second-level cache: looked up on a "
             "local miss before the upstreams, filled with their answers (default: none)"},
    {.name = "cache-redis-timeout",
     .type = OPT_UINT,
     .off = FIELD(cache_redis_timeout_ms),
     .dflt = "20",
     .min = 1,
     .max = 1000,
     .metavar = "MS",
     .help = "longest wait for a cache-redis lookup; past it the query goes upstream and the "
             "server is given a rest (backoff)"},
    {.name = "acme-domain",
     .restart = true,
     .type = OPT_PATHS,
     .off = FIELD(acme_domain),
     .count_off = FIELD(n_acme_domain),
     .validate = validate_acme_domain,
     .metavar = "NAME",
     .help = "obtain and renew a certificate for this name from an ACME CA (repeatable: one "
             "certificate for all the names; default: none)"},
    {.name = "acme-email",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(acme_email),
     .validate = validate_acme_email,
     .metavar = "ADDR",
     .help = "contact address given to the ACME CA for its expiry and policy mail (default: "
             "none)"},
    {.name = "acme-directory",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(acme_directory),
     .dflt = "https://acme-v02.api.letsencrypt.org/directory",
     .validate = validate_https_url,
     .metavar = "URL",
     .help = "the ACME CA's directory URL (default: Let's Encrypt's production CA)"},
    {.name = "acme-ca",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(acme_ca),
     .metavar = "FILE",
     .help = "PEM file of the CAs the ACME server's own HTTPS certificate must chain to "
             "(default: the system's store)"},
    {.name = "acme-state-dir",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(acme_state_dir),
     .dflt = "/var/lib/dohgate/acme",
     .metavar = "DIR",
     .help = "where the ACME account key, certificate and key are kept (made 0700, owned by "
             "the run user)"},
    {.name = "acme-challenge",
     .restart = true,
     .type = OPT_ENUM,
     .off = FIELD(acme_challenge),
     .names = acme_challenge_names,
     .dflt = "tls-alpn-01",
     .metavar = "tls-alpn-01|http-01",
     .help = "how the CA checks that this server answers for the names: tls-alpn-01 on the "
             "TLS listener's port 443, or http-01 on http-listen's port 80"},
    {.name = "acme-eab-kid",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(acme_eab_kid),
     .metavar = "KID",
     .help = "external account binding key ID, for CAs that require one (with "
             "acme-eab-hmac-key)"},
    {.name = "acme-eab-hmac-key",
     .restart = true,
     .type = OPT_STRING,
     .off = FIELD(acme_eab_hmac_key),
     .metavar = "BASE64URL",
     .help = "external account binding HMAC key, base64url as the CA gives it"},
    {.name = "shutdown-timeout",
     .type = OPT_UINT,
     .off = FIELD(shutdown_timeout_s),
     .dflt = "5",
     .min = 1,
     .max = 300,
     .metavar = "SECONDS",
     .help = "on SIGTERM, how long open requests may take to finish before dohgate exits"},
    {.name = "request-timeout",
     .type = OPT_UINT,
     .off = FIELD(request_timeout_s),
     .dflt = "10",
     .min = 1,
     .max = 3600,
     .metavar = "SECONDS",
     .help = "a request (headers and body) must arrive whole within this time (then 408)"},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))
_Static_assert(N_OPTIONS <= DG_CONFIG_MAX_OPTIONS, "raise DG_CONFIG_MAX_OPTIONS");

/* opt_line value of an option set on the command line (a file line is never this large). */
#define CONFIG_LINE_CLI UINT32_MAX

/* Where a value came from, for error messages. */
struct origin {
    const char *where; /* file name, or "command line" */
    unsigned line;     /* 0: no line number */
    bool cli;          /* command-line wording ("--name: ...") */
};

static void *opt_field(struct config *cfg, const struct option_def *o)
{
    return (char *)cfg + o->off;
}

static const void *opt_cfield(const struct config *cfg, const struct option_def *o)
{
    return (const char *)cfg + o->off;
}

static size_t *opt_count(struct config *cfg, const struct option_def *o)
{
    return (size_t *)(void *)((char *)cfg + o->count_off);
}

static size_t opt_ccount(const struct config *cfg, const struct option_def *o)
{
    return *(const size_t *)(const void *)((const char *)cfg + o->count_off);
}

static bool opt_is_list(const struct option_def *o)
{
    return o->type == OPT_ADDRS || o->type == OPT_PATHS || o->type == OPT_UPSTREAMS ||
           o->type == OPT_STRLIST;
}

static const struct option_def *find_option(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (strlen(options[i].name) == len && memcmp(options[i].name, name, len) == 0)
            return &options[i];
    }
    return NULL;
}

/* ---- error messages ---------------------------------------------------------------------- */

__attribute__((format(printf, 4, 5))) static int fail(const struct origin *org, char *err,
                                                      size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return -EINVAL;
    int n;
    if (org->cli)
        n = snprintf(err, errlen, "command line: ");
    else if (org->line)
        n = snprintf(err, errlen, "%s:%u: ", org->where, org->line);
    else
        n = snprintf(err, errlen, "%s: ", org->where);
    if (n < 0)
        n = 0;
    if ((size_t)n < errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* "'name': <body>" in a file, "--name: <body>" on the command line. */
__attribute__((format(printf, 5, 6))) static int
opt_fail(const struct origin *org, const char *name, char *err, size_t errlen, const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    if (org->cli)
        return fail(org, err, errlen, "--%s: %s", name, body);
    return fail(org, err, errlen, "'%s': %s", name, body);
}

static int fail_nomem(const struct origin *org, char *err, size_t errlen)
{
    fail(org, err, errlen, "out of memory");
    return -ENOMEM;
}

/* Plain message without origin (cross-option checks in config_finish). */
__attribute__((format(printf, 3, 4))) static int fail_plain(char *err, size_t errlen,
                                                            const char *fmt, ...)
{
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

/* ---- value parsers ----------------------------------------------------------------------- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r';
}

static char *skip_ws(char *p)
{
    while (is_ws(*p))
        p++;
    return p;
}

static bool all_digits(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
    }
    return true;
}

/* Decimal, no sign, no spaces. @return 0, -EINVAL (not a number), -ERANGE (too big). */
static int parse_ulong(const char *s, unsigned long *out)
{
    /* strtoul alone accepts "-1", " 1", "+1" and "0x1" (with base 0); only digits reach it. */
    if (!all_digits(s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end != '\0')
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_port(const char *s, unsigned *out)
{
    unsigned long v;
    if (parse_ulong(s, &v) != 0 || v < 1 || v > 65535)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

static void addr_build(int family, const void *bin, unsigned port, struct dg_addr *out)
{
    char host[INET6_ADDRSTRLEN];
    memset(out, 0, sizeof(*out));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)(void *)&out->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        memcpy(&sin->sin_addr, bin, sizeof(sin->sin_addr));
        out->len = (socklen_t)sizeof(*sin);
        inet_ntop(AF_INET, bin, host, sizeof(host));
        snprintf(out->text, sizeof(out->text), "%s:%u", host, port);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)(void *)&out->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        memcpy(&sin6->sin6_addr, bin, sizeof(sin6->sin6_addr));
        out->len = (socklen_t)sizeof(*sin6);
        inet_ntop(AF_INET6, bin, host, sizeof(host));
        snprintf(out->text, sizeof(out->text), "[%s]:%u", host, port);
    }
}

int config_parse_addr(const char *s, unsigned default_port, struct dg_addr *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port_str = NULL;
    const char *host_start;
    size_t host_len;
    bool v6;

    if (s == NULL || out == NULL || default_port > 65535)
        return -EINVAL;
    size_t len = strlen(s);
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL)
            return -EINVAL;
        host_start = s + 1;
        host_len = (size_t)(rb - host_start);
        v6 = true;
        if (rb[1] == ':')
            port_str = rb + 2;
        else if (rb[1] != '\0')
            return -EINVAL;
    } else {
        const char *colon = strchr(s, ':');
        host_start = s;
        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            /* Two or more colons: a bare IPv6 address. "::1:53" is a valid address, so a port
             * can never be split off here; that is why brackets are required with a port and
             * the bare form is only allowed where a default port exists. */
            if (default_port == 0)
                return -EINVAL;
            host_len = len;
            v6 = true;
        } else {
            host_len = colon != NULL ? (size_t)(colon - s) : len;
            if (colon != NULL)
                port_str = colon + 1;
            v6 = false;
        }
    }
    if (host_len == 0 || host_len >= sizeof(host))
        return -EINVAL;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';

    unsigned port = default_port;
    if (port_str != NULL) {
        if (parse_port(port_str, &port) != 0)
            return -EINVAL;
    } else if (default_port == 0) {
        return -EINVAL;
    }

    unsigned char bin[sizeof(struct in6_addr)];
    int family = v6 ? AF_INET6 : AF_INET;
    if (inet_pton(family, host, bin) != 1)
        return -EINVAL;
    addr_build(family, bin, port, out);
    return 0;
}

bool config_addr_is_loopback(const struct dg_addr *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&a->ss;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->ss.ss_family != AF_INET6)
        return false;
    const struct in6_addr *v6 = &((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(v6) || (IN6_IS_ADDR_V4MAPPED(v6) && v6->s6_addr[12] == 127);
}

unsigned config_addr_port(const struct dg_addr *a)
{
    if (a->ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)&a->ss)->sin_port);
}

const void *config_addr_bytes(const struct dg_addr *a)
{
    if (a->ss.ss_family == AF_INET6)
        return &((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_addr;
    return &((const struct sockaddr_in *)(const void *)&a->ss)->sin_addr;
}

bool config_addr_is_any(const struct dg_addr *a)
{
    if (a->ss.ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(
            &((const struct sockaddr_in6 *)(const void *)&a->ss)->sin6_addr);
    return ((const struct sockaddr_in *)(const void *)&a->ss)->sin_addr.s_addr == htonl(INADDR_ANY);
}

/* ---- upstream values --------------------------------------------------------------------- */

/* A DNS host name as certificates carry it: letters, digits, '-', labels of 1..63, at most 253
 * in all (a trailing dot is dropped); not a number (that would be an address). */
static bool host_name_valid(char *name)
{
    size_t len = strlen(name);
    if (len > 0 && name[len - 1] == '.')
        name[--len] = '\0';
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    bool alpha = false;
    for (const char *p = name; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)*p) && *p != '-')
            return false;
        alpha = alpha || !isdigit((unsigned char)*p);
        if (++label > 63)
            return false;
    }
    return label > 0 && alpha;
}

/* "HOST[:PORT]" of a tls:// or https:// URL: a numeric address (into @p addr) or a name (into
 * @p name, port into @p port). @return 0, or -EINVAL. */
static int parse_url_host(const char *hp, unsigned dport, struct dg_addr *addr, bool *numeric,
                          char *name, size_t nlen, unsigned *port)
{
    *numeric = false;
    *port = dport;
    if (config_parse_addr(hp, dport, addr) == 0) {
        *numeric = true;
        *port = ntohs(addr->ss.ss_family == AF_INET
                          ? ((const struct sockaddr_in *)(const void *)&addr->ss)->sin_port
                          : ((const struct sockaddr_in6 *)(const void *)&addr->ss)->sin6_port);
        return 0;
    }
    const char *colon = strrchr(hp, ':');
    size_t hlen = colon ? (size_t)(colon - hp) : strlen(hp);
    if (hp[0] == '[' || hlen == 0 || hlen >= nlen)
        return -EINVAL;
    if (colon && parse_port(colon + 1, port) != 0)
        return -EINVAL;
    memcpy(name, hp, hlen);
    name[hlen] = '\0';
    return host_name_valid(name) ? 0 : -EINVAL;
}

int config_parse_upstream(const char *s, struct dg_upstream *out, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(out, 0, sizeof(*out));
    char buf[sizeof(out->spec)];
    if (!s || strlen(s) >= sizeof(buf)) {
        *why = "is too long";
        return -EINVAL;
    }
    strcpy(buf, s);
    char *save = NULL;
    char *url = strtok_r(buf, " \t", &save);
    if (!url) {
        *why = "is empty";
        return -EINVAL;
    }
    unsigned dport = 53;
    char *rest = url;
    if (strncasecmp(url, "udp://", 6) == 0) {
        rest = url + 6;
    } else if (strncasecmp(url, "tls://", 6) == 0) {
        out->proto = DG_UP_TLS;
        rest = url + 6;
        dport = 853;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        out->proto = DG_UP_HTTPS;
        rest = url + 8;
        dport = 443;
    } else if (strstr(url, "://")) {
        *why = "has an unknown scheme (plain ADDR, udp://, tls:// or https://)";
        return -EINVAL;
    }

    if (out->proto == DG_UP_DNS) {
        if (strtok_r(NULL, " \t", &save)) {
            *why = "takes no parameters after a plain address (name=, addr= and pin-sha256= are "
                   "for tls:// and https://)";
            return -EINVAL;
        }
        if (config_parse_addr(rest, 53, &out->addr) != 0) {
            *why = "is not a valid address (expected ADDR[:PORT] or [V6]:PORT)";
            return -EINVAL;
        }
        snprintf(out->text, sizeof(out->text), "%s", out->addr.text);
        snprintf(out->spec, sizeof(out->spec), "%s", out->addr.text);
        return 0;
    }

    /* tls://HOST[:PORT][#NAME], https://HOST[:PORT][/PATH] */
    char *hash = strchr(rest, '#');
    char *slash = strchr(rest, '/');
    char frag_name[254] = "";
    if (hash) {
        if (out->proto == DG_UP_HTTPS) {
            *why = "takes no '#' (give the name to verify as name=NAME)";
            return -EINVAL;
        }
        *hash = '\0';
        if (strlen(hash + 1) >= sizeof(frag_name) ||
            !host_name_valid(strcpy(frag_name, hash + 1))) {
            *why = "has an invalid name after '#'";
            return -EINVAL;
        }
    }
    const char *path = "/dns-query";
    char pathbuf[sizeof(out->path)];
    if (slash) {
        if (out->proto == DG_UP_TLS) {
            *why = "takes no path (tls://ADDR[:PORT][#NAME])";
            return -EINVAL;
        }
        if (strlen(slash) >= sizeof(pathbuf)) {
            *why = "has a path longer than 255 characters";
            return -EINVAL;
        }
        strcpy(pathbuf, slash);
        *slash = '\0';
        for (const char *p = pathbuf; *p; p++) {
            if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#') {
                *why = "has a path with a space, '#' or a non-ASCII character";
                return -EINVAL;
            }
        }
        if (strcmp(pathbuf, "/") != 0)
            path = pathbuf;
    }
    bool numeric;
    unsigned port;
    char host[254];
    if (parse_url_host(rest, dport, &out->addr, &numeric, host, sizeof(host), &port) != 0) {
        *why = "has an invalid host (a numeric address, [V6], or a name, then an optional :PORT)";
        return -EINVAL;
    }

    bool have_addr = false;
    char pins[DG_UP_MAX_PINS * 60] = "";
    for (char *p; (p = strtok_r(NULL, " \t", &save));) {
        if (strncmp(p, "name=", 5) == 0) {
            if (strlen(p + 5) >= sizeof(frag_name) || !host_name_valid(strcpy(frag_name, p + 5))) {
                *why = "has an invalid name= (a DNS name such as dns.quad9.net)";
                return -EINVAL;
            }
        } else if (strncmp(p, "addr=", 5) == 0) {
            if (numeric) {
                *why = "takes addr= only when its host is a name (the address is given already)";
                return -EINVAL;
            }
            if (config_parse_addr(p + 5, port, &out->addr) != 0) {
                *why = "has an invalid addr= (ADDR[:PORT] or [V6]:PORT, numeric)";
                return -EINVAL;
            }
            have_addr = true;
        } else if (strncmp(p, "pin-sha256=", 11) == 0) {
            /* base64 of 32 bytes: 44 characters, one '=' of padding */
            const char *b64 = p + 11;
            unsigned char pin[48];
            if (out->n_pin >= DG_UP_MAX_PINS) {
                *why = "has more than 4 pins";
                return -EINVAL;
            }
            if (strlen(b64) != 44 || b64[43] != '=' || b64[42] == '=' ||
                EVP_DecodeBlock(pin, (const unsigned char *)b64, 44) != 33) {
                *why = "has an invalid pin-sha256= (base64 of a SHA-256 digest, 44 characters)";
                return -EINVAL;
            }
            memcpy(out->pin[out->n_pin++], pin, 32);
            size_t l = strlen(pins);
            snprintf(pins + l, sizeof(pins) - l, " pin-sha256=%s", b64);
        } else {
            *why = "has an unknown parameter (name=, addr=, pin-sha256=)";
            return -EINVAL;
        }
    }
    if (!numeric && !have_addr) {
        *why = "names its host: give addr=ADDR too (upstream names are not resolved, so that "
               "dohgate does not depend on another resolver to start)";
        return -EINVAL;
    }
    /* The name to verify: #NAME / name=, else the URL's host name; none for a numeric host
     * without one (then the certificate must hold the address). */
    snprintf(out->name, sizeof(out->name), "%s", frag_name[0] ? frag_name : numeric ? "" : host);

    char hostport[262];
    if (numeric) {
        /* addr.text is "A:P" or "[V6]:P"; the URL's authority drops the default port */
        snprintf(hostport, sizeof(hostport), "%s", out->addr.text);
        if (port == dport)
            *strrchr(hostport, ':') = '\0';
    } else if (port == dport) {
        snprintf(hostport, sizeof(hostport), "%s", host);
    } else {
        snprintf(hostport, sizeof(hostport), "%.253s:%u", host, port);
    }
    if (out->proto == DG_UP_TLS) {
        /* tls://NAME addr=A reads back as tls://A#NAME: the same upstream */
        snprintf(out->text, sizeof(out->text), "tls://%s%s%s", out->addr.text,
                 out->name[0] ? "#" : "", out->name);
        snprintf(out->spec, sizeof(out->spec), "%s%s", out->text, pins);
    } else {
        snprintf(out->authority, sizeof(out->authority), "%s", hostport);
        snprintf(out->path, sizeof(out->path), "%s", path);
        snprintf(out->text, sizeof(out->text), "https://%s%s", hostport, path);
        bool name_differs = frag_name[0] && (numeric || strcmp(frag_name, host) != 0);
        snprintf(out->spec, sizeof(out->spec), "%s%s%s%s%s%s", out->text,
                 name_differs ? " name=" : "", name_differs ? frag_name : "",
                 have_addr ? " addr=" : "", have_addr ? out->addr.text : "", pins);
    }
    return 0;
}

/* ---- setting values ---------------------------------------------------------------------- */

static void list_clear(struct config *cfg, const struct option_def *o)
{
    size_t *n = opt_count(cfg, o);
    if (o->type == OPT_PATHS) {
        char **arr = opt_field(cfg, o);
        for (size_t i = 0; i < *n; i++) {
            free(arr[i]);
            arr[i] = NULL;
        }
    }
    if (o->type == OPT_STRLIST) {
        char ***arr = opt_field(cfg, o);
        for (size_t i = 0; i < *n; i++)
            free((*arr)[i]);
        free(*arr);
        *arr = NULL;
        free(cfg->list_line[o - options]);
        cfg->list_line[o - options] = NULL;
    }
    *n = 0;
}

/* Append a copy of @p value to a growing string array (doubled when full).
 * @return 0 or -ENOMEM (the array unchanged). */
static int strlist_push(char ***arr, size_t *n, const char *value)
{
    if ((*n & (*n - 1)) == 0) { /* 0, 1, 2, 4, ...: full */
        char **bigger = realloc(*arr, (*n ? *n * 2 : 4) * sizeof(char *));
        if (!bigger)
            return -ENOMEM;
        *arr = bigger;
    }
    if (!((*arr)[*n] = strdup(value)))
        return -ENOMEM;
    (*n)++;
    return 0;
}

/* Append to an OPT_STRLIST, remembering the entry's line (config_list_origin()). */
static int strlist_append(struct config *cfg, const struct option_def *o, const char *value,
                          unsigned line)
{
    size_t row = (size_t)(o - options), n = *opt_count(cfg, o);
    unsigned *lines = realloc(cfg->list_line[row], (n + 1) * sizeof(*lines));
    if (!lines)
        return -ENOMEM;
    cfg->list_line[row] = lines;
    lines[n] = line;
    return strlist_push(opt_field(cfg, o), opt_count(cfg, o), value);
}

static int set_value_at(struct config *cfg, const struct option_def *o, const char *value,
                        const struct origin *org, char *err, size_t errlen);

/* Parse and store one value, and remember where it came from (config_origin()). */
static int set_value(struct config *cfg, const struct option_def *o, const char *value,
                     const struct origin *org, char *err, size_t errlen)
{
    int r = set_value_at(cfg, o, value, org, err, errlen);
    if (r == 0)
        cfg->opt_line[o - options] = org->cli ? CONFIG_LINE_CLI : org->line;
    return r;
}

static int set_value_at(struct config *cfg, const struct option_def *o, const char *value,
                        const struct origin *org, char *err, size_t errlen)
{
    if (value == NULL || value[0] == '\0') {
        if (org->cli)
            return fail(org, err, errlen, "--%s: needs a value", o->name);
        return fail(org, err, errlen, "'%s' needs a value", o->name);
    }
    for (const char *p = value; *p; p++) {
        /* Checked first so that no later message echoes terminal escapes back. */
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return opt_fail(org, o->name, err, errlen, "value contains a control character");
    }

    switch (o->type) {
    case OPT_UINT: {
        unsigned long v;
        int r = parse_ulong(value, &v);
        if (r == -EINVAL)
            return opt_fail(org, o->name, err, errlen, "'%s' is not a decimal number", value);
        if (r != 0 || v < o->min || v > o->max) {
            if (org->cli)
                return fail(org, err, errlen, "--%s: value must be %u..%u", o->name, o->min,
                            o->max);
            return fail(org, err, errlen, "'%s': '%s' is out of range %u..%u", o->name, value,
                        o->min, o->max);
        }
        *(unsigned *)opt_field(cfg, o) = (unsigned)v;
        return 0;
    }
    case OPT_BOOL: {
        bool b;
        if (strcmp(value, "yes") == 0 || strcmp(value, "on") == 0 || strcmp(value, "true") == 0)
            b = true;
        else if (strcmp(value, "no") == 0 || strcmp(value, "off") == 0 ||
                 strcmp(value, "false") == 0)
            b = false;
        else
            return opt_fail(org, o->name, err, errlen, "'%s' is not yes or no", value);
        *(bool *)opt_field(cfg, o) = b;
        return 0;
    }
    case OPT_SIZE: {
        /* Digits, then an optional K, M or G (powers of 1024). */
        size_t nd = strspn(value, "0123456789");
        char num[24];
        unsigned long v;
        unsigned shift = 0;
        const char *suf = value + nd;
        if (suf[0] == 'K' || suf[0] == 'k')
            shift = 10;
        else if (suf[0] == 'M' || suf[0] == 'm')
            shift = 20;
        else if (suf[0] == 'G' || suf[0] == 'g')
            shift = 30;
        if (nd == 0 || nd >= sizeof(num) || (suf[0] && (shift == 0 || suf[1])))
            return opt_fail(org, o->name, err, errlen,
                            "'%s' is not a size (bytes, or a number with K, M or G)", value);
        memcpy(num, value, nd);
        num[nd] = '\0';
        if (parse_ulong(num, &v) != 0 || v > ((unsigned long)o->max << 20) >> shift)
            return opt_fail(org, o->name, err, errlen, "'%s' is larger than %uG", value,
                            o->max >> 10);
        *(size_t *)opt_field(cfg, o) = (size_t)v << shift;
        return 0;
    }
    case OPT_ENUM: {
        char list[160] = "";
        for (int k = 0; o->names[k]; k++) {
            if (strcmp(value, o->names[k]) == 0) {
                *(int *)opt_field(cfg, o) = k;
                return 0;
            }
            size_t l = strlen(list);
            snprintf(list + l, sizeof(list) - l, "%s%s", k ? ", " : "", o->names[k]);
        }
        return opt_fail(org, o->name, err, errlen, "'%s' is not one of %s", value, list);
    }
    case OPT_STRING: {
        const char *why = o->validate != NULL ? o->validate(value) : NULL;
        if (why != NULL)
            return opt_fail(org, o->name, err, errlen, "'%s' %s", value, why);
        char *dup = strdup(value);
        if (dup == NULL)
            return fail_nomem(org, err, errlen);
        char **slot = opt_field(cfg, o);
        free(*slot);
        *slot = dup;
        return 0;
    }
    case OPT_STRLIST: {
        if (*opt_count(cfg, o) >= o->max)
            return org->cli
                       ? fail(org, err, errlen, "--%s: too many entries (max %u)", o->name, o->max)
                       : fail(org, err, errlen, "too many '%s' entries (max %u)", o->name, o->max);
        const char *why = o->validate != NULL ? o->validate(value) : NULL;
        if (why != NULL)
            return opt_fail(org, o->name, err, errlen, "'%s' %s", value, why);
        return strlist_append(cfg, o, value, org->cli ? CONFIG_LINE_CLI : org->line) == 0
                   ? 0
                   : fail_nomem(org, err, errlen);
    }
    case OPT_ADDRS:
    case OPT_PATHS:
    case OPT_UPSTREAMS:
        break;
    }

    size_t *n = opt_count(cfg, o);
    if (*n >= DG_CONFIG_MAX_LIST) {
        if (org->cli)
            return fail(org, err, errlen, "--%s: too many entries (max %d)", o->name,
                        DG_CONFIG_MAX_LIST);
        return fail(org, err, errlen, "too many '%s' entries (max %d)", o->name,
                    DG_CONFIG_MAX_LIST);
    }
    if (o->type == OPT_UPSTREAMS) {
        struct dg_upstream *arr = opt_field(cfg, o);
        const char *why = NULL;
        if (config_parse_upstream(value, &arr[*n], &why) != 0)
            return opt_fail(org, o->name, err, errlen, "'%s' %s", value, why);
        (*n)++;
        return 0;
    }
    if (o->type == OPT_ADDRS) {
        struct dg_addr *arr = opt_field(cfg, o);
        if (config_parse_addr(value, o->port, &arr[*n]) != 0)
            return opt_fail(org, o->name, err, errlen,
                            "'%s' is not a valid address (expected %s%s)", value, o->metavar,
                            o->port != 0 ? " or [V6]:PORT" : ", [V6]:PORT");
        (*n)++;
        return 0;
    }
    const char *why = o->validate != NULL ? o->validate(value) : NULL;
    if (why != NULL)
        return opt_fail(org, o->name, err, errlen, "'%s' %s", value, why);
    char *dup = strdup(value);
    if (dup == NULL)
        return fail_nomem(org, err, errlen);
    char **arr = opt_field(cfg, o);
    arr[(*n)++] = dup;
    return 0;
}

int config_set(struct config *cfg, const char *name, const char *value, const char *origin,
               unsigned line, char *err, size_t errlen)
{
    struct origin org = {origin != NULL ? origin : "config", line, false};
    if (name == NULL)
        return fail(&org, err, errlen, "missing option name");
    const struct option_def *o = find_option(name, strlen(name));
    if (o == NULL)
        return fail(&org, err, errlen, "unknown option '%s'", name);
    return set_value(cfg, o, value, &org, err, errlen);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

struct config *config_new(void)
{
    struct config *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return NULL;
    atomic_init(&cfg->refs, 1);
    /* Scalar defaults go through the same parser as user values, so a bad table row shows up
     * in the first unit test instead of as a silently odd default. */
    struct origin org = {"defaults", 0, false};
    char err[128];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (o->dflt == NULL || opt_is_list(o))
            continue;
        if (set_value(cfg, o, o->dflt, &org, err, sizeof(err)) != 0)
            goto fail;
    }
    return cfg;
fail:
    config_free(cfg);
    return NULL;
}

struct config *config_ref(struct config *cfg)
{
    atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
    return cfg;
}

void config_unref(struct config *cfg)
{
    config_free(cfg);
}

void config_free(struct config *cfg)
{
    if (cfg == NULL)
        return;
    /* acq_rel: the last holder must see every other holder's reads done before it frees. */
    if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (o->type == OPT_STRING)
            free(*(char **)opt_field(cfg, o));
        else if (o->type == OPT_PATHS || o->type == OPT_STRLIST)
            list_clear(cfg, o);
    }
    free(cfg->config_file);
    free(cfg->hsts_value);
    free(cfg->fwd);
    for (size_t i = 0; i < DG_CONFIG_MAX_LIST; i++)
        free(cfg->header_name[i]);
    free(cfg);
}

/* ---- files ------------------------------------------------------------------------------- */

static FILE *open_read(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return f;
}

struct line_status {
    size_t len;
    bool too_long; /* longer than CONFIG_LINE_MAX; the rest of the line was consumed */
    bool has_nul;
};

/*
 * Read one line into buf (CONFIG_LINE_MAX + 1 bytes) without its newline. Reads byte by byte
 * so a NUL inside a line is seen and a huge line costs no memory.
 * @return 1 (line read), 0 (end of file), -errno (read error).
 */
static int read_line(FILE *f, char *buf, struct line_status *st)
{
    st->len = 0;
    st->too_long = false;
    st->has_nul = false;
    bool any = false;
    for (;;) {
        int c = getc(f);
        if (c == EOF) {
            if (ferror(f))
                return errno != 0 ? -errno : -EIO;
            if (!any)
                return 0;
            break;
        }
        any = true;
        if (c == '\n')
            break;
        if (c == '\0')
            st->has_nul = true;
        if (st->len < CONFIG_LINE_MAX)
            buf[st->len++] = (char)c;
        else
            st->too_long = true;
    }
    buf[st->len] = '\0';
    return 1;
}

static int parse_line(struct config *cfg, char *line, const struct origin *org, char *err,
                      size_t errlen)
{
    char *p = skip_ws(line);
    if (*p == '\0' || *p == '#')
        return 0;
    char *name = p;
    while (*p != '\0' && !is_ws(*p))
        p++;
    char *name_end = p;
    p = skip_ws(p);
    *name_end = '\0';
    const struct option_def *o = find_option(name, strlen(name));
    if (o == NULL)
        return fail(org, err, errlen, "unknown option '%s'", name);

    char *value = NULL;
    if (*p == '"') {
        /* No escapes: a quoted value runs to the next double quote. */
        value = p + 1;
        char *q = strchr(value, '"');
        if (q == NULL)
            return opt_fail(org, o->name, err, errlen, "unterminated quoted value");
        *q = '\0';
        p = q + 1;
        if (*p != '\0' && !is_ws(*p))
            return opt_fail(org, o->name, err, errlen, "unexpected '%s' after the closing quote",
                            p);
    } else if (*p != '\0' && *p != '#' && o->words) {
        /* Up to a comment ('#' after whitespace) or the end, trailing whitespace dropped. */
        value = p;
        bool quoted = false; /* a '#' inside "..." (a TXT record's text) is no comment */
        while (*p != '\0' && (quoted || !(*p == '#' && is_ws(p[-1])))) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        char *end = p;
        while (end > value && is_ws(end[-1]))
            end--;
        *end = '\0';
        p = end;
    } else if (*p != '\0' && *p != '#') {
        value = p;
        while (*p != '\0' && !is_ws(*p))
            p++;
        if (*p != '\0')
            *p++ = '\0';
    }
    p = skip_ws(p);
    /* A '#' starts a comment only after whitespace, so "a#b" stays one value. */
    if (*p != '\0' && *p != '#')
        return opt_fail(org, o->name, err, errlen,
                        "unexpected '%s' after the value (quote values that contain spaces)", p);
    return set_value(cfg, o, value, org, err, errlen);
}

int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen)
{
    struct origin org = {path, 0, false};
    FILE *f = open_read(path);
    if (f == NULL) {
        int e = errno;
        fail(&org, err, errlen, "cannot open: %s", strerror(e));
        return -e;
    }
    char *dup = strdup(path);
    if (dup == NULL) {
        fclose(f);
        return fail_nomem(&org, err, errlen);
    }
    free(cfg->config_file);
    cfg->config_file = dup;

    char *line = malloc(CONFIG_LINE_MAX + 1);
    if (line == NULL) {
        fclose(f);
        return fail_nomem(&org, err, errlen);
    }
    int rc = 0;
    struct line_status st;
    for (;;) {
        int r = read_line(f, line, &st);
        if (r == 0)
            break;
        org.line++;
        if (r < 0) {
            fail(&org, err, errlen, "read error: %s", strerror(-r));
            rc = r;
            break;
        }
        if (st.too_long) {
            rc = fail(&org, err, errlen, "line too long (max %d characters)", CONFIG_LINE_MAX);
            break;
        }
        if (st.has_nul) {
            rc = fail(&org, err, errlen, "NUL byte in line");
            break;
        }
        char *p = line;
        /* An editor may have put a UTF-8 byte order mark in front of the first name. */
        if (org.line == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
            p += 3;
        rc = parse_line(cfg, p, &org, err, errlen);
        if (rc != 0)
            break;
    }
    free(line);
    fclose(f);
    return rc;
}

int config_read_resolv_conf(struct config *cfg, const char *path)
{
    FILE *f = open_read(path);
    if (f == NULL)
        return -errno;
    char *line = malloc(CONFIG_LINE_MAX + 1);
    if (line == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    int added = 0;
    struct line_status st;
    for (;;) {
        int r = read_line(f, line, &st);
        if (r == 0)
            break;
        if (r < 0) {
            added = r;
            break;
        }
        if (cfg->n_upstream >= DG_CONFIG_MAX_LIST)
            break;
        /* Lines the resolver would not use are skipped, as libc does: this file belongs to
         * the host, not to us. Comment lines ('#', ';') fail the keyword test. */
        if (st.too_long || st.has_nul)
            continue;
        char *p = skip_ws(line);
        if (strncmp(p, "nameserver", 10) != 0 || !is_ws(p[10]))
            continue;
        p = skip_ws(p + 10);
        char *end = p;
        while (*end != '\0' && !is_ws(*end))
            end++;
        *end = '\0';
        /* Scoped addresses (fe80::1%eth0) need a scope id a struct dg_addr text cannot carry
         * back; link-local resolvers are rare enough to skip. */
        unsigned char bin[sizeof(struct in6_addr)];
        int family;
        if (inet_pton(AF_INET, p, bin) == 1)
            family = AF_INET;
        else if (inet_pton(AF_INET6, p, bin) == 1)
            family = AF_INET6;
        else
            continue;
        struct dg_upstream *up = &cfg->upstream[cfg->n_upstream++];
        memset(up, 0, sizeof(*up));
        addr_build(family, bin, 53, &up->addr);
        up->proto = DG_UP_DNS;
        memcpy(up->text, up->addr.text, sizeof(up->addr.text));
        memcpy(up->spec, up->addr.text, sizeof(up->addr.text));
        added++;
    }
    free(line);
    fclose(f);
    return added;
}

/* Does blocklist @p name exist? */
static bool have_list(const struct config *cfg, const char *name, size_t n)
{
    for (size_t i = 0; i < cfg->n_blocklist; i++) {
        char ln[64];
        const char *file;
        config_list_name(cfg->blocklist[i], ln, sizeof(ln), &file);
        if (strlen(ln) == n && memcmp(ln, name, n) == 0)
            return true;
    }
    return false;
}

static bool have_policy(const struct config *cfg, const char *name, size_t n)
{
    for (size_t i = 0; i < cfg->n_policy; i++) {
        const char *p = cfg->policy[i];
        if (strcspn(p, " \t") == n && memcmp(p, name, n) == 0)
            return true;
    }
    return false;
}

/* The forward zones parsed, and the names the policy options refer to checked against each
 * other (each value alone was checked as it was read). */
static int finish_policy(struct config *cfg, const struct origin *org, char *err, size_t errlen)
{
    char where[300];
    free(cfg->fwd);
    cfg->fwd = NULL;
    if (cfg->n_forward_zone) {
        if (!(cfg->fwd = calloc(cfg->n_forward_zone, sizeof(*cfg->fwd))))
            return fail_nomem(org, err, errlen);
        for (size_t i = 0; i < cfg->n_forward_zone; i++) {
            const char *why = "";
            if (config_parse_forward_zone(cfg->forward_zone[i], &cfg->fwd[i], &why) != 0)
                return fail_plain(err, errlen, "forward-zone '%s': %s", cfg->forward_zone[i], why);
            for (size_t k = 0; k < i; k++) {
                if (cfg->fwd[k].name_len == cfg->fwd[i].name_len &&
                    memcmp(cfg->fwd[k].name, cfg->fwd[i].name, cfg->fwd[i].name_len) == 0) {
                    config_list_origin(cfg, "forward-zone", i, where, sizeof(where));
                    return fail_plain(err, errlen, "%s: forward-zone %s is given twice", where,
                                      cfg->fwd[i].text);
                }
            }
        }
    }
    for (size_t i = 0; i < cfg->n_blocklist; i++) {
        char a[64];
        const char *file;
        config_list_name(cfg->blocklist[i], a, sizeof(a), &file);
        for (size_t k = 0; k < i; k++) {
            char b[64];
            config_list_name(cfg->blocklist[k], b, sizeof(b), &file);
            if (strcmp(a, b) == 0) {
                config_list_origin(cfg, "blocklist", i, where, sizeof(where));
                return fail_plain(err, errlen,
                                  "%s: two blocklists are named '%s': give one a NAME= of its "
                                  "own",
                                  where, a);
            }
        }
    }
    for (size_t i = 0; i < cfg->n_policy; i++) {
        const char *p = cfg->policy[i];
        size_t n = strcspn(p, " \t");
        config_list_origin(cfg, "policy", i, where, sizeof(where));
        for (size_t k = 0; k < i; k++) {
            if (strcspn(cfg->policy[k], " \t") == n && memcmp(cfg->policy[k], p, n) == 0)
                return fail_plain(err, errlen, "%s: policy '%.*s' is given twice", where, (int)n,
                                  p);
        }
        for (const char *q = p + n; *q;) {
            q += strspn(q, " \t");
            size_t k = strcspn(q, " \t");
            if (k && !have_list(cfg, q, k))
                return fail_plain(err, errlen, "%s: policy '%.*s' names no blocklist '%.*s'", where,
                                  (int)n, p, (int)k, q);
            q += k;
        }
    }
    for (size_t i = 0; i < cfg->n_policy_client; i++) {
        const char *p = cfg->policy_client[i];
        p += strcspn(p, " \t");
        p += strspn(p, " \t");
        if (!have_policy(cfg, p, strcspn(p, " \t"))) {
            config_list_origin(cfg, "policy-client", i, where, sizeof(where));
            return fail_plain(err, errlen, "%s: policy-client '%s': no policy '%s'", where,
                              cfg->policy_client[i], p);
        }
    }
    return 0;
}

int config_finish(struct config *cfg, char *err, size_t errlen)
{
    struct origin org = {"defaults", 0, false};
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (!opt_is_list(o) || o->dflt == NULL || *opt_count(cfg, o) != 0)
            continue;
        int r = set_value(cfg, o, o->dflt, &org, err, errlen);
        if (r != 0)
            return r;
    }

    if (cfg->n_upstream == 0) {
        const char *rc = cfg->resolv_conf != NULL ? cfg->resolv_conf : DEFAULT_RESOLV_CONF;
        int r = config_read_resolv_conf(cfg, rc);
        if (r == -ENOMEM)
            return fail_nomem(&org, err, errlen);
        if (cfg->n_upstream == 0) {
            if (r < 0)
                return fail_plain(err, errlen,
                                  "no upstream: give --upstream or a nameserver in %s (%s)", rc,
                                  strerror(-r));
            return fail_plain(err, errlen, "no upstream: give --upstream or a nameserver in %s",
                              rc);
        }
    }

    if (cfg->n_cert > 0 && cfg->n_key == 0)
        return fail_plain(err, errlen, "cert is given without key: give both or neither");
    if (cfg->n_key > 0 && cfg->n_cert == 0)
        return fail_plain(err, errlen, "key is given without cert: give both or neither");
    if (cfg->n_cert != cfg->n_key)
        return fail_plain(err, errlen,
                          "%zu cert but %zu key entries: they pair up in order, one key per cert",
                          cfg->n_cert, cfg->n_key);
    if (cfg->group != NULL && cfg->user == NULL)
        return fail_plain(err, errlen, "group is given without user: give user too");
    if (cfg->site_root != NULL && cfg->site_backend != NULL)
        return fail_plain(err, errlen, "site-root and site-backend are both given: choose one");
    if (cfg->site_backend != NULL) {
        /* validate_backend() accepted it, so this parse succeeds. */
        char tmp[80];
        snprintf(tmp, sizeof(tmp), "%s", cfg->site_backend + 7);
        size_t n = strlen(tmp);
        if (n > 0 && tmp[n - 1] == '/')
            tmp[n - 1] = '\0';
        if (config_parse_addr(tmp, 80, &cfg->backend) != 0)
            return fail_plain(err, errlen, "site-backend: bad address");
    }
    free(cfg->hsts_value);
    cfg->hsts_value = NULL;
    if (cfg->hsts_max_age > 0) {
        char v[48];
        snprintf(v, sizeof(v), "max-age=%u", cfg->hsts_max_age);
        cfg->hsts_value = strdup(v);
        if (cfg->hsts_value == NULL)
            return fail_nomem(&org, err, errlen);
    }
    for (size_t i = 0; i < DG_CONFIG_MAX_LIST; i++) {
        free(cfg->header_name[i]);
        cfg->header_name[i] = NULL;
        cfg->header_value[i] = NULL;
    }
    for (size_t i = 0; i < cfg->n_header; i++) {
        /* One block "name\0value": validate_header() guaranteed the colon. */
        char *b = strdup(cfg->header[i]);
        if (b == NULL)
            return fail_nomem(&org, err, errlen);
        char *colon = strchr(b, ':');
        *colon = '\0';
        for (char *q = b; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t vl = strlen(v);
        while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
            v[--vl] = '\0';
        cfg->header_name[i] = b;
        cfg->header_value[i] = v;
    }
    if (cfg->cache_redis != NULL) {
        /* numeric, with a port: dohgate resolves no names, and l2cache.c connects to it */
        struct dg_addr ra;
        if (config_parse_addr(cfg->cache_redis, 0, &ra) != 0) {
            char where[300];
            config_origin(cfg, "cache-redis", where, sizeof(where));
            return fail_plain(err, errlen,
                              "%s: cache-redis '%s': give a numeric ADDR:PORT (IPv6 in "
                              "brackets: [::1]:6379)",
                              where, cfg->cache_redis);
        }
    }
    if (cfg->n_acme_domain > 0) {
        char where[300];
        if (cfg->acme_challenge == ACME_CHALLENGE_HTTP && cfg->n_http_listen == 0) {
            config_origin(cfg, "acme-challenge", where, sizeof(where));
            return fail_plain(err, errlen,
                              "%s: acme-challenge http-01 needs http-listen (the CA asks on "
                              "port 80)",
                              where);
        }
        if (!cfg->acme_state_dir || cfg->acme_state_dir[0] != '/') {
            config_origin(cfg, "acme-state-dir", where, sizeof(where));
            return fail_plain(err, errlen, "%s: acme-state-dir must be an absolute path", where);
        }
        if (strlen(cfg->acme_state_dir) > 3900) {
            config_origin(cfg, "acme-state-dir", where, sizeof(where));
            return fail_plain(err, errlen, "%s: acme-state-dir is too long", where);
        }
        /* The ACME pair is served by itself (config_acme_files()); naming it as a cert too
         * would make it two pairs with the same names and key type. */
        char ac[4096], ak[4096];
        config_acme_files(cfg, ac, ak, sizeof(ac));
        for (size_t i = 0; i < cfg->n_cert; i++)
            if (strcmp(cfg->cert_file[i], ac) == 0 || strcmp(cfg->key_file[i], ak) == 0) {
                config_list_origin(cfg, "cert", i, where, sizeof(where));
                return fail_plain(err, errlen,
                                  "%s: %s is the ACME client's own pair (acme-state-dir): it is "
                                  "served without a cert/key line",
                                  where, cfg->cert_file[i]);
            }
    }
    if (!cfg->acme_eab_kid != !cfg->acme_eab_hmac_key) {
        char where[300];
        config_origin(cfg, cfg->acme_eab_kid ? "acme-eab-kid" : "acme-eab-hmac-key", where,
                      sizeof(where));
        return fail_plain(err, errlen,
                          "%s: acme-eab-kid and acme-eab-hmac-key go together (the CA gives both)",
                          where);
    }
    if (cfg->query_timeout_ms < cfg->upstream_timeout_ms)
        return fail_plain(err, errlen, "query-timeout (%u ms) must be >= upstream-timeout (%u ms)",
                          cfg->query_timeout_ms, cfg->upstream_timeout_ms);
    return finish_policy(cfg, &org, err, errlen);
}

/* ---- command line ------------------------------------------------------------------------ */

static bool is_main_flag(const char *a)
{
    static const char *const flags[] = {"--check-config", "--version", "--help", "-h", "-V"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (strcmp(a, flags[i]) == 0)
            return true;
    }
    return false;
}

int config_load_args(struct config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    struct origin org = {"command line", 0, true};
    bool replaced[N_OPTIONS] = {false};

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            i++; /* its FILE; main reports a missing one */
            continue;
        }
        if (strncmp(a, "--config=", 9) == 0 || strncmp(a, "-c", 2) == 0 || is_main_flag(a))
            continue;
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (a[0] == '-' && a[1] != '\0' && a[1] != '-')
                return fail(&org, err, errlen, "%s: unknown option", a);
            return fail(&org, err, errlen, "unexpected argument '%s'", a);
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const struct option_def *o = find_option(name, nlen);
        if (o == NULL)
            return fail(&org, err, errlen, "--%.*s: unknown option", nlen > 200 ? 200 : (int)nlen,
                        name);
        const char *value = NULL;
        if (eq != NULL)
            value = eq + 1;
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            value = argv[++i];

        size_t idx = (size_t)(o - options);
        if (opt_is_list(o) && !replaced[idx]) {
            list_clear(cfg, o);
            replaced[idx] = true;
        }
        int r = set_value(cfg, o, value, &org, err, errlen);
        if (r != 0)
            return r;
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------------ */

static bool needs_quotes(const char *v)
{
    if (v[0] == '\0' || v[0] == '"' || v[0] == '#')
        return true;
    for (const char *p = v; *p; p++) {
        if (is_ws(*p))
            return true;
    }
    return false;
}

static int dump_value(FILE *out, const char *name, const char *v)
{
    if (needs_quotes(v))
        return fprintf(out, "%s \"%s\"\n", name, v);
    return fprintf(out, "%s %s\n", name, v);
}

int config_dump(const struct config *cfg, FILE *out)
{
    int bad = 0;
    if (fputs("# dohgate effective configuration\n", out) < 0)
        bad = 1;
    if (cfg->config_file != NULL) {
        /* A comment line must stay one line, whatever the path contains. */
        if (fputs("# from ", out) < 0)
            bad = 1;
        for (const char *p = cfg->config_file; *p; p++) {
            if (fputc((unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p, out) == EOF)
                bad = 1;
        }
        if (fputc('\n', out) == EOF)
            bad = 1;
    }
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        const void *f = opt_cfield(cfg, o);
        int r = 0;
        switch (o->type) {
        case OPT_UINT:
            r = fprintf(out, "%s %u\n", o->name, *(const unsigned *)f);
            break;
        case OPT_BOOL:
            r = fprintf(out, "%s %s\n", o->name, *(const bool *)f ? "yes" : "no");
            break;
        case OPT_SIZE: {
            size_t v = *(const size_t *)f;
            static const char units[] = "GMK";
            int k = 0;
            while (k < 3 && (v == 0 || v % ((size_t)1 << (30 - 10 * k)) != 0))
                k++;
            if (k < 3)
                r = fprintf(out, "%s %zu%c\n", o->name, v >> (30 - 10 * k), units[k]);
            else
                r = fprintf(out, "%s %zu\n", o->name, v);
            break;
        }
        case OPT_ENUM: {
            int v = *(const int *)f, k = 0;
            while (o->names[k] && k != v)
                k++;
            r = o->names[k] ? fprintf(out, "%s %s\n", o->name, o->names[k])
                            : fprintf(out, "# %s (invalid value %d)\n", o->name, v);
            break;
        }
        case OPT_STRING: {
            const char *v = *(char *const *)f;
            r = v != NULL ? dump_value(out, o->name, v) : fprintf(out, "# %s (not set)\n", o->name);
            break;
        }
        case OPT_ADDRS: {
            const struct dg_addr *arr = f;
            size_t n = opt_ccount(cfg, o);
            if (n == 0)
                r = fprintf(out, "# %s (none)\n", o->name);
            for (size_t k = 0; k < n && r >= 0; k++)
                r = fprintf(out, "%s %s\n", o->name, arr[k].text);
            break;
        }
        case OPT_PATHS: {
            char *const *arr = f;
            size_t n = opt_ccount(cfg, o);
            if (n == 0)
                r = fprintf(out, "# %s (none)\n", o->name);
            for (size_t k = 0; k < n && r >= 0; k++)
                r = dump_value(out, o->name, arr[k]);
            break;
        }
        case OPT_UPSTREAMS: {
            const struct dg_upstream *arr = f;
            size_t n = opt_ccount(cfg, o);
            if (n == 0)
                r = fprintf(out, "# %s (none)\n", o->name);
            for (size_t k = 0; k < n && r >= 0; k++)
                r = dump_value(out, o->name, arr[k].spec);
            break;
        }
        case OPT_STRLIST: {
            char *const *arr = *(char **const *)f;
            size_t n = opt_ccount(cfg, o);
            if (n == 0)
                r = fprintf(out, "# %s (none)\n", o->name);
            /* several words stay unquoted, as they were read (a TXT record keeps its own
             * quotes); a value that begins with a quote would be read as a quoted one */
            for (size_t k = 0; k < n && r >= 0; k++)
                r = o->words && arr[k][0] != '"' ? fprintf(out, "%s %s\n", o->name, arr[k])
                                                 : dump_value(out, o->name, arr[k]);
            break;
        }
        }
        if (r < 0)
            bad = 1;
    }
    if (fflush(out) != 0 || ferror(out))
        bad = 1;
    return bad ? -EIO : 0;
}

void config_print_help(FILE *out)
{
    fprintf(out,
            "Options (command line: --NAME VALUE or --NAME=VALUE; config file: NAME VALUE):\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        char left[64];
        snprintf(left, sizeof(left), "--%s %s", o->name, o->metavar);
        fprintf(out, "  %-36s %s\n", left, o->help);
        if (o->type == OPT_UINT)
            fprintf(out, "  %-36s default: %s, range %u..%u\n", "", o->dflt, o->min, o->max);
        else if (o->dflt != NULL)
            fprintf(out, "  %-36s default: %s\n", "", o->dflt);
    }
}

/* ---- manual page ------------------------------------------------------------------------- */

/*
 * Text for an mdoc(7) text line or macro argument: a backslash becomes \e, a character past
 * ASCII (the metavars' '…') \[uXXXX], so the page is plain ASCII whatever the locale of the
 * reader; a '.' or '\'' that would start the line gets \& before it (else roff takes the line
 * for a request). The caller starts lines only where @p line_start says so.
 */
static void mdoc_put(FILE *out, const char *s, size_t n, bool line_start)
{
    if (line_start && n > 0 && (s[0] == '.' || s[0] == '\''))
        fputs("\\&", out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\') {
            fputs("\\e", out);
        } else if (c < 0x80) {
            fputc(c, out);
        } else {
            /* UTF-8: the table is ours and valid; a stray byte still gives a visible mark */
            unsigned cp = 0xfffd;
            size_t k = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
            if (k > 0 && i + k < n) {
                cp = c & (0x3fu >> k);
                for (size_t j = 1; j <= k; j++)
                    cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3fu);
                i += k;
            }
            fprintf(out, "\\[u%04X]", cp);
        }
    }
}

/*
 * Text lines of at most 80 bytes (mandoc's style lint), broken at a space that does not follow
 * a '.': roff takes a line that ends in one for the end of a sentence ("e.g.").
 */
static void mdoc_text(FILE *out, const char *s, size_t n)
{
    while (n > 0) {
        size_t k = n;
        if (n > 78) {
            k = 0;
            for (size_t i = 1; i < n && (i <= 78 || k == 0); i++)
                if (s[i] == ' ' && s[i - 1] != '.')
                    k = i;
            if (k == 0)
                k = n;
        }
        mdoc_put(out, s, k, true);
        fputc('\n', out);
        s += k;
        n -= k;
        while (n > 0 && *s == ' ') {
            s++;
            n--;
        }
    }
}

/*
 * An option's help text as sentences: the table holds lower-case fragments for --help's one
 * line ("address and port to accept ..."), the page wants a capital and a full stop. A sentence
 * that starts inside the text ("... 0 = never. Not used with ...") goes on a line of its own,
 * as mdoc wants (mandoc's "new sentence, new line"): roff then knows where sentences end.
 */
static void mdoc_help(FILE *out, const char *help)
{
    char buf[1024];
    /* capitalise the first word unless it is an option's name ("site-backend: ...") */
    size_t word = strcspn(help, " ,:;(");
    bool cap = islower((unsigned char)help[0]) && find_option(help, word) == NULL;
    const char *start = help;
    for (const char *p = help;; p++) {
        bool split = p[0] == '.' && p[1] == ' ' && isupper((unsigned char)p[2]);
        if (!split && *p != '\0')
            continue;
        size_t n = (size_t)(p - start) + (split ? 1 : 0);
        if (n > sizeof(buf) - 2)
            n = sizeof(buf) - 2; /* help lines are a few hundred bytes; never cut in practice */
        memcpy(buf, start, n);
        if (cap && n > 0)
            buf[0] = (char)toupper((unsigned char)buf[0]);
        cap = false;
        if (!split && n > 0 && !strchr(".!?", buf[n - 1]))
            buf[n++] = '.';
        mdoc_text(out, buf, n);
        if (!split)
            return;
        start = p + 2;
        p++;
    }
}

/*
 * The value part of an `.It` line: enum and yes|no values as keywords (Cm, with mdoc's '|'
 * delimiter between them), otherwise the metavar as arguments (Ar): its shell quotes dropped
 * (the page says how to quote), "[LIST…]" as an optional argument.
 */
/*
 * One word as a macro argument: a word that is the name of a callable mdoc macro ("No", "Ar")
 * or a lone delimiter would be read as markup, and '"' opens a quoted argument; the first gets
 * a zero-width \& in front, the second is written \(dq. None of today's rows needs it.
 */
static void mdoc_arg(FILE *out, const char *s, size_t n)
{
    static const char macros[] =
        " Ac Ad An Ao Ap Aq Ar At Bc Bo Bq Brc Bro Brq Bsx Bx Cd Cm Dc Do Dq Dv Dx Ec Em Eo Er "
        "Ev Fa Fl Fn Fr Ft Fx Ic Li Lk Ms Mt Nm No Ns Nx Oc Oo Op Ox Pa Pc Pf Po Pq Qc Ql Qo Qq "
        "Sc So Sq Sx Sy Ta Tn Ux Va Vt Xc Xo Xr ";
    char key[8];
    bool markup = n == 1 && strchr("|()[].,:;?!", s[0]) != NULL;
    if (!markup && n >= 2 && n <= 3) {
        snprintf(key, sizeof(key), " %.*s ", (int)n, s);
        markup = strstr(macros, key) != NULL;
    }
    if (markup)
        fputs("\\&", out);
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        while (i + k < n && s[i + k] != '"')
            k++;
        mdoc_put(out, s + i, k, false);
        i += k;
        if (i < n) {
            fputs("\\(dq", out);
            i++;
        }
    }
}

static void mdoc_value(FILE *out, const struct option_def *o)
{
    if (o->type == OPT_ENUM || o->type == OPT_BOOL) {
        static const char *const yes_no[] = {"yes", "no", NULL};
        const char *const *v = o->type == OPT_ENUM ? o->names : yes_no;
        fputs(" Cm", out);
        for (size_t k = 0; v[k]; k++) {
            fputs(k ? " | " : " ", out);
            mdoc_arg(out, v[k], strlen(v[k]));
        }
        return;
    }
    const char *m = o->metavar;
    size_t n = strlen(m);
    if (n >= 2 && m[0] == '\'' && m[n - 1] == '\'') {
        m++;
        n -= 2;
    }
    bool ar = false; /* an Ar macro is open */
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        while (i + k < n && m[i + k] != ' ')
            k++;
        if (m[i] == '[' && m[i + k - 1] == ']') {
            fputs(" Op Ar ", out);
            mdoc_arg(out, m + i + 1, k - 2);
            ar = true;
        } else {
            fputs(ar ? " " : " Ar ", out);
            mdoc_arg(out, m + i, k);
            ar = true;
        }
        i += k;
        while (i < n && m[i] == ' ')
            i++;
    }
}

/* A size in MiB as the option takes it: "64G", "1024M". */
static void mdoc_mib(FILE *out, unsigned mib)
{
    if (mib >= 1024 && mib % 1024 == 0)
        fprintf(out, "%uG", mib / 1024);
    else
        fprintf(out, "%uM", mib);
}

static int cmp_option_name(const void *a, const void *b)
{
    const struct option_def *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

void config_print_mdoc(FILE *out)
{
    /* In name order: a reference of ~90 keywords is looked up, not read through (the sample
     * configuration file keeps the table's order, grouped by topic). */
    const struct option_def *sorted[N_OPTIONS];
    for (size_t i = 0; i < N_OPTIONS; i++)
        sorted[i] = &options[i];
    qsort(sorted, N_OPTIONS, sizeof(sorted[0]), cmp_option_name);

    fputs(".Bl -tag -width Ds\n", out);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = sorted[i];
        fputs(".It Cm ", out);
        mdoc_arg(out, o->name, strlen(o->name));
        mdoc_value(out, o);
        fputc('\n', out);
        /* "the same, for ..." follows its referent in the table, not in name order: name it */
        if (strncmp(o->help, "the same,", 9) == 0 && o > options) {
            const struct option_def *ref = o - 1;
            while (ref > options && strncmp(ref->help, "the same,", 9) == 0)
                ref--;
            char same[512];
            snprintf(same, sizeof(same), "the same as %s%s", ref->name, o->help + 8);
            mdoc_help(out, same);
        } else {
            mdoc_help(out, o->help);
        }
        bool list = opt_is_list(o);
        if (list && !strstr(o->help, "repeatable"))
            fputs("Repeatable.\n", out);
        if (o->type == OPT_STRLIST && o->max > 0)
            fprintf(out, "At most %u entries.\n", o->max);
        if (o->type == OPT_SIZE) {
            fputs("Sizes take the suffixes K, M and G (powers of 1024); at most ", out);
            mdoc_mib(out, o->max);
            fputs(".\n", out);
        }
        if (o->type == OPT_UINT) {
            fprintf(out, "The default is %s; the range is %u to %u.\n", o->dflt, o->min, o->max);
        } else if (o->dflt != NULL) {
            /* keywords as Cm, files as Pa, other text with punctuation literal (Ql) */
            const char *d = o->dflt;
            bool file = d[0] == '/' && (!strcmp(o->metavar, "FILE") || !strcmp(o->metavar, "DIR"));
            const char *mac = o->type == OPT_ENUM || o->type == OPT_BOOL ? "Cm"
                              : file                                     ? "Pa"
                              : strspn(d, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "abcdefghijklmnopqrstuvwxyz") == strlen(d)
                                  ? NULL
                                  : "Ql";
            if (mac == NULL) {
                fputs("The default is ", out);
                mdoc_put(out, d, strlen(d), false);
                fputs(".\n", out);
            } else {
                fprintf(out, "The default is\n.%s", mac);
                for (const char *w = d; *w;) {
                    size_t k = strcspn(w, " ");
                    if (k > 0) {
                        fputc(' ', out);
                        mdoc_arg(out, w, k);
                    }
                    w += k + strspn(w + k, " ");
                }
                fputs(" .\n", out);
            }
        }
        if (o->restart)
            fputs("Restart-only: a reload keeps the running value.\n", out);
    }
    fputs(".El\n", out);
}

/* ---- reload ------------------------------------------------------------------------------ */

void config_origin(const struct config *cfg, const char *name, char *buf, size_t len)
{
    const struct option_def *o = find_option(name, strlen(name));
    unsigned line = o ? cfg->opt_line[o - options] : 0;
    const char *file = cfg->config_file ? cfg->config_file : "configuration";
    if (line == CONFIG_LINE_CLI)
        snprintf(buf, len, "command line: --%s", name);
    else if (line > 0)
        snprintf(buf, len, "%s:%u", file, line);
    else
        snprintf(buf, len, "%s", file);
}

void config_list_origin(const struct config *cfg, const char *name, size_t index, char *buf,
                        size_t len)
{
    const struct option_def *o = find_option(name, strlen(name));
    const unsigned *lines = o && o->type == OPT_STRLIST ? cfg->list_line[o - options] : NULL;
    unsigned line = lines && index < opt_ccount(cfg, o) ? lines[index] : 0;
    const char *file = cfg->config_file ? cfg->config_file : "configuration";
    if (line == CONFIG_LINE_CLI)
        snprintf(buf, len, "command line: --%s", name);
    else if (line > 0)
        snprintf(buf, len, "%s:%u", file, line);
    else
        config_origin(cfg, name, buf, len);
}

static bool opt_equal(const struct config *a, const struct config *b, const struct option_def *o)
{
    const void *fa = opt_cfield(a, o), *fb = opt_cfield(b, o);
    switch (o->type) {
    case OPT_UINT:
        return *(const unsigned *)fa == *(const unsigned *)fb;
    case OPT_ENUM:
        return *(const int *)fa == *(const int *)fb;
    case OPT_BOOL:
        return *(const bool *)fa == *(const bool *)fb;
    case OPT_SIZE:
        return *(const size_t *)fa == *(const size_t *)fb;
    case OPT_STRING: {
        const char *sa = *(char *const *)fa, *sb = *(char *const *)fb;
        return sa == sb || (sa && sb && strcmp(sa, sb) == 0);
    }
    case OPT_ADDRS:
    case OPT_PATHS:
    case OPT_UPSTREAMS:
    case OPT_STRLIST:
        break;
    }
    size_t n = opt_ccount(a, o);
    if (n != opt_ccount(b, o))
        return false;
    for (size_t k = 0; k < n; k++) {
        if (o->type == OPT_STRLIST &&
            strcmp((*(char **const *)fa)[k], (*(char **const *)fb)[k]) != 0)
            return false;
        if (o->type == OPT_ADDRS &&
            strcmp(((const struct dg_addr *)fa)[k].text, ((const struct dg_addr *)fb)[k].text) != 0)
            return false;
        if (o->type == OPT_PATHS && strcmp(((char *const *)fa)[k], ((char *const *)fb)[k]) != 0)
            return false;
        if (o->type == OPT_UPSTREAMS && strcmp(((const struct dg_upstream *)fa)[k].spec,
                                               ((const struct dg_upstream *)fb)[k].spec) != 0)
            return false;
    }
    return true;
}

/* Make @p dst's value of @p o a copy of @p src's. @return 0 or -ENOMEM (dst unchanged). */
static int opt_copy(struct config *dst, const struct config *src, const struct option_def *o)
{
    void *fd = opt_field(dst, o);
    const void *fs = opt_cfield(src, o);
    switch (o->type) {
    case OPT_UINT:
    case OPT_ENUM:
        memcpy(fd, fs, sizeof(unsigned));
        return 0;
    case OPT_BOOL:
        memcpy(fd, fs, sizeof(bool));
        return 0;
    case OPT_SIZE:
        memcpy(fd, fs, sizeof(size_t));
        return 0;
    case OPT_STRING: {
        const char *v = *(char *const *)fs;
        char *dup = v ? strdup(v) : NULL;
        if (v && !dup)
            return -ENOMEM;
        free(*(char **)fd);
        *(char **)fd = dup;
        return 0;
    }
    case OPT_ADDRS:
        memcpy(fd, fs, sizeof(struct dg_addr) * DG_CONFIG_MAX_LIST);
        *opt_count(dst, o) = opt_ccount(src, o);
        return 0;
    case OPT_UPSTREAMS:
        memcpy(fd, fs, sizeof(struct dg_upstream) * DG_CONFIG_MAX_LIST);
        *opt_count(dst, o) = opt_ccount(src, o);
        return 0;
    case OPT_PATHS: {
        char *dup[DG_CONFIG_MAX_LIST];
        size_t n = opt_ccount(src, o);
        for (size_t k = 0; k < n; k++) {
            if (!(dup[k] = strdup(((char *const *)fs)[k]))) {
                while (k > 0)
                    free(dup[--k]);
                return -ENOMEM;
            }
        }
        list_clear(dst, o);
        memcpy(fd, dup, n * sizeof(char *));
        *opt_count(dst, o) = n;
        return 0;
    }
    case OPT_STRLIST: {
        /* Built aside so that a failure leaves dst as it was. */
        char **arr = NULL;
        size_t n = 0, want = opt_ccount(src, o);
        for (size_t k = 0; k < want; k++) {
            if (strlist_push(&arr, &n, (*(char **const *)fs)[k]) != 0) {
                while (n > 0)
                    free(arr[--n]);
                free(arr);
                return -ENOMEM;
            }
        }
        list_clear(dst, o);
        *(char ***)fd = arr;
        *opt_count(dst, o) = n;
        return 0;
    }
    }
    return 0;
}

bool config_acme_files(const struct config *cfg, char *cert, char *key, size_t len)
{
    if (cfg->n_acme_domain == 0 || !cfg->acme_state_dir)
        return false;
    snprintf(cert, len, "%s/cert.pem", cfg->acme_state_dir);
    snprintf(key, len, "%s/key.pem", cfg->acme_state_dir);
    return true;
}

int config_keep_restart_options(struct config *fresh, const struct config *old, char *names,
                                size_t len)
{
    int n = 0;
    if (len > 0)
        names[0] = '\0';
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct option_def *o = &options[i];
        if (!o->restart || opt_equal(fresh, old, o))
            continue;
        if (opt_copy(fresh, old, o) != 0)
            return -ENOMEM;
        fresh->opt_line[i] = old->opt_line[i];
        size_t l = strnlen(names, len);
        if (l < len)
            snprintf(names + l, len - l, "%s%s", n ? ", " : "", o->name);
        n++;
    }
    return n;
}

int config_parse_forward_zone(const char *s, struct dg_fwd_zone *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    size_t n = strcspn(s, " \t");
    out->name_len = dnswire_name_from_text(s, n, out->name);
    if (out->name_len == 0) {
        *why = "must start with a domain name";
        return -EINVAL;
    }
    if (out->name_len == 1) {
        *why = "cannot forward the root zone: that is what 'upstream' is for";
        return -EINVAL;
    }
    dnswire_name_to_text(out->name, out->name_len, out->text, sizeof(out->text));
    /* Each upstream is a word; the attribute words after it belong to it. */
    const char *p = s + n;
    char spec[1100];
    size_t sl = 0;
    for (;;) {
        p += strspn(p, " \t");
        size_t k = strcspn(p, " \t");
        bool attr = k && (strncmp(p, "name=", 5) == 0 || strncmp(p, "addr=", 5) == 0 ||
                          strncmp(p, "pin-sha256=", 11) == 0);
        if (k == 0 || !attr) {
            if (sl > 0) {
                if (out->n_up == DG_FWD_MAX_UPSTREAMS) {
                    *why = "has more than 8 upstreams";
                    return -EINVAL;
                }
                spec[sl] = '\0';
                if (config_parse_upstream(spec, &out->up[out->n_up], why) != 0)
                    return -EINVAL;
                out->n_up++;
                sl = 0;
            }
            if (k == 0)
                break;
        } else if (sl == 0) {
            *why = "has an attribute before any upstream";
            return -EINVAL;
        }
        if (sl + k + 2 > sizeof(spec)) {
            *why = "has an upstream too long";
            return -EINVAL;
        }
        if (sl)
            spec[sl++] = ' ';
        memcpy(spec + sl, p, k);
        sl += k;
        p += k;
    }
    if (out->n_up == 0) {
        *why = "needs at least one upstream after the name";
        return -EINVAL;
    }
    return 0;
}
