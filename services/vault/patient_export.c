/* One patient's records as one FHIR R4 Bundle (patient_export.h). */
#include "patient_export.h"

#include "crypto/crypto.h"
#include "fhir.h"
#include "model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a malloc allocator that wipes what it frees (the unpacked messages hold PHI) -------------------- */

typedef union wipe_header {
    size_t size;
    max_align_t align;
} wipe_header;

static void *wipe_alloc(void *data, size_t size)
{
    (void)data;
    if (size > SIZE_MAX - sizeof(wipe_header))
        return NULL;
    wipe_header *h = malloc(sizeof *h + size);
    if (!h)
        return NULL;
    h->size = size;
    return h + 1;
}

static void wipe_free(void *data, void *p)
{
    (void)data;
    if (!p)
        return;
    wipe_header *h = (wipe_header *)p - 1;
    acrypto_wipe(p, h->size);
    free(h);
}

static ProtobufCAllocator wiping_allocator = {.alloc = wipe_alloc, .free = wipe_free, .allocator_data = NULL};

/* ---- reading ------------------------------------------------------------------------------------------ */

/* Everything held about the patient, decrypted: the latest patient record and every item's latest version
 * (the parts are acrypto secrets, wiped when cleared). */
typedef struct export_data {
    vault_record patient;
    vault_record *items;
    size_t n_items;
} export_data;

static void export_data_clear(export_data *d)
{
    vault_record_clear(&d->patient);
    vault_records_free(d->items, d->n_items);
    d->items = NULL;
    d->n_items = 0;
}

static base_result export_read(vault_store *s, const char *tenant_id, const char *patient_ref, export_data *d)
{
    BASE_GUARD(vault_store_get(s, tenant_id, patient_ref, 0, VAULT_ALL_CATEGORIES, &d->patient));
    char after[VAULT_ID_BUF] = "";
    for (;;) {
        vault_record *page = NULL;
        size_t n = 0;
        bool more = false;
        BASE_GUARD(vault_store_list(s, tenant_id, patient_ref, 0, after, VAULT_EXPORT_PAGE,
                                    VAULT_ALL_CATEGORIES, &page, &n, &more));
        if (d->n_items + n > VAULT_EXPORT_MAX_ITEMS) {
            vault_records_free(page, n);
            return base_fail(BASE_ERR_LIMIT, "the patient has more than 20000 items: export in parts");
        }
        vault_record *grown = realloc(d->items, (d->n_items + n + 1) * sizeof *grown);
        if (!grown) {
            vault_records_free(page, n);
            return base_fail(BASE_ERR_NOMEM, "out of memory");
        }
        d->items = grown;
        memcpy(d->items + d->n_items, page, n * sizeof *page); /* moves the parts' ownership */
        d->n_items += n;
        if (n)
            snprintf(after, sizeof after, "%s", page[n - 1].record_id);
        free(page);
        if (!more)
            break;
    }
    return BASE_OK_RESULT;
}

/* ---- the Bundle --------------------------------------------------------------------------------------- */

base_result vault_patient_bundle(vault_store *s, const char *tenant_id, const char *patient_ref,
                                 int64_t now_us, const char *bundle_id, char **ret_json, size_t *ret_len,
                                 uint32_t *ret_resources, unsigned *ret_categories, size_t *ret_items)
{
    BASE_ENSURE(s && ret_json && ret_len, BASE_ERR_INVALID, "vault export: missing");
    export_data d = {0};
    Alma__Vault__V1__Patient *patient = NULL;
    vault_fhir_item *items = NULL;
    size_t unpacked = 0;
    base_result r = export_read(s, tenant_id, patient_ref, &d);
    if (base_is_ok(r))
        r = vault_patient_unpack(&d.patient, &wiping_allocator, &patient);
    if (base_is_ok(r) && d.n_items) {
        items = calloc(d.n_items, sizeof *items);
        if (!items)
            r = base_fail(BASE_ERR_NOMEM, "out of memory");
    }
    unsigned categories = d.patient.categories;
    for (size_t i = 0; i < d.n_items && base_is_ok(r); i++) {
        Alma__Vault__V1__Item *item = NULL;
        r = vault_item_unpack(&d.items[i], &wiping_allocator, &item);
        items[i] = (vault_fhir_item){.record_id = d.items[i].record_id,
                                     .version = d.items[i].version,
                                     .updated_us = d.items[i].created_us,
                                     .item = item};
        unpacked = i + 1;
        categories |= d.items[i].categories;
    }
    char *json = NULL;
    size_t json_len = 0;
    uint32_t resources = 0;
    if (base_is_ok(r)) {
        vault_fhir_input in = {.tenant_id = tenant_id,
                               .patient_ref = patient_ref,
                               .patient_version = d.patient.version,
                               .patient_updated_us = d.patient.created_us,
                               .patient = patient,
                               .items = items,
                               .item_count = d.n_items,
                               .now_us = now_us,
                               .bundle_id = bundle_id};
        r = vault_fhir_bundle(&in, &json, &json_len, &resources);
    }
    size_t n_items = d.n_items;
    for (size_t i = 0; i < unpacked; i++) {
        if (items[i].item)
            alma__vault__v1__item__free_unpacked((Alma__Vault__V1__Item *)items[i].item, &wiping_allocator);
    }
    free(items);
    if (patient)
        alma__vault__v1__patient__free_unpacked(patient, &wiping_allocator);
    export_data_clear(&d);
    if (!base_is_ok(r))
        return r;
    *ret_json = json;
    *ret_len = json_len;
    if (ret_resources)
        *ret_resources = resources;
    if (ret_categories)
        *ret_categories = categories;
    if (ret_items)
        *ret_items = n_items;
    return BASE_OK_RESULT;
}
