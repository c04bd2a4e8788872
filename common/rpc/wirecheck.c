/* A pass over protobuf wire bytes before protobuf-c decodes them. protobuf-c turns a string field into
 * a NUL-terminated C string, so an embedded NUL would silently cut it short ("abc\0DROP" reads "abc");
 * it also does not check UTF-8, which proto3 requires of strings. This walk rejects both, at any
 * nesting depth, so every handler can trust its strings. Bounded: depth and lengths are checked. */
#include "rpc.h"

#include "base/utf8.h"

#include <string.h>

#define RPC_WIRE_MAX_DEPTH 32

static bool rpc_wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return false;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *ret = v;
            return true;
        }
    }
    return false;
}

/* Well-formed UTF-8 with no NUL: protobuf-c would cut the string at the first NUL. */
static bool rpc_utf8_valid(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t len = base_utf8_next(s + i, n - i, &cp);
        if (len == 0 || cp == 0)
            return false;
        i += len;
    }
    return true;
}

static bool rpc_wire_walk(const ProtobufCMessageDescriptor *desc, const uint8_t *p, const uint8_t *end,
                          int depth)
{
    if (depth > RPC_WIRE_MAX_DEPTH)
        return false;
    while (p < end) {
        uint64_t key, v;
        if (!rpc_wire_varint(&p, end, &key))
            return false;
        uint32_t field = (uint32_t)(key >> 3);
        switch (key & 7) {
        case 0:
            if (!rpc_wire_varint(&p, end, &v))
                return false;
            break;
        case 1:
            if (end - p < 8)
                return false;
            p += 8;
            break;
        case 5:
            if (end - p < 4)
                return false;
            p += 4;
            break;
        case 2: {
            if (!rpc_wire_varint(&p, end, &v) || v > (uint64_t)(end - p))
                return false;
            const ProtobufCFieldDescriptor *fd =
                desc ? protobuf_c_message_descriptor_get_field(desc, field) : NULL;
            if (fd && fd->type == PROTOBUF_C_TYPE_STRING && !rpc_utf8_valid(p, (size_t)v))
                return false;
            if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE &&
                !rpc_wire_walk(fd->descriptor, p, p + v, depth + 1))
                return false;
            p += v;
            break;
        }
        default: /* groups (3, 4) do not exist in proto3; anything else is malformed */
            return false;
        }
    }
    return true;
}

base_result rpc_wire_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len)
{
    if (!rpc_wire_walk(desc, data, data + len, 0))
        return base_fail(BASE_ERR_INVALID,
                         "message has a malformed field, a NUL byte or invalid UTF-8 in a string");
    return BASE_OK_RESULT;
}
