/* The HTTP exchange state machine and the framing-independent HTTP rules (see http.h). */
#include "dohgate/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "dohgate/acl.h"
#include "dohgate/budget.h"
#include "dohgate/forwarded.h"
#include "dohgate/config.h"
#include "dohgate/log.h"
#include "dohgate/observer.h"
#include "dohgate/util.h"

/* ---- field syntax ------------------------------------------------------------------------ */

bool http_token_valid(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!dg_tchar((unsigned char)s[i]))
            return false;
    }
    return true;
}

bool http_field_value_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ws = c == ' ' || c == '\t';
        if ((c < 0x20 && !ws) || c == 0x7f)
            return false;
        if (ws && (i == 0 || i == len - 1))
            return false; /* not trimmed: a sender's bug, or a field joined to hide another */
    }
    return true;
}

static bool hexdig(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool http_authority_valid(const char *s)
{
    if (!s)
        return false;
    const char *p = s;
    if (*p == '[') {
        /* IP-literal: an IPv6 address only (no IPvFuture, no RFC 6874 zone) */
        const char *end = strchr(p, ']');
        char v6[INET6_ADDRSTRLEN];
        struct in6_addr a;
        if (!end || (size_t)(end - p - 1) >= sizeof(v6))
            return false;
        memcpy(v6, p + 1, (size_t)(end - p - 1));
        v6[end - p - 1] = '\0';
        if (inet_pton(AF_INET6, v6, &a) != 1)
            return false;
        p = end + 1;
    } else {
        /* reg-name (an IPv4 address is one too): unreserved / pct-encoded / sub-delims */
        size_t n = 0;
        for (; *p && *p != ':'; p++, n++) {
            unsigned char c = (unsigned char)*p;
            if (c == '%') {
                if (!hexdig((unsigned char)p[1]) || !hexdig((unsigned char)p[2]))
                    return false;
                p += 2;
                n += 2;
            } else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=", c))) {
                return false;
            }
        }
        if (n == 0 || n > 255)
            return false;
    }
    if (*p == '\0')
        return true;
    if (*p++ != ':')
        return false;
    unsigned long port = 0;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++)
        port = port * 10 + (unsigned long)(*p - '0');
    return *p == '\0' && digits >= 1 && digits <= 5 && port <= 65535;
}

enum { HS_START, HS_LINE, HS_LINE_CR, HS_BOL, HS_BOL_CR, HS_DONE };

long http_head_scan(struct http_head_scan *sc, const uint8_t *p, size_t len)
{
    size_t i = 0;
    for (; i < len && sc->state != HS_DONE; i++) {
        uint8_t c = p[i];
        switch (sc->state) {
        case HS_START: /* empty lines before the start line are skipped (RFC 9112 §2.2) */
            if (c != '\r' && c != '\n')
                sc->state = HS_LINE;
            break;
        case HS_LINE:
            if (c == '\r')
                sc->state = HS_LINE_CR;
            else if (c == '\n')
                sc->state = HS_BOL;
            break;
        case HS_LINE_CR:
        case HS_BOL_CR:
            if (c != '\n')
                return -EBADMSG; /* bare CR */
            sc->state = sc->state == HS_LINE_CR ? HS_BOL : HS_DONE;
            break;
        case HS_BOL:
            if (c == ' ' || c == '\t')
                return -EBADMSG; /* obs-fold, or whitespace before the first field */
            if (c == '\r')
                sc->state = HS_BOL_CR;
            else if (c == '\n')
                sc->state = HS_DONE;
            else
                sc->state = HS_LINE;
            break;
        }
    }
    return (long)i;
}

bool http_head_scan_done(const struct http_head_scan *sc)
{
    return sc->state == HS_DONE;
}

/* The checks of http_exchange_dispatch() (see http.h). */
static bool request_valid(const struct http_request *r)
{
    if (r->authority && !http_authority_valid(r->authority))
        return false;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, "host") == 0 && !http_authority_valid(r->headers[i].value))
            return false;
    }
    return true;
}

const char *http_request_header(const struct http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    }
    return NULL;
}

