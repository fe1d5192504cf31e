/* Plain DNS over UDP: see dnsudp.h. */
/* recvmmsg(), sendmmsg(), struct in6_pktinfo */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "dohgate/dnsudp.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/dns.h"
#include "dohgate/dnswire.h"
#include "dohgate/dnsserve.h"
#include "dohgate/log.h"
#include "dohgate/rrl.h"
#include "dohgate/util.h"

/* Answers waiting for the next sendmmsg(): room for a whole read batch and then some. */
#define OUT_MAX (2 * DNSUDP_BATCH)

/* Where a query arrived: the destination address (and interface) the answer leaves from. On
 * a socket bound to a wildcard address, without this the kernel picks the source by route, and
 * on a host with several addresses the client would see an answer from another address than
 * it asked, and drop it. */
struct local {
    enum { LOCAL_NONE, LOCAL_V4, LOCAL_V6 } kind; /* v4: in_pktinfo; v6: in6_pktinfo */
    union {
        struct in_pktinfo v4;
        struct in6_pktinfo v6;
    } pi;
};

/* One answer to send. buf keeps its capacity between uses (synchronous answers are written
 * straight into it by dns_serve()). */
struct out {
    struct dg_buf buf;
    struct sockaddr_storage peer;
    socklen_t peerlen;
    struct local local;
};

/* A query waiting for the resolver. Owned by its set's list until on_answer() or
 * dnsudp_set_cancel_all(). */
struct dnsudp_op {
    struct dg_lnode node;
    struct dnsudp_set *set;
    struct dnsudp *u;
    struct dns_serve_op *sop;
    struct client_id client; /* read by the query log when the answer comes */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    struct local local;
};

struct dnsudp {
    int fd;
    struct event_base *base;
    struct event *rev, *flush_ev;
    const struct dg_observer *obs;
    struct dnsudp_set *set;
    struct dnsudp_op *spare; /* the next query's op: allocated only when one goes pending */
    struct dnsudp_stats stats;
    /* receive side: DNSUDP_BATCH datagrams per call */
    struct mmsghdr rmsg[DNSUDP_BATCH];
    struct iovec riov[DNSUDP_BATCH];
    struct sockaddr_storage rpeer[DNSUDP_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(struct in_pktinfo))];
        struct cmsghdr align;
    } rctl[DNSUDP_BATCH];
    uint8_t (*rbuf)[DNSUDP_MAX_QUERY];
    /* send side */
    struct out out[OUT_MAX];
    size_t nout;
};

/* ---- sending ----------------------------------------------------------------------------- */

/* Build the packet-info control message of an answer into @p ctl; @return its length. */
static size_t put_local(const struct local *l, void *ctl, size_t cap)
{
    if (l->kind == LOCAL_NONE)
        return 0;
    memset(ctl, 0, cap); /* the padding after the data goes to the kernel too */
    struct msghdr mh = {.msg_control = ctl, .msg_controllen = cap};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (l->kind == LOCAL_V4) {
        /* ipi_spec_dst is the source; no interface: the route picks it (asymmetric routing
         * keeps working). */
        struct in_pktinfo pi = {.ipi_spec_dst = l->pi.v4.ipi_addr};
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(pi));
        memcpy(CMSG_DATA(c), &pi, sizeof(pi));
        return CMSG_SPACE(sizeof(pi));
    }
    /* IPv6, and IPv4 on a dual-stack socket (an IPv4-mapped address: the kernel takes it as
     * the IPv4 source). The interface only for link-local addresses, which need it. */
    struct in6_pktinfo pi = {.ipi6_addr = l->pi.v6.ipi6_addr};
    if (IN6_IS_ADDR_LINKLOCAL(&pi.ipi6_addr))
        pi.ipi6_ifindex = l->pi.v6.ipi6_ifindex;
    c->cmsg_level = IPPROTO_IPV6;
    c->cmsg_type = IPV6_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(pi));
    memcpy(CMSG_DATA(c), &pi, sizeof(pi));
    return CMSG_SPACE(sizeof(pi));
}

