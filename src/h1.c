/* HTTP/1.x server session over libhttp-parser (see h1.h).
 *
 * States: IDLE (between requests) → READING (first byte seen) → DISPATCHED (complete request
 * handed to the router) → RESPONDING (head queued, body being pulled) → IDLE again, or closed
 * after a response that ends the connection. The parser is paused at each message end and
 * re-initialised for the next request, so pipelined bytes and ignored Upgrade requests start
 * from a clean state. */
#include "dohgate/h1.h"

#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dohgate/budget.h"
#include "dohgate/config.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/router.h"

#define H1_MAX_TARGET  4096
#define H1_MAX_HEAD    16384
#define H1_MAX_FIELDS  100
#define H1_MAX_PENDING 65536 /* pipelined input held while a response is under way */
#define H1_BODY_CHUNK  16384
#define H1_BODY_WINDOW 65536 /* of a streamed request body, held for the handler */
#define COMMON_CAP     (4 + DG_CONFIG_MAX_LIST)

enum h1_state { H1_IDLE, H1_READING, H1_DISPATCHED, H1_RESPONDING };

struct h1_session {
    struct http_exchange ex; /* first member: handlers see &s->ex */
    http_parser parser;
    const struct handler_ctx *hctx;
    h1_wake_cb wake;
    void *owner;
    bool https;
    bool metrics;
    bool cleartext;
    const struct client_id *client; /* the connection's; outlives the session */
    struct budget_scope *budget;    /* the connection's; outlives the session */
    enum h1_state state;
    uint64_t req_started;

    /* the request being read */
    struct dg_buf url, field, value;
    bool in_value;
    struct http_head_scan scan; /* obs-fold and bare CR, which the parser lets through */
    bool head_done;             /* fields from now on are chunked trailers: dropped */
    struct http_header *hdrs;
    size_t nhdrs, hdrs_cap;
    size_t head_bytes;
    char *path, *authority; /* NUL-terminated, owned */
    const char *ctype;
    struct dg_buf body;
    size_t body_held; /* bytes of body taken under the connection's body budget */
    size_t max_body;
    /* A streamed body (router_body_streams(), http.h): dispatched at the end of the head;
     * s->body holds what the handler has not read yet, and input is parsed only while it
     * holds less than H1_BODY_WINDOW (the rest waits in pending_in, then in the socket). */
    bool streams;   /* the route streams bodies and one follows */
    bool streaming; /* dispatched with req.body_stream, body not complete or not read */
    long long clen; /* Content-Length, -1 for chunked */
    unsigned long long body_total;
    int body_err;            /* the streamed body failed: -EMSGSIZE, -ENOBUFS, -EBADMSG */
    int error_status;        /* found by a parser callback: answer it and close */
    const char *error_allow; /* the allow header of a 405 error_status */
    bool msg_complete;
    bool keep_alive;
    int version;

    /* the response */
    struct dg_buf out_head;
    bool continue_pending; /* "100 Continue" to send */
    struct dg_buf resp_body;
    size_t resp_off;
    bool chunked;
    bool close_after; /* this response ends the connection */
    bool done;        /* nothing more will be sent: close once the output is written */
    bool shutting_down;

    struct dg_buf pending_in;
};

static int ex_respond(struct http_exchange *ex, const struct http_response *resp,
                      struct dg_buf *body);
static int ex_respond_stream(struct http_exchange *ex, const struct http_response *resp);
static void ex_resume(struct http_exchange *ex);
static void ex_reset(struct http_exchange *ex);
static long ex_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof);
static void ex_body_abandon(struct http_exchange *ex);
static const struct http_exchange_ops h1_ops = {
    .respond = ex_respond,
    .respond_stream = ex_respond_stream,
    .resume = ex_resume,
    .reset = ex_reset,
    .body_read = ex_body_read,
    .body_abandon = ex_body_abandon,
};

static int parse(struct h1_session *s, const uint8_t *data, size_t len);

/* ---- request state ----------------------------------------------------------------------- */

/* The body buffer and its budget go together: every byte in it was taken with budget_take(),
 * and is given back here, exactly once, when the buffer goes. */
static void body_release(struct h1_session *s)
{
    dg_buf_free(&s->body);
    budget_put(s->budget, BUDGET_BODY, s->body_held);
    s->body_held = 0;
}