size_t http_common_headers(const struct config *cfg, bool https, struct http_header *hdrs, size_t n,
                           size_t cap)
{
    /* RFC 6797 §7.2: HSTS only over secure transport; a browser ignores it on plain HTTP. */
    if (https && cfg->hsts_value && n < cap)
        hdrs[n++] = (struct http_header){"strict-transport-security", cfg->hsts_value};
    if (cfg->server_header && n < cap)
        hdrs[n++] = (struct http_header){"server", cfg->server_header};
    for (size_t i = 0; i < cfg->n_header && n < cap; i++) {
        if (cfg->header_name[i])
            hdrs[n++] = (struct http_header){cfg->header_name[i], cfg->header_value[i]};
    }
    return n;
}

const char *http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

bool http_no_body(const char *method, int status)
{
    return status < 200 || status == 204 || status == 304 ||
           (method && strcmp(method, "HEAD") == 0);
}

/* RFC 9110 §8.6: no content-length in 1xx and 204. For 304 it would have to be the selected
 * representation's length, which the handlers do not all know: none. */
static bool no_length(int status)
{
    return status < 200 || status == 204 || status == 304;
}

enum http_method_kind http_method_kind(const char *m)
{
    if (!m)
        return HTTP_M_OTHER;
    static const struct {
        const char *name;
        enum http_method_kind m;
    } tab[] = {{"GET", HTTP_M_GET},    {"POST", HTTP_M_POST},     {"HEAD", HTTP_M_HEAD},
               {"PUT", HTTP_M_PUT},    {"DELETE", HTTP_M_DELETE}, {"OPTIONS", HTTP_M_OPTIONS},
               {"TRACE", HTTP_M_TRACE}};
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (strcmp(m, tab[i].name) == 0)
            return tab[i].m;
    }
    return HTTP_M_OTHER;
}

bool http_method_idempotent(enum http_method_kind m)
{
    return m != HTTP_M_POST && m != HTTP_M_OTHER;
}

/* ---- the exchange state machine ---------------------------------------------------------- */

/* Debug builds check the state on entry; release builds fall back on the run-time checks
 * that keep a misuse harmless (a second response is refused with -EALREADY). */
#define EX_EXPECT(ex, st) assert((ex)->state == (st))

void http_exchange_init(struct http_exchange *ex, const struct http_exchange_ops *ops,
                        const struct handler_ctx *ctx)
{
    *ex = (struct http_exchange){.ops = ops, .ctx = ctx, .state = HTTP_EX_READING};
}

static void src_close(struct http_exchange *ex)
{
    if (ex->src_open) {
        ex->src_open = false;
        ex->src.close(ex->src.arg);
    }
}

void http_exchange_begin(struct http_exchange *ex)
{
    EX_EXPECT(ex, HTTP_EX_READING);
    ex->state = HTTP_EX_DISPATCHED;
}

static bool hop_trusted(const struct client_id *hop, void *acl)
{
    return acl_allows_client(acl, hop);
}

/* Forwarding header lines kept (the last ones): more is lines a proxy would never write. */
#define FWD_LINES 16

/* The client a trusted proxy names (http.h, http_exchange_dispatch()). */
static void apply_forwarded(struct http_exchange *ex)
{
    struct http_request *r = &ex->req;
    const struct acl *trusted = ex->ctx ? ex->ctx->trusted_proxy : NULL;
    if (!acl_active(trusted) || r->metrics || !client_id_known(r->client) ||
        !acl_allows_client(trusted, r->client))
        return;
    r->via_trusted_proxy = true;
    /* One header only, the one the operator's proxy writes (trusted-proxy-header): a proxy
     * appends to its own header and passes a client's copy of the other through untouched, so
     * reading both (or preferring one when present) would let any client name itself. */
    const char *lines[FWD_LINES];
    size_t n = 0, total = 0;
    bool rfc = ex->ctx->cfg && ex->ctx->cfg->trusted_proxy_header == FWD_HEADER_FORWARDED;
    enum forwarded_kind kind = rfc ? FORWARDED_RFC7239 : FORWARDED_XFF;
    const char *name = rfc ? "forwarded" : "x-forwarded-for";
    const char *label = rfc ? "Forwarded" : "X-Forwarded-For";
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcmp(r->headers[i].name, name) != 0)
            continue;
        if (n == FWD_LINES) { /* keep the last ones: the nearest proxies wrote them */
            memmove(lines, lines + 1, sizeof(lines[0]) * (FWD_LINES - 1));
            n--;
        }
        lines[n++] = r->headers[i].value;
        total++;
    }
    if (total == 0)
        return;
    enum forwarded_outcome o =
        forwarded_client(kind, lines, n, total > n, hop_trusted, (void *)trusted, &ex->fwd_client);
    if (o == FORWARDED_NONE) {
        log_debug("http: %s from %s names no usable address: the peer is the client", label,
                  r->client->text);
        return;
    }
    if (o == FORWARDED_STOPPED)
        log_debug("http: %s from %s: a malformed, unknown or obfuscated hop stopped the walk at "
                  "%s",
                  label, r->client->text, ex->fwd_client.text);
    r->client = &ex->fwd_client;
}

