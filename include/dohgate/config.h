/**
 * @file config.h
 * Configuration: one immutable struct built from an optional file (`name value` lines, `#`
 * comments, a name repeats for lists, like redis.conf) and then `--name value` command-line
 * flags that use the same names and override the file. A list option given on the command line
 * replaces the file's list. Every option is described by one row of a table in config.c
 * (name, type, offset, default, min, max), which serves parsing, defaults, `--help` and the
 * sample config alike.
 *
 * Errors are reported as `file:line: message` (or `command line: message`) in the caller's
 * buffer; nothing here exits or logs.
 *
 * Lifetime: config_new() → config_load_*() → config_finish() → read-only, shared by all threads
 * through references (config_ref()); the last config_unref() (or config_free(), the same) frees
 * it. A reload (SIGHUP) builds a new config the same way and swaps it in; holders of the old one
 * keep it until they drop their reference.
 */
#ifndef DOHGATE_CONFIG_H
#define DOHGATE_CONFIG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#define DG_CONFIG_MAX_LIST 16
/** Rows the option table may have (config.c checks it at compile time). */
#define DG_CONFIG_MAX_OPTIONS 128

/** A parsed socket address (listen or upstream). */
struct dg_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    char text[64]; /**< as written by the user, normalised ("127.0.0.1:443", "[::1]:443") */
};

/** How an upstream is reached (`upstream` option; see config_parse_upstream()). */
enum dg_up_proto {
    DG_UP_DNS = 0, /**< plain DNS: UDP, TCP after a truncated answer (RFC 7766) */
    DG_UP_TLS,     /**< DNS over TLS (RFC 7858), port 853 */
    DG_UP_HTTPS,   /**< DNS over HTTPS (RFC 8484) over HTTP/2, port 443 */
};
#define DG_UP_MAX_PINS 4
/** One `upstream` entry, parsed. */
struct dg_upstream {
    struct dg_addr addr; /**< where to connect (numeric: dohgate resolves no upstream names) */
    int proto;           /**< enum dg_up_proto */
    /** TLS/HTTPS: the name the certificate must hold, also sent as SNI; empty: the certificate
     * must hold the address (an IP SAN) and no SNI is sent. */
    char name[254];
    char path[256];                  /**< HTTPS: the request path (":path"), default "/dns-query" */
    char authority[262];             /**< HTTPS: ":authority", the URL's host[:port] */
    uint8_t pin[DG_UP_MAX_PINS][32]; /**< pin-sha256: SHA-256 of a SubjectPublicKeyInfo */
    size_t n_pin;
    /** For logs and metric labels: the URL without pins ("tls://9.9.9.9:853#dns.quad9.net",
     * "192.0.2.1:53", "https://dns.example/dns-query"). */
    char text[528];
    char spec[1100]; /**< the whole value, normalised, as config_dump() writes it */
};

/* OPT_ENUM options: the values are the positions of the names in the option table. */
enum acl_scope { ACL_SCOPE_DOH = 0, ACL_SCOPE_ALL };
enum log_target { LOG_TARGET_STDERR = 0, LOG_TARGET_SYSLOG };
enum query_log_client { QLOG_CLIENT_TRUNCATE = 0, QLOG_CLIENT_FULL, QLOG_CLIENT_NONE };
/** block-answer: what a blocked name gets (policy.h). */
enum block_answer { BLOCK_ANSWER_NULL = 0, BLOCK_ANSWER_NXDOMAIN, BLOCK_ANSWER_REFUSED };
/** trusted-proxy-header: the one forwarding header believed (nginx's real_ip_header). */
enum fwd_header { FWD_HEADER_XFF = 0, FWD_HEADER_FORWARDED };
/** acme-challenge: how the ACME CA validates the names (acme.h). */
enum acme_challenge { ACME_CHALLENGE_TLS_ALPN = 0, ACME_CHALLENGE_HTTP };

