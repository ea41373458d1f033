/* pg_ops_cpu.h: the CPU reference op table, private to the engine module: an op of this table
 * finds its engine through pg_engine_of, so the table is only valid as the first member of an
 * engine made by pg_engine_cpu (pg_engine.h). */
#ifndef PG_OPS_CPU_H
#define PG_OPS_CPU_H

#include "pg_ops.h"

/* The table, running each op on nthreads threads (0 = online CPUs). */
pg_ops pg_ops_cpu_table(int nthreads);
/* Fill the optimizer entries of a CPU table (pg_ops_optim.c). */
void pg_ops_cpu_optim(pg_ops *o);

#endif
