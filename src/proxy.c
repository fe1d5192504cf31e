/* Reverse proxy to an HTTP/1.1 backend (see proxy.h).
 *
 * A request's life: proxy_handle() builds the request bytes, takes an idle connection or
 * connects, writes, then reads and parses the response. At the final response head it answers
 * the exchange with a body source; from then on the source owns the request, and the source's
 * close() ends it (returning the connection to the pool when the response was read whole and the
 * backend keeps it alive). Callbacks of the source can run while the request is inside its own
 * I/O handler (a transport may close a source synchronously from http_respond_stream()), so the
 * request is freed only outside its handlers: `in_io` defers it. */
#include "dohgate/proxy.h"

#include <errno.h>
#include <event2/event.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/budget.h"
#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/http.h"
#include "dohgate/list.h"
#include "dohgate/log.h"

#define READ_CHUNK      16384
#define BODY_CHUNK      16384 /* of a streamed request body, per send */
#define MAX_RESP_HEAD   32768
#define MAX_RESP_FIELDS 100

struct idle_conn {
    struct proxy *px;
    struct dg_lnode node; /* on px->idle */
    int fd;
    struct event *ev; /* readable (EOF, stray bytes) or idle timeout: close */
};

struct proxy {
    struct event_base *base;
    const struct config *cfg;
    struct dg_list idle; /* most recently parked first */
    size_t nidle;
    struct proxy_stats stats;
};

enum preq_phase { PH_SEND, PH_HEAD, PH_BODY, PH_DONE };

struct preq {
    struct proxy *px;
    struct http_exchange *ex;
    int fd;
    bool reused, retried;
    enum preq_phase phase;
    struct event *rev, *wev, *timer;
    struct dg_buf out; /* the request head */
    size_t out_off;    /* sent of the head and then of the body (r->ex->req.body) */
    http_parser rp;
    bool head_method;
    bool idempotent; /* may be sent again after a reused connection failed (RFC 9110 §9.2.2) */
    /* response head being parsed */
    struct dg_buf field, value;
    bool in_value;
    struct http_header *hdrs;
    size_t nhdrs, hdrs_cap, head_bytes;
    bool head_ready;            /* final head parsed, not yet answered */
    const char *bad;            /* why the response head was refused (502), for the log */
    struct http_head_scan scan; /* of the response head being read (parse_response()) */
    long long resp_len;         /* the response's Content-Length, -1 when it has none */
    bool responded;             /* the exchange has our source */
    bool got_bytes;             /* any response byte arrived */
    bool msg_done;              /* the response was read whole */
    bool keep_alive;
    bool failed;      /* backend failed after the head: the source reports it */
    bool src_waiting; /* the source said AGAIN: resume the exchange when bytes come */
    bool read_paused;
    int in_io; /* inside our own event handler */
    bool dead; /* closed while in_io: free on the way out */
    struct dg_buf body;
    size_t body_off;
    /* the connection's (outlives the request: the exchange ends, and with it this request,
     * before the connection goes); one BUDGET_SOURCES unit while `holds` */
    struct budget_scope *budget;
    bool holds;
    enum budget_scope_level refused; /* why start_connection() failed, BUDGET_OK: not a budget */
    /* a request body streamed from the client (req.body_stream): read from the exchange as the
     * backend socket takes it, into bout, one chunk at a time */
    bool stream_body;
    bool chunked;    /* sent with chunked coding: the client announced no length */
    bool body_eof;   /* the body's last bytes (and the chunked terminator) are in bout */
    bool body_taken; /* a body byte left the exchange: the request cannot be sent again */
    bool body_cut;   /* the response came before the body was sent whole: never reuse */
    struct dg_buf bout;
    size_t bout_off;
};

static void preq_free(struct preq *r);

/* ---- idle pool --------------------------------------------------------------------------- */

static void idle_remove(struct idle_conn *ic)
{
    struct proxy *px = ic->px;
    dg_list_unlink(&px->idle, &ic->node);
    px->nidle--;
    event_free(ic->ev);
    free(ic);
}

static void on_idle_event(evutil_socket_t fd, short what, void *arg)
{
    /* EOF, unexpected bytes, or the idle time is up: this connection is no longer reusable. */
    struct idle_conn *ic = arg;
    close(ic->fd);
    idle_remove(ic);
}

static void idle_put(struct proxy *px, int fd)
{
    struct idle_conn *ic = NULL;
    if (px->nidle >= PROXY_IDLE_MAX || !(ic = calloc(1, sizeof(*ic))))
        goto drop;
    ic->px = px;
    ic->fd = fd;
    ic->ev = event_new(px->base, fd, EV_READ, on_idle_event, ic);
    struct timeval tv = {.tv_sec = PROXY_IDLE_S};
    if (!ic->ev || event_add(ic->ev, &tv) != 0) {
        if (ic->ev)
            event_free(ic->ev);
        free(ic);
        goto drop;
    }
    dg_list_push_front(&px->idle, &ic->node);
    px->nidle++;
    return;
drop:
    close(fd);
}

