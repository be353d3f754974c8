-- Live runs are found by subscription (through `nics`), never through this
-- index by NIC key, which every run insert paid for (a btree over
-- 150-character keys, about 4 microseconds a row).
DROP INDEX observations_live;