void http_exchange_dispatch(struct http_exchange *ex, void (*handler)(struct http_exchange *ex))
{
    http_exchange_begin(ex);
    if (!request_valid(&ex->req)) {
        log_debug("http: invalid authority or host field: answering 400");
        http_respond_status(ex, 400, NULL, 0);
        http_req_body_abandon(ex);
        return;
    }
    apply_forwarded(ex);
    handler(ex);
    /* Answered without a reader of the streamed body: nobody will read it. */
    if (ex->state != HTTP_EX_DISPATCHED && !ex->body_cb)
        http_req_body_abandon(ex);
    /* The transports never free an exchange from inside a handler's call (ops contract), so
     * it is still ours to look at. */
    if (ex->state == HTTP_EX_DISPATCHED && !ex->cancel) {
        log_err("http: %s %s left without a response: answering 500", ex->req.method,
                ex->req.path ? ex->req.path : "");
        http_respond_text(ex, 500, "internal server error", NULL, 0);
    }
}

long http_body_take_held(struct dg_buf *held, size_t *held_units, struct budget_scope *budget,
                         bool complete, uint8_t *buf, size_t max, bool *eof)
{
    size_t n = held->len < max ? held->len : max;
    if (n == 0) {
        *eof = complete;
        return complete ? 0 : HTTP_BODY_AGAIN;
    }
    memcpy(buf, held->data, n);
    dg_buf_consume(held, n);
    budget_put(budget, BUDGET_BODY, n);
    *held_units -= n;
    *eof = complete && held->len == 0;
    return (long)n;
}

/* The request body's reader and the pending operation go: the handler hears no more of this
 * exchange (its cancel function runs, exactly once). */
static void body_close(struct http_exchange *ex);

static void detach_handler(struct http_exchange *ex)
{
    body_close(ex);
    if (ex->cancel) {
        http_cancel_cb cb = ex->cancel;
        void *op = ex->pending;
        ex->cancel = NULL;
        ex->pending = NULL;
        cb(op);
    }
}

void http_exchange_end(struct http_exchange *ex)
{
    /* DONE first: a cancel function that tried to answer would trip the state check. */
    ex->state = HTTP_EX_DONE;
    detach_handler(ex);
    src_close(ex);
}

bool http_exchange_take_back(struct http_exchange *ex)
{
    if (ex->state != HTTP_EX_DISPATCHED)
        return false;
    detach_handler(ex);
    return ex->state == HTTP_EX_DISPATCHED;
}

void http_set_pending(struct http_exchange *ex, http_cancel_cb cancel, void *op)
{
    EX_EXPECT(ex, HTTP_EX_DISPATCHED);
    assert(!ex->cancel);
    ex->cancel = cancel;
    ex->pending = op;
}

/* Entering a respond call: only once, from DISPATCHED; the pending operation is released
 * (its owner is the one answering, or it gave up the exchange). */
static bool respond_enter(struct http_exchange *ex)
{
    EX_EXPECT(ex, HTTP_EX_DISPATCHED);
    if (ex->state != HTTP_EX_DISPATCHED)
        return false;
    ex->cancel = NULL;
    ex->pending = NULL;
    return true;
}

