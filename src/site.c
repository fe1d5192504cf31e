/* The website beside DoH: static files, reverse proxy or landing page; port 80 redirects and
 * ACME challenges (see site.h). */
#include "dohgate/site.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dohgate/budget.h"
#include "dohgate/config.h"
#include "dohgate/http.h"
#include "dohgate/landing.h"
#include "dohgate/log.h"
#include "dohgate/proxy.h"

#define ACME_PREFIX "/.well-known/acme-challenge/"

int site_open(struct site *site, const struct config *cfg, char *err, size_t errlen)
{
    site->root.fd = -1;
    site->acme.fd = -1;
    site->https_port = 443;
    if (cfg->n_listen > 0) {
        const struct sockaddr *sa = (const struct sockaddr *)&cfg->listen[0].ss;
        site->https_port = sa->sa_family == AF_INET6
                               ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
                               : ntohs(((const struct sockaddr_in *)sa)->sin_port);
    }
    char why[256];
    if (cfg->site_root && static_root_open(&site->root, cfg->site_root, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "site-root: %s", why);
        return -EINVAL;
    }
    if (cfg->acme_webroot &&
        static_root_open(&site->acme, cfg->acme_webroot, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "acme-webroot: %s", why);
        static_root_close(&site->root);
        return -EINVAL;
    }
    return 0;
}

void site_close(struct site *site)
{
    static_root_close(&site->root);
    static_root_close(&site->acme);
}

/* ---- static files ------------------------------------------------------------------------ */

/* A byte range of an open file, read with pread as the transport asks for it. Reads block the
 * worker on a cold disk for as long as one read takes (as nginx without aio does); a page cache
 * hit costs one copy. sendfile() cannot be used under user-space TLS. */
struct file_source {
    int fd;
    off_t off;
    off_t left;
    struct budget_scope
        *budget; /* the connection's: one BUDGET_SOURCES unit, given back at close */
};

