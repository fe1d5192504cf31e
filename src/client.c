/* The client address, parsed once per connection: see client.h. */
#include "dohgate/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* From the binary address, IPv4 already unmapped: the key and (when @p text) the text. */
static void finish(struct client_id *id, bool text)
{
    id->key.len = id->len == 4 ? 4 : 8; /* IPv6: the /64, one host usually holds all of it */
    memcpy(id->key.b, id->addr, id->key.len);
    if (text && !inet_ntop(id->len == 4 ? AF_INET : AF_INET6, id->addr, id->text, sizeof(id->text)))
        id->text[0] = '\0'; /* cannot happen with a 46-byte buffer; stay a valid string */
}

static int from_sockaddr(struct client_id *id, const struct sockaddr *sa, bool text)
{
    memset(id, 0, sizeof(*id));
    if (sa->sa_family == AF_INET) {
        memcpy(id->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        id->len = 4;
    } else if (sa->sa_family == AF_INET6) {
        const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        /* A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d: they are IPv4 clients
         * for ACLs, limits and logs alike. */
        if (memcmp(a, v4mapped, 12) == 0) {
            memcpy(id->addr, a + 12, 4);
            id->len = 4;
        } else {
            memcpy(id->addr, a, 16);
            id->len = 16;
        }
    } else {
        return -EAFNOSUPPORT;
    }
    finish(id, text);
    return 0;
}

int client_id_from_sockaddr(struct client_id *id, const struct sockaddr *sa)
{
    return from_sockaddr(id, sa, true);
}

int client_id_from_sockaddr_notext(struct client_id *id, const struct sockaddr *sa)
{
    return from_sockaddr(id, sa, false);
}

void client_id_text(const struct client_id *id, char *out, size_t outlen)
{
    if (!outlen)
        return;
    if (id->text[0]) {
        snprintf(out, outlen, "%s", id->text);
        return;
    }
    out[0] = '\0';
    if (client_id_known(id) &&
        !inet_ntop(id->len == 4 ? AF_INET : AF_INET6, id->addr, out, (socklen_t)outlen))
        out[0] = '\0';
}

int client_id_from_string(struct client_id *id, const char *s)
{
    struct sockaddr_in v4 = {.sin_family = AF_INET};
    struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
    if (s && inet_pton(AF_INET, s, &v4.sin_addr) == 1)
        return client_id_from_sockaddr(id, (const struct sockaddr *)&v4);
    if (s && inet_pton(AF_INET6, s, &v6.sin6_addr) == 1)
        return client_id_from_sockaddr(id, (const struct sockaddr *)&v6);
    memset(id, 0, sizeof(*id));
    return -EINVAL;
}

void client_id_text_truncated(const struct client_id *id, char *out, size_t outlen)
{
    if (!outlen)
        return;
    out[0] = '\0';
    if (!client_id_known(id))
        return;
    uint8_t a[16];
    memcpy(a, id->addr, id->len);
    if (id->len == 4)
        a[3] = 0;
    else
        memset(a + 6, 0, 10);
    if (!inet_ntop(id->len == 4 ? AF_INET : AF_INET6, a, out, (socklen_t)outlen))
        out[0] = '\0';
}

int client_key_from_string(const char *s, struct client_key *k)
{
    struct client_id id;
    int rc = client_id_from_string(&id, s);
    *k = id.key;
    return rc == 0 ? 0 : -1;
}