static int idle_take(struct proxy *px)
{
    struct idle_conn *ic = dg_list_entry(px->idle.head, struct idle_conn, node);
    if (!ic)
        return -1;
    int fd = ic->fd;
    idle_remove(ic);
    return fd;
}

/* ---- request building -------------------------------------------------------------------- */

/* Fields that never cross this hop, in either direction: connection management and framing
 * (RFC 9110 §7.6.1; this hop sets its own), host and length (regenerated), the forwarding fields
 * (dohgate's own replace them) and cookie (joined into one line by build_request()). Compared
 * without case: the names were checked to be tokens, so there is no whitespace to trim. */
static bool hop_by_hop(const char *name)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "te",
                                      "trailer",
                                      "upgrade",
                                      "transfer-encoding",
                                      "host",
                                      "content-length",
                                      "expect",
                                      "http2-settings",
                                      "x-forwarded-for",
                                      "x-forwarded-proto",
                                      "x-forwarded-host",
                                      "cookie"};
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    }
    return false;
}

/* A client's forwarding fields are not passed on: without a list of trusted proxies in front of
 * dohgate, they say whatever the client wants the backend to believe (its address, scheme,
 * host). X-Forwarded-* (any of them), Forwarded (RFC 7239) and X-Real-IP. */
static bool forwarding_field(const char *name)
{
    return strncasecmp(name, "x-forwarded-", 12) == 0 || strcasecmp(name, "forwarded") == 0 ||
           strcasecmp(name, "x-real-ip") == 0;
}

/* The scheme the client used, for X-Forwarded-Proto: https on the TLS listeners. On the
 * clear-text listener (plain-listen) the TLS, if any, ended at the proxy in front: its own
 * X-Forwarded-Proto ("https" or "http") is believed when it is a trusted-proxy (http.h
 * via_trusted_proxy), else the backend hears what dohgate saw, "http". */
static const char *forwarded_proto(const struct http_request *q)
{
    if (!q->cleartext)
        return q->https ? "https" : "http";
    const char *p = q->via_trusted_proxy ? http_request_header(q, "x-forwarded-proto") : NULL;
    if (p && strcasecmp(p, "https") == 0)
        return "https";
    return "http";
}

/* Fields named by a Connection field are hop-by-hop too (RFC 9110 §7.6.1); every Connection
 * field line of the request counts, not only the first. */
static bool named_by_connection(const char *name, const struct http_request *q)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < q->nheaders; i++) {
        if (strcasecmp(q->headers[i].name, "connection") != 0)
            continue;
        for (const char *p = q->headers[i].value; *p;) {
            while (*p == ' ' || *p == ',' || *p == '\t')
                p++;
            size_t tl = strcspn(p, ", \t");
            if (tl == nl && strncasecmp(p, name, nl) == 0)
                return true;
            p += tl;
        }
    }
    return false;
}

/* A request target as it may stand in the request line: no SP, no controls, not empty. */
static bool target_valid(const char *t)
{
    if (!*t)
        return false;
    for (; *t; t++) {
        if ((unsigned char)*t <= 0x20 || (unsigned char)*t == 0x7f)
            return false;
    }
    return true;
}

static int add_line(struct dg_buf *b, const char *name, const char *value)
{
    if (dg_buf_append(b, name, strlen(name)) || dg_buf_append(b, ": ", 2) ||
        dg_buf_append(b, value, strlen(value)) || dg_buf_append(b, "\r\n", 2))
        return -ENOMEM;
    return 0;
}

/* The request as the backend gets it: only what passed the transports' checks is passed on, and
 * it is checked again here against the same definitions (http.h), so that no transport's lapse
 * can put a second request into the bytes. @return 0, -ENOMEM, or -EBADMSG for a request that
 * cannot be forwarded as it is (400). */