#define DG_FWD_MAX_UPSTREAMS 8 /**< upstreams of one forward-zone */
/** One `forward-zone NAME UPSTREAM…` (config_parse_forward_zone()). */
struct dg_fwd_zone {
    uint8_t name[255]; /**< lower-cased wire form (dnswire_name_from_text()) */
    size_t name_len;
    char text[256]; /**< the name as text, without the final dot ("corp.example") */
    struct dg_upstream up[DG_FWD_MAX_UPSTREAMS];
    size_t n_up;
};

struct config {
    /* listen ADDR:PORT (repeatable). Default: "[::]:443" (dual stack). */
    struct dg_addr listen[DG_CONFIG_MAX_LIST];
    size_t n_listen;
    /* upstream SPEC (repeatable; config_parse_upstream()). Default: nameservers of
     * /etc/resolv.conf (resolv-conf option names the file, for tests). */
    struct dg_upstream upstream[DG_CONFIG_MAX_LIST];
    size_t n_upstream;
    char *upstream_ca;  /**< upstream-ca FILE: CAs for TLS upstreams; NULL: the system store */
    bool pad_responses; /**< pad-responses: pad answers to padded queries (RFC 8467), yes */
    char *resolv_conf;  /**< resolv-conf FILE, default /etc/resolv.conf */
    /* doh-path PATH (repeatable, must start with '/'). Default: "/dns-query". */
    char *doh_path[DG_CONFIG_MAX_LIST];
    size_t n_doh_path;
    char *cert_file[DG_CONFIG_MAX_LIST]; /**< cert FILE (PEM chain); none: ephemeral self-signed */
    size_t n_cert;
    char *key_file[DG_CONFIG_MAX_LIST]; /**< key FILE (PEM), paired with cert_file by position */
    size_t n_key;
    unsigned max_upstream_queries;          /**< max-upstream-queries per worker, 10000 */
    unsigned max_conns_per_client;          /**< max-connections-per-client, 256 */
    unsigned conn_rate, conn_burst;         /**< connection-rate-limit/-burst per client */
    unsigned query_rate, query_burst;       /**< rate-limit/-burst: DoH queries/s per client */
    char *allow_client[DG_CONFIG_MAX_LIST]; /**< allow-client CIDR */
    size_t n_allow_client;
    char *deny_client[DG_CONFIG_MAX_LIST]; /**< deny-client CIDR */
    size_t n_deny_client;
    int acl_scope;               /**< acl-scope doh|all: enum acl_scope */
    bool minimal_any;            /**< minimal-any: RFC 8482 answers to ANY */
    int log_target;              /**< log-target stderr|syslog: enum log_target */
    bool query_log;              /**< query-log yes: one line per DoH answer */
    int query_log_client;        /**< query-log-client truncate|full|none: enum */
    char *user;                  /**< user NAME: drop to it after binding; NULL: stay */
    char *group;                 /**< group NAME: instead of the user's primary group */
    unsigned shutdown_timeout_s; /**< shutdown-timeout s: drain bound on SIGTERM, default 5 */
    unsigned cert_check_interval_s;
    char *ticket_key_file[DG_CONFIG_MAX_LIST]; /**< ticket-key-file FILE (80 bytes each) */
    size_t n_ticket_key_file;
    unsigned ticket_key_rotation_s;
    /**< ticket-key-rotation s: random key lifetime, 0 = never */ /**< cert-check-interval s:
                                                                     poll files for changes; 0 =
                                                                     off */
    char *server_name; /**< server-name NAME: CN/SAN of the self-signed cert and the printed
                            URL. Default "localhost". */
    unsigned workers;  /**< workers N; 0 (default) = number of CPUs; max 256 */
    unsigned max_concurrent_streams; /**< max-concurrent-streams, default 100, 1..1000 */
    unsigned upstream_timeout_ms;    /**< upstream-timeout ms per try, default 1500, 10..60000 */
    unsigned query_timeout_ms;       /**< query-timeout ms total budget, default 4000, 10..120000;
                                          then SERVFAIL */
    unsigned idle_timeout_s;         /**< idle-timeout s, default 60, 1..86400 */
    unsigned handshake_timeout_s;    /**< handshake-timeout s, default 10, 1..300 */
    unsigned max_connections;        /**< max-connections per worker, default 10000 */
    int log_level; /**< log-level error|warn|info|debug: enum dg_log_level, default info */