static long file_read(void *arg, uint8_t *buf, size_t max)
{
    struct file_source *fs = arg;
    if (fs->left <= 0)
        return 0;
    size_t want = (off_t)max < fs->left ? max : (size_t)fs->left;
    ssize_t n;
    do {
        n = pread(fs->fd, buf, want, fs->off);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -EIO; /* the file shrank under us: abort, never pad */
    fs->off += n;
    fs->left -= n;
    return (long)n;
}

static void file_close(void *arg)
{
    struct file_source *fs = arg;
    close(fs->fd);
    budget_put(fs->budget, BUDGET_SOURCES, 1);
    free(fs);
}

/* Files up to this size are answered from memory (serve_static()): 16 KiB, one TLS record and
 * the default HTTP/2 frame, covers most icons, scripts and style sheets while keeping what a
 * zero-window client can make the server queue small (100 streams: 1.6 MiB a connection). */
#define SITE_SMALL_FILE (16 * 1024)

/* Read @p len bytes at @p off of @p fd into @p out. @return 0, -ENOMEM, -EIO when the file is
 * shorter than it was (never a short body), or another negative errno. */
static int small_file_read(int fd, off_t off, size_t len, struct dg_buf *out)
{
    if (dg_buf_reserve(out, len ? len : 1) != 0)
        return -ENOMEM;
    /* the streamed source's reader, run to the end at once (a file that shrank: -EIO) */
    struct file_source fs = {.fd = fd, .off = off, .left = (off_t)len};
    while (out->len < len) {
        long k = file_read(&fs, out->data + out->len, len - out->len);
        if (k < 0)
            return (int)k;
        out->len += (size_t)k;
    }
    return 0;
}

static long null_read(void *arg, uint8_t *buf, size_t max)
{
    return 0;
}

static void null_close(void *arg)
{
}

/* 503 for a source the budgets refused (budget.h): which limit, and when to come back. */
static void refuse_source(struct http_exchange *ex, enum budget_scope_level why)
{
    /* HTTP/2: REFUSED_STREAM, which a browser retries (a 503 it shows as a broken image) */
    http_refuse(ex, budget_source_refusal_text(why));
}

static void serve_static(struct http_exchange *ex, const struct static_root *root)
{
    const struct http_request *r = &ex->req;
    const struct config *cfg = ex->ctx->cfg;
    /* static_resolve() opens the file (for every method, to stat it): the unit is taken
     * before, and given back at once unless a body source keeps the descriptor. */
    enum budget_scope_level why = budget_take(r->budget, cfg, BUDGET_SOURCES, 1);
    if (why != BUDGET_OK) {
        refuse_source(ex, why);
        return;
    }
    const struct static_request rq = {
        .method = r->method,
        .target = r->path,
        .if_none_match = http_request_header(r, "if-none-match"),
        .if_modified_since = http_request_header(r, "if-modified-since"),
        .range = http_request_header(r, "range"),
        .if_range = http_request_header(r, "if-range"),
    };
    struct static_result res;
    if (static_resolve(root, &rq, &res) != 0) {
        budget_put(r->budget, BUDGET_SOURCES, 1);
        http_respond_status(ex, 500, NULL, 0);
        return;
    }
    if (res.fd < 0) {
        budget_put(r->budget, BUDGET_SOURCES, 1);
    } else if (!budget_fd_ok(r->budget, cfg, res.fd)) {
        static_result_deinit(&res);
        budget_put(r->budget, BUDGET_SOURCES, 1);
        refuse_source(ex, BUDGET_AT_DESCRIPTORS);
        return;
    }
    struct http_header h[8];
    size_t n = 0;
    if (res.sys_errno && res.status >= 500)
        log_warn("site: %s: %s", r->path, strerror(res.sys_errno));
    switch (res.status) {
    case 200:
    case 206:
    case 304:
        if (res.content_type)
            h[n++] = (struct http_header){"content-type", res.content_type};
        if (res.etag[0])
            h[n++] = (struct http_header){"etag", res.etag};
        if (res.last_modified[0])
            h[n++] = (struct http_header){"last-modified", res.last_modified};
        if (res.status != 304)
            h[n++] = (struct http_header){"accept-ranges", "bytes"};
        if (res.content_range[0])
            h[n++] = (struct http_header){"content-range", res.content_range};
        if (res.fd < 0) {
            /* 304, or HEAD: headers only. HEAD announces the length a GET would get; the
             * exchange closes this empty source at once (http_no_body()). */
            const struct http_body_source src = {null_read, null_close, NULL};
            http_respond_stream(ex, res.status, h, n, (long long)res.length, &src);
            break;
        }
        if (res.length <= SITE_SMALL_FILE) {
            /* A small file is read whole and its descriptor closed now: it holds no source
             * while the client takes it, so a page's many small assets never meet
             * max-sources-per-connection; what the client can hold is the bytes queued, at
             * most max-concurrent-streams x SITE_SMALL_FILE per connection until
             * send-timeout. */
            struct dg_buf body = {0};
            int rc = small_file_read(res.fd, res.offset, (size_t)res.length, &body);
            close(res.fd);
            res.fd = -1;
            budget_put(r->budget, BUDGET_SOURCES, 1);
            if (rc == -ENOMEM) {
                http_respond_text(ex, 503, "out of memory", NULL, 0);
            } else if (rc != 0) {
                log_warn("site: %s: %s", r->path, strerror(-rc));
                http_respond_status(ex, 500, NULL, 0);
            } else {
                http_respond(ex, res.status, h, n, &body); /* on failure: 503 or reset */
            }
            dg_buf_free(&body);
            break;
        }
        {
            struct file_source *fs = calloc(1, sizeof(*fs));
            if (!fs) {
                http_respond_status(ex, 503, NULL, 0);
                break;
            }
            fs->budget = r->budget;
            fs->fd = res.fd;
            fs->off = res.offset;
            fs->left = res.length;
            res.fd = -1; /* the source owns it now */
            const struct http_body_source src = {file_read, file_close, fs};
            http_respond_stream(ex, res.status, h, n, (long long)res.length, &src);
        }
        break;
    case 301: {
        h[n++] = (struct http_header){"location", res.location};
        http_respond_text(ex, 301, "moved permanently", h, n);
        break;
    }
    case 405:
        h[n++] = (struct http_header){"allow", res.allow ? res.allow : "GET, HEAD"};
        http_respond_status(ex, 405, h, n);
        break;
    case 416:
        h[n++] = (struct http_header){"content-range", res.content_range};
        http_respond_status(ex, 416, h, n);
        break;
    default:
        http_respond_status(ex, res.status, NULL, 0);
        break;
    }
    if (res.fd >= 0) /* not handed to a source: closed here, and its unit goes back */
        budget_put(r->budget, BUDGET_SOURCES, 1);
    static_result_deinit(&res);
}

/* ---- landing page ------------------------------------------------------------------------ */

/* Split "host[:port]" / "[v6]:port" into a host we may print and a port. The page shows the
 * name the client used, so it is right behind any DNS name; anything odd falls back to the
 * configured server-name. */
static void authority_split(const char *auth, const char *fallback, char *host, size_t hlen,
                            unsigned *port)
{
    *port = 443;
    snprintf(host, hlen, "%s", fallback);
    /* The transports refuse an invalid Host/:authority with 400 before any handler runs
     * (http_exchange_dispatch()); checked again here so that a redirect's Location or the
     * landing page is never built from one, whatever the caller: server-name then. */
    if (!auth || !*auth || strlen(auth) >= hlen || !http_authority_valid(auth))
        return;
    const char *end;
    char tmp[256];
    if (strlen(auth) >= sizeof(tmp) || hlen < sizeof(tmp))
        return;
    if (auth[0] == '[') {
        end = strchr(auth, ']');
        if (!end)
            return;
        snprintf(tmp, sizeof(tmp), "%.*s", (int)(end - auth - 1), auth + 1);
        end++;
    } else {
        end = strchr(auth, ':');
        if (!end)
            end = auth + strlen(auth);
        snprintf(tmp, sizeof(tmp), "%.*s", (int)(end - auth), auth);
    }
    for (const char *p = tmp; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '.' || *p == ':'))
            return;
    }
    if (!tmp[0])
        return;
    if (*end == ':') {
        char *e;
        unsigned long p = strtoul(end + 1, &e, 10);
        if (*e || p == 0 || p > 65535)
            return;
        *port = (unsigned)p;
    } else if (*end) {
        return;
    }
    memcpy(host, tmp, strlen(tmp) + 1);
}

