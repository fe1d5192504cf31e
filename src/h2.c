/* HTTP/2 framing over nghttp2, driven through memory by the connection (see h2.h).
 *
 * Stream life: on_begin_headers allocates it, on_header/on_data_chunk_recv fill it, END_STREAM
 * dispatches it to the router, on_stream_close frees it (after cancelling the handler's pending
 * operation). h2_session_free() walks the list itself because nghttp2_session_del() does not
 * call on_stream_close. */
#include "dohgate/h2.h"

#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/budget.h"
#include "dohgate/config.h"
#include "dohgate/doh.h"
#include "dohgate/http.h"
#include "dohgate/list.h"
#include "dohgate/log.h"
#include "dohgate/pagepool.h"
#include "dohgate/router.h"
#include "dohgate/util.h"

/* A :path longer than this is answered 414 without being stored in full. */
#define H2_MAX_PATH   (DOH_MAX_URI + 1)
#define H2_MAX_HEADER 1024 /* other header values we keep */
#define H2_MAX_HEADER_LIST                                                                         \
    16384 /* a request's fields, 32 bytes each counted in (as HTTP/1.1's 16 KiB) */
#define H2_MAX_BODY DOH_MAX_BODY

#define STREAM_ARENA      512
#define STREAM_LOCAL_HDRS 8

struct h2_stream {
    struct http_exchange ex; /* first member: the handler sees &stream->ex */
    struct h2_session *sess;
    struct dg_lnode node; /* on sess->streams */
    int32_t id;
    int refuse_status; /* 413/414/431 found while receiving; answered at dispatch */
    size_t hdr_bytes;  /* the header list so far, RFC 9113 §6.5.2 size */
    bool req_done;     /* END_STREAM received from the client */
    bool refused;      /* RST_STREAM REFUSED_STREAM queued: never dispatched, DATA discarded */
    char *method, *path, *authority, *ctype;
    struct http_header *hdrs; /* every regular request header, strings owned */
    size_t nhdrs, hdrs_cap;
    /* The request's strings and first headers live here while they fit, so that a typical
     * request costs no allocation for them (stream_dup()); larger ones are malloc'd. */
    struct http_header hdrs_local[STREAM_LOCAL_HDRS];
    size_t arena_used;
    char arena[STREAM_ARENA];
    size_t max_body; /* by route, known once :path is */
    struct dg_buf body;
    size_t body_held; /* bytes of body taken under the connection's body budget */
    /* A streamed body (router_body_streams(), http.h): dispatched at HEADERS, st->body holds
     * what arrived and the handler has not read yet, at most the stream window (65535). */
    bool streams;                  /* the route streams bodies (known once :path is) */
    bool streaming;                /* dispatched with req.body_stream */
    long long clen;                /* content-length, -1 when none */
    unsigned long long body_total; /* bytes of body received, for the route's limit */
    int body_err;                  /* the streamed body failed: -EMSGSIZE, -ENOBUFS, -ENOMEM */
    struct dg_buf resp;
    size_t resp_off;
    /* send-timeout (h2_session_sweep): ms of the last progress of this stream (a request byte
     * received, a response byte sent, or the server handing it something to send) and of the
     * last response byte sent (or the response queued). */
    uint64_t progress_ms, sent_ms;
    bool src_again; /* the body source said AGAIN: the server is the one waiting */
    bool stalled;   /* reset for making no progress; waiting for the RST_STREAM to leave */
};

#define H2_BLOCKS 4
struct h2_session {
    nghttp2_session *ng;
    const struct handler_ctx *hctx;
    h2_wake_cb wake;
    void *owner;
    const struct client_id *client; /* the connection's; outlives the session */
    struct budget_scope *budget;    /* the connection's; outlives the session */
    bool cleartext;                 /* plain-listen: h2c */
    struct dg_list streams;
    size_t nstreams;
    /* Graceful shutdown in two steps (h2_session_shutdown()): goaway_due, while the first
     * GOAWAY (last-stream-ID 2^31-1) and its PING wait for the ACK, is when the final GOAWAY
     * is sent if the ACK has not come (0 otherwise); shutting_down once the final GOAWAY is
     * queued, with goaway_last_id: streams above it are not served. */
    bool peer_goaway; /* the client sent a GOAWAY: nghttp2 then sends no shutdown notice */
    uint64_t goaway_due;
    int32_t goaway_last_id;
    bool shutting_down;
    bool fatal; /* a stream could not even be reset: close the connection */
    /* the clock of the current recv/send call (one read of it per call, not per frame) and
     * the last time any response DATA left nghttp2 */
    uint64_t now, data_sent_ms;
    bool in_recv; /* inside h2_session_recv(): now is current */
    /* the page-pool blocks nghttp2 holds (h2m_*), for h2_session_trim(); framebuf: the frame
     * buffer, whose contents are dead between calls */
    bool creating;
    struct {
        void *p;
        bool framebuf;
    } blk[H2_BLOCKS];
};

static int stream_respond(struct http_exchange *ex, const struct http_response *resp,
                          struct dg_buf *body);
static int stream_respond_stream(struct http_exchange *ex, const struct http_response *resp);
static void stream_resume(struct http_exchange *ex);
static void stream_reset(struct http_exchange *ex);
static void stream_refuse(struct http_exchange *ex);
static long stream_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof);
static void stream_body_abandon(struct http_exchange *ex);
static const struct http_exchange_ops h2_exchange_ops = {
    .respond = stream_respond,
    .respond_stream = stream_respond_stream,
    .resume = stream_resume,
    .reset = stream_reset,
    .refuse = stream_refuse,
    .body_read = stream_body_read,
    .body_abandon = stream_body_abandon,
};

