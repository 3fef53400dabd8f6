/* Unit tests of the status text of mount jobs (fs/jobs.c,
 * job_status_text_locked: what control/NAME.status shows), checked field
 * by field and in order for each state a job can be in:
 *  - queued (a job file being written, or a start being decided): no
 *    bytes, no rate, no eta, no error;
 *  - running: bytes, watermark, a rate from bytes over elapsed time and
 *    an eta that is the bytes left at that rate;
 *  - done: bytes equal to the total, rate over the whole run, no eta;
 *  - failed: the watermark to resume from and the error;
 *  - cancelled;
 *  - interrupted (found in the state directory at mount) with its
 *    watermark and why;
 *  - resumed: resumed-from right after the watermark.
 * No FUSE session and no loop: the job is a struct filled by the test
 * (no copy job attached, so the figures are the job's own). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/fs.h"

#define MiB (1024ull * 1024)
#define SEC 1000000000ull

static struct imgfs fs;

static int setup(void **state)
{
    (void)state;
    memset(&fs, 0, sizeof fs);
    pthread_mutex_init(&fs.jobs_lock, NULL);
    pthread_mutex_init(&fs.tree_lock, NULL);
    fs_global = &fs;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pthread_mutex_destroy(&fs.jobs_lock);
    pthread_mutex_destroy(&fs.tree_lock);
    fs_global = NULL;
    return 0;
}

static struct job *job_new(enum job_state st)
{
    struct job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->name = (char *)"deploy";
    j->state = st;
    snprintf(j->source, sizeof j->source, "tpl/debian-12.qcow2");
    snprintf(j->target, sizeof j->target, "lun0");
    return j;
}

/* The status text as (key, value) pairs in order. */
struct fields {
    char *text;
    const char *key[32], *val[32];
    size_t n;
};

static void parse(struct job *j, struct fields *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_lock(&fs.jobs_lock);
    f->text = job_status_text_locked(j);
    pthread_mutex_unlock(&fs.jobs_lock);
    assert_non_null(f->text);
    assert_true(strlen(f->text) > 0);
    assert_int_equal(f->text[strlen(f->text) - 1], '\n');
    for (char *save = NULL, *line = strtok_r(f->text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *sep = strstr(line, ": ");
        if (!sep)
            fail_msg("status line without 'key: value': '%s'", line);
        assert_true(f->n < 32);
        *sep = '\0';
        f->key[f->n] = line;
        f->val[f->n] = sep + 2;
        f->n++;
    }
}

static const char *get(const struct fields *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->key[i], key))
            return f->val[i];
    return NULL;
}

static void expect(const struct fields *f, const char *key, const char *want)
{
    const char *got = get(f, key);
    if (!got)
        fail_msg("no '%s' line", key);
    if (strcmp(got, want))
        fail_msg("%s: '%s', expected '%s'", key, got, want);
}

/* The keys in order; NULL-terminated. */
static void expect_keys(const struct fields *f, const char *const *keys)
{
    size_t i = 0;
    for (; keys[i]; i++) {
        if (i >= f->n)
            fail_msg("missing '%s' (line %zu)", keys[i], i + 1);
        if (strcmp(f->key[i], keys[i]))
            fail_msg("line %zu is '%s', expected '%s'", i + 1, f->key[i],
                     keys[i]);
    }
    if (i != f->n)
        fail_msg("extra line '%s'", f->key[i]);
}

static const char *const plain_keys[] = {
    "state", "source", "target", "bytes-total", "bytes-done", "watermark",
    "rate", "rate-limit", "elapsed", "eta", "mount-memory", "error", NULL,
};

static void test_queued(void **state)
{
    (void)state;
    enum job_state states[] = { JOB_NEW, JOB_STARTING };
    for (size_t i = 0; i < 2; i++) {
        struct job *j = job_new(states[i]);
        struct fields f;
        parse(j, &f);
        expect_keys(&f, plain_keys);
        expect(&f, "state", "queued");
        expect(&f, "source", "tpl/debian-12.qcow2");
        expect(&f, "target", "lun0");
        expect(&f, "bytes-total", "0");
        expect(&f, "bytes-done", "0");
        expect(&f, "watermark", "0");
        expect(&f, "rate", "0.0 MiB/s");
        expect(&f, "rate-limit", "unlimited");
        expect(&f, "elapsed", "0.0 s");
        expect(&f, "eta", "-");
        expect(&f, "error", "-");
        free(f.text);
        free(j);
    }
}