    /* Answer cache (see cache.h). */
    size_t cache_size;               /**< cache-size BYTES (K/M/G suffixes), default 64M; 0 = off */
    unsigned cache_min_ttl;          /**< cache-min-ttl s, default 0 */
    unsigned cache_max_ttl;          /**< cache-max-ttl s, default 86400 */
    unsigned cache_max_negative_ttl; /**< cache-max-negative-ttl s, default 3600 */
    unsigned cache_nosoa_ttl;        /**< cache-nosoa-ttl s: negative answers without SOA, 30 */
    unsigned cache_servfail_ttl;     /**< cache-servfail-ttl s, default 5, 0..30 */
    bool serve_stale;                /**< serve-stale yes|no, default yes (RFC 8767) */
    unsigned stale_max_age;          /**< stale-max-age s past expiry, default 86400 */
    unsigned stale_answer_ttl;       /**< stale-answer-ttl s, default 30 */
    unsigned prefetch;               /**< prefetch PERCENT of the TTL left, default 10; 0 = off */

    /* The website on the same port (see site.h) and the plain-HTTP listener. */
    char *site_root;            /**< site-root DIR: static files */
    char *site_backend;         /**< site-backend URL: reverse proxy, "http://ADDR:PORT" */
    struct dg_addr backend;     /**< site-backend parsed (config_finish) */
    size_t site_max_body;       /**< site-max-body BYTES: request bodies to the site, 1M */
    unsigned backend_timeout_s; /**< backend-timeout s: connect and each read, default 60 */
    struct dg_addr http_listen[DG_CONFIG_MAX_LIST]; /**< http-listen ADDR:PORT (port 80) */
    size_t n_http_listen;
    struct dg_addr metrics_listen[DG_CONFIG_MAX_LIST]; /**< metrics-listen ADDR:PORT */
    size_t n_metrics_listen;

    /* Listeners for clients that do not speak DoH (issue 16), and what they answer. */
    struct dg_addr dns_listen[DG_CONFIG_MAX_LIST]; /**< dns-listen ADDR:PORT: UDP+TCP (53) */
    size_t n_dns_listen;
    struct dg_addr dot_listen[DG_CONFIG_MAX_LIST]; /**< dot-listen ADDR:PORT: DoT (853) */
    size_t n_dot_listen;
    /** dns-allow CIDR (repeatable): sources plain DNS answers; none = loopback, RFC 1918,
     * fc00::/7, link-local, 100.64.0.0/10 (not an open resolver by default) */
    char *dns_allow[DG_CONFIG_MAX_LIST];
    size_t n_dns_allow;
    unsigned dns_rate_limit;   /**< dns-rate-limit: UDP answers/s per client (/24, /56); 0 = off */
    unsigned dns_rate_slip;    /**< dns-rate-slip N: every Nth limited answer goes truncated */
    unsigned dns_udp_max_size; /**< dns-udp-max-size: largest UDP answer (EDNS cap), 1232 */
    unsigned dns_tcp_pipeline; /**< dns-tcp-pipeline: queries in flight per TCP/DoT conn, 100 */
    bool json_api;             /**< json-api yes|no: application/dns-json on the DoH paths */
    bool ddr;                  /**< ddr yes|no: answer _dns.resolver.arpa SVCB (RFC 9462) */
    char *acme_webroot;    /**< acme-webroot DIR: serves /.well-known/acme-challenge/ on port 80 */
    unsigned hsts_max_age; /**< hsts-max-age s, default 31536000; 0 = no HSTS header */
    char *hsts_value;      /**< the full HSTS header value (config_finish), NULL when off */
    char *header[DG_CONFIG_MAX_LIST]; /**< header "Name: value" added to every response */
    size_t n_header;
    char *header_name[DG_CONFIG_MAX_LIST];        /**< split by config_finish: lower-case name */
    const char *header_value[DG_CONFIG_MAX_LIST]; /**< value, trimmed; in header_name's block */
    char *server_header;        /**< server-header TEXT; NULL (default): no Server header */
    unsigned request_timeout_s; /**< request-timeout s: a request must arrive whole, default 10 */