/* Copies of @p a (and @p b, when given) as "a\0b\0", in the stream's arena while it has room. */
static char *stream_dup(struct h2_stream *st, const void *a, size_t alen, const void *b,
                        size_t blen)
{
    size_t need = alen + 1 + (b ? blen + 1 : 0);
    char *p;
    if (need <= STREAM_ARENA - st->arena_used) {
        p = st->arena + st->arena_used;
        st->arena_used += need;
    } else if (!(p = malloc(need))) {
        return NULL;
    }
    memcpy(p, a, alen);
    p[alen] = '\0';
    if (b) {
        memcpy(p + alen + 1, b, blen);
        p[alen + 1 + blen] = '\0';
    }
    return p;
}

static void stream_str_free(struct h2_stream *st, char *p)
{
    if (p && !(p >= st->arena && p < st->arena + STREAM_ARENA))
        free(p);
}

/* The body buffer and its budget go together: every byte in it was taken with budget_take(),
 * and is given back here, exactly once, when the buffer goes. */
static void body_release(struct h2_stream *st)
{
    dg_buf_free(&st->body);
    budget_put(st->sess->budget, BUDGET_BODY, st->body_held);
    st->body_held = 0;
}

static void stream_free(struct h2_stream *st)
{
    struct h2_session *s = st->sess;
    /* Rule: cancel the pending operation (and close the body source) before the memory they
     * point at goes away. */
    http_exchange_end(&st->ex);
    dg_list_unlink(&s->streams, &st->node);
    s->nstreams--;
    stream_str_free(st, st->method);
    stream_str_free(st, st->path);
    stream_str_free(st, st->authority);
    stream_str_free(st, st->ctype);
    for (size_t i = 0; i < st->nhdrs; i++) {
        stream_str_free(st, (char *)st->hdrs[i].name); /* one block: name\0value */
    }
    if (st->hdrs != st->hdrs_local)
        free(st->hdrs);
    body_release(st);
    dg_buf_free(&st->resp);
    free(st);
}

/* nghttp2 asks a data callback for bytes only within the client's windows, and sends what it
 * returns in the next DATA frame: response bytes taken, the stream's progress (send-timeout).
 * That the socket takes them too is the connection's own check (conn.c). No stream lookup, no
 * clock read: the clock of the current h2_session_send() call. */
static void stream_sent(struct h2_stream *st)
{
    st->progress_ms = st->sent_ms = st->sess->data_sent_ms = st->sess->now;
}

static ssize_t on_read_body(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                            uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct h2_stream *st = source->ptr;
    if (st->stalled)
        return NGHTTP2_ERR_DEFERRED; /* the RST_STREAM is queued; nothing more is sent */
    size_t left = st->resp.len - st->resp_off;
    size_t n = left < length ? left : length;
    memcpy(buf, st->resp.data + st->resp_off, n);
    st->resp_off += n;
    if (n)
        stream_sent(st);
    if (st->resp_off == st->resp.len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static ssize_t on_read_source(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                              uint32_t *data_flags, nghttp2_data_source *source, void *user_data)
{
    struct h2_stream *st = source->ptr;
    if (st->stalled)
        return NGHTTP2_ERR_DEFERRED; /* the exchange ended with the reset: no source to pull */
    bool eof;
    long n = http_body_pull(&st->ex, buf, length, &eof);
    if (n == HTTP_BODY_AGAIN) {
        st->src_again = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    /* A broken body (failed, or short of its content-length) must not look complete: nghttp2
     * resets the stream (INTERNAL_ERROR). */
    if (n < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (n > 0)
        stream_sent(st);
    if (eof)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return n;
}

/* HPACK flags of a response header. Headers whose value changes from response to response
 * are sent as literals without indexing: a DoH answer's cache-control is "max-age=<its TTL>",
 * so every response added an entry to both HPACK tables (ours and the client's), evicting the
 * constant ones and holding memory for the life of the connection. Measured
 * (tests/tools/hpack_growth, an nghttp2 client, 1,000 GETs): the server session grew by 10.2
 * KB after its first answer with max-age indexed, by nothing without, for 0.7 more bytes per
 * response. nghttp2 already keeps content-length, etag, age, location and set-cookie out. */
static uint8_t hpack_flags(const char *name, size_t nlen)
{
    if ((nlen == 13 && memcmp(name, "cache-control", 13) == 0) ||
        (nlen == 13 && memcmp(name, "last-modified", 13) == 0) ||
        (nlen == 7 && memcmp(name, "expires", 7) == 0) ||
        (nlen == 4 && memcmp(name, "date", 4) == 0))
        return NGHTTP2_NV_FLAG_NO_INDEX;
    return NGHTTP2_NV_FLAG_NONE;
}

/* Submit the response HEADERS (+ data provider). @p length < 0: no content-length. */
static int submit(struct h2_stream *st, const struct http_response *resp,
                  nghttp2_data_provider *prd)
{
    struct h2_session *s = st->sess;
    int status = resp->status;
    const struct http_header *hdrs = resp->hdrs;
    size_t nhdrs = resp->nhdrs;
    long long length = resp->length;
    enum { COMMON = 4 + DG_CONFIG_MAX_LIST };
    struct http_header common[COMMON];
    size_t ncommon = http_common_headers(s->hctx->cfg, true, common, 0, COMMON);
    /* DoH answers have a handful of headers: no allocation for them. */
    nghttp2_nv nv_local[16];
    size_t nv_need = nhdrs + ncommon + 2;
    nghttp2_nv *nv = nv_need <= 16 ? nv_local : malloc(nv_need * sizeof(*nv));
    if (!nv)
        return -ENOMEM;
    size_t n = 0;
    char sbuf[24], lbuf[24];
    size_t slen = dg_fmt_u64(sbuf, status > 0 ? (uint64_t)status : 0);
    nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)sbuf, 7, slen, NGHTTP2_NV_FLAG_NONE};
    for (int pass = 0; pass < 2; pass++) {
        const struct http_header *h = pass ? common : hdrs;
        size_t cnt = pass ? ncommon : nhdrs;
        for (size_t i = 0; i < cnt; i++) {
            size_t nlen = strlen(h[i].name);
            nv[n++] = (nghttp2_nv){(uint8_t *)h[i].name, (uint8_t *)h[i].value, nlen,
                                   strlen(h[i].value), hpack_flags(h[i].name, nlen)};
        }
    }
    if (length >= 0) {
        size_t llen = dg_fmt_u64(lbuf, (uint64_t)length);
        nv[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)lbuf, 14, llen,
                               NGHTTP2_NV_FLAG_NONE};
    }
    int rc = nghttp2_submit_response(s->ng, st->id, nv, n, prd);
    if (nv != nv_local)
        free(nv);
    if (rc != 0)
        return rc == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EINVAL;
    /* The client's clock starts when it has something to take. Inside h2_session_recv() (a
     * cache hit, an error status) s->now is the time; a handler answering from an upstream or
     * backend callback may come long after the last recv/send call set it: read the clock. */
    st->progress_ms = st->sent_ms = s->in_recv ? s->now : dg_now_ms();
    s->wake(s->owner);
    return 0;
}

static int stream_respond(struct http_exchange *ex, const struct http_response *resp,
                          struct dg_buf *body)
{
    struct h2_stream *st = (struct h2_stream *)ex;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_body};
    int rc = submit(st, resp, body ? &prd : NULL);
    if (rc != 0)
        return rc;
    if (body) {
        /* The stream now owns the bytes until the data provider reaches EOF or it closes. */
        dg_buf_free(&st->resp);
        st->resp = *body;
        st->resp_off = 0;
        *body = (struct dg_buf){0};
    }
    return 0;
}