static int build_request(struct preq *r, const struct http_request *q, const char *server_name)
{
    struct dg_buf *b = &r->out;
    /* An HTTP/2 request may carry a host field instead of :authority (RFC 9113 §8.3.1). */
    const char *auth = q->authority ? q->authority : http_request_header(q, "host");
    if (!http_token_valid(q->method, strlen(q->method)) || !target_valid(q->path) ||
        (auth && !http_authority_valid(auth)))
        return -EBADMSG;
    for (size_t i = 0; i < q->nheaders; i++) {
        const struct http_header *h = &q->headers[i];
        if (!http_token_valid(h->name, strlen(h->name)) ||
            !http_field_value_valid(h->value, strlen(h->value)))
            return -EBADMSG;
    }
    if (dg_buf_append(b, q->method, strlen(q->method)) || dg_buf_append(b, " ", 1) ||
        dg_buf_append(b, q->path, strlen(q->path)) || dg_buf_append(b, " HTTP/1.1\r\n", 11))
        return -ENOMEM;
    /* HTTP/1.1 requires a Host (RFC 9112 §3.2); an HTTP/1.0 client need not send one. Then the
     * backend gets server-name: the name the site is published under, so that it picks the
     * same virtual host and builds the same absolute URLs as for a client that named it.
     * nginx's default, the backend's own address, would leak an internal address into the
     * redirects a backend makes from Host. X-Forwarded-Host is left out then: the client named
     * no host. */
    if (add_line(b, "host", auth ? auth : server_name))
        return -ENOMEM;
    /* Cookies arrive as several fields over HTTP/2; HTTP/1.1 wants one line (RFC 9113 8.2.3). */
    bool first_cookie = true;
    for (size_t i = 0; i < q->nheaders; i++) {
        const struct http_header *h = &q->headers[i];
        if (strcasecmp(h->name, "cookie") == 0) {
            if ((first_cookie ? dg_buf_append(b, "cookie: ", 8) : dg_buf_append(b, "; ", 2)) ||
                dg_buf_append(b, h->value, strlen(h->value)))
                return -ENOMEM;
            first_cookie = false;
        }
    }
    if (!first_cookie && dg_buf_append(b, "\r\n", 2))
        return -ENOMEM;
    for (size_t i = 0; i < q->nheaders; i++) {
        const struct http_header *h = &q->headers[i];
        if (hop_by_hop(h->name) || forwarding_field(h->name) || named_by_connection(h->name, q))
            continue;
        if (add_line(b, h->name, h->value))
            return -ENOMEM;
    }
    /* dohgate's own forwarding fields, replacing the client's (forwarding_field()): the
     * address it saw, the scheme and the authority the client asked for. */
    if (add_line(b, "x-forwarded-for", client_id_known(q->client) ? q->client->text : "unknown") ||
        add_line(b, "x-forwarded-proto", forwarded_proto(q)) ||
        (auth && add_line(b, "x-forwarded-host", auth)))
        return -ENOMEM;
    char len[24];
    if (q->body_stream) {
        /* The client's length when it gave one; otherwise the backend learns where the body
         * ends from chunked coding (HTTP/1.1 backends must read it, RFC 9112 §7.1). */
        r->stream_body = true;
        r->chunked = q->body_length < 0;
        snprintf(len, sizeof(len), "%lld", q->body_length);
        if (r->chunked ? add_line(b, "transfer-encoding", "chunked")
                       : add_line(b, "content-length", len))
            return -ENOMEM;
        return dg_buf_append(b, "\r\n", 2) ? -ENOMEM : 0;
    }
    bool send_len = q->body_len > 0 || strcmp(q->method, "POST") == 0 ||
                    strcmp(q->method, "PUT") == 0 || strcmp(q->method, "PATCH") == 0;
    snprintf(len, sizeof(len), "%zu", q->body_len);
    if (send_len && add_line(b, "content-length", len))
        return -ENOMEM;
    /* The body is not copied: on_write() sends it from the exchange's buffer (taken under the
     * body budget by the transport), which lives as long as r->ex is set. */
    return dg_buf_append(b, "\r\n", 2) ? -ENOMEM : 0;
}

/* ---- response parsing -------------------------------------------------------------------- */