/* The plain-DNS address as a device's settings want it: the address alone (port 53 is the only
 * one DHCP can hand out), or words when the listener is on every address. */
static const char *dns_addr_text(const struct dg_addr *a, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    if (config_addr_is_any(a) || !inet_ntop(a->ss.ss_family, config_addr_bytes(a), ip, sizeof(ip)))
        snprintf(out, outlen, "this server's address on your network");
    else if (config_addr_port(a) != 53)
        snprintf(out, outlen, "%s (port %u)", ip, config_addr_port(a));
    else
        snprintf(out, outlen, "%s", ip);
    return out;
}

static void serve_landing(struct http_exchange *ex)
{
    const struct http_request *r = &ex->req;
    const struct config *cfg = ex->ctx->cfg;
    bool get = strcmp(r->method, "GET") == 0, head = strcmp(r->method, "HEAD") == 0;
    size_t plen = strcspn(r->path, "?");
    bool root = plen == 1 && r->path[0] == '/';
    bool profile =
        plen == strlen(SITE_PROFILE_PATH) && memcmp(r->path, SITE_PROFILE_PATH, plen) == 0;
    if (!root && !profile) {
        http_respond_status(ex, 404, NULL, 0);
        return;
    }
    if (!get && !head) {
        const struct http_header allow = {"allow", "GET, HEAD"};
        http_respond_status(ex, 405, &allow, 1);
        return;
    }
    char host[260];
    unsigned port;
    authority_split(r->authority ? r->authority : http_request_header(r, "host"), cfg->server_name,
                    host, sizeof(host), &port);
    char dns_addr[80];
    const struct landing_info li = {
        .server_name = host,
        .port = port,
        .doh_path = cfg->doh_path[0],
        .profile_path = SITE_PROFILE_PATH,
        .dot_port = cfg->n_dot_listen ? config_addr_port(&cfg->dot_listen[0]) : 0,
        .dns_addr = cfg->n_dns_listen
                        ? dns_addr_text(&cfg->dns_listen[0], dns_addr, sizeof(dns_addr))
                        : NULL,
    };
    struct dg_buf body = {0};
    int rc = root ? landing_html(&li, &body) : landing_mobileconfig(&li, &body);
    if (rc != 0) {
        dg_buf_free(&body);
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    const struct http_header page[] = {
        {"content-type", "text/html; charset=utf-8"},
        {"content-security-policy", "default-src 'none'; style-src 'unsafe-inline'"},
        {"cache-control", "no-cache"},
    };
    const struct http_header prof[] = {
        {"content-type", "application/x-apple-aspen-config"},
        {"content-disposition", "attachment; filename=\"dohgate.mobileconfig\""},
        {"cache-control", "no-cache"},
    };
    http_respond(ex, 200, root ? page : prof, 3, &body); /* on failure: 503 or reset (http.h) */
    dg_buf_free(&body);
}

/* ---- dispatch ---------------------------------------------------------------------------- */

void site_handle(struct http_exchange *ex)
{
    const struct handler_ctx *ctx = ex->ctx;
    if (ctx->site && ctx->site->root.fd >= 0)
        serve_static(ex, &ctx->site->root);
    else if (ctx->proxy)
        proxy_handle(ctx->proxy, ex);
    else
        serve_landing(ex);
}

void site_handle_plain(struct http_exchange *ex)
{
    const struct http_request *r = &ex->req;
    const struct handler_ctx *ctx = ex->ctx;
    if (strncmp(r->path, ACME_PREFIX, strlen(ACME_PREFIX)) == 0 && ctx->site &&
        ctx->site->acme.fd >= 0) {
        serve_static(ex, &ctx->site->acme);
        return;
    }
    /* Everything else moves to https on the same host, at the first TLS listener's port. */
    char host[260];
    unsigned port;
    const struct config *cfg = ctx->cfg;
    authority_split(r->authority ? r->authority : http_request_header(r, "host"), cfg->server_name,
                    host, sizeof(host), &port);
    unsigned tls_port = ctx->site ? ctx->site->https_port : 443;
    bool v6 = strchr(host, ':') != NULL;
    size_t need = strlen(host) + strlen(r->path) + 32;
    char *loc = malloc(need);
    if (!loc) {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    char portbuf[12] = "";
    if (tls_port != 443)
        snprintf(portbuf, sizeof(portbuf), ":%u", tls_port);
    snprintf(loc, need, "https://%s%s%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "", portbuf,
             r->path[0] == '/' ? r->path : "/");
    const struct http_header h = {"location", loc};
    http_respond_text(ex, 301, "moved permanently", &h, 1);
    free(loc);
}