static int stream_respond_stream(struct http_exchange *ex, const struct http_response *resp)
{
    struct h2_stream *st = (struct h2_stream *)ex;
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = on_read_source};
    return submit(st, resp, resp->no_body ? NULL : &prd);
}

static void stream_resume(struct http_exchange *ex)
{
    struct h2_stream *st = (struct h2_stream *)ex;
    if (st->src_again) {
        /* The source waited (a slow backend): the client's send-timeout starts again now. */
        st->src_again = false;
        st->progress_ms = st->sent_ms = dg_now_ms();
    }
    nghttp2_session_resume_data(st->sess->ng, st->id);
    st->sess->wake(st->sess->owner);
}

/* Queue RST_STREAM @p code for @p st and wake the connection to send it. nghttp2 closes the
 * stream (on_stream_close) when the frame leaves, never from here. Without memory even for that
 * frame the connection goes. */
static void stream_rst(struct h2_stream *st, uint32_t code)
{
    struct h2_session *s = st->sess;
    if (nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, st->id, code) != 0)
        s->fatal = true;
    s->wake(s->owner);
}

static void stream_reset(struct http_exchange *ex)
{
    stream_rst((struct h2_stream *)ex, NGHTTP2_INTERNAL_ERROR);
}

/* http_refuse(): RST_STREAM REFUSED_STREAM, so that the client sends the request again. */
static void stream_refuse(struct http_exchange *ex)
{
    stream_rst((struct h2_stream *)ex, NGHTTP2_REFUSED_STREAM);
}

