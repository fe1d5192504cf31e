/*
 * libFuzzer target: the tls-alpn-01 ClientHello path (acmechal.h, tls.c's ClientHello callback).
 * The first byte chooses:
 *  - even: acmechal_hello_parse() on the rest, split in two at the offset of the next two bytes
 *    (ALPN body, server_name body), each in a buffer of its own size so that ASan sees any read
 *    past either. Checks: a true result names a lower-case host name of 1..253 characters with
 *    no empty label and no trailing dot, that the same input gives the same answer, and a false
 *    one leaves the name empty.
 *  - odd: the rest as the client's first flight to a server SSL of a real TLS store with
 *    tls-alpn-01 challenges pending for x.test and y.test, one SSL_do_handshake: the ClientHello,
 *    SNI and ALPN callbacks run on hostile hellos (seeds: real ClientHellos of openssl s_client).
 *    A handshake given the validation certificate must have offered acme-tls/1 for a pending
 *    name.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dohgate/acmechal.h"
#include "dohgate/config.h"
#include "dohgate/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_parse(const uint8_t *data, size_t size)
{
    if (size < 2)
        return;
    size_t split = ((size_t)data[0] << 8 | data[1]);
    data += 2;
    size -= 2;
    split = size ? split % (size + 1) : 0;
    uint8_t *alpn = malloc(split ? split : 1), *sni = malloc(size - split ? size - split : 1);
    if (!alpn || !sni)
        abort();
    memcpy(alpn, data, split);
    memcpy(sni, data + split, size - split);
    char name[256], again[256];
    memset(name, 'Z', sizeof(name));
    bool ok = acmechal_hello_parse(alpn, split, sni, size - split, name);
    if (!ok) {
        if (name[0] != '\0')
            abort();
    } else {
        size_t len = strnlen(name, sizeof(name));
        if (len == 0 || len > 253 || name[0] == '.' || name[len - 1] == '.' || strstr(name, ".."))
            abort();
        for (size_t i = 0; i < len; i++)
            if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
                  name[i] == '-' || name[i] == '_' || name[i] == '.'))
                abort();
        /* the name is in the server_name body */
        if (size - split < len + 5)
            abort();
    }
    if (acmechal_hello_parse(alpn, split, sni, size - split, again) != ok ||
        strcmp(name, again) != 0)
        abort();
    free(alpn);
    free(sni);
}

static struct tls_store *store;
static struct config *cfg;

static void setup(void)
{
    char err[256], fp[128];
    cfg = config_new();
    if (!cfg || !(store = tls_store_new(cfg, fp, err, sizeof(err))))
        abort();
    static const unsigned char dg[32] = {1, 2, 3};
    if (acmechal_alpn_add("x.test", dg, err, sizeof(err)) != 0 ||
        acmechal_alpn_add("y.test", dg, err, sizeof(err)) != 0)
        abort();
}

static bool is_validation_cert(const X509 *x)
{
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    bool yes = x && oid && X509_get_ext_by_OBJ(x, oid, -1) >= 0;
    ASN1_OBJECT_free(oid);
    return yes;
}

/* Whether @p s is in @p data (ignoring ASCII case when @p fold). */
static bool contains(const uint8_t *data, size_t size, const char *s, bool fold)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= size; i++) {
        size_t k = 0;
        while (k < n && (fold ? (data[i + k] | 0x20) == s[k] : data[i + k] == (uint8_t)s[k]))
            k++;
        if (k == n)
            return true;
    }
    return false;
}

static void check_handshake(const uint8_t *data, size_t size)
{
    if (!store)
        setup();
    SSL *srv = tls_store_ssl_new(store);
    BIO *in = BIO_new_mem_buf(data, (int)size);
    BIO *out = BIO_new(BIO_s_mem());
    if (!srv || !in || !out)
        abort();
    BIO_set_mem_eof_return(in, -1); /* the end of the input: "want read", as a socket */
    SSL_set_bio(srv, in, out);
    SSL_set_accept_state(srv);
    ERR_clear_error();
    (void)SSL_do_handshake(srv);
    ERR_clear_error();
    /* Only a hello that asked for it: acme-tls/1 and a pending name somewhere in its bytes
     * (SSL_get_servername() is not set if the handshake failed after the ClientHello callback). */
    if (is_validation_cert(SSL_get_certificate(srv)) &&
        (!contains(data, size, ACMECHAL_ALPN, false) ||
         (!contains(data, size, "x.test", true) && !contains(data, size, "y.test", true))))
        abort();
    SSL_free(srv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384 + 5 + 64)
        return 0;
    if (data[0] & 1)
        check_handshake(data + 1, size - 1);
    else
        check_parse(data + 1, size - 1);
    return 0;
}
