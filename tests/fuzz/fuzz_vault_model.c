/* libFuzzer target for the vault's input-facing model code: arbitrary bytes that pass the server's wire
 * check (rpc_wire_check_strings), decoded as a PutItemRequest or a CreatePatientRequest, then validated
 * (model.c); what validates is packed into its parts, unpacked again from a record as the store returns it,
 * and exported as a FHIR Bundle (fhir.c). Checks: no crash, no leak, no sanitizer report; a valid input
 * round-trips through its parts to a fixed point that
 * still validates. */
#include "fhir.h"
#include "model.h"
#include "rpc/rpc.h"
#include "store.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define NOW_S INT64_C(1795000000) /* a fixed "today" (2026-11): validation must not depend on the clock */

static void record_of(const vault_parts *parts, int kind, vault_record *r)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->version = 1;
    for (int c = 1; c <= VAULT_CATEGORY_MAX; c++)
        if (parts->data[c]) {
            if (!base_is_ok(acrypto_secret_from_bytes(parts->data[c], parts->len[c], &r->parts[c])))
                abort();
            r->categories |= VAULT_CATEGORY_BIT(c);
        }
}

static void item(const uint8_t *data, size_t size)
{
    /* What the server does before any handler sees a request (NUL or bad UTF-8 in a string field). */
    if (!base_is_ok(rpc_wire_check_strings(&alma__vault__v1__put_item_request__descriptor, data, size)))
        return;
    Alma__Vault__V1__PutItemRequest *req = alma__vault__v1__put_item_request__unpack(NULL, size, data);
    if (!req)
        return;
    if (req->item && base_is_ok(vault_validate_item(req->item, NOW_S))) {
        vault_parts parts;
        if (!base_is_ok(vault_item_pack(req->item, &parts)))
            abort(); /* a valid item always packs */
        vault_record r;
        record_of(&parts, vault_item_kind(req->item), &r);
        Alma__Vault__V1__Item *back = NULL;
        if (!base_is_ok(vault_item_unpack(&r, NULL, &back)) || !back)
            abort(); /* and always comes back */
        size_t a = alma__vault__v1__item__get_packed_size(req->item);
        size_t b = alma__vault__v1__item__get_packed_size(back);
        if (a != b)
            abort();
        vault_fhir_item fi = {.record_id = "it_0123456789abcdef0123456789abcdef",
                              .version = 1,
                              .updated_us = NOW_S * 1000000,
                              .item = back};
        Alma__Vault__V1__Patient p = ALMA__VAULT__V1__PATIENT__INIT;
        vault_fhir_input in = {.tenant_id = "fuzz-clinic",
                               .patient_ref = "pt_0123456789abcdef0123456789abcdef",
                               .patient_version = 1,
                               .patient_updated_us = NOW_S * 1000000,
                               .patient = &p,
                               .items = &fi,
                               .item_count = 1,
                               .now_us = NOW_S * 1000000,
                               .bundle_id = "ex_1"};
        char *json = NULL;
        size_t len = 0;
        uint32_t n = 0;
        if (base_is_ok(vault_fhir_bundle(&in, &json, &len, &n)))
            free(json);
        alma__vault__v1__item__free_unpacked(back, NULL);
        vault_record_clear(&r);
        vault_parts_free(&parts);
    }
    alma__vault__v1__put_item_request__free_unpacked(req, NULL);
}

static void patient(const uint8_t *data, size_t size)
{
    if (!base_is_ok(rpc_wire_check_strings(&alma__vault__v1__create_patient_request__descriptor, data, size)))
        return;
    Alma__Vault__V1__CreatePatientRequest *req =
        alma__vault__v1__create_patient_request__unpack(NULL, size, data);
    if (!req)
        return;
    if (req->patient && base_is_ok(vault_validate_patient(req->patient, NOW_S))) {
        vault_parts parts;
        if (!base_is_ok(vault_patient_pack(req->patient, &parts)))
            abort();
        vault_blind_buf *blind = malloc(sizeof *blind);
        if (!blind || !base_is_ok(vault_blind_values(req->patient, blind)))
            abort();
        vault_blind_buf_wipe(blind);
        free(blind);
        vault_record r;
        record_of(&parts, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, &r);
        Alma__Vault__V1__Patient *back = NULL;
        if (!base_is_ok(vault_patient_unpack(&r, NULL, &back)) || !back)
            abort();
        /* Packing may normalise (an empty contact is not stored), so the check is that what comes back is a
         * fixed point: it validates, and packs and unpacks to itself. */
        if (!base_is_ok(vault_validate_patient(back, NOW_S)))
            abort();
        vault_parts parts2;
        if (!base_is_ok(vault_patient_pack(back, &parts2)))
            abort();
        vault_record r2;
        record_of(&parts2, ALMA__VAULT__V1__RECORD_KIND__RECORD_KIND_PATIENT, &r2);
        Alma__Vault__V1__Patient *again = NULL;
        if (!base_is_ok(vault_patient_unpack(&r2, NULL, &again)) || !again)
            abort();
        if (alma__vault__v1__patient__get_packed_size(back) !=
            alma__vault__v1__patient__get_packed_size(again))
            abort();
        alma__vault__v1__patient__free_unpacked(again, NULL);
        vault_record_clear(&r2);
        vault_parts_free(&parts2);
        alma__vault__v1__patient__free_unpacked(back, NULL);
        vault_record_clear(&r);
        vault_parts_free(&parts);
    }
    alma__vault__v1__create_patient_request__free_unpacked(req, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    /* The first byte picks the message, so one corpus explores both. */
    if (data[0] & 1)
        item(data + 1, size - 1);
    else
        patient(data + 1, size - 1);
    return 0;
}
