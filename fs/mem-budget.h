/* mem-budget.h — the mount's memory budget (-o memory=SIZE): the buffers
 * of every copy job and of read-ahead together stay within it.
 *
 * A job reserves what its copy may use (copier/engine.h: `memory` for an
 * adaptive depth, requests × request size for a fixed pool) before it
 * starts and releases it when it ended; a job that does not fit waits
 * (fs/jobs.c queues it).  Read-ahead takes each chunk's bytes when it
 * allocates it and gives them back when it frees it; a chunk that does not
 * fit is not read ahead (the read goes direct).  A copy_file_range
 * (`cp` inside the mount, fs/copy-range.c) takes as many request buffers
 * as are free, at most its pool, and gives them back when it ended; it
 * never waits.  -o max_jobs=N also bounds how many jobs run at once.  All
 * functions are thread-safe.
 */
#ifndef IMGFS_MEM_BUDGET_H
#define IMGFS_MEM_BUDGET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEM_BUDGET_DEFAULT (512ull * 1024 * 1024)

/* Set the budget (0: MEM_BUDGET_DEFAULT) and the most jobs that may run at
 * once (0: no limit).  Called once at mount, before any job or reader. */
void mem_budget_configure(uint64_t total, unsigned max_jobs);
uint64_t mem_budget_total(void);

/* Whether a job needing `bytes` could start now (the budget and max_jobs
 * allow it).  When not, `why` (if not NULL) says what it waits for, e.g.
 * "memory: needs 16.0 MiB, 0 B of 32.0 MiB free (2 jobs running, 0 B
 * read-ahead)" or "max_jobs: 2 jobs running". */
bool mem_budget_job_fits(uint64_t bytes, char *why, size_t n);
/* Reserve `bytes` for a job that starts; false (nothing reserved, `why`
 * filled) when it does not fit. */
bool mem_budget_job_reserve(uint64_t bytes, char *why, size_t n);
/* Release what mem_budget_job_reserve reserved when the job ended. */
void mem_budget_job_release(uint64_t bytes);

/* Read-ahead: take `bytes` if they fit (true), give them back later. */
bool mem_budget_ra_take(uint64_t bytes);
void mem_budget_ra_give(uint64_t bytes);

/* copy_file_range: take as many `unit`-byte buffers as fit now, at most
 * `max_units`, and return how many (0: not even one fits; nothing taken).
 * Not a job: max_jobs does not apply and nothing is queued.  Give back
 * count × unit with mem_budget_range_give when the copy ended. */
unsigned mem_budget_range_take(uint64_t unit, unsigned max_units);
void mem_budget_range_give(uint64_t bytes);

/* The budget as it is now, and the most it ever held at once (peak: jobs,
 * copy_file_range and read-ahead together, since the mount started). */
struct mem_budget_usage {
    uint64_t total;             /* -o memory */
    uint64_t jobs, ranges, readahead;   /* bytes held by each */
    uint64_t peak;
    unsigned jobs_running;
};
void mem_budget_usage(struct mem_budget_usage *u);

#endif