/* Send every queued answer, batched; what the kernel refuses is dropped. */
static void flush_out(struct dnsudp *u)
{
    struct mmsghdr mm[OUT_MAX];
    struct iovec iov[OUT_MAX];
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } ctl[OUT_MAX];
    size_t n = u->nout;
    if (!n)
        return;
    memset(mm, 0, n * sizeof(mm[0]));
    for (size_t i = 0; i < n; i++) {
        struct out *o = &u->out[i];
        iov[i] = (struct iovec){.iov_base = o->buf.data, .iov_len = o->buf.len};
        mm[i].msg_hdr.msg_name = &o->peer;
        mm[i].msg_hdr.msg_namelen = o->peerlen;
        mm[i].msg_hdr.msg_iov = &iov[i];
        mm[i].msg_hdr.msg_iovlen = 1;
        size_t cl = put_local(&o->local, ctl[i].buf, sizeof(ctl[i].buf));
        mm[i].msg_hdr.msg_control = cl ? ctl[i].buf : NULL;
        mm[i].msg_hdr.msg_controllen = cl;
    }
    size_t done = 0;
    while (done < n) {
        int r = sendmmsg(u->fd, mm + done, (unsigned)(n - done), MSG_DONTWAIT);
        if (r > 0) {
            done += (size_t)r;
            u->stats.sent += (uint64_t)r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            /* The socket buffer is full: the rest would fail the same way. */
            u->stats.send_dropped += n - done;
            dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_SEND, n - done);
            break;
        }
        /* This one cannot go (unreachable, a source address no longer ours): skip it. */
        u->stats.send_dropped++;
        dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_SEND, 1);
        done++;
    }
    for (size_t i = 0; i < n; i++)
        u->out[i].buf.len = 0;
    u->nout = 0;
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    flush_out(arg);
}

/* The next free answer slot (sending the queue first when it is full). */
static struct out *out_slot(struct dnsudp *u)
{
    if (u->nout == OUT_MAX)
        flush_out(u);
    struct out *o = &u->out[u->nout];
    o->buf.len = 0;
    return o;
}

/* ---- pending queries --------------------------------------------------------------------- */

static void op_detach(struct dnsudp_op *op)
{
    struct dnsudp_set *set = op->set;
    dg_list_unlink(&set->ops, &op->node);
    set->count--;
}

static void on_answer(void *arg, struct dg_buf *ans, uint32_t ttl)
{
    struct dnsudp_op *op = arg;
    struct dnsudp *u = op->u;
    struct dnsudp_set *set = op->set;
    op->sop = NULL; /* gone before this call (dnsserve.h) */
    op_detach(op);
    if (ans->len) {
        struct out *o = out_slot(u);
        /* Take the answer's bytes; dnsserve frees what we leave in *ans (our old buffer). */
        struct dg_buf t = o->buf;
        o->buf = *ans;
        *ans = t;
        o->peer = op->peer;
        o->peerlen = op->peerlen;
        o->local = op->local;
        if (u->nout++ == 0)
            event_active(u->flush_ev, EV_TIMEOUT, 0);
    } else {
        u->stats.send_dropped++; /* no memory for the answer */
        dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_SEND, 1);
    }
    free(op);
    if (set->count == 0 && set->on_empty)
        set->on_empty(set, set->on_empty_arg);
}

void dnsudp_set_cancel_all(struct dnsudp_set *set)
{
    while (set->ops.head) {
        struct dnsudp_op *op = dg_list_entry(set->ops.head, struct dnsudp_op, node);
        dns_serve_cancel(op->sop);
        op_detach(op);
        free(op);
    }
}

/* ---- receiving --------------------------------------------------------------------------- */

static void read_local(struct msghdr *mh, struct local *l)
{
    l->kind = LOCAL_NONE;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
            memcpy(&l->pi.v4, CMSG_DATA(c), sizeof(l->pi.v4));
            l->kind = LOCAL_V4;
            return;
        }
        if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
            memcpy(&l->pi.v6, CMSG_DATA(c), sizeof(l->pi.v6));
            l->kind = LOCAL_V6;
            return;
        }
    }
}

