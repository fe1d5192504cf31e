/* Scaffolding of the in-process DoH tests (dohtest.h). */
#include "dohtest.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/doh.h"
#include "dohgate/h2.h"
#include "dohgate/util.h"

/* ------------------------------------------------------------ DNS messages */

size_t dt_put_name(uint8_t *buf, size_t o, const char *name)
{
    for (const char *l = name; *l;) {
        size_t n = strcspn(l, ".");
        assert_true(n > 0 && n < 64);
        buf[o++] = (uint8_t)n;
        memcpy(buf + o, l, n);
        o += n;
        l += n;
        if (*l == '.')
            l++;
    }
    buf[o++] = 0;
    return o;
}

size_t dt_build_query(uint8_t *out, size_t cap, uint16_t id, const char *name)
{
    assert_true(cap >= DNS_HEADER_LEN + strlen(name) + 6);
    memset(out, 0, DNS_HEADER_LEN);
    dg_put16(out, id);
    out[2] = 0x01;
    dg_put16(out + 4, 1);
    size_t o = dt_put_name(out, DNS_HEADER_LEN, name);
    dg_put16(out + o, 1);
    dg_put16(out + o + 2, 1);
    return o + 4;
}

size_t dt_build_answer(const uint8_t *q, size_t qlen, uint8_t *out, size_t cap)
{
    static const uint8_t rr[] = {
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, DT_A_RR_TTL >> 8, DT_A_RR_TTL & 0xff, 0, 4, 192, 0, 2, 7};
    size_t qe = dns_question_end(q, qlen);
    assert_true(qe > 0 && qe + sizeof(rr) <= cap);
    memcpy(out, q, qe);
    out[2] = (uint8_t)(0x80 | (q[2] & 0x01));
    out[3] = 0x80;
    dg_put16(out + 6, 1);
    dg_put16(out + 8, 0);
    dg_put16(out + 10, 0);
    memcpy(out + qe, rr, sizeof(rr));
    return qe + sizeof(rr);
}

/* ------------------------------------------------------------ configuration */

struct config *dt_config_new(const char *const *opts)
{
    char err[256] = "";
    struct config *cfg = config_new();
    assert_non_null(cfg);
    assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:9", "t", 0, err, sizeof(err)), 0);
    for (size_t i = 0; opts && opts[i]; i += 2) {
        if (config_set(cfg, opts[i], opts[i + 1], "t", 0, err, sizeof(err)) != 0)
            fail_msg("config_set(%s, %s): %s", opts[i], opts[i + 1], err);
    }
    if (config_finish(cfg, err, sizeof(err)) != 0)
        fail_msg("config_finish: %s", err);
    return cfg;
}

/* ------------------------------------------------------------ fake upstream (UDP only) */

static void fake_reply(struct dt_fake *f, const struct dt_held *h)
{
    uint8_t a[600];
    size_t n = dt_build_answer(h->msg, h->len, a, sizeof(a));
    ssize_t w = sendto(f->fd, a, n, 0, (const struct sockaddr *)&h->from, sizeof(h->from));
    assert_int_equal(w, (ssize_t)n);
}

/* Stack buffers only: runs inside test_failmalloc's counted window. */
static void on_fake_readable(evutil_socket_t fd, short what, void *arg)
{
    struct dt_fake *f = arg;
    for (;;) {
        struct dt_held h = {0};
        socklen_t fl = sizeof(h.from);
        ssize_t n = recvfrom(fd, h.msg, sizeof(h.msg), 0, (struct sockaddr *)&h.from, &fl);
        if (n <= 0)
            return;
        h.len = (size_t)n;
        f->queries++;
        if (f->mode == DT_FAKE_ANSWER) {
            fake_reply(f, &h);
        } else if (f->mode == DT_FAKE_HOLD) {
            assert_true(f->n_held < DT_MAX_HELD);
            f->held[f->n_held++] = h;
        }
    }
}

void dt_fake_open(struct dt_fake *f, struct event_base *base)
{
    enum dt_fake_mode mode = f->mode;
    memset(f, 0, sizeof(*f));
    f->mode = mode;
    f->addr.sin_family = AF_INET;
    f->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(f->fd >= 0);
    assert_int_equal(bind(f->fd, (struct sockaddr *)&f->addr, sizeof(f->addr)), 0);
    socklen_t sl = sizeof(f->addr);
    assert_int_equal(getsockname(f->fd, (struct sockaddr *)&f->addr, &sl), 0);
    f->ev = event_new(base, f->fd, EV_READ | EV_PERSIST, on_fake_readable, f);
    assert_non_null(f->ev);
    assert_int_equal(event_add(f->ev, NULL), 0);
}

