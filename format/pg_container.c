/* pg_container.c: placeholder. */