static int finish_field(struct preq *r)
{
    if (!r->in_value)
        return 0;
    r->in_value = false;
    if (r->nhdrs >= MAX_RESP_FIELDS)
        return -1;
    if (r->nhdrs == r->hdrs_cap) {
        size_t cap = r->hdrs_cap ? r->hdrs_cap * 2 : 16;
        struct http_header *h = realloc(r->hdrs, cap * sizeof(*h));
        if (!h)
            return -1;
        r->hdrs = h;
        r->hdrs_cap = cap;
    }
    size_t nl = r->field.len, vl = r->value.len;
    while (vl > 0 && (r->value.data[vl - 1] == ' ' || r->value.data[vl - 1] == '\t'))
        vl--;
    if (!http_field_value_valid((const char *)r->value.data, vl)) {
        r->bad = "an invalid response field value";
        return -1;
    }
    char *blk = malloc(nl + vl + 2);
    if (!blk)
        return -1;
    for (size_t i = 0; i < nl; i++) {
        char c = (char)r->field.data[i];
        blk[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    blk[nl] = '\0';
    if (vl)
        memcpy(blk + nl + 1, r->value.data, vl);
    blk[nl + 1 + vl] = '\0';
    r->hdrs[r->nhdrs++] = (struct http_header){blk, blk + nl + 1};
    r->field.len = r->value.len = 0;
    return 0;
}

static void clear_headers(struct preq *r)
{
    for (size_t i = 0; i < r->nhdrs; i++)
        free((char *)r->hdrs[i].name);
    r->nhdrs = 0;
    r->head_bytes = 0;
    r->field.len = r->value.len = 0;
    r->in_value = false;
}

static int on_hfield(http_parser *p, const char *at, size_t len)
{
    struct preq *r = p->data;
    /* Same rule as for requests (h1.c): "Transfer-Encoding :" would be taken as framing by the
     * parser and then passed on under a name the client's side reads differently. */
    if (len && !http_token_valid(at, len)) {
        r->bad = "a response field name that is not a token";
        return 1;
    }
    if (finish_field(r) != 0)
        return 1;
    r->head_bytes += len;
    return r->head_bytes > MAX_RESP_HEAD || dg_buf_append(&r->field, at, len) != 0;
}

static int on_hvalue(http_parser *p, const char *at, size_t len)
{
    struct preq *r = p->data;
    r->in_value = true;
    r->head_bytes += len;
    return r->head_bytes > MAX_RESP_HEAD || dg_buf_append(&r->value, at, len) != 0;
}

static int on_resp_headers_complete(http_parser *p)
{
    struct preq *r = p->data;
    if (finish_field(r) != 0)
        return -1;
    /* RFC 9110 §15: a status code is 100..599. The parser takes any one to three digits. 101
     * cannot answer a request that asked for no upgrade (Upgrade is never forwarded): the
     * connection would be the backend's other protocol from here on. All: 502. */
    if (p->status_code < 100 || p->status_code > 599 || p->status_code == 101) {
        r->bad = "a response status code outside 100..599, or 101";
        return -1;
    }
    if (p->status_code < 200) {
        /* 100 Continue and other interim answers: not forwarded, wait for the final one. */
        clear_headers(r);
        r->scan = (struct http_head_scan){0}; /* the final head is scanned too */
        return 0;
    }
    r->head_ready = true;
    /* Read it now: the parser counts content_length down while it consumes the body. */
    r->resp_len = (p->flags & F_CONTENTLENGTH) ? (long long)p->content_length : -1;
    /* 1 = "no body follows" (the response to HEAD has a length but no body). */
    return r->head_method ? 1 : 0;
}

static int on_resp_body(http_parser *p, const char *at, size_t len)
{
    struct preq *r = p->data;
    return dg_buf_append(&r->body, at, len) != 0;
}

static int on_resp_complete(http_parser *p)
{
    struct preq *r = p->data;
    if (p->status_code < 200)
        return 0;
    r->msg_done = true;
    r->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1); /* anything after it is not ours */
    return 0;
}

static const http_parser_settings resp_settings = {
    .on_header_field = on_hfield,
    .on_header_value = on_hvalue,
    .on_headers_complete = on_resp_headers_complete,
    .on_body = on_resp_body,
    .on_message_complete = on_resp_complete,
};

/* ---- the body source --------------------------------------------------------------------- */

static void set_read(struct preq *r, bool on);

static long src_read(void *arg, uint8_t *buf, size_t max)
{
    struct preq *r = arg;
    size_t avail = r->body.len - r->body_off;
    if (avail) {
        size_t n = avail < max ? avail : max;
        memcpy(buf, r->body.data + r->body_off, n);
        r->body_off += n;
        if (r->body_off == r->body.len) {
            r->body.len = 0;
            r->body_off = 0;
        }
        if (r->read_paused && !r->msg_done && !r->failed && r->body.len < PROXY_BUFFER / 2)
            set_read(r, true);
        return (long)n;
    }
    if (r->msg_done)
        return 0;
    if (r->failed)
        return -EIO;
    r->src_waiting = true;
    return HTTP_BODY_AGAIN;
}

static void src_close(void *arg)
{
    struct preq *r = arg;
    /* The request's reader of a streamed body (on_body_ready, with this preq) must not outlive
     * it: a body still coming after the response is discarded by the transport. */
    if (r->ex)
        http_req_body_abandon(r->ex);
    r->ex = NULL;
    if (r->in_io)
        r->dead = true;
    else
        preq_free(r);
}

/* ---- connection handling ----------------------------------------------------------------- */

static void arm_timer(struct preq *r)
{
    struct timeval tv = {.tv_sec = r->px->cfg->backend_timeout_s};
    event_add(r->timer, &tv);
}

static void set_read(struct preq *r, bool on)
{
    r->read_paused = !on;
    if (on) {
        event_add(r->rev, NULL);
        arm_timer(r);
    } else {
        /* A slow client is not the backend's fault: no backend timer while we wait for it. */
        event_del(r->rev);
        event_del(r->timer);
    }
}

static void preq_free(struct preq *r)
{
    if (r->rev)
        event_free(r->rev);
    if (r->wev)
        event_free(r->wev);
    if (r->timer)
        event_free(r->timer);
    if (r->fd >= 0) {
        /* Reusable only when the response was read whole, nothing else came, and the backend
         * keeps the connection. */
        if (r->msg_done && r->keep_alive && !r->failed && HTTP_PARSER_ERRNO(&r->rp) == HPE_PAUSED &&
            r->body_off == r->body.len && !r->body_cut)
            idle_put(r->px, r->fd);
        else
            close(r->fd);
    }
    if (r->holds) /* the backend connection is closed or back in the pool */
        budget_put(r->budget, BUDGET_SOURCES, 1);
    clear_headers(r);
    free(r->hdrs);
    dg_buf_free(&r->field);
    dg_buf_free(&r->value);
    dg_buf_free(&r->out);
    dg_buf_free(&r->body);
    dg_buf_free(&r->bout);
    free(r);
}

static void on_cancel(void *op)
{
    /* The exchange died before the head was answered. */
    struct preq *r = op;
    r->ex = NULL;
    r->msg_done = false; /* the connection is mid-response: never reuse it */
    if (r->in_io)
        r->dead = true;
    else
        preq_free(r);
}

static void fail_before_head(struct preq *r, int status, const char *why)
{
    struct http_exchange *ex = r->ex;
    if (status == 504)
        r->px->stats.errors_504++;
    else
        r->px->stats.errors_502++;
    log_info("site-backend %s: %s", r->px->cfg->backend.text, why);
    r->ex = NULL;
    r->msg_done = false;
    r->dead = true;
    if (ex) {
        http_req_body_abandon(ex); /* the rest of a streamed body is discarded */
        /* responding releases our registration; if it fails the exchange still answers */
        http_respond_text(ex, status,
                          status == 504 ? "gateway timeout: the site's backend did "
                                          "not answer in time"
                                        : "bad gateway: the site's backend is "
                                          "unavailable or answered badly",
                          NULL, 0);
    }
}

static int start_connection(struct preq *r);

/* The budgets (budget.h) refused the backend connection: http_refuse() (HTTP/2 REFUSED_STREAM,
 * else 503 naming the limit, with when to retry) while nothing of the request went to a backend
 * (@p fresh); after a failed attempt (a retry) 503, as the backend may have seen it. */
static void fail_refused(struct preq *r, bool fresh)
{
    struct http_exchange *ex = r->ex;
    const char *t = budget_source_refusal_text(r->refused);
    r->ex = NULL;
    r->msg_done = false;
    r->dead = true;
    if (ex && fresh) {
        http_refuse(ex, t);
    } else if (ex) {
        const struct http_header ra = {"retry-after", "1"};
        http_respond_text(ex, 503, t, &ra, 1);
    }
}

/* The backend failed. Before any response byte on a reused connection: one retry on a new one,
 * for idempotent methods only: the backend may have acted on the request before it closed (a
 * POST sent twice could charge twice; nginx does not retry those either). Before the head:
 * 502/504. After it: the source reports the failure. */
static void backend_failed(struct preq *r, bool timeout, const char *why)
{
    if (r->responded) {
        /* Stop watching the socket: at EOF a level-triggered read event would fire on every
         * loop turn until the client has taken the buffered bytes (a busy loop). */
        r->failed = true;
        event_del(r->rev);
        if (r->wev)
            event_del(r->wev);
        event_del(r->timer);
        if (r->src_waiting && r->ex) {
            r->src_waiting = false;
            http_body_resume(r->ex);
        }
        return;
    }
    /* a streamed body is sent once: only while none of it was taken can it be sent again */
    if (r->reused && !r->got_bytes && !r->retried && !timeout && r->idempotent && !r->body_taken) {
        r->retried = true;
        r->px->stats.retries++;
        if (start_connection(r) == 0)
            return;
    }
    if (r->refused != BUDGET_OK)
        fail_refused(r, false);
    else
        fail_before_head(r, timeout ? 504 : 502, why);
}

static void answer_head(struct preq *r)
{
    struct http_exchange *ex = r->ex;
    r->head_ready = false;
    r->responded = true;
    struct http_header *out = malloc((r->nhdrs + 1) * sizeof(*out));
    size_t n = 0;
    if (!out) {
        fail_before_head(r, 502, "out of memory");
        return;
    }
    for (size_t i = 0; i < r->nhdrs; i++) {
        const char *name = r->hdrs[i].name;
        /* Framing is the client transport's; HSTS/server are ours (http_common_headers). */
        if (hop_by_hop(name) || strcmp(name, "strict-transport-security") == 0 ||
            strcmp(name, "server") == 0 || strcmp(name, "date") == 0)
            continue;
        out[n++] = r->hdrs[i];
    }
    /* the exchange applies the body rules (HEAD, 204, 304) and releases our registration; on
     * failure it closes the source (src_close) and answers 500/503 or resets by itself */
    const struct http_body_source src = {src_read, src_close, r};
    r->in_io++; /* src_close may run synchronously from here */
    http_respond_stream(ex, (int)r->rp.status_code, out, n, r->resp_len, &src);
    r->in_io--;
    free(out);
}

/* Parse response bytes. A head's bytes pass http_head_scan() before the parser sees them, one
 * head at a time (an interim 1xx answer restarts the scan, on_resp_headers_complete()): an
 * obs-fold would be joined into the previous field without its space, a bare CR taken as a line
 * end (RFC 9112 §5.2 allows a gateway to answer 502 instead of repairing them).
 * @return the bytes consumed, or -1 with r->bad set. */
static long parse_response(struct preq *r, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        size_t n = len - off;
        if (!http_head_scan_done(&r->scan)) {
            long h = http_head_scan(&r->scan, data + off, n);
            if (h < 0) {
                r->bad = "obs-fold or a bare CR in the response head";
                return -1;
            }
            n = (size_t)h;
        }
        size_t done = http_parser_execute(&r->rp, &resp_settings, (const char *)data + off, n);
        off += done;
        if (done < n || HTTP_PARSER_ERRNO(&r->rp) != HPE_OK)
            break;
    }
    return (long)off;
}

