-- Recomputes user_features from purchases as of %(as_of)s (a UTC DATETIME).
-- Run inside one transaction after deleting the old rows, so readers see the old table or the
-- new one, never half of each.
INSERT INTO user_features
    (user_id, mean_last_3_purchases, purchase_count, last_purchase_at, computed_at)
SELECT
    user_id,
    AVG(CASE WHEN recency_rank <= 3 THEN amount END),
    COUNT(*),
    MAX(purchased_at),
    %(as_of)s
FROM (
    SELECT
        user_id,
        amount,
        purchased_at,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY purchased_at DESC, purchase_id DESC) AS recency_rank
    FROM purchases
    WHERE purchased_at <= %(as_of)s
) AS ranked
GROUP BY user_id
