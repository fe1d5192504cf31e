#include "dohgate/dnsstream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnsserve.h"
#include "dohgate/dnswire.h"
#include "dohgate/http.h"
#include "dohgate/list.h"
#include "dohgate/log.h"

/* One query in flight: the session's registration on dns_serve. Freed by on_answer() or by
 * dnsstream_session_free() (after dns_serve_cancel(), so the callback never runs). */
struct ds_query {
    struct dg_lnode node; /* on s->pending */
    struct dnsstream_session *s;
    struct dns_serve_op *op;
    bool keepalive; /* the query carried edns-tcp-keepalive */
};

struct dnsstream_session {
    const struct handler_ctx *hctx;
    const struct client_id *client;
    enum dg_transport transport;
    dnsstream_wake_cb wake;
    void *owner;
    unsigned pipeline;      /* dns-tcp-pipeline */
    struct dg_buf in;       /* received bytes not served yet: a partial message, or whole ones
                               waiting for a pipeline slot */
    struct dg_buf ready;    /* answers in completion order, each with its 2-byte length */
    struct dg_list pending; /* struct ds_query */
    size_t inflight;
    uint64_t partial_since; /* ms: first byte of the incomplete message at the head of in */
    bool stopped;           /* shutdown or the client's FIN: read nothing more */
    bool malformed;         /* bad input: serve nothing more */
    bool overflow;          /* the client let more than ready_max pile up: fail */
    bool blocked;           /* the connection's socket is full */
    size_t ready_max;
};

struct dnsstream_session *dnsstream_session_new(const struct dnsstream_settings *st,
                                                const struct handler_ctx *hctx,
                                                dnsstream_wake_cb wake, void *owner)
{
    struct dnsstream_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->hctx = hctx;
    s->client = st->client;
    s->transport = st->transport;
    s->wake = wake;
    s->owner = owner;
    s->pipeline = hctx->cfg->dns_tcp_pipeline ? hctx->cfg->dns_tcp_pipeline : 1;
    s->ready_max = st->ready_max ? st->ready_max : DNSSTREAM_READY_MAX;
    return s;
}

size_t dnsstream_session_trim(struct dnsstream_session *s)
{
    return dg_buf_release_if_empty(&s->in) + dg_buf_release_if_empty(&s->ready);
}

void dnsstream_session_free(struct dnsstream_session *s)
{
    if (!s)
        return;
    while (s->pending.head) {
        struct ds_query *q = dg_list_entry(s->pending.head, struct ds_query, node);
        dg_list_unlink(&s->pending, &q->node);
        dns_serve_cancel(q->op);
        free(q);
    }
    dg_buf_free(&s->in);
    dg_buf_free(&s->ready);
    free(s);
}

/* RFC 7828 §3.2.2 / §3.3.2: the idle time the client may keep the connection open for, in units
 * of 100 ms; 0 tells it to close (we are shutting down). */
static uint16_t keepalive_timeout(const struct dnsstream_session *s)
{
    if (s->stopped)
        return 0;
    uint64_t t = (uint64_t)s->hctx->cfg->idle_timeout_s * 10u;
    return t > 65535u ? 65535u : (uint16_t)t;
}

/*
 * Add our edns-tcp-keepalive to @p ans. dns_serve() padded the answer already (DoT): the option
 * after the padding would leave it off the 468-byte block, so it is padded again (dns_pad()
 * replaces the padding option). Best effort: a failure leaves the answer as it was, which a
 * client must accept (the option is advisory).
 */
static void add_keepalive(const struct dnsstream_session *s, struct dg_buf *ans)
{
    uint8_t v[2];
    dg_put16(v, keepalive_timeout(s));
    bool padded = dns_has_padding(ans->data, ans->len);
    if (dg_buf_reserve(ans, 4 + sizeof(v) + (padded ? DNS_PAD_BLOCK_RESPONSE : 0)) != 0)
        return;
    if (dns_add_option(ans->data, &ans->len, ans->cap, DNS_EDNS_KEEPALIVE, v, sizeof(v)) == 0 &&
        padded)
        (void)dns_pad(ans->data, &ans->len, ans->cap, DNS_PAD_BLOCK_RESPONSE);
}