static void request_reset(struct h1_session *s)
{
    dg_buf_free(&s->url);
    dg_buf_free(&s->field);
    dg_buf_free(&s->value);
    s->in_value = false;
    s->scan = (struct http_head_scan){0};
    s->head_done = false;
    for (size_t i = 0; i < s->nhdrs; i++)
        free((char *)s->hdrs[i].name); /* one block "name\0value" */
    s->nhdrs = 0;
    s->head_bytes = 0;
    free(s->authority);
    s->authority = NULL;
    free(s->path);
    s->path = NULL;
    s->ctype = NULL;
    body_release(s);
    s->streams = s->streaming = false;
    s->clen = -1;
    s->body_total = 0;
    s->body_err = 0;
    s->max_body = 0; /* set at headers-complete, from the route */
    s->error_status = 0;
    s->error_allow = NULL;
    s->msg_complete = false;
    s->keep_alive = false;
    s->continue_pending = false;
    dg_buf_free(&s->resp_body);
    s->resp_off = 0;
    s->chunked = false;
    /* ends the previous exchange (cancelling what it still had pending), starts the next */
    http_exchange_end(&s->ex);
    http_exchange_init(&s->ex, &h1_ops, s->hctx);
    s->req_started = 0;
    s->state = H1_IDLE;
    http_parser_init(&s->parser, HTTP_REQUEST);
    s->parser.data = s;
}

/* ---- response head ----------------------------------------------------------------------- */

static int head_add(struct dg_buf *b, const char *name, const char *value)
{
    size_t nl = strlen(name), vl = strlen(value);
    if (dg_buf_reserve(b, nl + vl + 4) != 0)
        return -ENOMEM;
    memcpy(b->data + b->len, name, nl);
    b->data[b->len + nl] = ':';
    b->data[b->len + nl + 1] = ' ';
    memcpy(b->data + b->len + nl + 2, value, vl);
    b->data[b->len + nl + 2 + vl] = '\r';
    b->data[b->len + nl + 3 + vl] = '\n';
    b->len += nl + vl + 4;
    return 0;
}

/* Serialise the status line and headers. resp->length < 0: unknown (chunked or close). */
static int build_head(struct h1_session *s, const struct http_response *resp)
{
    int status = resp->status;
    const struct http_header *hdrs = resp->hdrs;
    size_t nhdrs = resp->nhdrs;
    long long length = resp->length;
    struct dg_buf *b = &s->out_head;
    char line[64];
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", status, http_reason(status));
    if (dg_buf_append(b, line, (size_t)n) != 0)
        return -ENOMEM;
    for (size_t i = 0; i < nhdrs; i++) {
        if (head_add(b, hdrs[i].name, hdrs[i].value) != 0)
            return -ENOMEM;
    }
    struct http_header common[COMMON_CAP];
    size_t nc = http_common_headers(s->hctx->cfg, s->https, common, 0, COMMON_CAP);
    for (size_t i = 0; i < nc; i++) {
        if (head_add(b, common[i].name, common[i].value) != 0)
            return -ENOMEM;
    }
    if (length >= 0) {
        snprintf(line, sizeof(line), "%lld", length);
        if (head_add(b, "content-length", line) != 0)
            return -ENOMEM;
    } else if (!resp->no_body) {
        if (s->version >= 11) {
            s->chunked = true;
            if (head_add(b, "transfer-encoding", "chunked") != 0)
                return -ENOMEM;
        } else {
            s->close_after = true; /* HTTP/1.0: the body ends with the connection */
        }
    }
    if (!s->keep_alive || s->shutting_down)
        s->close_after = true;
    if (s->close_after) {
        if (head_add(b, "connection", "close") != 0)
            return -ENOMEM;
    } else if (s->version == 10) {
        if (head_add(b, "connection", "keep-alive") != 0)
            return -ENOMEM;
    }
    return dg_buf_append(b, "\r\n", 2);
}

static int ex_respond(struct http_exchange *ex, const struct http_response *resp,
                      struct dg_buf *body)
{
    struct h1_session *s = (struct h1_session *)ex;
    if (s->state != H1_DISPATCHED)
        return -EALREADY;
    dg_buf_free(&s->out_head);
    if (build_head(s, resp) != 0) {
        dg_buf_free(&s->out_head);
        return -ENOMEM;
    }
    if (body) {
        dg_buf_free(&s->resp_body);
        s->resp_body = *body;
        s->resp_off = 0;
        *body = (struct dg_buf){0};
    }
    s->state = H1_RESPONDING;
    s->wake(s->owner);
    return 0;
}