int http_refuse(struct http_exchange *ex, const char *text)
{
    if (!ex->ops->refuse) {
        const struct http_header ra = {"retry-after", "1"};
        return http_respond_text(ex, 503, text, &ra, 1);
    }
    if (!respond_enter(ex))
        return -EINVAL;
    ex->state = HTTP_EX_DONE; /* nothing more is sent; the transport ends it later */
    ex->ops->refuse(ex);
    return 0;
}

static void responded(struct http_exchange *ex, int status)
{
    ex->state = HTTP_EX_RESPONDED;
    /* Scrapes of the metrics listener are not traffic. */
    if (ex->ctx && !ex->req.metrics)
        dg_observe(ex->ctx->obs, DG_EV_HTTP_RESPONSE, (unsigned)status,
                   DG_HTTP_KEY(ex->req.version, http_method_kind(ex->req.method)));
}

static int respond_text(struct http_exchange *ex, int status, const char *text,
                        const struct http_header *extra, size_t nextra, bool fallback);

/* A response could not be queued (@p rc): answer 503 (memory) or 500 instead, or, when that
 * was the fallback already or fails too, reset. The exchange is in DISPATCHED still: a failing
 * transport op took nothing. */
static int respond_failed(struct http_exchange *ex, int status, int rc, bool fallback)
{
    log_debug("http: a %d response could not be queued: %s", status, strerror(-rc));
    if (!fallback) {
        int fb = rc == -ENOMEM ? 503 : 500;
        if (respond_text(ex, fb, fb == 503 ? "out of memory" : "internal server error", NULL, 0,
                         true) == 0)
            return rc;
    }
    if (ex->state == HTTP_EX_DISPATCHED) {
        ex->state = HTTP_EX_DONE; /* nothing more is sent; the transport ends it later */
        ex->ops->reset(ex);
    }
    return rc;
}

static int respond_buf(struct http_exchange *ex, int status, const struct http_header *hdrs,
                       size_t nhdrs, struct dg_buf *body, bool fallback)
{
    size_t blen = body ? body->len : 0;
    const struct http_response resp = {
        .status = status,
        .hdrs = hdrs,
        .nhdrs = nhdrs,
        .length = no_length(status) ? -1 : (long long)blen,
        .no_body = http_no_body(ex->req.method, status),
    };
    int rc = ex->ops->respond(ex, &resp, resp.no_body || !blen ? NULL : body);
    if (rc != 0)
        return respond_failed(ex, status, rc, fallback);
    if (body)
        dg_buf_free(body); /* moved, or not sent (no body): either way not the caller's now */
    responded(ex, status);
    return 0;
}

int http_respond(struct http_exchange *ex, int status, const struct http_header *hdrs, size_t nhdrs,
                 struct dg_buf *body)
{
    if (!respond_enter(ex))
        return -EALREADY;
    return respond_buf(ex, status, hdrs, nhdrs, body, false);
}

int http_respond_stream(struct http_exchange *ex, int status, const struct http_header *hdrs,
                        size_t nhdrs, long long length, const struct http_body_source *src)
{
    if (!respond_enter(ex)) {
        src->close(src->arg);
        return -EALREADY;
    }
    const struct http_response resp = {
        .status = status,
        .hdrs = hdrs,
        .nhdrs = nhdrs,
        .length = no_length(status) ? -1 : length,
        .no_body = http_no_body(ex->req.method, status) || length == 0,
    };
    ex->src = *src;
    ex->src_open = true;
    ex->src_len = length;
    ex->src_sent = 0;
    if (resp.no_body)
        src_close(ex); /* nothing to send: free the file/backend now */
    int rc = ex->ops->respond_stream(ex, &resp);
    if (rc != 0) {
        src_close(ex);
        return respond_failed(ex, status, rc, false);
    }
    responded(ex, status);
    return 0;
}

long http_body_pull(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof)
{
    EX_EXPECT(ex, HTTP_EX_RESPONDED); /* a body flows only after its head was accepted */
    *eof = false;
    if (!ex->src_open)
        return -EIO;
    if (ex->src_len >= 0 && (long long)max > ex->src_len - ex->src_sent)
        max = (size_t)(ex->src_len - ex->src_sent);
    if (max == 0)
        return HTTP_BODY_AGAIN; /* the transport has no room now */
    long n = ex->src.read(ex->src.arg, buf, max);
    if (n == HTTP_BODY_AGAIN)
        return n;
    /* A failing source, or one that ends before its announced length, must not look like a
     * complete body: the transport aborts the response. */
    if (n < 0 || (size_t)n > max || (n == 0 && ex->src_len >= 0)) {
        src_close(ex);
        return n < 0 ? n : -EIO;
    }
    ex->src_sent += n;
    if (n == 0 || (ex->src_len >= 0 && ex->src_sent == ex->src_len)) {
        *eof = true;
        src_close(ex); /* free the file/backend now, not when the exchange ends */
    }
    return n;
}

