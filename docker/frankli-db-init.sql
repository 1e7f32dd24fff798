-- Runs once, when the frankli-db volume is first created (docker-entrypoint-initdb.d).
-- POSTGRES_DB (default: frankli) holds tenant contoso's Frankli tables; frankli_fabrikam holds
-- tenant fabrikam's (connection frankli_fabrikam). frankli_staging holds the sync's staging
-- snapshots and delta links of every tenant (connection frankli_staging), shared by all workers.
CREATE DATABASE frankli_fabrikam;
CREATE DATABASE frankli_staging;