/* Queue one answer with its length. @return 0 or -ENOMEM (nothing queued). */
static int queue_answer(struct dnsstream_session *s, struct dg_buf *ans, bool keepalive)
{
    if (keepalive)
        add_keepalive(s, ans);
    if (ans->len < DNS_HEADER_LEN || ans->len > DNS_MAX_MSG)
        return 0; /* cannot happen (dnsserve makes whole messages); never frame garbage */
    if (dg_buf_reserve(&s->ready, 2 + ans->len) != 0)
        return -ENOMEM;
    dg_put16(s->ready.data + s->ready.len, (uint16_t)ans->len);
    memcpy(s->ready.data + s->ready.len + 2, ans->data, ans->len);
    s->ready.len += 2 + ans->len;
    return 0;
}

/* Completion of a pending query, from the event loop. */
static void on_answer(void *arg, struct dg_buf *ans, uint32_t ttl)
{
    (void)ttl;
    struct ds_query *q = arg;
    struct dnsstream_session *s = q->s;
    bool keepalive = q->keepalive;
    dg_list_unlink(&s->pending, &q->node);
    s->inflight--;
    free(q); /* the dns_serve handle is gone already */
    /* A client that does not read: its answers go nowhere; what is queued is freed now and the
     * connection closes at its next flush (never from here: we are in a resolver callback). */
    if (s->overflow || (s->blocked && s->ready.len + 2 + ans->len > s->ready_max)) {
        if (!s->overflow)
            log_debug("DNS stream: %zu bytes of answers not taken; closing the connection",
                      s->ready.len);
        s->overflow = true;
        s->stopped = true;
        dg_buf_free(&s->ready);
        s->wake(s->owner);
        return;
    }
    /* No memory for the answer (empty), or for queueing it: the client would wait for an answer
     * that never comes, so end the session instead; it retries on a new connection. */
    if (ans->len == 0 || queue_answer(s, ans, keepalive) != 0) {
        log_debug("DNS stream: no memory for an answer; closing the connection");
        s->malformed = true;
        s->stopped = true;
    }
    s->wake(s->owner);
}

static void set_malformed(struct dnsstream_session *s)
{
    s->malformed = true;
    s->stopped = true;
    dg_observe(s->hctx->obs, DG_EV_DNS_DROPPED, DG_DROP_MALFORMED, 1);
}

/* Serve one whole message. @return 0 or -ENOMEM. */
static int serve_one(struct dnsstream_session *s, const uint8_t *msg, size_t len)
{
    size_t off, olen;
    bool keepalive = dnswire_edns_option(msg, len, DNS_EDNS_KEEPALIVE, &off, &olen);
    struct dg_buf ans = {0};
    int rc = 0;
    if (dns_serve_admit(s->hctx, s->client, s->transport) != DNS_ADMIT_OK) {
        /* A stream cannot be spoofed: the client learns it is refused, and stays connected. */
        const struct dns_serve_req req = {
            .q = msg, .len = len, .client = s->client, .transport = s->transport};
        rc = dns_serve_error(s->hctx, &req, DNS_RCODE_REFUSED, false, &ans);
        if (rc == DNS_SERVE_MALFORMED) {
            set_malformed(s);
            return 0;
        }
        if (rc != DNS_SERVE_ANSWERED)
            return -ENOMEM;
        rc = queue_answer(s, &ans, keepalive);
        dg_buf_free(&ans);
        return rc;
    }
    const struct dns_serve_req req = {
        .q = msg, .len = len, .client = s->client, .transport = s->transport};
    uint32_t ttl;
    const char *why = NULL;
    struct dns_serve_op *op = NULL;
    rc = dns_serve(s->hctx, &req, &ans, &ttl, on_answer, NULL, &op, &why);
    switch (rc) {
    case DNS_SERVE_PENDING: {
        /* our record of it only for a query that waits (a cache hit allocates nothing) */
        struct ds_query *q = calloc(1, sizeof(*q));
        if (!q) {
            dns_serve_cancel(op);
            return -ENOMEM;
        }
        q->s = s;
        q->keepalive = keepalive;
        q->op = op;
        dns_serve_set_arg(op, q);
        dg_list_push_front(&s->pending, &q->node);
        s->inflight++;
        return 0;
    }
    case DNS_SERVE_ANSWERED:
        rc = queue_answer(s, &ans, keepalive);
        dg_buf_free(&ans);
        return rc;
    case DNS_SERVE_MALFORMED:
        log_debug("DNS stream: malformed query (%s); closing the connection", why ? why : "?");
        set_malformed(s);
        return 0;
    default:
        dg_buf_free(&ans);
        /* Out of memory in dns_serve(): SERVFAIL if even that can be made. */
        if (dns_make_error_answer(msg, len, DNS_RCODE_SERVFAIL, &ans) != 0)
            return -ENOMEM;
        rc = queue_answer(s, &ans, keepalive);
        dg_buf_free(&ans);
        return rc;
    }
}

