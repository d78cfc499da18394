-- Recomputes user_features from purchases as of %(as_of)s (a UTC DATETIME), stamping the rows
-- with %(changed_seq)s. The one definition of the features, run two ways (offline_store/feature_sql.py):
-- - the loader's full rebuild: every user, after deleting every row, stamped 0;
-- - the purchase sink's refresh: {only_users} narrows it to the users whose purchases just came
--   in, after deleting their rows, stamped with the refresh's change number.
-- Either runs inside one transaction, so readers see the old rows or the new ones, never half of each.
INSERT INTO user_features
    (user_id, mean_last_3_purchases, purchase_count, last_purchase_at, computed_at, changed_seq)
SELECT
    user_id,
    AVG(CASE WHEN recency_rank <= 3 THEN amount END),
    COUNT(*),
    MAX(purchased_at),
    %(as_of)s,
    %(changed_seq)s
FROM (
    SELECT
        user_id,
        amount,
        purchased_at,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY purchased_at DESC, purchase_id DESC) AS recency_rank
    FROM purchases
    WHERE purchased_at <= %(as_of)s {only_users}
) AS ranked
GROUP BY user_id