static uint16_t peer_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_port;
    if (ss->ss_family == AF_INET6)
        return ((const struct sockaddr_in6 *)ss)->sin6_port;
    return 0;
}

/* Queue a synthesized answer (REFUSED, or a slipped TC=1) to query @p q, counted. */
static void answer_now(struct dnsudp *u, struct out *o, const struct handler_ctx *hctx,
                       const struct dns_serve_req *req, int rcode, bool tc)
{
    int rc = dns_serve_error(hctx, req, rcode, tc, &o->buf);
    if (rc == DNS_SERVE_ANSWERED)
        u->nout++;
    else if (rc == DNS_SERVE_MALFORMED)
        dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_MALFORMED, 1);
}

/* One datagram. Synchronous answers are queued in u->out; the caller flushes. */
static void serve(struct dnsudp *u, const uint8_t *q, size_t len, bool truncated,
                  const struct sockaddr_storage *peer, socklen_t peerlen, struct msghdr *mh)
{
    struct dnsudp_set *set = u->set;
    /* Nothing to answer: cut short, too short for a header, an answer (QR=1: answering
     * answers makes loops between servers, RFC 5452 §9.2), or a source port no answer can go
     * to. */
    if (truncated || len < DNS_HEADER_LEN || (q[2] & DNS_F2_QR) || peer_port(peer) == 0) {
        dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_MALFORMED, 1);
        return;
    }
    if (!u->spare && !(u->spare = malloc(sizeof(*u->spare)))) {
        log_debug("dns-udp: out of memory, query dropped");
        return;
    }
    struct dnsudp_op *op = u->spare;
    /* no text: formatting the address cost a quarter of our own CPU per datagram (profile);
     * the query log formats it only when it writes a line */
    client_id_from_sockaddr_notext(&op->client, (const struct sockaddr *)peer);
    enum dns_admit adm = dns_serve_admit(set->hctx, &op->client, DG_TR_DNS_UDP);
    if (adm == DNS_ADMIT_DROP)
        return; /* counted by dns_serve_admit */
    /* The rate limit is charged before any work: over it, a flood costs this lookup only. */
    enum rrl_verdict rv = set->rrl ? rrl_check(set->rrl, &op->client, dg_now_ms()) : RRL_PASS;
    if (rv == RRL_DROP) {
        dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_RATE, 1);
        return;
    }
    struct out *o = out_slot(u);
    memcpy(&o->peer, peer, peerlen);
    o->peerlen = peerlen;
    read_local(mh, &o->local);
    const struct dns_serve_req req = {
        .q = q, .len = len, .client = &op->client, .transport = DG_TR_DNS_UDP};
    if (rv == RRL_SLIP || adm == DNS_ADMIT_REFUSED) {
        /* (a query that does not parse gets nothing: the slot stays unused) */
        answer_now(u, o, set->hctx, &req, rv == RRL_SLIP ? DNS_RCODE_NOERROR : DNS_RCODE_REFUSED,
                   rv == RRL_SLIP);
        return;
    }
    uint32_t ttl;
    const char *why = NULL;
    int rc = dns_serve(set->hctx, &req, &o->buf, &ttl, on_answer, op, &op->sop, &why);
    if (rc == DNS_SERVE_ANSWERED) {
        u->nout++;
    } else if (rc == DNS_SERVE_PENDING) {
        op->set = set;
        op->u = u;
        op->peer = o->peer;
        op->peerlen = peerlen;
        op->local = o->local;
        dg_list_push_front(&set->ops, &op->node);
        set->count++;
        u->spare = NULL;
    } else if (rc == DNS_SERVE_MALFORMED) {
        dg_observe(u->obs, DG_EV_DNS_DROPPED, DG_DROP_MALFORMED, 1);
    } else {
        log_debug("dns-udp: out of memory, query dropped");
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct dnsudp *u = arg;
    for (int call = 0; call < DNSUDP_CALLS_PER_EV; call++) {
        for (size_t i = 0; i < DNSUDP_BATCH; i++) {
            struct msghdr *mh = &u->rmsg[i].msg_hdr;
            mh->msg_name = &u->rpeer[i];
            mh->msg_namelen = sizeof(u->rpeer[i]);
            mh->msg_iov = &u->riov[i];
            mh->msg_iovlen = 1;
            mh->msg_control = u->rctl[i].buf;
            mh->msg_controllen = sizeof(u->rctl[i].buf);
            mh->msg_flags = 0;
        }
        int n = recvmmsg(u->fd, u->rmsg, DNSUDP_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_debug("dns-udp: recvmmsg: %s", strerror(errno)); /* e.g. ICMP errors */
            break;
        }
        u->stats.received += (uint64_t)n;
        for (int i = 0; i < n; i++) {
            struct msghdr *mh = &u->rmsg[i].msg_hdr;
            serve(u, u->rbuf[i], u->rmsg[i].msg_len, (mh->msg_flags & MSG_TRUNC) != 0, &u->rpeer[i],
                  mh->msg_namelen, mh);
        }
        /* One sendmmsg() for the batch's synchronous answers (and any pending ones that came
         * in between). */
        flush_out(u);
        if (n < DNSUDP_BATCH)
            break;
    }
}

