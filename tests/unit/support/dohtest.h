/*
 * Scaffolding shared by the unit tests that run DoH requests end to end in one process
 * (test_h2.c and test_failmalloc.c): DNS query/answer builders, a fake UDP DNS upstream on
 * 127.0.0.1, and the pieces of an in-process nghttp2 *client* that talks to our server session
 * (h2.c) through memory (request bodies out of memory, response records, the pump).
 *
 * Test code: misuse fails the calling cmocka test. Nothing here allocates except
 * dt_fake_new() (calloc) and dt_fake_open() (libevent's event_new()); test_failmalloc keeps
 * those out of its allocation count (fm_pause()). dt_pump() allocates only what the two
 * sessions allocate themselves (the client through the nghttp2_mem it was created with).
 * Every callback runs synchronously inside the libevent loop or nghttp2 call that fires it.
 */
#ifndef DOHGATE_TESTS_DOHTEST_H
#define DOHGATE_TESTS_DOHTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <netinet/in.h>

#include <event2/event.h>
#include <nghttp2/nghttp2.h>

struct config;
struct h2_session;

#define DT_A_RR_TTL 3600 /* TTL of the fake upstream's one A record */
#define DT_MAX_HELD 32   /* queries the fake upstream can hold */
#define DT_BODY_CAP 4096 /* response body bytes a record keeps */

/* ------------------------------------------------------------ DNS messages */

/* A query with ID @p id for @p name (dotted), type A, class IN, RD set. @return its length. */
size_t dt_build_query(uint8_t *out, size_t cap, uint16_t id, const char *name);
/** Write @p name ("a.b.example", no final dot) in wire form at @p buf + @p n. @return the offset
 * after it. The caller makes room (strlen(name) + 2 bytes). */
size_t dt_put_name(uint8_t *buf, size_t n, const char *name);

/* The answer a resolver would give: header and question of @p q, QR RA, one A record
 * (192.0.2.7, TTL DT_A_RR_TTL). @return its length. */
size_t dt_build_answer(const uint8_t *q, size_t qlen, uint8_t *out, size_t cap);

/* ------------------------------------------------------------ configuration */

/* A new finished config whose upstream is 127.0.0.1:9 (discard: for tests whose requests never
 * reach an upstream) plus @p opts, name/value pairs ended by NULL (NULL: none). Any error fails
 * the test. The caller frees it (config_free()). */
struct config *dt_config_new(const char *const *opts);

/* ------------------------------------------------------------ fake upstream (UDP only) */

enum dt_fake_mode {
    DT_FAKE_ANSWER, /* answers every query at once, from its readiness callback */
    DT_FAKE_HOLD,   /* keeps queries until dt_fake_release() */
    DT_FAKE_SILENT, /* reads and drops every query */
};

struct dt_held {
    struct sockaddr_in from;
    uint8_t msg[512];
    size_t len;
};

struct dt_fake {
    int fd;
    struct event *ev;
    struct sockaddr_in addr; /* where it listens (an ephemeral port on 127.0.0.1) */
    enum dt_fake_mode mode;
    unsigned queries; /* received, in any mode */
    struct dt_held held[DT_MAX_HELD];
    size_t n_held;
};

/* Bind @p f (caller's storage) to 127.0.0.1 and register its read event on @p base. Resets
 * everything but f->mode, which may be set before or after. */
void dt_fake_open(struct dt_fake *f, struct event_base *base);
/* Free the event and close the socket of an opened @p f (the storage stays the caller's). */
void dt_fake_close(struct dt_fake *f);
/* dt_fake_open() on a new calloc'd fake; dt_fake_free() closes and frees it (NULL: nothing). */
struct dt_fake *dt_fake_new(struct event_base *base);
void dt_fake_free(struct dt_fake *f);
/* Answer held queries [from, to) now. */
void dt_fake_release(struct dt_fake *f, size_t from, size_t to);

/* ------------------------------------------------------------ in-memory nghttp2 client */

/* What the client saw of one stream. */
struct dt_resp {
    int status; /* :status; 0 = no response headers */
    unsigned header_blocks;
    char ctype[64], allow[64], cache_control[64], content_length[16];
    /* cache-control came as an HPACK literal never indexed (set by the test's header callback,
     * which sees the flags) */
    bool cache_control_not_indexed;
    uint8_t body[DT_BODY_CAP];
    size_t body_len;
    bool body_overflow;
    bool closed;
    uint32_t close_code;
    unsigned data_frames_sent;
};

/* Record one response header (the ones dt_resp keeps; others are ignored). */
void dt_resp_header(struct dt_resp *r, const uint8_t *name, size_t namelen, const uint8_t *value,
                    size_t valuelen);
/* Append a DATA chunk. @return false (and body_overflow set, nothing copied) when it does not
 * fit. */
bool dt_resp_data(struct dt_resp *r, const uint8_t *data, size_t len);

/* A request body the client streams out of memory: the source of an nghttp2_data_provider
 * whose read_callback is dt_read_body. */
struct dt_body {
    const uint8_t *p;
    size_t len, off;
};
ssize_t dt_read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                     nghttp2_data_source *source, void *ud);

/* A header for nghttp2_submit_request(); @p name and @p value must outlive the call. */
nghttp2_nv dt_nv(const char *name, const char *value);

/* The headers of a DoH request into @p hdrs (room for DT_DOH_HEADERS_MAX): :method, :scheme
 * https, :authority doh.test, :path, accept: application/dns-message, and content-type when
 * @p ctype is not NULL. @return how many. */
#define DT_DOH_HEADERS_MAX 6
size_t dt_doh_headers(nghttp2_nv *hdrs, const char *method, const char *path, const char *ctype);

enum dt_pump_end {
    DT_PUMP_QUIET,         /* neither side has anything left */
    DT_PUMP_SERVER_END,    /* the server's receive or send failed, or (end_when_done) it is done */
    DT_PUMP_CLIENT_FAILED, /* nghttp2_session_mem_send() of the client failed */
    DT_PUMP_CLIENT_REJECTED, /* the client did not take all of the server's output */
    DT_PUMP_BUSY,            /* still moving bytes after 1000 rounds */
};

/*
 * Move client output into h2_session_recv() and h2_session_send() output into the client until
 * neither side has anything left. @p srv NULL: only drain the client's output. On a failed
 * server receive it stops feeding the server but still passes on what the server queued (its
 * GOAWAY), as conn.c does, then ends with DT_PUMP_SERVER_END; the caller closes the connection.
 */
enum dt_pump_end dt_pump(nghttp2_session *cli, struct h2_session *srv, bool end_when_done);

/* A listening TCP socket on 127.0.0.1 (an ephemeral port) with a small (4 KiB) receive buffer,
 * so that the kernel takes little of what the test does not read: a backend for the proxy.
 * Writes "http://127.0.0.1:PORT" into @p url (@p cap bytes); returns the socket (the caller
 * closes it). */
int dt_backend_listen(char *url, size_t cap);

#endif
