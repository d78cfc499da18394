-- Point-in-time features and labels for served events: what a user's features were AS OF each
-- event, and whether the user bought within LABEL_WINDOW_S after it. Run by
-- offline_store/point_in_time.py, statement by statement, on one connection: the table below is
-- TEMPORARY, so it lives in that connection alone and goes with it.

-- 1. The served events, one row each (event ids deduplicated before they come here). `seq` is
-- the caller's index of the event, so the answer needs no string keys.
CREATE TEMPORARY TABLE served_events (
    seq        INT UNSIGNED NOT NULL,
    user_id    BIGINT       NOT NULL,
    event_time DATETIME(6)  NOT NULL,
    PRIMARY KEY (seq)
) ENGINE=InnoDB;

-- 2. Filled in chunks with executemany (a UTC DATETIME per event, like purchases.purchased_at).
INSERT INTO served_events (seq, user_id, event_time) VALUES (%s, %s, %s);

-- 3. One row per event whose label window has closed (event time + %(window_s)s seconds is no
-- later than %(closed_before)s), in `seq` order. Each of the user's purchases up to the end of
-- the event's label window is joined once (purchases_by_user_time serves the range), and then
-- plays one of two parts, decided by its time against the event's:
--   at or before the event: a feature input, exactly as features.sql computes user_features as of
--     a moment (the mean of the last three amounts, the count, the last purchase time);
--   after the event (within the window): the label only. It never reaches the features: every
--     feature aggregate below reads `is_past` rows alone, so nothing bought after the event leaks
--     into what the model is given about it.
-- An event whose user had bought nothing by then gets count 0 and NULLs (a cold-start user, as
-- serving sees them); an event with no purchase in its window gets label 0.
-- The temporary table is read once: MySQL (unlike MariaDB) cannot open a temporary table twice in
-- one query, and one pass is all the join needs.
SELECT
    seq,
    COUNT(CASE WHEN is_past = 1 THEN 1 END) AS purchase_count,
    AVG(CASE WHEN is_past = 1 AND past_rank <= 3 THEN amount END) AS mean_last_3_purchases,
    -- Seconds since the epoch, as offline_store/mysql.py reads user_features: TIMESTAMPDIFF does
    -- not depend on the session's time zone (UNIX_TIMESTAMP does).
    TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', MAX(CASE WHEN is_past = 1 THEN purchased_at END)) / 1e6
        AS last_purchase_at,
    COALESCE(MAX(is_past = 0), 0) AS label
FROM (
    SELECT
        e.seq,
        p.amount,
        p.purchased_at,
        p.purchased_at <= e.event_time AS is_past,
        -- Ranked within the event's past purchases and, apart from them, its window's: newest
        -- first, ties broken as features.sql breaks them.
        ROW_NUMBER() OVER (
            PARTITION BY e.seq, p.purchased_at <= e.event_time
            ORDER BY p.purchased_at DESC, p.purchase_id DESC
        ) AS past_rank
    FROM served_events AS e
    LEFT JOIN purchases AS p
        ON p.user_id = e.user_id
        AND p.purchased_at <= e.event_time + INTERVAL %(window_s)s SECOND
    WHERE e.event_time + INTERVAL %(window_s)s SECOND <= %(closed_before)s
) AS joined
GROUP BY seq
ORDER BY seq
