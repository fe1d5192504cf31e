/* libFuzzer target: the reverse proxy's handling of a backend response (libhttp-parser in
 * response mode, interim 1xx answers, header filtering, Content-Length / chunked /
 * close-delimited bodies, the streaming body source and its end states). A real TCP backend
 * socket of this process on 127.0.0.1 accepts the proxy's connection, reads its request, sends
 * the fuzz input as the response and closes. A fake exchange stands in for the client side:
 * it records the answer and pulls the body source to its end, as a transport does. */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dohgate/client.h"
#include "dohgate/config.h"
#include "dohgate/http.h"
#include "dohgate/log.h"
#include "dohgate/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct client_id peer = {
    .addr = {192, 0, 2, 1}, .len = 4, .key = {.b = {192, 0, 2, 1}, .len = 4}, .text = "192.0.2.1"};
static struct proxy *cur_px;
static void on_request(struct http_exchange *ex)
{
    proxy_handle(cur_px, ex);
}

static struct event_base *base;
static struct config *cfg;
static int lfd = -1;
static struct handler_ctx hctx;

struct fake {
    struct http_exchange ex;
    int status;
    bool answered, resumed, reset;
};

static int f_respond(struct http_exchange *ex, const struct http_response *resp,
                     struct dg_buf *body)
{
    struct fake *f = (struct fake *)ex;
    if (f->answered)
        abort(); /* answered twice */
    f->answered = true;
    f->status = resp->status;
    return 0;
}

static int f_respond_stream(struct http_exchange *ex, const struct http_response *resp)
{
    struct fake *f = (struct fake *)ex;
    if (f->answered)
        abort();
    f->answered = true;
    f->status = resp->status;
    for (size_t i = 0; i < resp->nhdrs; i++) {
        if (!resp->hdrs[i].name || !resp->hdrs[i].value || strchr(resp->hdrs[i].value, '\n'))
            abort();
    }
    return 0;
}

static void f_resume(struct http_exchange *ex)
{
    ((struct fake *)ex)->resumed = true;
}

static void f_reset(struct http_exchange *ex)
{
    ((struct fake *)ex)->reset = true;
}

static const struct http_exchange_ops ops = {
    f_respond, f_respond_stream, f_resume, f_reset, NULL, NULL, NULL};

static void setup(void)
{
    dg_log_set_level(DG_LOG_ERR);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sl) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0)
        abort();
    char url[64], err[256];
    snprintf(url, sizeof(url), "http://127.0.0.1:%u", ntohs(sa.sin_port));
    cfg = config_new();
    if (!cfg || config_set(cfg, "upstream", "127.0.0.1:9", "fuzz", 0, err, sizeof(err)) != 0 ||
        config_set(cfg, "site-backend", url, "fuzz", 0, err, sizeof(err)) != 0 ||
        config_finish(cfg, err, sizeof(err)) != 0)
        abort();
    base = event_base_new();
    if (!base)
        abort();
    hctx = (struct handler_ctx){.cfg = cfg};
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base)
        setup();
    if (size > 60000)
        return 0; /* stays within one socket buffer: the backend writes it without blocking */
    struct proxy *px = proxy_new(base, cfg);
    if (!px)
        abort();
    cur_px = px;
    bool head = size > 0 && data[0] == 'H'; /* some inputs exercise the HEAD rules */
    const struct http_header hdrs[] = {{"accept", "*/*"}, {"cookie", "a=1"}, {"cookie", "b=2"}};
    struct fake f = {0};
    http_exchange_init(&f.ex, &ops, &hctx);
    f.ex.req = (struct http_request){.method = head ? "HEAD" : "GET",
                                     .path = "/x?y",
                                     .authority = "site.example",
                                     .version = 11,
                                     .https = true,
                                     .headers = hdrs,
                                     .nheaders = 3,
                                     .client = &peer};
    http_exchange_dispatch(&f.ex, on_request);
    /* The proxy connects at once on loopback; never block on accept() if it did not. */
    struct pollfd pfd = {.fd = lfd, .events = POLLIN};
    if (poll(&pfd, 1, 2000) != 1) {
        fprintf(stderr, "the proxy did not connect (answered %d, status %d)\n", f.answered,
                f.status);
        abort();
    }
    int bfd = accept(lfd, NULL, NULL);
    if (bfd < 0)
        abort();
    /* Let the proxy write its request, and read it. */
    char req[4096];
    for (int i = 0; i < 20; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (recv(bfd, req, sizeof(req), MSG_DONTWAIT) > 0)
            break;
    }
    if (size && send(bfd, data, size, MSG_NOSIGNAL) != (ssize_t)size)
        abort();
    shutdown(bfd, SHUT_WR);
    uint8_t buf[8192];
    for (int i = 0; i < 2000 && !(f.answered && !f.ex.src_open); i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        while (f.ex.src_open) {
            bool eof;
            long n = http_body_pull(&f.ex, buf, sizeof(buf), &eof);
            if (n == HTTP_BODY_AGAIN || n <= 0)
                break; /* on failure or at the end the exchange closed the source */
        }
    }
    if (f.answered && f.ex.cancel)
        abort(); /* answered but still registered */
    /* the client goes (e.g. after an incomplete head): cancels or closes what is left */
    http_exchange_end(&f.ex);
    close(bfd);
    proxy_free(px);
    return 0;
}