    /* What one client can make the server hold (see budget.h). */
    unsigned send_timeout_s;         /**< send-timeout s: no progress with work waiting, 30 */
    unsigned max_sources_per_conn;   /**< max-sources-per-connection, 100; 0 = no limit */
    unsigned max_sources_per_client; /**< max-sources-per-client, 1024; 0 = no limit */
    size_t body_buffer_per_conn;     /**< max-body-buffer-per-connection BYTES, 2M */
    size_t body_buffer_per_client;   /**< max-body-buffer-per-client BYTES, 16M */
    size_t body_buffer_total;        /**< max-body-buffer BYTES, whole process, 256M */
    unsigned fd_reserve;             /**< descriptor-reserve N, 1024 */

    /* Local names, blocklists, split horizon (issue 17; policy.h). The lists grow as needed
     * (OPT_STRLIST), each bounded by its row's max. */
    char **hosts_file; /**< hosts-file FILE (/etc/hosts format): A, AAAA and PTR */
    size_t n_hosts_file;
    char **local_record; /**< local-record 'RR' in zone-file syntax (ldns) */
    size_t n_local_record;
    char **local_zone; /**< local-zone NAME: NXDOMAIN/NODATA below it unless local data */
    size_t n_local_zone;
    char **blocklist; /**< blocklist [NAME=]FILE: hosts, domains or adblock lines */
    size_t n_blocklist;
    char **allowlist; /**< allowlist FILE: wins over the blocklists */
    size_t n_allowlist;
    int block_answer;    /**< block-answer null|nxdomain|refused: enum block_answer */
    unsigned block_ttl;  /**< block-ttl s: TTL of blocked answers, 10 */
    char **forward_zone; /**< forward-zone 'NAME UPSTREAM…' as written */
    size_t n_forward_zone;
    struct dg_fwd_zone *fwd; /**< forward_zone parsed (config_finish), n_forward_zone of them */
    char **policy; /**< policy 'NAME [LIST…]': which blocklists a named policy applies */
    size_t n_policy;
    char **policy_client; /**< policy-client 'CIDR|ID POLICY': who gets which policy */
    size_t n_policy_client;

    /* Behind load balancers and across machines (issue 18). */
    /** proxy-protocol-from CIDR (repeatable): sources that must open each connection with a
     * PROXY protocol v1/v2 header (proxyproto.h); others must not send one */
    char *proxy_protocol_from[DG_CONFIG_MAX_LIST];
    size_t n_proxy_protocol_from;
    /** plain-listen ADDR:PORT (repeatable): DoH, JSON and the website in clear text (HTTP/1.1
     * and h2c with prior knowledge) for a TLS-terminating proxy in front */
    struct dg_addr plain_listen[DG_CONFIG_MAX_LIST];
    size_t n_plain_listen;
    /** trusted-proxy CIDR (repeatable): peers whose X-Forwarded-For / Forwarded is believed */
    char *trusted_proxy[DG_CONFIG_MAX_LIST];
    size_t n_trusted_proxy;
    int trusted_proxy_header; /**< trusted-proxy-header x-forwarded-for|forwarded: enum fwd_header
                               */
    char *cache_redis;        /**< cache-redis ADDR:PORT: the shared second-level cache */
    unsigned cache_redis_timeout_ms; /**< cache-redis-timeout ms: budget per lookup, 20 */
    /* ACME (acme.h); all restart-only. With n_acme_domain > 0 the TLS store serves the pair
     * acme_state_dir/cert.pem + key.pem once it exists (config_acme_files()). */
    char *acme_domain[DG_CONFIG_MAX_LIST]; /**< acme-domain NAME (repeatable): one certificate */
    size_t n_acme_domain;
    char *acme_email;        /**< acme-email ADDR: the account's contact; NULL: none */
    char *acme_directory;    /**< acme-directory URL (https://), default Let's Encrypt */
    char *acme_ca;           /**< acme-ca FILE: trust for the ACME server's HTTPS; NULL: system */
    char *acme_state_dir;    /**< acme-state-dir DIR, default /var/lib/dohgate/acme */
    int acme_challenge;      /**< acme-challenge tls-alpn-01|http-01: enum acme_challenge */
    char *acme_eab_kid;      /**< acme-eab-kid KID (with acme_eab_hmac_key) */
    char *acme_eab_hmac_key; /**< acme-eab-hmac-key BASE64URL */