static int ex_respond_stream(struct http_exchange *ex, const struct http_response *resp)
{
    struct h1_session *s = (struct h1_session *)ex;
    if (s->state != H1_DISPATCHED)
        return -EALREADY;
    dg_buf_free(&s->out_head);
    if (build_head(s, resp) != 0) {
        dg_buf_free(&s->out_head);
        return -ENOMEM;
    }
    s->state = H1_RESPONDING;
    s->wake(s->owner);
    return 0;
}

static void ex_resume(struct http_exchange *ex)
{
    struct h1_session *s = (struct h1_session *)ex;
    s->wake(s->owner);
}

/* No response can be sent: the framing cannot say so on HTTP/1.1, the connection ends (after
 * what is queued already). */
static void ex_reset(struct http_exchange *ex)
{
    struct h1_session *s = (struct h1_session *)ex;
    dg_buf_free(&s->out_head);
    dg_buf_free(&s->pending_in);
    s->keep_alive = false;
    s->close_after = true;
    s->done = true;
    s->wake(s->owner);
}

/* An error found while reading a request: answer it, then close (the rest of the input cannot
 * be trusted to be in step with the framing). */
static void error_response(struct h1_session *s, int status)
{
    s->state = H1_DISPATCHED;
    http_exchange_begin(&s->ex);
    s->keep_alive = false;
    s->close_after = true;
    s->continue_pending = false;
    dg_buf_free(&s->pending_in);
    body_release(s); /* no handler will read it */
    /* The request never parsed whole: what the response's metrics need of it. */
    s->ex.req.version = s->ex.req.version ? s->ex.req.version : 11;
    s->ex.req.metrics = s->metrics;
    const struct http_header allow = {"allow", s->error_allow ? s->error_allow : "GET, HEAD, POST"};
    http_respond_status(&s->ex, status, &allow, status == 405);
    /* no memory for even the error: the exchange reset, which closes */
}

/* ---- parser callbacks -------------------------------------------------------------------- */

static int on_message_begin(http_parser *p)
{
    struct h1_session *s = p->data;
    s->state = H1_READING;
    if (!s->req_started)
        s->req_started = dg_now_ms();
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct h1_session *s = p->data;
    if (s->url.len + len > H1_MAX_TARGET) {
        s->error_status = 414;
        return 1;
    }
    if (dg_buf_append(&s->url, at, len) != 0) {
        s->error_status = 503;
        return 1;
    }
    return 0;
}

