/* mem-budget.c — the mount's memory budget.  See mem-budget.h. */
#include "mem-budget.h"

#include <pthread.h>
#include <stdio.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t total = MEM_BUDGET_DEFAULT;
static unsigned max_jobs;
static uint64_t jobs_bytes, ra_bytes, range_bytes;
static uint64_t peak;
static unsigned jobs_running;

/* Under the lock: what is held now, and remember the most. */
static uint64_t used_locked(void)
{
    return jobs_bytes + ra_bytes + range_bytes;
}

static void note_peak_locked(void)
{
    if (used_locked() > peak)
        peak = used_locked();
}

void mem_budget_configure(uint64_t t, unsigned mj)
{
    pthread_mutex_lock(&lock);
    total = t ? t : MEM_BUDGET_DEFAULT;
    max_jobs = mj;
    pthread_mutex_unlock(&lock);
}

uint64_t mem_budget_total(void)
{
    pthread_mutex_lock(&lock);
    uint64_t t = total;
    pthread_mutex_unlock(&lock);
    return t;
}

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

/* Under the lock. */
static bool fits_locked(uint64_t bytes, char *why, size_t n)
{
    if (max_jobs && jobs_running >= max_jobs) {
        if (why)
            snprintf(why, n, "max_jobs: %u jobs running", jobs_running);
        return false;
    }
    uint64_t used = used_locked();
    if (used <= total && bytes <= total - used)
        return true;
    if (why && range_bytes)
        snprintf(why, n, "memory: needs %.1f MiB, %.1f MiB of %.1f MiB free "
                 "(%u jobs running, %.1f MiB copy_file_range, %.1f MiB "
                 "read-ahead)", mib(bytes),
                 used < total ? mib(total - used) : 0.0, mib(total),
                 jobs_running, mib(range_bytes), mib(ra_bytes));
    else if (why)
        snprintf(why, n, "memory: needs %.1f MiB, %.1f MiB of %.1f MiB free "
                 "(%u jobs running, %.1f MiB read-ahead)", mib(bytes),
                 used < total ? mib(total - used) : 0.0, mib(total),
                 jobs_running, mib(ra_bytes));
    return false;
}

bool mem_budget_job_fits(uint64_t bytes, char *why, size_t n)
{
    pthread_mutex_lock(&lock);
    bool ok = fits_locked(bytes, why, n);
    pthread_mutex_unlock(&lock);
    return ok;
}

bool mem_budget_job_reserve(uint64_t bytes, char *why, size_t n)
{
    pthread_mutex_lock(&lock);
    bool ok = fits_locked(bytes, why, n);
    if (ok) {
        jobs_bytes += bytes;
        jobs_running++;
        note_peak_locked();
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

void mem_budget_job_release(uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    jobs_bytes -= bytes <= jobs_bytes ? bytes : jobs_bytes;
    if (jobs_running)
        jobs_running--;
    pthread_mutex_unlock(&lock);
}

bool mem_budget_ra_take(uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    uint64_t used = used_locked();
    bool ok = used <= total && bytes <= total - used;
    if (ok) {
        ra_bytes += bytes;
        note_peak_locked();
    }
    pthread_mutex_unlock(&lock);
    return ok;
}

void mem_budget_ra_give(uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    ra_bytes -= bytes <= ra_bytes ? bytes : ra_bytes;
    pthread_mutex_unlock(&lock);
}

unsigned mem_budget_range_take(uint64_t unit, unsigned max_units)
{
    if (unit == 0)
        return 0;
    pthread_mutex_lock(&lock);
    uint64_t used = used_locked();
    uint64_t fit = used < total ? (total - used) / unit : 0;
    unsigned k = fit < max_units ? (unsigned)fit : max_units;
    range_bytes += k * unit;
    note_peak_locked();
    pthread_mutex_unlock(&lock);
    return k;
}

void mem_budget_range_give(uint64_t bytes)
{
    pthread_mutex_lock(&lock);
    range_bytes -= bytes <= range_bytes ? bytes : range_bytes;
    pthread_mutex_unlock(&lock);
}

void mem_budget_usage(struct mem_budget_usage *u)
{
    pthread_mutex_lock(&lock);
    *u = (struct mem_budget_usage){ .total = total, .jobs = jobs_bytes,
                                    .ranges = range_bytes,
                                    .readahead = ra_bytes, .peak = peak,
                                    .jobs_running = jobs_running };
    pthread_mutex_unlock(&lock);
}
