/*
 * Weak stand-ins for acmechal.h (implemented by src/acmechal.c on another branch) so that
 * test_acme links before it is merged; the real definitions win once they are in the library.
 * Not a test itself (no test_ prefix). Remove with the target_sources line in
 * tests/CMakeLists.txt once acmechal.c is merged.
 */
#include "dohgate/acmechal.h"

__attribute__((weak)) int acmechal_alpn_add(const char *name, const unsigned char digest[32],
                                            char *err, size_t errlen)
{
    return 0;
}
__attribute__((weak)) int acmechal_http_add(const char *token, const char *key_authorization)
{
    return 0;
}
__attribute__((weak)) void acmechal_clear(void)
{
}
