-- Offline store schema. Applied by `python -m offline_store.loader`; safe to run again.

-- Every purchase we know of, one row each. The loader fills it with synthetic history.
CREATE TABLE IF NOT EXISTS purchases (
    purchase_id  BIGINT        NOT NULL AUTO_INCREMENT,
    user_id      BIGINT        NOT NULL,
    amount       DECIMAL(12,2) NOT NULL,
    purchased_at DATETIME(6)   NOT NULL,
    PRIMARY KEY (purchase_id),
    -- Serves the "last three purchases of each user" window in the feature query.
    KEY purchases_by_user_time (user_id, purchased_at)
) ENGINE=InnoDB;

-- Per-user features, computed from `purchases` in SQL (see features.sql) and looked up by the
-- service once per batch. A user with no row here is a cold-start user. The last purchase is
-- kept as a moment, not an age: the age is taken against each event's own timestamp.
CREATE TABLE IF NOT EXISTS user_features (
    user_id                  BIGINT      NOT NULL,
    mean_last_3_purchases    DOUBLE      NOT NULL,
    purchase_count           INT         NOT NULL,
    last_purchase_at         DATETIME(6) NOT NULL,
    computed_at              DATETIME(6) NOT NULL,
    PRIMARY KEY (user_id)
) ENGINE=InnoDB;

-- One row: a number the loader bumps in the same transaction that rebuilds user_features, so
-- a service caching features notices a rebuilt store within seconds (offline_store/cache.py).
CREATE TABLE IF NOT EXISTS feature_set (
    id         TINYINT     NOT NULL,
    version    BIGINT      NOT NULL,
    built_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (id)
) ENGINE=InnoDB;