    /* Where the file came from, for messages. NULL when no file was read. */
    char *config_file;
    /* Where each option was last set, by table row (config_origin()). */
    unsigned opt_line[DG_CONFIG_MAX_OPTIONS];
    /* Where each entry of a growing list was set, by table row (config_list_origin()). */
    unsigned *list_line[DG_CONFIG_MAX_OPTIONS];
    /* References (config_ref/config_unref): 1 after config_new(). A reload shares one config
     * between the main thread, the workers' snapshots and their connections. */
    _Atomic unsigned refs;
};

/** Allocate a config holding the defaults (lists empty until config_finish()). NULL on OOM. */
struct config *config_new(void);
/** Take one more reference (thread-safe). @return @p cfg. */
struct config *config_ref(struct config *cfg);
/** Drop one reference (thread-safe); the last one frees. NULL is ignored. */
void config_unref(struct config *cfg);
/** The same as config_unref(): with a single owner, frees at once. */
void config_free(struct config *cfg);

/**
 * Where option @p name got its value, for messages about it: "FILE:LINE" when the file set it,
 * "command line: --NAME", or the file name (or "configuration") when it holds its default.
 */
void config_origin(const struct config *cfg, const char *name, char *buf, size_t len);

/** Where entry @p index of the list option @p name (local-record, forward-zone, policy...) was
 * given, as config_origin() says it ("FILE:LINE", "command line: --NAME"). */
void config_list_origin(const struct config *cfg, const char *name, size_t index, char *buf,
                        size_t len);

/**
 * For a reload: give @p fresh the old values of the options a running server cannot change
 * (listen, http-listen, metrics-listen, workers, user, group, log-target) where they differ,
 * and name those options, comma-separated, in @p names.
 * @return how many differed (0: none), or -ENOMEM (@p fresh partly updated: free it).
 */
int config_keep_restart_options(struct config *fresh, const struct config *old, char *names,
                                size_t len);

/**
 * Read a config file. Unknown names, bad values, out-of-range numbers, too many list entries give
 * `path:line: message` in @p err.
 * @return 0, -EINVAL (syntax/value; err set), -ENOENT/-EACCES (cannot open; err set), other
 *         negative errno on a read error (err set), -ENOMEM.
 */
int config_load_file(struct config *cfg, const char *path, char *err, size_t errlen);

/**
 * Parse one option given as name + value (the command-line form without the leading "--").
 * @p origin and @p line are used for the error message (line 0: "origin: message").
 * List options append. Strings are copied.
 * @return 0, -EINVAL with err set, or -ENOMEM.
 */
int config_set(struct config *cfg, const char *name, const char *value, const char *origin,
               unsigned line, char *err, size_t errlen);

/**
 * Fill in defaults for lists left empty (listen, doh-path, upstream from resolv-conf) and check
 * cross-option rules (cert without key, query-timeout >= upstream-timeout). workers stays 0
 * when 0 was given (the caller counts CPUs).
 * @return 0, -EINVAL with err set, or -ENOMEM.
 */
int config_finish(struct config *cfg, char *err, size_t errlen);

/**
 * With acme-domain set: the paths of the certificate chain and key the ACME client keeps in
 * acme-state-dir ("DIR/cert.pem", "DIR/key.pem"; @p len bytes each, 4096 is enough) and true;
 * else false. The TLS store serves that pair once it exists; acme.c writes it.
 */
bool config_acme_files(const struct config *cfg, char *cert, char *key, size_t len);

/**
 * Parse "ADDR:PORT", "[V6]:PORT", or, when @p default_port is non-zero, also "ADDR" / "V6" /
 * "[V6]". Numeric addresses only (no name resolution at start-up).
 * @return 0 or -EINVAL.
 */
int config_parse_addr(const char *s, unsigned default_port, struct dg_addr *out);

