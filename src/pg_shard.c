/* pg_shard.c: placeholder, filled in by the issue-3 work. */