static void stream_dispatch(struct h2_stream *st)
{
    if (st->ex.state != HTTP_EX_READING || st->refused)
        return;
    if (st->refuse_status) {
        /* what is known of the request, for the response's metrics */
        st->ex.req = (struct http_request){
            .method = st->method ? st->method : "", .version = 20, .https = true};
        http_exchange_begin(&st->ex);
        const struct http_header allow = {"allow", ROUTER_NO_BODY_ALLOW};
        http_respond_status(&st->ex, st->refuse_status, &allow, st->refuse_status == 405);
        return;
    }
    st->ex.req = (struct http_request){
        .method = st->method ? st->method : "",
        .path = st->path ? st->path : "/",
        .authority = st->authority,
        .content_type = st->ctype,
        .body = st->body.data,
        .body_len = st->body.len,
        .version = 20,
        .https = true,
        .cleartext = st->sess->cleartext,
        .headers = st->hdrs,
        .nheaders = st->nhdrs,
        .client = st->sess->client,
        .budget = st->sess->budget,
        .body_stream = st->streaming,
        .body_length = st->streaming ? st->clen : (long long)st->body.len,
    };
    http_exchange_dispatch(&st->ex, router_dispatch);
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    struct h2_session *s = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_stream *st = calloc(1, sizeof(*st));
    if (!st) {
        /* Refuse this stream only (nghttp2 resets it); the connection lives on. */
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    http_exchange_init(&st->ex, &h2_exchange_ops, s->hctx);
    st->max_body = H2_MAX_BODY;
    st->clen = -1;
    st->sess = s;
    st->id = frame->hd.stream_id;
    st->progress_ms = st->sent_ms = s->now;
    dg_list_push_front(&s->streams, &st->node);
    s->nstreams++;
    nghttp2_session_set_stream_user_data(ng, st->id, st);
    return 0;
}

static int set_field(struct h2_stream *st, char **field, const uint8_t *value, size_t len,
                     size_t max)
{
    if (len > max)
        return -1;
    char *v = stream_dup(st, value, len, NULL, 0);
    if (!v)
        return -ENOMEM;
    stream_str_free(st, *field);
    *field = v;
    return 0;
}

/* Keep a regular header for the handlers (proxying, conditional requests). nghttp2 already
 * bounds the whole list (SETTINGS_MAX_HEADER_LIST_SIZE) and lower-cases names. */
static int add_header(struct h2_stream *st, const uint8_t *name, size_t namelen,
                      const uint8_t *value, size_t valuelen)
{
    if (!st->hdrs) {
        st->hdrs = st->hdrs_local;
        st->hdrs_cap = STREAM_LOCAL_HDRS;
    }
    if (st->nhdrs == st->hdrs_cap) {
        size_t cap = st->hdrs_cap * 2;
        struct http_header *h = st->hdrs == st->hdrs_local ? malloc(cap * sizeof(*h))
                                                           : realloc(st->hdrs, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        if (st->hdrs == st->hdrs_local)
            memcpy(h, st->hdrs_local, sizeof(st->hdrs_local));
        st->hdrs = h;
        st->hdrs_cap = cap;
    }
    char *b = stream_dup(st, name, namelen, value, valuelen);
    if (!b)
        return -ENOMEM;
    st->hdrs[st->nhdrs++] = (struct http_header){b, b + namelen + 1};
    return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct h2_session *s = user_data;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st)
        return 0;
    int rc = 0;
    /* nghttp2 only advertises SETTINGS_MAX_HEADER_LIST_SIZE; the bound is kept here (RFC 9113
     * §6.5.2 counts 32 bytes per field), with 431 past it and nothing more stored. */
    st->hdr_bytes += namelen + valuelen + 32;
    if (st->hdr_bytes > H2_MAX_HEADER_LIST) {
        st->refuse_status = 431;
        return 0;
    }
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        if (valuelen > H2_MAX_PATH)
            st->refuse_status = 414;
        else
            rc = set_field(st, &st->path, value, valuelen, H2_MAX_PATH);
        if (rc == 0 && st->path) {
            st->max_body = router_max_body(s->hctx, st->path, true, false);
            st->streams = router_body_streams(s->hctx, st->path, true, false);
        }
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        rc = set_field(st, &st->method, value, valuelen, H2_MAX_HEADER);
    } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
        rc = set_field(st, &st->authority, value, valuelen, H2_MAX_HEADER);
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        rc = set_field(st, &st->ctype, value, valuelen, H2_MAX_HEADER);
        if (rc == 0)
            rc = add_header(st, name, namelen, value, valuelen);
    } else if (namelen == 14 && memcmp(name, "content-length", 14) == 0) {
        /* nghttp2 checks that the body matches it; we only refuse oversized bodies early. */
        char num[24];
        if (valuelen >= sizeof(num)) {
            st->refuse_status = 413;
        } else {
            memcpy(num, value, valuelen);
            num[valuelen] = '\0';
            unsigned long long cl = strtoull(num, NULL, 10);
            st->clen = cl <= (unsigned long long)INT64_MAX ? (long long)cl : -1;
            if (cl > st->max_body)
                st->refuse_status = router_body_refusal(st->max_body, st->method);
        }
        rc = add_header(st, name, namelen, value, valuelen);
    } else if (namelen > 0 && name[0] != ':') {
        rc = add_header(st, name, namelen, value, valuelen);
    }
    if (rc == -ENOMEM)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets this stream only */
    if (rc < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/*
 * Flow control (issue 14): nghttp2 sends no WINDOW_UPDATE by itself
 * (nghttp2_option_set_no_auto_window_update); a DATA byte opens the windows again only once it
 * is dealt with here: taken under the body budget and stored, or discarded (the stream was
 * answered or refused already, or is answered now). The client can therefore never have more
 * than the windows (65535 bytes per connection) sent ahead of what the budget took, and a body
 * the server does not want never gets the windows opened for more of it than it already sent.
 * The refused stream's bytes still count towards the connection window: they are released at
 * the connection level, or the other streams would starve.
 */
static void consume(struct h2_session *s, int32_t stream_id, size_t len, bool stream_too)
{
    int rc = stream_too ? nghttp2_session_consume(s->ng, stream_id, len)
                        : nghttp2_session_consume_connection(s->ng, len);
    if (rc != 0)
        s->fatal = true; /* no memory for a WINDOW_UPDATE: the connection would stall */
}

/* Refuse the body of @p st as it arrives, after the budget said no: RST_STREAM REFUSED_STREAM
 * when none of it was taken yet (nothing was processed: RFC 9113 §8.7 lets the client retry),
 * else 503. */
static void refuse_body(struct h2_stream *st)
{
    if (st->body_held == 0) {
        st->refused = true;
        stream_rst(st, NGHTTP2_REFUSED_STREAM);
        return;
    }
    st->refuse_status = 503;
    body_release(st);
    stream_dispatch(st);
}

/* The held bytes of a streamed body go without being read: their stream window opens (the
 * connection window did at arrival), their budget goes back. */
static void body_drop(struct h2_stream *st)
{
    if (st->body.len && nghttp2_session_consume_stream(st->sess->ng, st->id, st->body.len) != 0)
        st->sess->fatal = true;
    body_release(st);
    st->sess->wake(st->sess->owner);
}

static void body_fail(struct h2_stream *st, int err)
{
    st->body_err = err;
    body_drop(st);
    http_req_body_failed(&st->ex);
}

/*
 * DATA of a streamed body. The connection window opens at once, the stream window only as
 * the handler reads (stream_body_read()): one stream holds at most its window (65535), and a
 * reader that does not read stalls its own stream only, never the connection's others. What
 * is held is still taken under the body budget (connection, client, process).
 */
static void stream_body_data(struct h2_stream *st, const uint8_t *data, size_t len)
{
    struct h2_session *s = st->sess;
    if (st->body_err || http_req_body_closed(&st->ex)) {
        consume(s, st->id, len, true); /* abandoned or failed: discarded as it comes */
        return;
    }
    st->body_total += len;
    if (st->body_total > st->max_body) {
        consume(s, st->id, len, true);
        body_fail(st, -EMSGSIZE);
        return;
    }
    if (budget_take(s->budget, s->hctx->cfg, BUDGET_BODY, len) != BUDGET_OK) {
        consume(s, st->id, len, true);
        body_fail(st, -ENOBUFS);
        return;
    }
    st->body_held += len;
    if (dg_buf_append(&st->body, data, len) != 0) {
        consume(s, st->id, len, true);
        body_fail(st, -ENOMEM);
        return;
    }
    consume(s, st->id, len, false);
    http_req_body_ready(&st->ex);
}

static long stream_body_read(struct http_exchange *ex, uint8_t *buf, size_t max, bool *eof)
{
    struct h2_stream *st = (struct h2_stream *)ex;
    struct h2_session *s = st->sess;
    *eof = false;
    if (st->body_err)
        return st->body_err;
    long n = http_body_take_held(&st->body, &st->body_held, s->budget, st->req_done, buf, max, eof);
    if (n <= 0)
        return n;
    /* as many more bytes as were taken: the WINDOW_UPDATE leaves with the next write */
    if (nghttp2_session_consume_stream(s->ng, st->id, (size_t)n) != 0)
        s->fatal = true;
    s->wake(s->owner);
    return n;
}

static void stream_body_abandon(struct http_exchange *ex)
{
    body_drop((struct h2_stream *)ex);
}

static int on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t stream_id,
                              const uint8_t *data, size_t len, void *user_data)
{
    struct h2_session *s = user_data;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (!st || st->refused) {
        consume(s, stream_id, len, false);
        return 0;
    }
    if (st->streaming) {
        stream_body_data(st, data, len);
        return 0;
    }
    if (st->ex.state != HTTP_EX_READING || st->refuse_status) {
        /* Answered already (413 at HEADERS, ...): discarded. The stream window opens too, so
         * that a client that goes on uploading after the early response is not stuck. */
        consume(s, stream_id, len, true);
        return 0;
    }
    if (st->body.len + len > st->max_body) {
        /* Answer now and stop storing: the rest of the body is discarded. */
        st->refuse_status = router_body_refusal(st->max_body, st->method);
        body_release(st);
        stream_dispatch(st);
        consume(s, stream_id, len, true);
        return 0;
    }
    if (budget_take(s->budget, s->hctx->cfg, BUDGET_BODY, len) != BUDGET_OK) {
        refuse_body(st);
        consume(s, stream_id, len, !st->refused);
        return 0;
    }
    st->body_held += len;
    if (dg_buf_append(&st->body, data, len) != 0) {
        /* Returning an error here would be ignored for DATA (nghttp2 goes on and the stream
         * would be dispatched with a truncated body): refuse it instead. */
        st->refuse_status = 503;
        body_release(st);
        stream_dispatch(st);
    }
    consume(s, stream_id, len, true);
    return 0;
}