/**
 * Parse one `upstream` value:
 *   ADDR[:PORT] | udp://ADDR[:PORT]            plain DNS, port 53
 *   tls://HOST[:PORT][#NAME]                   DNS over TLS, port 853
 *   https://HOST[:PORT][/PATH]                 DNS over HTTPS, port 443, path /dns-query
 * followed by space-separated parameters: `name=NAME` (the name to verify, as #NAME),
 * `addr=ADDR[:PORT]` (where to connect when HOST is a name), `pin-sha256=BASE64` (up to
 * DG_UP_MAX_PINS). HOST is a numeric address or, with addr=, a name; a numeric HOST without a
 * name is verified as an IP address (IP SAN).
 * @return 0, or -EINVAL with a static reason in @p why.
 */
int config_parse_upstream(const char *s, struct dg_upstream *out, const char **why);

/** Whether @p a is a loopback address (127.0.0.0/8, ::1, ::ffff:127.0.0.0/104). */
bool config_addr_is_loopback(const struct dg_addr *a);
/** The port of @p a (host order). */
unsigned config_addr_port(const struct dg_addr *a);
/** The address bytes of @p a: a struct in_addr (AF_INET) or in6_addr (AF_INET6). */
const void *config_addr_bytes(const struct dg_addr *a);
/** Whether @p a is the wildcard address (0.0.0.0 or ::): a listener on every address. */
bool config_addr_is_any(const struct dg_addr *a);

/**
 * Parse one `forward-zone` value: "NAME UPSTREAM [UPSTREAM…]", each UPSTREAM as for
 * config_parse_upstream() with its attributes (name=, addr=, pin-sha256=) following it as
 * words of their own. The root is refused (that is what `upstream` is for).
 * @return 0, or -EINVAL with @p why (static text).
 */
int config_parse_forward_zone(const char *s, struct dg_fwd_zone *out, const char **why);

/** The name of a blocklist entry "[NAME=]FILE": NAME, else the file's base name without its
 * last extension ("/etc/dohgate/ads.txt" → "ads"), into @p out (at most 32 bytes kept); @p file
 * receives where the file name starts in @p spec. */
void config_list_name(const char *spec, char *out, size_t outlen, const char **file);

/**
 * Read nameserver lines of a resolv.conf-format file into cfg->upstream (port 53).
 * @return number added (>= 0) or negative errno.
 */
int config_read_resolv_conf(struct config *cfg, const char *path);

/** Print every option, its default and its one-line description (for --help). */
void config_print_help(FILE *out);

/**
 * Print the option table as the body of an mdoc(7) tag list (`.Bl -tag` ... `.El`), one
 * `.It Cm NAME Ar METAVAR` per option in name order, with its help as sentences, its default,
 * its range (numbers, sizes, list lengths) and whether a reload can change it. The build's
 * dohgate-mangen (src/mangen.c) puts it into dohgate.conf(5), so the page and --help come from
 * the same rows. Text is escaped for roff (`\e`, `\&`, non-ASCII as `\[uXXXX]`).
 */
void config_print_mdoc(FILE *out);

/**
 * Apply `--name value` and `--name=value` command-line options (every option of the table).
 * The first command-line occurrence of a list option clears the list (so the command line
 * replaces the file's list); later occurrences append. Arguments handled by main are skipped:
 * `-c FILE`, `-cFILE`, `--config FILE`, `--config=FILE`, `--check-config`, `--version`, `--help`,
 * `-h`, `-V`. A value that starts with "--" is taken as a missing value. argv[0] is ignored.
 * Errors read `command line: --foo: unknown option`, `command line: --workers: value must be
 * 0..256`, `command line: unexpected argument 'x'`.
 * @return 0, -EINVAL (err set) or -ENOMEM. On error @p cfg is partly modified; free it.
 */
int config_load_args(struct config *cfg, int argc, char **argv, char *err, size_t errlen);

/**
 * Print the effective configuration in config-file format (`name value` lines, values quoted
 * when needed, unset options as comments), for --check-config. Loading the output again gives
 * the same configuration.
 * @return 0, or -EIO when writing to @p out failed.
 */
int config_dump(const struct config *cfg, FILE *out);
#endif
