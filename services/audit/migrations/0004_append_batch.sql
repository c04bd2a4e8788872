-- One round trip per group commit: the appender calls append_batch() as a single autocommitted statement,
-- which takes the log's advisory lock, checks that the log ends where the appender's in-memory frontier
-- ends, and inserts the batch's rows and the subtree hashes they close. Under READ COMMITTED each statement
-- of the function sees what was committed before it ran, so max(seq) is read after the lock is held.
-- Returns the number of events inserted, or -(next seq) - 1 when another replica appended first (nothing is
-- inserted then: the caller folds the missing leaves into its frontier and calls again).
CREATE FUNCTION append_batch(lock_key bigint, expected_next bigint, logged_micros bigint,
                             seqs bigint[], tenants text[], actions smallint[], purposes smallint[],
                             outcomes smallint[], patients text[], actors text[], entries text[],
                             leaves text[], st_levels smallint[], st_idxs bigint[], st_hashes text[])
RETURNS bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    next_seq bigint;
    inserted bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT coalesce(max(seq) + 1, 0) INTO next_seq FROM events;
    IF next_seq <> expected_next THEN
        RETURN -next_seq - 1;
    END IF;
    INSERT INTO events (seq, tenant_id, logged_at, action, purpose, outcome, patient_ref, actor_id, entry,
                        leaf_hash)
    SELECT u.s, u.t, timestamptz 'epoch' + logged_micros * interval '1 microsecond', u.a, u.p, u.o, u.pr, u.ac,
           decode(u.e, 'hex'), decode(u.h, 'hex')
    FROM unnest(seqs, tenants, actions, purposes, outcomes, patients, actors, entries, leaves)
         AS u(s, t, a, p, o, pr, ac, e, h);
    GET DIAGNOSTICS inserted = ROW_COUNT;
    INSERT INTO subtrees (level, idx, hash)
    SELECT v.l, v.i, decode(v.h, 'hex') FROM unnest(st_levels, st_idxs, st_hashes) AS v(l, i, h);
    RETURN inserted;
END;
$$;