void dt_fake_close(struct dt_fake *f)
{
    event_free(f->ev);
    f->ev = NULL;
    close(f->fd);
    f->fd = -1;
}

struct dt_fake *dt_fake_new(struct event_base *base)
{
    struct dt_fake *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    dt_fake_open(f, base);
    return f;
}

void dt_fake_free(struct dt_fake *f)
{
    if (!f)
        return;
    dt_fake_close(f);
    free(f);
}

void dt_fake_release(struct dt_fake *f, size_t from, size_t to)
{
    assert_true(to <= f->n_held);
    for (size_t i = from; i < to; i++)
        fake_reply(f, &f->held[i]);
}

/* ------------------------------------------------------------ in-memory nghttp2 client */

static void copy_field(char *dst, size_t cap, const uint8_t *v, size_t len)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

void dt_resp_header(struct dt_resp *r, const uint8_t *name, size_t namelen, const uint8_t *value,
                    size_t valuelen)
{
    if (namelen == 7 && memcmp(name, ":status", 7) == 0)
        r->status = atoi((const char *)value);
    else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
        copy_field(r->ctype, sizeof(r->ctype), value, valuelen);
    else if (namelen == 5 && memcmp(name, "allow", 5) == 0)
        copy_field(r->allow, sizeof(r->allow), value, valuelen);
    else if (namelen == 13 && memcmp(name, "cache-control", 13) == 0)
        copy_field(r->cache_control, sizeof(r->cache_control), value, valuelen);
    else if (namelen == 14 && memcmp(name, "content-length", 14) == 0)
        copy_field(r->content_length, sizeof(r->content_length), value, valuelen);
}

bool dt_resp_data(struct dt_resp *r, const uint8_t *data, size_t len)
{
    if (r->body_len + len > sizeof(r->body)) {
        r->body_overflow = true;
        return false;
    }
    memcpy(r->body + r->body_len, data, len);
    r->body_len += len;
    return true;
}

ssize_t dt_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                     nghttp2_data_source *source, void *ud)
{
    struct dt_body *b = source->ptr;
    size_t n = b->len - b->off < length ? b->len - b->off : length;
    memcpy(buf, b->p + b->off, n);
    b->off += n;
    if (b->off == b->len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

nghttp2_nv dt_nv(const char *name, const char *value)
{
    return (nghttp2_nv){(uint8_t *)name, (uint8_t *)value, strlen(name), strlen(value),
                        NGHTTP2_NV_FLAG_NONE};
}

size_t dt_doh_headers(nghttp2_nv *hdrs, const char *method, const char *path, const char *ctype)
{
    size_t n = 0;
    hdrs[n++] = dt_nv(":method", method);
    hdrs[n++] = dt_nv(":scheme", "https");
    hdrs[n++] = dt_nv(":authority", "doh.test");
    hdrs[n++] = dt_nv(":path", path);
    hdrs[n++] = dt_nv("accept", DOH_CONTENT_TYPE);
    if (ctype)
        hdrs[n++] = dt_nv("content-type", ctype);
    return n;
}

enum dt_pump_end dt_pump(nghttp2_session *cli, struct h2_session *srv, bool end_when_done)
{
    for (int round = 0; round < 1000; round++) {
        bool moved = false, server_end = false;
        const uint8_t *p;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(cli, &p)) > 0) {
            moved = true;
            if (srv && h2_session_recv(srv, p, (size_t)n) != 0) {
                server_end = true;
                break;
            }
        }
        if (n < 0)
            return DT_PUMP_CLIENT_FAILED;
        if (srv) {
            struct dg_buf out = {0};
            if (h2_session_send(srv, &out, SIZE_MAX) != 0)
                server_end = true;
            if (out.len > 0) {
                moved = true;
                ssize_t r = nghttp2_session_mem_recv(cli, out.data, out.len);
                if (r != (ssize_t)out.len) {
                    dg_buf_free(&out);
                    return DT_PUMP_CLIENT_REJECTED;
                }
            }
            dg_buf_free(&out);
            if (server_end || (end_when_done && h2_session_done(srv)))
                return DT_PUMP_SERVER_END;
        }
        if (!moved)
            return DT_PUMP_QUIET;
    }
    return DT_PUMP_BUSY;
}

int dt_backend_listen(char *url, size_t cap)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    int small = 4096;
    assert_int_equal(setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 8), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    snprintf(url, cap, "http://127.0.0.1:%u", ntohs(a.sin_port));
    return l;
}