static void handle_input(struct preq *r, const uint8_t *data, size_t len, bool eof)
{
    if (!r->got_bytes)
        r->scan = (struct http_head_scan){0}; /* the first bytes on this (new) connection */
    if (len)
        r->got_bytes = true;
    long done = eof ? (long)http_parser_execute(&r->rp, &resp_settings, (const char *)data, 0)
                    : parse_response(r, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&r->rp);
    if (done < 0 || (e != HPE_OK && e != HPE_PAUSED)) {
        backend_failed(r, false, r->bad ? r->bad : http_errno_description(e));
        return;
    }
    if (e == HPE_PAUSED && (size_t)done < len)
        r->keep_alive = false; /* bytes after the response: do not trust this connection */
    if (r->head_ready && r->stream_body && r->phase == PH_SEND) {
        /* The backend answered before it had the whole body (an early 413, a redirect): stop
         * sending, let the client's transport discard the rest, and close this connection
         * afterwards (it is in the middle of a request). */
        r->body_cut = true;
        r->phase = PH_HEAD;
        event_del(r->wev);
        if (r->ex)
            http_req_body_abandon(r->ex);
    }
    if (r->head_ready && r->ex)
        answer_head(r);
    if (r->dead)
        return;
    if (eof && !r->msg_done) {
        backend_failed(r, false, "connection closed before the response was complete");
        return;
    }
    if (r->msg_done) {
        event_del(r->rev);
        event_del(r->timer);
        r->phase = PH_DONE;
    }
    if (r->src_waiting && r->ex && (r->body.len > r->body_off || r->msg_done)) {
        r->src_waiting = false;
        http_body_resume(r->ex);
    }
    if (!r->msg_done && r->body.len - r->body_off >= PROXY_BUFFER)
        set_read(r, false);
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct preq *r = arg;
    uint8_t buf[READ_CHUNK];
    r->in_io++;
    ssize_t n = recv(r->fd, buf, sizeof(buf), 0);
    if (n > 0) {
        arm_timer(r);
        handle_input(r, buf, (size_t)n, false);
    } else if (n == 0) {
        handle_input(r, NULL, 0, true);
    } else if (errno != EAGAIN && errno != EINTR) {
        backend_failed(r, false, strerror(errno));
    }
    r->in_io--;
    if (r->dead && !r->in_io)
        preq_free(r);
}

