-- Runs once, when the frankli-db volume is first created (docker-entrypoint-initdb.d).
-- POSTGRES_DB (default: frankli) holds the Frankli tables; this second database holds the
-- sync's staging snapshots and delta links (connection frankli_staging), shared by all workers.
CREATE DATABASE frankli_staging;
