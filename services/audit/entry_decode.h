/* Reading a canonical entry (entry.h, version 1) back into the protobuf event the API returns.
 *
 * The entry is the log's source of truth: ListEvents, StreamEvents and the accounting of disclosures answer
 * from the stored bytes, so what a caller reads is exactly what was hashed and signed. The entry is treated
 * as untrusted (it comes from storage): anything that is not a version-1 object with the required keys, known
 * enum names and values of the right types is BASE_ERR_INVALID naming the key, never its value. Unknown keys
 * are ignored (entry.h: readers accept later optional keys within version 1).
 *
 * Memory: every string, array and nested message is taken from `alloc` (zeroed memory, e.g. an RPC call's
 * arena) and never freed here; do not free the result with protobuf_c_message_free_unpacked. */
#ifndef ALMA_AUDIT_ENTRY_DECODE_H
#define ALMA_AUDIT_ENTRY_DECODE_H

#include "audit/v1/audit.pb-c.h"
#include "base/result.h"

#include <stddef.h>
#include <stdint.h>

/* Returns zeroed memory of n bytes, or NULL when exhausted. */
typedef void *(*audit_alloc_fn)(void *ctx, size_t n);

typedef struct audit_decoded_entry {
    uint64_t seq;
    int64_t time_micros;
    Alma__Audit__V1__EventInput *event; /* actor.service_identity holds the entry's service_identity */
} audit_decoded_entry;

BASE_MUST_USE base_result audit_entry_decode(const char *entry, size_t len, audit_alloc_fn alloc, void *ctx,
                                             audit_decoded_entry *ret);

/* "YYYY-MM-DDTHH:MM:SS.ffffffZ" (the entry's time format) to microseconds since the epoch. */
BASE_MUST_USE base_result audit_entry_parse_time(const char *text, int64_t *ret_micros);

#endif