/* The request's bytes: the head, then the body the exchange holds (none once it is gone). */
static size_t req_len(const struct preq *r)
{
    return r->out.len + (r->ex ? r->ex->req.body_len : 0);
}

/* The next piece of a streamed request body into bout (chunk-framed when r->chunked).
 * @return 1 when bout has bytes (or the body ended), 0 when the client has sent nothing more yet
 *         (http_req_body_ready() wakes on_body_ready()), or the negative errno of the read. */
static int body_fill(struct preq *r)
{
    size_t pre = r->chunked ? 10 : 0; /* "%08zx\r\n" */
    r->bout.len = 0;
    r->bout_off = 0;
    if (dg_buf_reserve(&r->bout, pre + BODY_CHUNK + 2 + 5) != 0)
        return -ENOMEM;
    bool eof;
    long n = http_req_body_read(r->ex, r->bout.data + pre, BODY_CHUNK, &eof);
    if (n == HTTP_BODY_AGAIN)
        return 0;
    if (n < 0)
        return (int)n;
    if (n > 0) {
        r->body_taken = true;
        if (r->chunked) {
            char hex[24]; /* n <= BODY_CHUNK: always 8 digits */
            snprintf(hex, sizeof(hex), "%08lx\r\n", (unsigned long)n & 0xfffffffful);
            memcpy(r->bout.data, hex, 10);
        }
        r->bout.len = pre + (size_t)n;
        if (r->chunked) {
            memcpy(r->bout.data + r->bout.len, "\r\n", 2);
            r->bout.len += 2;
        }
    }
    if (eof) {
        r->body_eof = true;
        if (r->chunked) {
            memcpy(r->bout.data + r->bout.len, "0\r\n\r\n", 5);
            r->bout.len += 5;
        }
    }
    return 1;
}

