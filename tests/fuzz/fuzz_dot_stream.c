/*
 * libFuzzer target: the byte stream a DNS-over-TLS (or DNS-over-TCP) server sends back, as the
 * upstream module reads it. The stream arrives in chunks of fuzzer-chosen sizes; each chunk is
 * appended to a buffer, dnswire_split_stream() cuts the whole 2-byte-length-prefixed frames out
 * of it and the used bytes are consumed, the partial tail waiting for the next chunk (as
 * upstream.c's tcp_frames() does with its dg_buf). Every frame then goes through what the
 * upstream path asks of an answer on a pipelined connection: found by ID among the queries in
 * flight, dns_answer_matches() against that query, then TC, rcode and the lifetime rule, and the
 * ID rewritten in place (the frame is the module's scratch).
 *
 * Input: byte 0 = k, the number of chunk-size bytes that follow (k & 15; 0: the whole stream in
 * one chunk); then k chunk-size bytes, used in turn (b < 0x80: b + 1 bytes; else
 * (b & 0x7f) * 512 + 1, so that 64 KiB frames need not take hundreds of chunks); the rest is
 * the stream.
 *
 * Invariants: the bytes used never exceed the buffer; every frame lies inside it, starts right
 * after its 2-byte length, holds exactly that many bytes, and frames are contiguous from the
 * buffer's start; what is left is less than a whole frame; and the frames and the tail put
 * together again are the stream byte for byte. A matching answer is well formed, has QR set
 * and the query's question; its lifetime stays within the policy. An answered query leaves the
 * in-flight set, as in upstream.c, so a second answer with its ID is dropped.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The queries in flight on the connection: three IDs, three questions (the second with EDNS). */
static const uint8_t q0[] = {
    /* 0x2a2a www.example.com A IN, RD */
    0x2a, 0x2a, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x03, 'w',  'w',  'w',  0x07, 'e',  'x',  'a',  'm',  'p',
    'l',  'e',  0x03, 'c',  'o',  'm',  0x00, 0x00, 0x01, 0x00, 0x01,
};
static const uint8_t q1[] = {
    /* 0x1234 example.org AAAA IN, RD, OPT 1232 DO */
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x07, 'e',
    'x',  'a',  'm',  'p',  'l',  'e',  0x03, 'o',  'r',  'g',  0x00, 0x00, 0x1c, 0x00,
    0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00,
};
static const uint8_t q2[] = {
    /* 0xbeef . NS IN */
    0xbe, 0xef, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01,
};

struct inflight {
    const uint8_t *msg;
    size_t len;
    uint16_t orig_id; /* the client's ID, written into the answer as upstream.c does */
    bool answered;
};

struct walk {
    const uint8_t *stream; /* the whole stream, to check the frames against */
    size_t stream_len;
    size_t off;          /* where in the stream the current buffer starts */
    const uint8_t *base; /* the current buffer */
    size_t len;
    size_t next; /* where in the buffer the next frame's prefix must start */
    struct inflight q[3];
    size_t frames;
};

static void on_frame(void *arg, uint8_t *msg, size_t mlen)
{
    struct walk *w = arg;
    /* inside the buffer, right after its own 2-byte length, contiguous with the previous one */
    if (msg < w->base + 2 || msg > w->base + w->len || mlen > (size_t)(w->base + w->len - msg))
        abort();
    size_t at = (size_t)(msg - w->base) - 2;
    if (at != w->next || ((size_t)msg[-2] << 8 | msg[-1]) != mlen)
        abort();
    /* the frame is the stream's bytes (compared before the ID rewrite below) */
    if (w->off + at + 2 + mlen > w->stream_len ||
        memcmp(w->stream + w->off + at, msg - 2, 2 + mlen) != 0)
        abort();
    w->next = at + 2 + mlen;
    w->frames++;

    /* tcp_handle_frame(): the query by ID, then the whole match */
    if (mlen < DNS_HEADER_LEN)
        return;
    struct inflight *q = NULL;
    for (size_t i = 0; i < 3; i++)
        if (!w->q[i].answered && dg_get16(w->q[i].msg) == dg_get16(msg))
            q = &w->q[i];
    if (!q)
        return;
    if (!dns_answer_matches(q->msg, q->len, msg, mlen))
        return;
    if (!dns_wire_check(msg, mlen) || !(msg[2] & 0x80) ||
        dns_question_end(msg, mlen) != dns_question_end(q->msg, q->len))
        abort();
    /* what the resolver then asks of it */
    int rcode = dns_rcode(msg, mlen);
    if (rcode < 0 || rcode > 15)
        abort();
    (void)dns_is_truncated(msg, mlen);
    static const struct dnswire_ttl_policy pol = {0, 86400, 3600, 30, 5};
    struct dnswire_answer_info info;
    uint32_t life = dnswire_answer_lifetime(msg, mlen, 0, &pol, &info);
    if (life > 86400 || (info.kind == DNSWIRE_UNCACHEABLE && life != 0) || info.end > mlen)
        abort();
    /* query_answer(): the client's ID goes back in; the query leaves the connection */
    dg_put16(msg, q->orig_id);
    q->answered = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t k = data[0] & 15u;
    if (size < 1 + k)
        return 0;
    const uint8_t *sizes = data + 1;
    const uint8_t *stream = data + 1 + k;
    size_t slen = size - 1 - k;

    struct walk w = {.stream = stream, .stream_len = slen};
    w.q[0] = (struct inflight){q0, sizeof(q0), 0x0000, false};
    w.q[1] = (struct inflight){q1, sizeof(q1), 0x4242, false};
    w.q[2] = (struct inflight){q2, sizeof(q2), 0xffff, false};

    struct dg_buf in = {0};
    size_t fed = 0;
    for (size_t i = 0; fed < slen; i++) {
        size_t n = slen - fed;
        if (k) {
            uint8_t b = sizes[i % k];
            size_t want = b < 0x80 ? (size_t)b + 1 : (size_t)(b & 0x7fu) * 512u + 1u;
            if (want < n)
                n = want;
        }
        if (dg_buf_append(&in, stream + fed, n) < 0)
            abort();
        fed += n;
        w.base = in.data;
        w.len = in.len;
        w.next = 0;
        size_t used = dnswire_split_stream(in.data, in.len, on_frame, &w);
        if (used > in.len || used != w.next)
            abort();
        /* what is left is no whole frame */
        size_t left = in.len - used;
        if (left >= 2 && ((size_t)in.data[used] << 8 | in.data[used + 1]) + 2 <= left)
            abort();
        dg_buf_consume(&in, used);
        w.off += used;
        /* the tail is the stream's next bytes */
        if (w.off + in.len != fed || (in.len && memcmp(in.data, stream + w.off, in.len) != 0))
            abort();
    }
    dg_buf_free(&in);
    return 0;
}