static void test_running(void **state)
{
    (void)state;
    struct job *j = job_new(JOB_RUNNING);
    j->total = 100 * MiB;
    j->done = 25 * MiB;
    j->watermark = 24 * MiB;
    j->start_ns = loop_now_ns() - 50 * SEC;
    struct fields f;
    parse(j, &f);
    expect_keys(&f, plain_keys);
    expect(&f, "state", "running");
    expect(&f, "bytes-total", "104857600");
    expect(&f, "bytes-done", "26214400");
    expect(&f, "watermark", "25165824");
    expect(&f, "error", "-");
    /* rate = done / elapsed, eta = what is left at that rate (checked
     * against the elapsed time the text shows, not against a clock). */
    double elapsed = atof(get(&f, "elapsed"));
    double rate = atof(get(&f, "rate"));
    long eta = atol(get(&f, "eta"));
    assert_true(elapsed >= 50.0);
    double want_rate = 25.0 / elapsed;
    assert_true(rate > want_rate - 0.06 && rate < want_rate + 0.06);
    double want_eta = 75.0 * MiB / (25.0 * MiB / elapsed);
    assert_true(eta >= (long)want_eta - 2 && eta <= (long)want_eta + 2);
    free(f.text);
    free(j);
}

static void test_done(void **state)
{
    (void)state;
    struct job *j = job_new(JOB_DONE);
    j->total = j->done = j->watermark = 8 * MiB;
    j->start_ns = 1000 * SEC;
    j->end_ns = 1004 * SEC;
    struct fields f;
    parse(j, &f);
    expect_keys(&f, plain_keys);
    expect(&f, "state", "done");
    expect(&f, "bytes-total", "8388608");
    expect(&f, "bytes-done", "8388608");
    expect(&f, "watermark", "8388608");
    expect(&f, "rate", "2.0 MiB/s");
    expect(&f, "elapsed", "4.0 s");
    expect(&f, "eta", "-");
    expect(&f, "error", "-");
    free(f.text);
    free(j);
}

static void test_failed_with_watermark(void **state)
{
    (void)state;
    struct job *j = job_new(JOB_FAILED);
    j->total = 64 * MiB;
    j->done = 40 * MiB;
    j->watermark = 37748736;
    j->err = -5;
    snprintf(j->error, sizeof j->error,
             "write to lun0 at offset 37748736 failed: Input/output error");
    j->start_ns = 2000 * SEC;
    j->end_ns = 2010 * SEC;
    struct fields f;
    parse(j, &f);
    expect_keys(&f, plain_keys);
    expect(&f, "state", "failed");
    expect(&f, "bytes-done", "41943040");
    expect(&f, "watermark", "37748736");
    expect(&f, "rate", "4.0 MiB/s");
    expect(&f, "elapsed", "10.0 s");
    expect(&f, "eta", "-");
    expect(&f, "error",
           "write to lun0 at offset 37748736 failed: Input/output error");
    free(f.text);
    free(j);
}

static void test_cancelled(void **state)
{
    (void)state;
    struct job *j = job_new(JOB_CANCELLED);
    j->total = 64 * MiB;
    j->done = j->watermark = 16 * MiB;
    j->start_ns = 10 * SEC;
    j->end_ns = 18 * SEC;
    struct fields f;
    parse(j, &f);
    expect_keys(&f, plain_keys);
    expect(&f, "state", "cancelled");
    expect(&f, "watermark", "16777216");
    expect(&f, "rate", "2.0 MiB/s");
    expect(&f, "eta", "-");
    free(f.text);
    free(j);
}

static void test_interrupted(void **state)
{
    (void)state;
    struct job *j = job_new(JOB_INTERRUPTED);
    j->total = 32 * MiB;
    j->watermark = 12 * MiB;
    snprintf(j->error, sizeof j->error,
             "the mount was unmounted while the job ran");
    struct fields f;
    parse(j, &f);
    expect_keys(&f, plain_keys);
    expect(&f, "state", "interrupted");
    expect(&f, "bytes-total", "33554432");
    expect(&f, "watermark", "12582912");
    expect(&f, "eta", "-");
    expect(&f, "error", "the mount was unmounted while the job ran");
    free(f.text);
    free(j);
}

static void test_resumed_from(void **state)
{
    (void)state;
    static const char *const keys[] = {
        "state", "source", "target", "bytes-total", "bytes-done",
        "watermark", "resumed-from", "rate", "rate-limit", "elapsed", "eta",
        "mount-memory", "error", NULL,
    };
    struct job *j = job_new(JOB_DONE);
    j->total = j->done = j->watermark = 32 * MiB;
    j->resumed = true;
    j->resumed_from = 12582912;
    j->start_ns = 100 * SEC;
    j->end_ns = 110 * SEC;
    struct fields f;
    parse(j, &f);
    expect_keys(&f, keys);
    expect(&f, "state", "done");
    expect(&f, "resumed-from", "12582912");
    expect(&f, "watermark", "33554432");
    free(f.text);
    /* Not resumed: no such line. */
    j->resumed = false;
    parse(j, &f);
    assert_null(get(&f, "resumed-from"));
    free(f.text);
    free(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_running, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_with_watermark, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cancelled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interrupted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resumed_from, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