/* The streamed body could not be read whole (past site-max-body, past the body budget): answer
 * it when no response began, else the client's transport already ends the exchange. The backend
 * connection holds half a request: it is closed. */
static void body_failed(struct preq *r, int err)
{
    struct http_exchange *ex = r->ex;
    if (!ex || r->responded) {
        /* (not reached: the body is abandoned when the head is answered, and the source owns
         * the request from then on, so it is not freed here) */
        event_del(r->wev);
        return;
    }
    r->ex = NULL;
    r->msg_done = false;
    r->dead = true;
    log_debug("site-backend: request body failed: %s", strerror(-err));
    if (err == -EMSGSIZE)
        http_respond_status(ex, 413, NULL, 0);
    else if (err == -EBADMSG) /* a malformed chunked body */
        http_respond_status(ex, 400, NULL, 0);
    else
        http_respond_text(ex, 503, "server busy: try again later", NULL, 0);
}

/* The exchange has more of the streamed body (or its end, or a failure): send on. */
static void on_body_ready(void *arg)
{
    struct preq *r = arg;
    if (r->phase != PH_SEND || !r->wev)
        return;
    event_add(r->wev, NULL);
    arm_timer(r);
}

/* Send what the socket takes of @p data. @return bytes sent, 0 when it takes none now (EAGAIN),
 * -1 after a failure (reported). */
static ssize_t send_some(struct preq *r, const uint8_t *p, size_t len)
{
    ssize_t n = send(r->fd, p, len, MSG_NOSIGNAL);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    backend_failed(r, false, n < 0 ? strerror(errno) : "write failed");
    return -1;
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct preq *r = arg;
    r->in_io++;
    for (;;) {
        const uint8_t *p;
        size_t left;
        if (r->out_off < req_len(r)) {
            /* the head, then a body the exchange holds whole */
            p = r->out_off < r->out.len ? r->out.data + r->out_off
                                        : r->ex->req.body + (r->out_off - r->out.len);
            left = r->out_off < r->out.len ? r->out.len - r->out_off : req_len(r) - r->out_off;
        } else if (r->bout_off < r->bout.len) {
            p = r->bout.data + r->bout_off;
            left = r->bout.len - r->bout_off;
        } else if (r->stream_body && !r->body_eof && r->ex && r->phase == PH_SEND) {
            int rc = body_fill(r);
            if (rc < 0) {
                body_failed(r, rc);
                goto out;
            }
            if (rc == 0) {
                /* Waiting for the client, not for the backend: no backend timer meanwhile
                 * (send-timeout and the connection's timeouts watch the client). */
                event_del(r->wev);
                event_del(r->timer);
                goto out;
            }
            continue;
        } else {
            break; /* all sent */
        }
        ssize_t n = send_some(r, p, left);
        if (n < 0)
            goto out;
        if (n == 0)
            break;
        if (r->out_off < req_len(r))
            r->out_off += (size_t)n;
        else
            r->bout_off += (size_t)n;
    }
    if (r->out_off >= req_len(r) && r->bout_off >= r->bout.len &&
        (!r->stream_body || r->body_eof)) {
        event_del(r->wev);
        r->phase = PH_HEAD;
        event_add(r->rev, NULL);
    }
    arm_timer(r);
out:
    r->in_io--;
    if (r->dead && !r->in_io)
        preq_free(r);
}

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct preq *r = arg;
    r->in_io++;
    backend_failed(r, true, "timed out");
    r->in_io--;
    if (r->dead && !r->in_io)
        preq_free(r);
}

