/* pg_safetensors.c: placeholder. */
