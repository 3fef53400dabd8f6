/* test-mem-budget.c — the mount's memory budget (fs/mem-budget.h): what
 * copy_file_range takes (as many buffers as fit, at most its pool, none
 * when not one fits), that jobs and read-ahead see it, and the peak. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "fs/mem-budget.h"

#define MiB (1024ull * 1024)

static void test_range_takes_what_is_free(void **state)
{
    (void)state;
    mem_budget_configure(32 * MiB, 0);
    assert_true(mem_budget_job_reserve(24 * MiB, NULL, 0));
    /* 8 MiB free: 8 of the 16 buffers asked for. */
    assert_int_equal(mem_budget_range_take(MiB, 16), 8);
    struct mem_budget_usage u;
    mem_budget_usage(&u);
    assert_int_equal(u.jobs, 24 * MiB);
    assert_int_equal(u.ranges, 8 * MiB);
    assert_int_equal(u.peak, 32 * MiB);
    /* Nothing free: none, and nothing counted. */
    assert_int_equal(mem_budget_range_take(MiB, 16), 0);
    mem_budget_usage(&u);
    assert_int_equal(u.ranges, 8 * MiB);
    /* A job and read-ahead see the copy's buffers. */
    char why[192];
    assert_false(mem_budget_job_fits(MiB, why, sizeof why));
    assert_non_null(strstr(why, "8.0 MiB copy_file_range"));
    assert_false(mem_budget_ra_take(MiB));
    mem_budget_range_give(8 * MiB);
    assert_true(mem_budget_ra_take(MiB));
    mem_budget_ra_give(MiB);
    mem_budget_job_release(24 * MiB);
    mem_budget_usage(&u);
    assert_int_equal(u.jobs + u.ranges + u.readahead, 0);
    assert_int_equal(u.peak, 32 * MiB);
}

static void test_range_at_most_its_pool(void **state)
{
    (void)state;
    mem_budget_configure(512 * MiB, 0);
    assert_int_equal(mem_budget_range_take(MiB, 16), 16);
    /* Less than one buffer free is none. */
    assert_int_equal(mem_budget_range_take(600 * MiB, 1), 0);
    /* max_jobs does not apply to a copy_file_range. */
    mem_budget_configure(512 * MiB, 1);
    assert_true(mem_budget_job_reserve(MiB, NULL, 0));
    assert_int_equal(mem_budget_range_take(MiB, 2), 2);
    mem_budget_range_give(18 * MiB);
    mem_budget_job_release(MiB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_takes_what_is_free),
        cmocka_unit_test(test_range_at_most_its_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