/* The opaque data of the PING sent with the first GOAWAY: its ACK, and only its, ends the
 * first step (a client's own PINGs and their ACKs have other data). */
static const uint8_t drain_ping[8] = {'d', 'g', '-', 'd', 'r', 'a', 'i', 'n'};

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    struct h2_session *s = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        s->peer_goaway = true;
        return 0;
    }
    if (frame->hd.type == NGHTTP2_PING && (frame->hd.flags & NGHTTP2_FLAG_ACK) && s->goaway_due &&
        memcmp(frame->ping.opaque_data, drain_ping, sizeof(drain_ping)) == 0) {
        /* A round trip after the first GOAWAY: every stream the client opened before it read
         * that GOAWAY has reached us (the PING ACK comes after them on the same connection). */
        h2_session_goaway(s);
        s->wake(s->owner);
        return 0;
    }
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
        return 0;
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (!st)
        return 0;
    /* Request bytes of this stream are its progress (send-timeout); PING, SETTINGS and
     * WINDOW_UPDATE never reach here. A HEADERS frame (trailers) ends the request. A DATA
     * frame counts by its data only: an empty one carries nothing, and neither does padding
     * (data.padlen includes the Pad Length byte), or a client could hold a stream with frames
     * of padding alone. */
    if (frame->hd.type == NGHTTP2_HEADERS || frame->hd.length > frame->data.padlen)
        st->progress_ms = s->now;
    /* A stream opened after our GOAWAY was queued (but before it left) is not served: the
     * GOAWAY tells the client to retry it elsewhere, and nghttp2 refuses it. */
    if (s->shutting_down && st->id > s->goaway_last_id)
        return 0;
    if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        st->req_done = true;
        stream_dispatch(st);
        if (st->streaming)
            http_req_body_ready(&st->ex); /* the end of the streamed body */
    } else if (frame->hd.type == NGHTTP2_HEADERS && st->streams && !st->refuse_status &&
               st->ex.state == HTTP_EX_READING && !st->refused) {
        /* A body follows on a route that streams it: the handler gets the request now and
         * the body as it comes (stream_body_data()). */
        st->streaming = true;
        stream_dispatch(st);
    } else if (frame->hd.type == NGHTTP2_HEADERS && st->refuse_status) {
        /* An announced oversized body (content-length) or a too long :path: refuse now
         * rather than after an upload we will not read. The rest of the body is discarded
         * as it comes (a RST_STREAM NO_ERROR would stop it sooner, but curl 7.88 reports
         * that as an error instead of showing the response). */
        stream_dispatch(st);
    }
    return 0;
}

