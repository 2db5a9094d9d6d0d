-- Tributary schema for MySQL 8 / MariaDB 10.11, version 2.
-- Version 2 added key_stats, audit_log and two history indexes on messages (applying the schema
-- upgrades v1: `init-db` creates missing tables, then missing indexes).
-- Applied idempotently by `flask --app wsgi init-db` (every statement is IF NOT EXISTS).
-- engine/schema.py mirrors these tables for SQLAlchemy; tests/test_schema.py checks they agree.
-- Identifiers (user ids, msg ids, stream ids) use a binary collation: "Abc" and "abc" differ,
-- exactly as they do in Redis and in the clients.

CREATE TABLE IF NOT EXISTS schema_version (
  id TINYINT NOT NULL,
  version INT NOT NULL,
  applied_at DATETIME(3) NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS users (
  id BIGINT NOT NULL AUTO_INCREMENT,
  username VARCHAR(64) NOT NULL,
  password_hash VARCHAR(255) NOT NULL,
  role VARCHAR(16) NOT NULL DEFAULT 'user',
  disabled BOOLEAN NOT NULL DEFAULT FALSE,
  created_at DATETIME(3) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_users_username (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per message. (user_id, msg_id) makes every redelivery a no-op; `id` grows in commit
-- order, and within a user that is stream order.
CREATE TABLE IF NOT EXISTS messages (
  id BIGINT NOT NULL AUTO_INCREMENT,
  user_id VARCHAR(64) NOT NULL,
  msg_id VARCHAR(64) NOT NULL,
  message TEXT NOT NULL,
  value DOUBLE NULL,
  `key` VARCHAR(255) NULL,
  `timestamp` DATETIME(3) NOT NULL,
  received_at DATETIME(3) NOT NULL,
  stream_id VARCHAR(41) NOT NULL,
  committed_at DATETIME(6) NOT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_messages_user_msg (user_id, msg_id),
  KEY ix_messages_user_time (user_id, `timestamp`),
  KEY ix_messages_time (`timestamp`),
  KEY ix_messages_user_key_time (user_id, `key`, `timestamp`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Per-user aggregates, maintained by the engine in the same transaction as the rows. They
-- always equal COUNT(*), COUNT(value), SUM/AVG/MIN/MAX(value), MIN/MAX(received_at) over
-- messages GROUP BY user_id.
CREATE TABLE IF NOT EXISTS user_stats (
  user_id VARCHAR(64) NOT NULL,
  message_count BIGINT NOT NULL,
  value_count BIGINT NOT NULL,
  value_sum DOUBLE NULL,
  value_min DOUBLE NULL,
  value_max DOUBLE NULL,
  value_avg DOUBLE AS (value_sum / NULLIF(value_count, 0)) VIRTUAL,
  first_seen DATETIME(3) NOT NULL,
  last_seen DATETIME(3) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Per-(user, key) aggregates of the messages that carry a `key`, maintained like user_stats in
-- the same transaction as the rows: they always equal the same figures computed with
-- GROUP BY user_id, `key` over messages (keys compare with the table's collation, as GROUP BY
-- does).
CREATE TABLE IF NOT EXISTS key_stats (
  user_id VARCHAR(64) NOT NULL,
  `key` VARCHAR(255) NOT NULL,
  message_count BIGINT NOT NULL,
  value_count BIGINT NOT NULL,
  value_sum DOUBLE NULL,
  value_min DOUBLE NULL,
  value_max DOUBLE NULL,
  value_avg DOUBLE AS (value_sum / NULLIF(value_count, 0)) VIRTUAL,
  first_seen DATETIME(3) NOT NULL,
  last_seen DATETIME(3) NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (user_id, `key`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- One row per operator action (replay, delete, purge, pause, resume, disable, role change,
-- token revocation…): who did what to which object, when, and how it ended.
CREATE TABLE IF NOT EXISTS audit_log (
  id BIGINT NOT NULL AUTO_INCREMENT,
  at DATETIME(3) NOT NULL,
  actor VARCHAR(64) NOT NULL,
  action VARCHAR(32) NOT NULL,
  target VARCHAR(255) NOT NULL,
  outcome VARCHAR(16) NOT NULL,
  detail TEXT NULL,
  address VARCHAR(64) NULL,
  PRIMARY KEY (id),
  KEY ix_audit_log_at (at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Entries the database refused MAX_DELIVERIES times, with the raw stream payload and the last
-- error. `flask --app wsgi replay-dead-letters` puts them back into their user's stream.
CREATE TABLE IF NOT EXISTS dead_letters (
  id BIGINT NOT NULL AUTO_INCREMENT,
  user_id VARCHAR(64) NOT NULL,
  stream_id VARCHAR(41) NOT NULL,
  msg_id VARCHAR(64) NULL,
  payload MEDIUMTEXT NOT NULL,
  error TEXT NOT NULL,
  attempts INT NOT NULL,
  created_at DATETIME(3) NOT NULL,
  replayed_at DATETIME(3) NULL,
  PRIMARY KEY (id),
  UNIQUE KEY uq_dead_letters_entry (user_id, stream_id),
  KEY ix_dead_letters_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
