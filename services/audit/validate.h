/* Validation of audit events before anything is stored: a pure function, no I/O.
 *
 * The RPC runtime has already rejected strings with a NUL byte or invalid UTF-8 and requests over the
 * size limit. What is checked here is the meaning: required fields, lengths, enum ranges, the per-action
 * rules (a disclosure names its recipient, basis and PHI categories; a recommendation names its guideline),
 * and that a patient appears only as a pseudonymous reference. Messages name the field and the rule,
 * never the value (a value may be PHI sent by mistake). */
#ifndef ALMA_AUDIT_VALIDATE_H
#define ALMA_AUDIT_VALIDATE_H

#include "audit/v1/audit.pb-c.h"
#include "base/result.h"

#define AUDIT_MAX_ID            128 /* tenant, principal, resource and request ids */
#define AUDIT_MAX_TENANT        64
#define AUDIT_MAX_ROLES         16
#define AUDIT_MAX_ROLE          64
#define AUDIT_MAX_RESOURCE_TYPE 64
#define AUDIT_MAX_DETAILS       16
#define AUDIT_MAX_DETAIL_KEY    32
#define AUDIT_MAX_DETAIL_VALUE  256
#define AUDIT_MAX_TEXT          512 /* recipient name/address, PHI description, guideline source */
#define AUDIT_MAX_BATCH         500

/* BASE_ERR_INVALID with a message such as "event.recipient.name is required for ACTION_DISCLOSE". */
BASE_MUST_USE base_result audit_validate_event(const Alma__Audit__V1__EventInput *ev);

/* True for "pt_" followed by exactly 32 lowercase hex digits. */
bool audit_is_patient_ref(const char *s);

/* Whether §164.528(a)(1) excludes disclosures made on this basis from an accounting. */
bool audit_basis_excluded_from_accounting(Alma__Audit__V1__DisclosureBasis basis);

#endif