/* The first GOAWAY of a graceful shutdown (2^31-1) has been written out: now its PING, so that
 * the PING follows it on the wire (h2_session_shutdown()). Its ACK then comes from a client that
 * has read the GOAWAY, after every stream it opened before. */
static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    struct h2_session *s = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.last_stream_id == INT32_MAX &&
        s->goaway_due && nghttp2_submit_ping(ng, NGHTTP2_FLAG_NONE, drain_ping) != 0)
        h2_session_goaway(s); /* no PING: one step */
    return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (st) {
        nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
        stream_free(st);
    }
    return 0;
}

/*
 * nghttp2's allocator for a session. Its frame buffer (16 KiB, kept for the session's whole
 * life) comes from the worker's page pool, where only the pages written become resident (an
 * idle connection's frames take a few hundred bytes of it) and the pages go back to the kernel
 * when the connection closes; allocations of one page (nghttp2's stream map: 256 x 16 bytes)
 * come from a pool of single pages. Measured: 42 KB -> 30 KB RSS per idle TLS+h2 connection
 * (2,000 connections, idleconns.py) for the first. Everything else goes to malloc.
 *
 * Both let h2_session_trim() give an idle session's pages back: the frame buffer's contents are
 * dead between frames (nghttp2 serializes a frame into it and we copy it out at once), and a
 * page that holds only zeroes (the stream map once every stream is gone) reads the same after
 * the kernel takes it. Only blocks the session allocated are touched (each block is recorded).
 */
static bool h2_pool_size(const struct pagepool *pool, size_t size)
{
    return pool && size > 8192 && size <= pagepool_block_size(pool);
}

static bool h2_page_size(const struct pagepool *pages, size_t size)
{
    /* a whole page or nearly: a smaller object would waste the rest of its page */
    return pages && size > pagepool_block_size(pages) / 4 * 3 && size <= pagepool_block_size(pages);
}

static void blocks_add(struct h2_session *s, void *blk, bool framebuf)
{
    for (size_t i = 0; i < H2_BLOCKS; i++) {
        if (!s->blk[i].p) {
            s->blk[i].p = blk;
            s->blk[i].framebuf = framebuf;
            return;
        }
    }
    /* more than H2_BLOCKS out: this one is never trimmed (still freed normally) */
}

static void blocks_del(struct h2_session *s, const void *blk)
{
    for (size_t i = 0; i < H2_BLOCKS; i++) {
        if (s->blk[i].p == blk)
            s->blk[i].p = NULL;
    }
}

/* zero: calloc (a kept block is zeroed); else malloc (a kept block comes as it was left) */
static void *h2m_get(struct h2_session *s, size_t size, bool zero)
{
    const struct handler_ctx *h = s->hctx;
    void *p = NULL;
    if (h2_pool_size(h->h2_pool, size)) {
        p = zero ? pagepool_get(h->h2_pool) : pagepool_get_any(h->h2_pool);
        /* The frame buffer is the large block nghttp2 takes while creating the session
         * (aob.framebufs, one chunk kept for life); a later large block (a frame over 16 KiB
         * being received, a long header block) may hold live bytes between calls. */
        /* (the exact size too: another nghttp2 build allocating some other large block while
         * creating a session must not have it treated as dead between calls) */
        if (p)
            blocks_add(s, p, s->creating && size == H2_FRAMEBUF_BYTES);
    } else if (h2_page_size(h->h2_pages, size)) {
        p = zero ? pagepool_get(h->h2_pages) : pagepool_get_any(h->h2_pages);
        if (p)
            blocks_add(s, p, false);
    }
    return p;
}

/* -> the pool that owns ptr, or NULL */
static struct pagepool *h2m_pool_of(const struct h2_session *s, const void *ptr)
{
    const struct handler_ctx *h = s->hctx;
    if (pagepool_owns(h->h2_pool, ptr))
        return h->h2_pool;
    if (pagepool_owns(h->h2_pages, ptr))
        return h->h2_pages;
    return NULL;
}

static void *h2m_malloc(size_t size, void *ud)
{
    void *p = h2m_get(ud, size, false);
    return p ? p : malloc(size);
}

static void h2m_free(void *ptr, void *ud)
{
    struct h2_session *s = ud;
    struct pagepool *pool = ptr ? h2m_pool_of(s, ptr) : NULL;
    if (pool) {
        blocks_del(s, ptr);
        pagepool_put(pool, ptr);
    } else {
        free(ptr);
    }
}