static int finish_field(struct h1_session *s)
{
    if (!s->in_value)
        return 0;
    s->in_value = false;
    if (s->nhdrs >= H1_MAX_FIELDS) {
        s->error_status = 431;
        return -1;
    }
    if (s->nhdrs == s->hdrs_cap) {
        size_t cap = s->hdrs_cap ? s->hdrs_cap * 2 : 16;
        struct http_header *h = realloc(s->hdrs, cap * sizeof(*h));
        if (!h) {
            s->error_status = 503;
            return -1;
        }
        s->hdrs = h;
        s->hdrs_cap = cap;
    }
    size_t nl = s->field.len, vl = s->value.len;
    /* Optional whitespace around the value is the parser's to strip on the left; trailing
     * whitespace is removed here (RFC 9112 §5). */
    while (vl > 0 && (s->value.data[vl - 1] == ' ' || s->value.data[vl - 1] == '\t'))
        vl--;
    /* the parser refuses controls in values already; what is stored is what proxy.c may
     * forward, so it is checked against the one definition */
    if (!http_field_value_valid((const char *)s->value.data, vl)) {
        s->error_status = 400;
        return -1;
    }
    char *b = malloc(nl + vl + 2);
    if (!b) {
        s->error_status = 503;
        return -1;
    }
    for (size_t i = 0; i < nl; i++) {
        char c = (char)s->field.data[i];
        b[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    b[nl] = '\0';
    if (vl)
        memcpy(b + nl + 1, s->value.data, vl);
    b[nl + 1 + vl] = '\0';
    s->hdrs[s->nhdrs++] = (struct http_header){b, b + nl + 1};
    s->field.len = 0;
    s->value.len = 0;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct h1_session *s = p->data;
    /* The parser's non-strict mode lets whitespace into a field name and then matches
     * "Transfer-Encoding " as Transfer-Encoding: a name is a token, with nothing between it and
     * the colon (RFC 9112 §5.1: 400). Checked piece by piece, before the parser acts on it. */
    if (len && !http_token_valid(at, len)) {
        s->error_status = 400;
        return 1;
    }
    if (s->head_done) {
        /* A trailer of a chunked body: counted, never stored, so that it can neither pass for
         * a header field here nor reach the backend (RFC 9110 §6.5.1 lets it be discarded). */
        s->head_bytes += len;
        if (s->head_bytes > H1_MAX_HEAD) {
            s->error_status = 431;
            return 1;
        }
        return 0;
    }
    if (finish_field(s) != 0)
        return 1;
    s->head_bytes += len;
    if (s->head_bytes > H1_MAX_HEAD) {
        s->error_status = 431;
        return 1;
    }
    if (dg_buf_append(&s->field, at, len) != 0) {
        s->error_status = 503;
        return 1;
    }
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct h1_session *s = p->data;
    s->head_bytes += len;
    if (s->head_bytes > H1_MAX_HEAD) {
        s->error_status = 431;
        return 1;
    }
    if (s->head_done)
        return 0; /* a trailer's value (see on_header_field) */
    s->in_value = true;
    if (dg_buf_append(&s->value, at, len) != 0) {
        s->error_status = 503;
        return 1;
    }
    return 0;
}

static const char *find_header(const struct h1_session *s, const char *name)
{
    for (size_t i = 0; i < s->nhdrs; i++) {
        if (strcmp(s->hdrs[i].name, name) == 0)
            return s->hdrs[i].value;
    }
    return NULL;
}

static char *dup_range(const char *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* Turn the request-target into an origin-form path (+ authority for absolute-form). */
static int set_target(struct h1_session *s)
{
    const char *u = (const char *)s->url.data;
    size_t n = s->url.len;
    if (n == 0)
        return 400;
    if (u[0] == '/' || (n == 1 && u[0] == '*')) {
        s->path = dup_range(u, n);
        return s->path ? 0 : 503;
    }
    /* absolute-form (RFC 9112 §3.2.2): its authority replaces Host */
    struct http_parser_url pu;
    http_parser_url_init(&pu);
    /* userinfo: RFC 9110 §4.2.4 deprecates it in http(s) URIs and asks that it be treated as
     * an error (it is what phishing URLs hide a host behind) */
    if (http_parser_parse_url(u, n, 0, &pu) != 0 || !(pu.field_set & (1 << UF_HOST)) ||
        !(pu.field_set & (1 << UF_SCHEMA)) || (pu.field_set & (1 << UF_USERINFO)))
        return 400;
    const char *path = (pu.field_set & (1 << UF_PATH)) ? u + pu.field_data[UF_PATH].off : "/";
    size_t plen = (pu.field_set & (1 << UF_PATH)) ? pu.field_data[UF_PATH].len : 1;
    size_t qlen = (pu.field_set & (1 << UF_QUERY)) ? pu.field_data[UF_QUERY].len + 1 : 0;
    s->path = malloc(plen + qlen + 1);
    if (!s->path)
        return 503;
    memcpy(s->path, path, plen);
    if (qlen) {
        s->path[plen] = '?';
        memcpy(s->path + plen + 1, u + pu.field_data[UF_QUERY].off, qlen - 1);
    }
    s->path[plen + qlen] = '\0';
    size_t hoff = pu.field_data[UF_HOST].off, hend = hoff + pu.field_data[UF_HOST].len;
    if (pu.field_set & (1 << UF_PORT))
        hend = pu.field_data[UF_PORT].off + pu.field_data[UF_PORT].len;
    if (hoff > 0 && u[hoff - 1] == '[')
        hoff--; /* keep the brackets of an IPv6 literal */
    s->authority = dup_range(u + hoff, hend - hoff);
    return s->authority ? 0 : 503;
}

/* A body over the route's limit: 413, or 405 where the route takes none for this method. */
static void body_refused(struct h1_session *s)
{
    s->error_status =
        router_body_refusal(s->max_body, http_method_str((enum http_method)s->parser.method));
    s->error_allow = ROUTER_NO_BODY_ALLOW;
}

static int on_headers_complete(http_parser *p)
{
    struct h1_session *s = p->data;
    if (finish_field(s) != 0)
        return -1; /* -1, not 1: 1 would mean "skip the body" */
    s->head_done = true;
    s->version = p->http_major == 1 && p->http_minor == 0 ? 10 : 11;
    if (p->http_major != 1) {
        s->error_status = 400;
        return -1;
    }
    if (p->method == HTTP_CONNECT) {
        s->error_status = 405;
        return -1;
    }
    int st = set_target(s);
    if (st) {
        s->error_status = st;
        return -1;
    }
    /* RFC 9112 §3.2: 400 for an HTTP/1.1 request without Host, for more than one Host field
     * line and for a Host that is no valid authority, whatever the target's form. */
    const char *host = NULL;
    for (size_t i = 0; i < s->nhdrs; i++) {
        if (strcmp(s->hdrs[i].name, "host") != 0)
            continue;
        if (host) {
            s->error_status = 400;
            return -1;
        }
        host = s->hdrs[i].value;
    }
    if ((!host && s->version >= 11) || (host && !http_authority_valid(host)) ||
        (s->authority && !http_authority_valid(s->authority))) {
        s->error_status = 400;
        return -1;
    }
    if (!s->authority) {
        if (host) {
            s->authority = dup_range(host, strlen(host));
            if (!s->authority) {
                s->error_status = 503;
                return -1;
            }
        }
    }
    s->ctype = find_header(s, "content-type");
    s->max_body = router_max_body(s->hctx, s->path, s->https, s->metrics);
    bool has_body = (p->flags & (F_CHUNKED | F_CONTENTLENGTH)) &&
                    !((p->flags & F_CONTENTLENGTH) && p->content_length == 0);
    /* dispatched by parse() once this callback returns; the body follows to the handler */
    s->streams = has_body && router_body_streams(s->hctx, s->path, s->https, s->metrics);
    s->clen = (p->flags & F_CHUNKED) ? -1 : (long long)p->content_length;
    if ((p->flags & F_CONTENTLENGTH) && p->content_length > s->max_body) {
        body_refused(s);
        return -1;
    }
    const char *expect = find_header(s, "expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0) {
            s->error_status = 417;
            return -1;
        }
        if (has_body && s->version >= 11) {
            s->continue_pending = true;
            s->wake(s->owner);
        }
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct h1_session *s = p->data;
    s->continue_pending = false; /* the client did not wait for it */
    if (s->streams) {
        /* Streamed: only the route's limit over the whole body; what is held is bounded by
         * feeding the parser no more than the window's room (parse_body()). */
        s->body_total += len;
        if (s->body_total > s->max_body) {
            body_refused(s);
            return 1;
        }
    } else if (s->body.len + len > s->max_body) {
        body_refused(s);
        return 1;
    }
    /* Past the body budget (connection, client, process): 503 and close; HTTP/1.1 cannot make
     * the client wait for one request without stalling the connection anyway. */
    if (budget_take(s->budget, s->hctx->cfg, BUDGET_BODY, len) != BUDGET_OK) {
        s->error_status = 503;
        return 1;
    }
    s->body_held += len;
    if (dg_buf_append(&s->body, at, len) != 0) {
        s->error_status = 503;
        return 1;
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct h1_session *s = p->data;
    s->msg_complete = true;
    s->keep_alive = http_should_keep_alive(p) && !s->shutting_down;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- driving ----------------------------------------------------------------------------- */

static void dispatch(struct h1_session *s)
{
    s->state = H1_DISPATCHED;
    if (!s->streaming)
        s->continue_pending = false; /* else the handler's reading asks for the body */
    s->ex.req = (struct http_request){
        .method = http_method_str((enum http_method)s->parser.method),
        .path = s->path,
        .authority = s->authority,
        .content_type = s->ctype,
        .body = s->body.data,
        .body_len = s->body.len,
        .version = s->version,
        .https = s->https,
        .metrics = s->metrics,
        .cleartext = s->cleartext,
        .headers = s->hdrs,
        .nheaders = s->nhdrs,
        .client = s->client,
        .budget = s->budget,
        .body_stream = s->streaming,
        .body_length = s->streaming ? s->clen : (long long)s->body.len,
    };
    if (s->streaming)
        s->ex.req.body = NULL, s->ex.req.body_len = 0;
    http_exchange_dispatch(&s->ex, router_dispatch);
}

/* The streamed body failed after dispatch (past the limit or the budget, a malformed chunk):
 * the handler learns it from its next read (and is woken for it) and answers; the connection
 * closes after that response, as the rest of the input is not read. */
static void body_error(struct h1_session *s)
{
    int st = s->error_status;
    s->body_err = st == 413 ? -EMSGSIZE : st == 503 ? -ENOBUFS : st == 408 ? -ETIMEDOUT : -EBADMSG;
    s->error_status = 0;
    s->keep_alive = false;
    s->close_after = true;
    s->continue_pending = false;
    dg_buf_free(&s->pending_in);
    body_release(s);
    http_req_body_failed(&s->ex);
}

/* Feed body bytes of a streamed request to the parser while the window has room.
 * @return the bytes consumed (what is left waits in pending_in). */
static size_t feed_body(struct h1_session *s, const uint8_t *data, size_t len)
{
    size_t done = 0;
    while (len > 0 && !s->msg_complete && !s->body_err) {
        size_t room = s->body.len < H1_BODY_WINDOW ? H1_BODY_WINDOW - s->body.len : 0;
        if (room == 0)
            break;
        size_t feed = len < room ? len : room;
        size_t n = http_parser_execute(&s->parser, &parser_settings, (const char *)data, feed);
        if (s->error_status || (!s->msg_complete && HTTP_PARSER_ERRNO(&s->parser) != HPE_OK)) {
            if (!s->error_status)
                s->error_status = 400;
            body_error(s); /* wakes the reader */
            return done + len;
        }
        data += n;
        len -= n;
        done += n;
    }
    if (done)
        http_req_body_ready(&s->ex);
    return done;
}

/* Feed received bytes; the rest waits in pending_in (bounded by h1_session_want_read(), then by
 * the socket: back-pressure). */
static int parse_body(struct h1_session *s, const uint8_t *data, size_t len)
{
    size_t n = feed_body(s, data, len);
    if (n < len && !s->body_err && dg_buf_append(&s->pending_in, data + n, len - n) != 0)
        return -ENOMEM;
    return 0;
}

/* The body is being streamed to the handler: more input is body (or pipelined after it). */
static bool body_flowing(const struct h1_session *s)
{
    return s->streaming && !s->msg_complete && !s->body_err;
}

static long ex_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof)
{
    struct h1_session *s = (struct h1_session *)ex;
    *eof = false;
    if (s->body_err)
        return s->body_err;
    long n =
        http_body_take_held(&s->body, &s->body_held, s->budget, s->msg_complete, buf, max, eof);
    /* room again: h1_session_send() parses what waits (never from inside this call) */
    if (n > 0 && body_flowing(s) && s->pending_in.len)
        s->wake(s->owner);
    return n;
}

/* The handler reads no more: nothing of the body is kept, and the connection ends after the
 * response (the rest of the body is never read, so no next request can be found after it). */
static void ex_body_abandon(struct http_exchange *ex)
{
    struct h1_session *s = (struct h1_session *)ex;
    body_release(s);
    s->continue_pending = false; /* the body is not wanted any more */
    if (!s->msg_complete) {
        s->keep_alive = false;
        s->close_after = true;
        s->body_err = -EIO;
        dg_buf_free(&s->pending_in);
    }
}

static int parse(struct h1_session *s, const uint8_t *data, size_t len)
{
    if (len == 0)
        return 0;
    if (s->state == H1_IDLE) {
        s->state = H1_READING;
        s->req_started = dg_now_ms();
    }
    /* The raw bytes of the head first: the scanner and the parser agree on where it ends (the
     * first empty line; bare CRs, where they would not, are refused), so no obs-fold reaches the
     * parser, which would join it into the previous field. */
    if (!http_head_scan_done(&s->scan) && http_head_scan(&s->scan, data, len) < 0) {
        log_debug("h1: obs-fold or bare CR in a request head");
        error_response(s, 400);
        return 0;
    }
    size_t n = http_parser_execute(&s->parser, &parser_settings, (const char *)data, len);
    if (s->error_status) {
        error_response(s, s->error_status);
        return 0;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&s->parser);
    if (s->streams && s->head_done && !s->msg_complete && e == HPE_OK) {
        /* The head of a request whose body streams: dispatch now, the body follows. What
         * of it came with the head is held already (at most one read, 16 KiB). */
        s->streaming = true;
        dispatch(s);
        return n < len ? parse_body(s, data + n, len - n) : 0;
    }
    /* (A body that came whole with its head is dispatched whole, with its length, as a DoH
     * body is: nothing is left to stream.) */
    if (s->msg_complete) {
        /* Paused at the message end (or stopped there by an ignored Upgrade). */
        if (n < len && dg_buf_append(&s->pending_in, data + n, len - n) != 0)
            return -ENOMEM;
        dispatch(s);
        return 0;
    }
    if (e != HPE_OK) {
        log_debug("h1: malformed request: %s", http_errno_description(e));
        error_response(s, e == HPE_HEADER_OVERFLOW ? 431 : 400);
        return 0;
    }
    return 0;
}

struct h1_session *h1_session_new(const struct h1_settings *st, const struct handler_ctx *hctx,
                                  h1_wake_cb wake, void *owner)
{
    struct h1_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->hctx = hctx;
    s->wake = wake;
    s->owner = owner;
    s->https = st->https;
    s->metrics = st->metrics;
    s->cleartext = st->cleartext;
    s->client = st->client;
    s->budget = st->budget;
    request_reset(s);
    return s;
}

void h1_session_free(struct h1_session *s)
{
    if (!s)
        return;
    request_reset(s); /* ends the exchange: pending work cancelled, body source closed */
    free(s->hdrs);
    dg_buf_free(&s->out_head);
    dg_buf_free(&s->pending_in);
    free(s);
}

int h1_session_recv(struct h1_session *s, const uint8_t *data, size_t len)
{
    if (s->done || s->close_after)
        return 0; /* the connection ends after the response under way; ignore the rest */
    if (body_flowing(s) && s->pending_in.len == 0)
        return parse_body(s, data, len);
    if (s->state == H1_DISPATCHED || s->state == H1_RESPONDING || s->pending_in.len) {
        /* Pipelined: keep it for after the response. want_read() bounds how much. */
        return dg_buf_append(&s->pending_in, data, len) == 0 ? 0 : -ENOMEM;
    }
    return parse(s, data, len);
}

/* The response is complete: close, or start on the next request. */
static int response_done(struct h1_session *s)
{
    if (s->close_after || (s->streaming && !s->msg_complete)) {
        /* (a body still coming: its rest cannot be told from a next request) */
        s->done = true;
        return 0;
    }
    request_reset(s);
    if (s->shutting_down) {
        s->done = true;
        return 0;
    }
    if (s->pending_in.len) {
        struct dg_buf in = s->pending_in;
        s->pending_in = (struct dg_buf){0};
        int rc = parse(s, in.data, in.len);
        dg_buf_free(&in);
        return rc;
    }
    return 0;
}

/* Pull body bytes from the source into @p out. @return 1 when the body is complete, 0 when the
 * source has nothing now or @p out is full, negative on failure. */
static int pull_source(struct h1_session *s, struct dg_buf *out, size_t limit)
{
    while (out->len < limit) {
        size_t want = H1_BODY_CHUNK;
        size_t pre = s->chunked ? 10 : 0; /* "%08zx\r\n" */
        if (dg_buf_reserve(out, pre + want + 2) != 0)
            return -ENOMEM;
        bool eof;
        long n = http_body_pull(&s->ex, out->data + out->len + pre, want, &eof);
        if (n == HTTP_BODY_AGAIN)
            return 0;
        if (n < 0)
            return (int)n; /* failed or short: the source is closed, the connection must go */
        if (n == 0) {
            if (s->chunked && dg_buf_append(out, "0\r\n\r\n", 5) != 0)
                return -ENOMEM;
            return 1;
        }
        if (s->chunked) {
            char hex[24]; /* n <= H1_BODY_CHUNK: always 8 digits */
            snprintf(hex, sizeof(hex), "%08lx\r\n", (unsigned long)n & 0xfffffffful);
            memcpy(out->data + out->len, hex, 10);
            out->len += 10 + (size_t)n;
            out->data[out->len++] = '\r';
            out->data[out->len++] = '\n';
        } else {
            out->len += (size_t)n;
        }
        if (eof) {
            if (s->chunked && dg_buf_append(out, "0\r\n\r\n", 5) != 0)
                return -ENOMEM;
            return 1;
        }
    }
    return 0;
}

int h1_session_send(struct h1_session *s, struct dg_buf *out, size_t limit)
{
    if (body_flowing(s) && s->pending_in.len && s->body.len < H1_BODY_WINDOW / 2) {
        /* the handler took bytes: parse what waited (wakes it from here, not its read) */
        size_t n = feed_body(s, s->pending_in.data, s->pending_in.len);
        if (s->body_err)
            dg_buf_free(&s->pending_in);
        else
            dg_buf_consume(&s->pending_in, n);
    }
    while (out->len < limit) {
        if (s->continue_pending && (s->state == H1_READING || body_flowing(s))) {
            s->continue_pending = false;
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (dg_buf_append(out, cont, sizeof(cont) - 1) != 0)
                return -ENOMEM;
        }
        if (s->state != H1_RESPONDING || s->done)
            return 0;
        if (s->out_head.len) {
            if (dg_buf_append(out, s->out_head.data, s->out_head.len) != 0)
                return -ENOMEM;
            dg_buf_free(&s->out_head);
        }
        int rc;
        if (s->resp_off < s->resp_body.len) {
            size_t room = limit > out->len ? limit - out->len : 0;
            size_t n = s->resp_body.len - s->resp_off;
            if (n > room && room > 0)
                n = room;
            if (dg_buf_append(out, s->resp_body.data + s->resp_off, n) != 0)
                return -ENOMEM;
            s->resp_off += n;
            rc = s->resp_off == s->resp_body.len;
        } else if (s->ex.src_open) {
            rc = pull_source(s, out, limit);
            if (rc < 0) {
                log_debug("h1: response body failed: %s", strerror(-rc));
                s->done = true;
                return rc;
            }
        } else {
            rc = 1;
        }
        if (rc == 0)
            return 0;
        if (response_done(s) != 0)
            return -ENOMEM;
    }
    return 0;
}

bool h1_session_done(const struct h1_session *s)
{
    return s->done;
}

bool h1_session_want_read(const struct h1_session *s)
{
    return !s->done && !s->close_after && s->pending_in.len < H1_MAX_PENDING;
}

bool h1_session_busy(const struct h1_session *s)
{
    return s->state != H1_IDLE;
}

size_t h1_session_trim(struct h1_session *s)
{
    if (s->state != H1_IDLE)
        return 0;
    size_t bytes = 0;
    if (!s->nhdrs && s->hdrs) {
        bytes += s->hdrs_cap * sizeof(*s->hdrs);
        free(s->hdrs);
        s->hdrs = NULL;
        s->hdrs_cap = 0;
    }
    return bytes + dg_buf_release_if_empty(&s->pending_in);
}

uint64_t h1_session_request_started(const struct h1_session *s)
{
    /* a streamed body too: the head and the body must arrive within request-timeout, as when
     * the body was read whole before dispatch */
    return s->state == H1_READING || body_flowing(s) ? s->req_started : 0;
}

void h1_session_timeout(struct h1_session *s)
{
    if (body_flowing(s)) {
        /* The handler has the request: take it back (its pending work is cancelled) and answer
         * 408 now, as for a body read whole; the connection closes after it. */
        s->error_status = 408;
        body_error(s);
        if (http_exchange_take_back(&s->ex))
            http_respond_status(&s->ex, 408, NULL, 0);
        return;
    }
    if (s->state == H1_READING)
        error_response(s, 408);
    else if (s->state == H1_IDLE)
        s->done = true;
}

void h1_session_serve_one(struct h1_session *s)
{
    if (s->state == H1_IDLE) /* the next request gets keep_alive false, then the session ends */
        s->shutting_down = true;
    else
        h1_session_shutdown(s);
}

void h1_session_shutdown(struct h1_session *s)
{
    s->shutting_down = true;
    if (s->state == H1_IDLE && s->pending_in.len == 0)
        s->done = true;
    else if (s->state != H1_RESPONDING)
        s->keep_alive = false;
    else
        s->close_after = true;
}
