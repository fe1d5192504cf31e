/* Admission of a client's query (ACL, then query rate), protocol-free: see admission.h. */
#include "dohgate/admission.h"

#include "dohgate/acl.h"
#include "dohgate/client.h"
#include "dohgate/clients.h"
#include "dohgate/util.h"

struct admission_verdict admission_check(const struct admission_policy *p,
                                         const struct client_id *id)
{
    struct admission_verdict v = {.outcome = ADMISSION_ALLOW};
    if (!acl_allows_client(p->acl, id)) {
        v.outcome = ADMISSION_REFUSE;
        v.reason = ADMISSION_REASON_ACL;
        return v;
    }
    /* The table exists for the connection limits too: only a configured query rate costs a
     * query the clock read and the shard lock. */
    if (clients_limit_queries(p->clients) && client_id_known(id)) {
        unsigned wait = clients_query(p->clients, &id->key, dg_now_ms());
        if (wait > 0) {
            v.outcome = ADMISSION_RATE_LIMITED;
            v.wait_s = wait;
        }
    }
    return v;
}

const char *admission_reason_text(enum admission_reason reason)
{
    switch (reason) {
    case ADMISSION_REASON_ACL:
        return "this resolver does not serve your network";
    case ADMISSION_REASON_NONE:
        break;
    }
    return "refused";
}