/* ---- life -------------------------------------------------------------------------------- */

struct dnsudp *dnsudp_new(struct event_base *base, int fd, int flush_priority,
                          const struct dg_observer *obs)
{
    struct dnsudp *u = calloc(1, sizeof(*u));
    if (!u)
        return NULL;
    u->fd = fd;
    u->base = base;
    u->obs = obs;
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        (void)fcntl(fd, F_SETFL, fl | O_NONBLOCK); /* a socket from systemd may block */
    /* Where each query was sent (best effort: on a socket bound to one address it changes
     * nothing). A dual-stack socket reports IPv4 queries through IPV6_PKTINFO too. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int one = 1, zero = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        /* Only a wildcard socket needs it: on one bound to a single address the kernel sends
         * from that address anyway, and the control messages cost on both sides (profile:
         * put_cmsg on receive, a route lookup per answer on send). */
        const struct dg_addr bound = {.ss = ss, .len = sl};
        const int *v = config_addr_is_any(&bound) ? &one : &zero;
        if (ss.ss_family == AF_INET6)
            (void)setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, v, sizeof(int));
        else
            (void)setsockopt(fd, IPPROTO_IP, IP_PKTINFO, v, sizeof(int));
    }
    u->rbuf = malloc(DNSUDP_BATCH * sizeof(*u->rbuf));
    u->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, u);
    u->flush_ev = event_new(base, -1, 0, on_flush, u);
    if (!u->rbuf || !u->rev || !u->flush_ev ||
        event_priority_set(u->flush_ev, flush_priority) != 0) {
        dnsudp_free(u);
        return NULL;
    }
    for (size_t i = 0; i < DNSUDP_BATCH; i++)
        u->riov[i] = (struct iovec){.iov_base = u->rbuf[i], .iov_len = DNSUDP_MAX_QUERY};
    return u;
}

void dnsudp_use(struct dnsudp *u, struct dnsudp_set *set)
{
    u->set = set;
}

int dnsudp_enable(struct dnsudp *u, bool on)
{
    if (!on)
        return event_del(u->rev) == 0 ? 0 : -ENOMEM;
    return event_add(u->rev, NULL) == 0 ? 0 : -ENOMEM;
}

const struct dnsudp_stats *dnsudp_get_stats(const struct dnsudp *u)
{
    return &u->stats;
}

void dnsudp_free(struct dnsudp *u)
{
    if (!u)
        return;
    if (u->rev)
        event_free(u->rev);
    if (u->flush_ev)
        event_free(u->flush_ev);
    for (size_t i = 0; i < OUT_MAX; i++)
        dg_buf_free(&u->out[i].buf);
    free(u->spare);
    free(u->rbuf);
    free(u);
}
