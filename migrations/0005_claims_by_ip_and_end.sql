-- The conflict check looks up, for each IP a recompute touched, the claims
-- on it whose certain window can overlap the new ones: those ending after the
-- earliest new start (a live claim's end is its subscription's horizon, read
-- as open here). Keyed by IP alone, an IP reused by scale-set NICs hour after
-- hour returned every claim it ever had, and the check grew with history
-- (14.8 million rows read over the 44 snapshots of the history benchmark).
-- With the end in the key, old claims stay in the index. Lookups by IP alone
-- use its first column.
DROP INDEX claims_by_ip;
CREATE INDEX claims_by_ip_end ON claims (
    ip,
    (CASE WHEN live THEN 'infinity'::timestamptz
          ELSE coalesce(upper(certain), 'infinity'::timestamptz) END)
);