/* Serve the whole messages in s->in while pipeline slots and output room last.
 * @return 0 or -ENOMEM. */
static int dispatch(struct dnsstream_session *s)
{
    size_t off = 0;
    int rc = 0;
    while (!s->malformed && s->inflight < s->pipeline && s->ready.len < DNSSTREAM_OUT_HIGH &&
           s->in.len - off >= 2) {
        size_t mlen = dg_get16(s->in.data + off);
        if (mlen < DNS_HEADER_LEN) {
            /* Decided on the length alone: a client that sent 0 or 5 must not make us wait
             * for bytes that would not help. */
            log_debug("DNS stream: message length %zu; closing the connection", mlen);
            set_malformed(s);
            break;
        }
        if (s->in.len - off - 2 < mlen)
            break;
        rc = serve_one(s, s->in.data + off + 2, mlen);
        off += 2 + mlen;
        if (rc != 0)
            break;
    }
    if (s->malformed) {
        dg_buf_free(&s->in); /* what follows bad input is not looked at */
        s->partial_since = 0;
        return rc;
    }
    dg_buf_consume(&s->in, off);
    /* The head message is incomplete (not merely waiting for a slot): time its arrival. */
    bool partial = s->in.len > 0 && (s->in.len < 2 || s->in.len - 2 < dg_get16(s->in.data));
    if (!partial)
        s->partial_since = 0;
    else if (!s->partial_since || off > 0)
        s->partial_since = dg_now_ms();
    return rc;
}

int dnsstream_session_recv(struct dnsstream_session *s, const uint8_t *data, size_t len)
{
    if (s->stopped || len == 0)
        return 0;
    if (dg_buf_append(&s->in, data, len) != 0)
        return -ENOMEM;
    return dispatch(s);
}

int dnsstream_session_send(struct dnsstream_session *s, struct dg_buf *out, size_t limit)
{
    if (s->overflow)
        return -EMSGSIZE;
    int rc = dispatch(s);
    if (rc != 0)
        return rc;
    if (s->ready.len == 0 || out->len >= limit)
        return 0;
    if (out->len == 0 && s->ready.len <= limit) {
        /* The usual case: hand the bytes over without a copy. */
        struct dg_buf t = *out;
        *out = s->ready;
        s->ready = t;
        return 0;
    }
    size_t n = limit - out->len;
    if (n > s->ready.len)
        n = s->ready.len;
    if (dg_buf_append(out, s->ready.data, n) != 0)
        return -ENOMEM;
    dg_buf_consume(&s->ready, n);
    return 0;
}

/* A whole message waits in s->in (for a slot, or for output room). */
static bool whole_waiting(const struct dnsstream_session *s)
{
    return !s->malformed && s->in.len >= 2 && s->in.len - 2 >= dg_get16(s->in.data);
}

bool dnsstream_session_done(const struct dnsstream_session *s)
{
    return s->stopped && s->inflight == 0 && s->ready.len == 0 && !whole_waiting(s);
}

bool dnsstream_session_want_read(const struct dnsstream_session *s)
{
    return !s->stopped && s->inflight < s->pipeline && s->ready.len < DNSSTREAM_OUT_HIGH;
}

size_t dnsstream_session_inflight(const struct dnsstream_session *s)
{
    return s->inflight;
}

uint64_t dnsstream_session_partial_since(const struct dnsstream_session *s)
{
    return s->partial_since;
}

void dnsstream_session_blocked(struct dnsstream_session *s, bool blocked)
{
    s->blocked = blocked;
}

void dnsstream_session_shutdown(struct dnsstream_session *s)
{
    s->stopped = true;
}
