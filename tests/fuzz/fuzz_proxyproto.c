/*
 * libFuzzer target: the PROXY protocol v1/v2 parser (proxyproto.h) on the first bytes of a
 * connection. Checks what conn.c relies on: a header's length is within the bytes given and
 * within PP_MAX; every strict prefix of a whole header needs more (so every byte consumed while
 * waiting was the header's), and the header alone gives the same result; an error stays an
 * error with more bytes; a source address is IPv4 or IPv6 and makes a known client_id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dohgate/client.h"
#include "dohgate/proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > PP_MAX + 64)
        size = PP_MAX + 64;
    struct pp_result r;
    enum pp_status st = pp_parse(data, size, &r);
    if (st == PP_DONE) {
        if (r.len == 0 || r.len > size || r.len > PP_MAX || r.err != PP_ERR_NONE ||
            (r.version != 1 && r.version != 2))
            abort();
        if (r.has_addr) {
            if (r.src.ss_family != AF_INET && r.src.ss_family != AF_INET6)
                abort();
            struct client_id id;
            if (client_id_from_sockaddr(&id, (const struct sockaddr *)&r.src) != 0 ||
                !client_id_known(&id))
                abort();
        }
        if (r.local && (r.has_addr || r.version != 2))
            abort();
        /* the header alone (in a buffer of its own size, so ASan sees any read past it) */
        uint8_t *h = malloc(r.len);
        if (!h)
            return 0;
        memcpy(h, data, r.len);
        struct pp_result r2;
        if (pp_parse(h, r.len, &r2) != PP_DONE || r2.len != r.len || r2.has_addr != r.has_addr ||
            memcmp(&r2.src, &r.src, sizeof(r.src)) != 0)
            abort();
        for (size_t i = 0; i < r.len; i++)
            if (pp_parse(h, i, &r2) != PP_NEED_MORE)
                abort();
        free(h);
    } else if (st == PP_NEED_MORE) {
        if (size >= PP_MAX)
            abort(); /* a header can only need more while shorter than the cap */
        for (size_t i = 0; i < size; i++)
            if (pp_parse(data, i, &r) != PP_NEED_MORE)
                abort();
    } else {
        if (r.err == PP_ERR_NONE || r.err >= PP_NERR)
            abort();
        (void)pp_has_signature(data, size);
    }
    return 0;
}