/* (Re)start the exchange with the backend on an idle or new connection.
 * @return 0, or -1 after nothing was started (the caller answers 502). */
static int start_connection(struct preq *r)
{
    struct proxy *px = r->px;
    if (r->rev)
        event_free(r->rev);
    if (r->wev)
        event_free(r->wev);
    r->rev = r->wev = NULL;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->out_off = 0;
    r->bout_off = 0; /* a retry: nothing of the body was taken, at most its end is in bout */
    r->got_bytes = false;
    clear_headers(r);
    dg_buf_free(&r->body);
    r->body_off = 0;
    http_parser_init(&r->rp, HTTP_RESPONSE);
    r->rp.data = r;

    /* One unit for the request's backend connection, taken once: a retry reuses it. */
    r->refused = BUDGET_OK;
    if (!r->holds) {
        r->refused = budget_take(r->budget, px->cfg, BUDGET_SOURCES, 1);
        if (r->refused != BUDGET_OK)
            return -1;
        r->holds = true;
    }
    int fd = r->retried ? -1 : idle_take(px);
    r->reused = fd >= 0;
    if (fd < 0) {
        const struct dg_addr *a = &px->cfg->backend;
        fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (!budget_fd_ok(r->budget, px->cfg, fd)) {
            close(fd);
            r->refused = BUDGET_AT_DESCRIPTORS;
            return -1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* A streamed request body waits in dohgate (one window, under the body budget), not in
         * a send buffer the kernel would grow to megabytes for a backend that does not read:
         * what the client is let send stays near what the backend took. */
        int sndbuf = PROXY_BUFFER;
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        if (connect(fd, (const struct sockaddr *)&a->ss, a->len) != 0 && errno != EINPROGRESS) {
            close(fd);
            return -1;
        }
        px->stats.connects++;
    } else {
        px->stats.reused++;
    }
    r->fd = fd;
    r->rev = event_new(px->base, fd, EV_READ | EV_PERSIST, on_read, r);
    r->wev = event_new(px->base, fd, EV_WRITE | EV_PERSIST, on_write, r);
    if (!r->rev || !r->wev || event_add(r->wev, NULL) != 0)
        return -1;
    /* A streamed body can take long: an early response (413) is read while it is sent. */
    if (r->stream_body && event_add(r->rev, NULL) != 0)
        return -1;
    r->phase = PH_SEND;
    arm_timer(r);
    return 0;
}

void proxy_handle(struct proxy *px, struct http_exchange *ex)
{
    px->stats.requests++;
    struct preq *r = calloc(1, sizeof(*r));
    if (!r) {
        http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    r->px = px;
    r->ex = ex;
    r->fd = -1;
    r->budget = ex->req.budget;
    enum http_method_kind m = http_method_kind(ex->req.method);
    r->head_method = m == HTTP_M_HEAD;
    r->idempotent = http_method_idempotent(m);
    r->timer = evtimer_new(px->base, on_timeout, r);
    int brc = r->timer ? build_request(r, &ex->req, px->cfg->server_name) : -ENOMEM;
    if (brc != 0) {
        preq_free(r);
        if (brc == -EBADMSG)
            http_respond_status(ex, 400, NULL, 0);
        else
            http_respond_text(ex, 503, "out of memory", NULL, 0);
        return;
    }
    if (start_connection(r) != 0) {
        if (r->refused != BUDGET_OK) {
            fail_refused(r, true);
            preq_free(r);
            return;
        }
        r->ex = NULL;
        preq_free(r);
        px->stats.errors_502++;
        http_respond_text(ex, 502, "bad gateway: cannot connect to the site's backend", NULL, 0);
        return;
    }
    if (r->stream_body)
        http_req_body_set_reader(ex, on_body_ready, r);
    http_set_pending(ex, on_cancel, r);
}

struct proxy *proxy_new(struct event_base *base, const struct config *cfg)
{
    struct proxy *px = calloc(1, sizeof(*px));
    if (!px)
        return NULL;
    px->base = base;
    px->cfg = cfg;
    return px;
}

void proxy_free(struct proxy *px)
{
    if (!px)
        return;
    while (px->idle.head) {
        struct idle_conn *ic = dg_list_entry(px->idle.head, struct idle_conn, node);
        close(ic->fd);
        idle_remove(ic);
    }
    free(px);
}

const struct proxy_stats *proxy_get_stats(const struct proxy *px)
{
    return &px->stats;
}
