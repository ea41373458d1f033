/* pg_record.c: placeholder. */
