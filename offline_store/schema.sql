-- Offline store schema. Applied by `python -m offline_store.loader`; safe to run again. Tables
-- made by an older schema get the columns added since (offline_store/migrations.py).

-- Every purchase we know of, one row each. The loader fills it with synthetic history; the
-- purchase sink (python -m offline_store.purchase_sink) adds the purchases streamed on PURCHASES_TOPIC.
CREATE TABLE IF NOT EXISTS purchases (
    purchase_id  BIGINT        NOT NULL AUTO_INCREMENT,
    -- The stream's own id of the purchase, unique, so a replayed or repeated record is never a
    -- second row; NULL for the loader's synthetic history. Bytes (the id's UTF-8, up to 256
    -- characters of 4 bytes), not a VARCHAR: a text collation would take "P-1" and "p-1", or
    -- "p-1" and "p-1 ", for the same purchase.
    purchase_ref VARBINARY(1024) NULL,
    user_id      BIGINT        NOT NULL,
    amount       DECIMAL(12,2) NOT NULL,
    purchased_at DATETIME(6)   NOT NULL,
    PRIMARY KEY (purchase_id),
    UNIQUE KEY purchases_by_ref (purchase_ref),
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
    -- The feature_set.change_seq of the refresh that last wrote the row; 0 when a full rebuild
    -- wrote it. The service asks for the rows past the last number it saw (offline_store/cache.py).
    changed_seq              BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id),
    KEY user_features_by_change (changed_seq)
) ENGINE=InnoDB;

-- One row: a number the loader bumps in the same transaction that rebuilds user_features, so
-- a service caching features notices a rebuilt store within seconds (offline_store/cache.py).
-- `change_seq` counts the refreshes of a few users' rows by the purchase sink. Both writers
-- update this row first in their transaction: its lock orders them, so a rebuild and a refresh
-- never interleave, and refreshes commit in the order of their numbers.
CREATE TABLE IF NOT EXISTS feature_set (
    id         TINYINT     NOT NULL,
    version    BIGINT      NOT NULL,
    built_at   DATETIME(6) NOT NULL,
    change_seq BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (id)
) ENGINE=InnoDB;
