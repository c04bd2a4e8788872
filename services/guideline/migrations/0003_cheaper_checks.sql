-- The same id rules, cheaper to check. PostgreSQL's regular-expression engine builds its automaton for
-- each match, and a bounded repetition ({32}, {1,62}) multiplies its states: the eight checks of a review
-- row cost ≈ 17 µs of the ≈ 30 µs of a plain INSERT of one row (measured with 100,000 rows), ≈ 19 % of
-- PostgreSQL's CPU under bench/guideline.sh. Each rule below is the 0001 rule split into a length test and
-- an unbounded pattern: the patterns only admit ASCII, so octet_length is the length in characters, and the
-- pair admits exactly the strings the old pattern did. Names are kept. Adding a constraint checks the rows
-- already stored (they pass: the old rules held them to the same shapes).
ALTER TABLE reviews
    DROP CONSTRAINT reviews_review_id_check,
    ADD CONSTRAINT reviews_review_id_check
        CHECK (octet_length(review_id) = 35 AND review_id ~ '^rv_[0-9a-f]+$'),
    DROP CONSTRAINT reviews_tenant_id_check,
    ADD CONSTRAINT reviews_tenant_id_check
        CHECK (octet_length(tenant_id) BETWEEN 2 AND 63 AND tenant_id ~ '^[a-z0-9][a-z0-9-]*$'),
    DROP CONSTRAINT reviews_referral_id_check,
    ADD CONSTRAINT reviews_referral_id_check
        CHECK (octet_length(referral_id) BETWEEN 1 AND 64 AND referral_id ~ '^[A-Za-z0-9_-]+$'),
    DROP CONSTRAINT reviews_patient_ref_check,
    ADD CONSTRAINT reviews_patient_ref_check
        CHECK (octet_length(patient_ref) = 35 AND patient_ref ~ '^pt_[0-9a-f]+$'),
    DROP CONSTRAINT reviews_pathway_id_check,
    ADD CONSTRAINT reviews_pathway_id_check
        CHECK (octet_length(pathway_id) <= 64 AND pathway_id ~ '^([a-z0-9][a-z0-9_-]*)?$'),
    DROP CONSTRAINT reviews_rule_id_check,
    ADD CONSTRAINT reviews_rule_id_check
        CHECK (octet_length(rule_id) <= 64 AND rule_id ~ '^([a-z0-9][a-z0-9_-]*)?$'),
    DROP CONSTRAINT reviews_engine_version_check,
    ADD CONSTRAINT reviews_engine_version_check
        CHECK (octet_length(engine_version) BETWEEN 1 AND 32
               AND engine_version ~ '^[A-Za-z0-9][A-Za-z0-9._/+-]*$'),
    DROP CONSTRAINT reviews_input_hash_check,
    ADD CONSTRAINT reviews_input_hash_check
        CHECK (octet_length(input_hash) = 64 AND input_hash ~ '^[0-9a-f]+$');

ALTER TABLE decisions
    DROP CONSTRAINT decisions_decision_id_check,
    ADD CONSTRAINT decisions_decision_id_check
        CHECK (octet_length(decision_id) = 35 AND decision_id ~ '^dn_[0-9a-f]+$'),
    DROP CONSTRAINT decisions_tenant_id_check,
    ADD CONSTRAINT decisions_tenant_id_check
        CHECK (octet_length(tenant_id) BETWEEN 2 AND 63 AND tenant_id ~ '^[a-z0-9][a-z0-9-]*$');