void http_body_resume(struct http_exchange *ex)
{
    EX_EXPECT(ex, HTTP_EX_RESPONDED);
    if (ex->src_open)
        ex->ops->resume(ex);
}

static int respond_text(struct http_exchange *ex, int status, const char *text,
                        const struct http_header *extra, size_t nextra, bool fallback)
{
    struct http_header hdrs[8];
    size_t n = 0;
    hdrs[n++] = (struct http_header){"content-type", "text/plain; charset=utf-8"};
    for (size_t i = 0; i < nextra && n < sizeof(hdrs) / sizeof(hdrs[0]); i++)
        hdrs[n++] = extra[i];
    struct dg_buf body = {0};
    int rc;
    if (dg_buf_append(&body, text, strlen(text)) || dg_buf_append(&body, "\n", 1))
        rc = respond_failed(ex, status, -ENOMEM, fallback);
    else
        rc = respond_buf(ex, status, hdrs, n, &body, fallback);
    dg_buf_free(&body);
    return rc;
}

int http_respond_text(struct http_exchange *ex, int status, const char *text,
                      const struct http_header *extra, size_t nextra)
{
    if (!respond_enter(ex))
        return -EALREADY;
    return respond_text(ex, status, text, extra, nextra, false);
}

int http_respond_status(struct http_exchange *ex, int status, const struct http_header *extra,
                        size_t nextra)
{
    const char *text = http_reason(status);
    return http_respond_text(ex, status, text[0] ? text : "Error", extra, nextra);
}

/* ---- request body ------------------------------------------------------------------------ */

void http_req_body_set_reader(struct http_exchange *ex, void (*cb)(void *arg), void *arg)
{
    assert(ex->state == HTTP_EX_DISPATCHED || ex->state == HTTP_EX_RESPONDED);
    ex->body_cb = cb;
    ex->body_arg = arg;
}

static void body_close(struct http_exchange *ex)
{
    ex->body_closed = true;
    ex->body_waiting = false;
    ex->body_cb = NULL;
    ex->body_arg = NULL;
}

long http_req_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof)
{
    *eof = false;
    if (ex->body_closed || ex->state == HTTP_EX_DONE || ex->state == HTTP_EX_READING)
        return -EIO;
    long n;
    if (!ex->req.body_stream) {
        /* buffered whole by the transport: req.body, read from body_off */
        size_t left = ex->req.body_len - ex->body_off;
        n = (long)(left < max ? left : max);
        if (n)
            memcpy(buf, ex->req.body + ex->body_off, (size_t)n);
        ex->body_off += (size_t)n;
        *eof = ex->body_off == ex->req.body_len;
    } else {
        n = ex->ops->body_read(ex, buf, max, eof);
    }
    if (n == HTTP_BODY_AGAIN) {
        ex->body_waiting = true;
        return n;
    }
    if (n < 0 || *eof)
        body_close(ex);
    return n;
}

void http_req_body_abandon(struct http_exchange *ex)
{
    if (ex->body_closed)
        return;
    body_close(ex);
    if (ex->req.body_stream && ex->state != HTTP_EX_DONE)
        ex->ops->body_abandon(ex);
}

void http_req_body_ready(struct http_exchange *ex)
{
    if (!ex->body_waiting || ex->body_closed || !ex->body_cb)
        return;
    ex->body_waiting = false;
    ex->body_cb(ex->body_arg);
}

void http_req_body_failed(struct http_exchange *ex)
{
    if (ex->body_closed || !ex->body_cb)
        return;
    ex->body_waiting = false;
    ex->body_cb(ex->body_arg);
}

bool http_req_body_closed(const struct http_exchange *ex)
{
    return ex->body_closed;
}
