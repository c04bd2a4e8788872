/* libFuzzer target: the wire check must never read out of bounds or recurse without limit, whatever
 * the bytes; and when it accepts, protobuf-c must decode strings without an embedded NUL. */
#include "rpc/rpc.h"
#include "rpc_test.pb-c.h"

#include <stdlib.h>
#include <string.h>

static void fuzz_check_strings(const Alma__Rpctest__V1__Nest *m, int depth)
{
    if (depth > 40)
        abort();
    (void)strlen(m->name);
    for (size_t i = 0; i < m->n_children; i++)
        fuzz_check_strings(m->children[i], depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!base_is_ok(rpc_wire_check_strings(&alma__rpctest__v1__nest__descriptor, data, size)))
        return 0;
    Alma__Rpctest__V1__Nest *m = alma__rpctest__v1__nest__unpack(NULL, size, data);
    if (m) {
        fuzz_check_strings(m, 0);
        alma__rpctest__v1__nest__free_unpacked(m, NULL);
    }
    return 0;
}