static void *h2m_calloc(size_t n, size_t size, void *ud)
{
    void *p = size && n <= SIZE_MAX / size ? h2m_get(ud, n * size, true) : NULL;
    return p ? p : calloc(n, size);
}

static void *h2m_realloc(void *ptr, size_t size, void *ud)
{
    struct h2_session *s = ud;
    struct pagepool *pool = ptr ? h2m_pool_of(s, ptr) : NULL;
    if (!pool)
        return ptr ? realloc(ptr, size) : h2m_malloc(size, ud);
    if (size <= pagepool_block_size(pool))
        return ptr;
    void *n = malloc(size);
    if (!n)
        return NULL;
    memcpy(n, ptr, pagepool_block_size(pool));
    blocks_del(s, ptr);
    pagepool_put(pool, ptr);
    return n;
}

size_t h2_session_trim(struct h2_session *s)
{
    /* Idle: no stream open (nothing to receive into a stream, no DATA to come from a data
     * source) and nothing queued in nghttp2 (no frame half out of the frame buffer). */
    if (s->nstreams || nghttp2_session_want_write(s->ng))
        return 0;
    size_t bytes = 0;
    for (size_t i = 0; i < H2_BLOCKS; i++) {
        if (!s->blk[i].p)
            continue;
        struct pagepool *pool = h2m_pool_of(s, s->blk[i].p);
        bytes += s->blk[i].framebuf ? pagepool_release(pool, s->blk[i].p)
                                    : pagepool_release_zero_pages(pool, s->blk[i].p);
    }
    return bytes;
}

struct h2_session *h2_session_new(const struct h2_settings *cfg, const struct handler_ctx *hctx,
                                  h2_wake_cb wake, void *owner)
{
    struct h2_session *s = calloc(1, sizeof(*s));
    nghttp2_session_callbacks *cbs = NULL;
    nghttp2_option *opt = NULL;
    if (!s)
        return NULL;
    s->client = cfg->client;
    s->budget = cfg->budget;
    s->cleartext = cfg->cleartext;
    s->hctx = hctx;
    s->wake = wake;
    s->owner = owner;
    s->now = dg_now_ms();
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        goto fail;
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    /* Flood limits (CVE-2023-44487 rapid reset, SETTINGS/CONTINUATION/ACK floods). The values are
     * nghttp2's own defaults from 1.57+, set explicitly so that they hold on every build. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
    nghttp2_option_set_max_settings(opt, 32);
    nghttp2_option_set_max_continuations(opt, 8);
    nghttp2_option_set_max_outbound_ack(opt, 1000);
    /* nghttp2's default 4 KiB. Our HPACK table holds the constant headers (content-type,
     * server, HSTS, the configured ones); the varying ones are not indexed (hpack_flags()), so
     * it stays small. Not less than 4 KiB: a smaller table makes nghttp2 open the first
     * response's header block with a table size update, which every full HPACK decoder takes
     * but the minimal clients of load tools (the lab's idleconns.py, which reads :status as
     * the block's first byte) do not. */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, 4096);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* Request-body windows open only for bytes on_data_chunk_recv() dealt with (consume()). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    /* nghttp2 copies the nghttp2_mem it is given */
    nghttp2_mem mem = {s, h2m_malloc, h2m_free, h2m_calloc, h2m_realloc};
    s->creating = true;
    int rc = hctx && (hctx->h2_pool || hctx->h2_pages)
                 ? nghttp2_session_server_new3(&s->ng, cbs, s, opt, &mem)
                 : nghttp2_session_server_new2(&s->ng, cbs, s, opt);
    s->creating = false;
    if (rc != 0)
        goto fail;
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    cbs = NULL;
    opt = NULL;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_concurrent_streams},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, H2_MAX_HEADER_LIST},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    if (nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0)
        goto fail;
    return s;
fail:
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (s->ng)
        nghttp2_session_del(s->ng);
    free(s);
    return NULL;
}

void h2_session_free(struct h2_session *s)
{
    if (!s)
        return;
    while (s->streams.head) {
        struct h2_stream *st = dg_list_entry(s->streams.head, struct h2_stream, node);
        nghttp2_session_set_stream_user_data(s->ng, st->id, NULL);
        stream_free(st);
    }
    nghttp2_session_del(s->ng);
    free(s);
}

int h2_session_recv(struct h2_session *s, const uint8_t *data, size_t len)
{
    s->now = dg_now_ms();
    s->in_recv = true;
    ssize_t rc = nghttp2_session_mem_recv(s->ng, data, len);
    s->in_recv = false;
    if (rc < 0) {
        log_debug("h2: closing connection: %s", nghttp2_strerror((int)rc));
        return -EPROTO;
    }
    return 0;
}

int h2_session_send(struct h2_session *s, struct dg_buf *out, size_t limit)
{
    if (s->fatal)
        return -ENOMEM;
    s->now = dg_now_ms();
    while (out->len < limit) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(s->ng, &p);
        if (n < 0)
            return n == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPROTO;
        if (n == 0)
            break;
        if (dg_buf_append(out, p, (size_t)n) != 0)
            return -ENOMEM;
    }
    return 0;
}

bool h2_session_done(const struct h2_session *s)
{
    return !nghttp2_session_want_read(s->ng) && !nghttp2_session_want_write(s->ng);
}

