/* pg_spm.c: placeholder, filled in by the issue-3 work. */