bool h2_session_want_read(const struct h2_session *s)
{
    return nghttp2_session_want_read(s->ng) != 0;
}

bool h2_session_want_write(const struct h2_session *s)
{
    return nghttp2_session_want_write(s->ng) != 0;
}

size_t h2_session_streams(const struct h2_session *s)
{
    return s->nstreams;
}

void h2_session_shutdown(struct h2_session *s)
{
    if (s->goaway_due || s->shutting_down)
        return;
    /* RFC 9113 §6.8: the GOAWAY with 2^31-1 tells the client to open no more streams, but a
     * stream it sent before reading it is still served (a one-step GOAWAY with the last stream
     * processed refuses those, and a client such as h2load counts them as failed). The PING
     * measures the round trip after which no such stream can still be on its way. If the
     * GOAWAY cannot be queued (the session is ending already, or out of memory), or the
     * client said GOAWAY first (nghttp2 then drops the notice and would leave the final one to
     * the timer; such a client opens no more streams anyway), one step. */
    if (s->peer_goaway || nghttp2_submit_shutdown_notice(s->ng) != 0) {
        h2_session_goaway(s);
        return;
    }
    /* The PING is submitted once that GOAWAY has left (on_frame_send()): nghttp2 sends PINGs
     * ahead of everything else, and an ACK that a client sent before it read the GOAWAY
     * would prove nothing. */
    s->goaway_due = dg_now_ms() + H2_GOAWAY_ACK_MS;
}

uint64_t h2_session_goaway_due(const struct h2_session *s)
{
    return s->goaway_due;
}

void h2_session_goaway(struct h2_session *s)
{
    /* Open streams still finish; nghttp2_session_want_read() turns 0 once they are gone. */
    if (s->shutting_down)
        return;
    s->shutting_down = true;
    s->goaway_due = 0;
    s->goaway_last_id = nghttp2_session_get_last_proc_stream_id(s->ng);
    nghttp2_submit_goaway(s->ng, NGHTTP2_FLAG_NONE, s->goaway_last_id, NGHTTP2_NO_ERROR, NULL, 0);
}

/* What a stream waits for, for the sweep. */
static bool stream_resp_waiting(const struct h2_stream *st)
{
    return st->ex.state == HTTP_EX_RESPONDED &&
           (st->ex.src_open || (st->resp.data && st->resp_off < st->resp.len));
}

void h2_session_sweep(struct h2_session *s, struct h2_sweep *sw)
{
    uint64_t now = sw->now;
    sw->next = 0;
    sw->reset = 0;
    sw->stalled = false;
    /* First the connection: response data waiting (not for a slow source), none of it taken
     * for send-timeout, counted from the last DATA that left or from when the data came. */
    bool waiting = false;
    uint64_t latest = s->data_sent_ms;
    for (struct dg_lnode *n = s->streams.head; n; n = n->next) {
        const struct h2_stream *st = dg_list_entry(n, const struct h2_stream, node);
        if (st->stalled || st->src_again || !stream_resp_waiting(st))
            continue;
        waiting = true;
        if (st->sent_ms > latest)
            latest = st->sent_ms;
    }
    if (waiting && now - latest >= sw->send_ms) {
        sw->stalled = true;
        return;
    }
    if (waiting)
        sw->next = latest + sw->send_ms;
    /* Then each stream that holds something and made no progress. */
    for (struct dg_lnode *n = s->streams.head; n; n = n->next) {
        struct h2_stream *st = dg_list_entry(n, struct h2_stream, node);
        if (st->stalled || st->ex.state == HTTP_EX_DONE)
            continue;
        bool resp = stream_resp_waiting(st) && !st->src_again;
        bool reading = !st->req_done;
        bool server_wait = (st->ex.state == HTTP_EX_DISPATCHED && st->ex.cancel) ||
                           (st->src_again && st->ex.src_open);
        if (resp && nghttp2_session_get_stream_remote_window_size(s->ng, st->id) > 0) {
            /* The client lets this stream have bytes; it is waiting its turn (nghttp2 serves a
             * dependent or lower-priority stream after the others, browsers chain streams), not
             * held back by the client. Whether the connection moves at all is the connection
             * check above; only a stream whose own window the client keeps shut is this
             * stream's stall. Its clock starts when that happens, not when it was queued. */
            resp = false;
            if (!reading) {
                st->progress_ms = now;
                continue;
            }
        }
        if (!resp && !reading && !server_wait)
            continue; /* nothing held: the stream closes as soon as its last frame leaves */
        /* A wait on the server side (a query, a backend) has its own timer that answers
         * first (504, SERVFAIL); pending_ms is only the backstop. */
        uint64_t limit = resp || reading ? sw->send_ms : sw->pending_ms;
        uint64_t deadline = st->progress_ms + limit;
        if (now < deadline) {
            if (!sw->next || deadline < sw->next)
                sw->next = deadline;
            continue;
        }
        /* CANCEL, not INTERNAL_ERROR: nothing broke on our side, the stream is no longer
         * worth its resources, and clients and operators can tell a timeout (8) from a broken
         * body (2). The resource goes now, not when the RST_STREAM leaves: a client that
         * does not read would otherwise keep it (and then the connection check closes it). */
        st->stalled = true;
        sw->reset++;
        stream_rst(st, NGHTTP2_CANCEL);
        http_exchange_end(&st->ex);
        /* and the buffered request body with its budget (the stream itself stays until its
         * RST_STREAM leaves, which a client that does not read may delay) */
        body_release(st);
    }
}
