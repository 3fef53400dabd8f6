/* Unit tests of what fs/control.c decides for the control/ directory, on
 * its pure functions (fs.h), with no FUSE session:
 *  - names: x.job, x.status, x.rate, x.json give x and the kind; other
 *    suffixes, a bare suffix and names whose x does not fit are refused;
 *  - create: only x.job with x not empty and free of control characters
 *    (newline, escape, DEL), so x cannot forge lines in x.status, imgfs
 *    wait output or the log;
 *  - touch x.job (times only) resumes an interrupted job, nothing else
 *    does (a size change, another state, x.status);
 *  - close after writing x.job: starts a job whose text changed, fails a
 *    text of blanks and comments only, does nothing while it runs or when
 *    nothing changed, ENOENT when the job is gone;
 *  - rm: ENOENT for unknown jobs and hidden job files, EPERM for x.rate
 *    and x.json, EBUSY for x.status of a running job, cancel for x.job of
 *    a running job, queued-or-busy while starting, forget otherwise;
 *  - the job file text becomes the copy spec (copier/jobspec.h) a job
 *    starts from. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fs/fs.h"
#include "copier/jobspec.h"

static void expect_name(const char *name, const char *base,
                        enum node_kind kind)
{
    char b[64] = "untouched";
    enum node_kind k = NODE_ROOT;
    if (!control_parse_name(name, b, sizeof b, &k))
        fail_msg("'%s' refused", name);
    assert_string_equal(b, base);
    assert_int_equal(k, kind);
}

static void expect_no_name(const char *name)
{
    char b[64];
    enum node_kind k;
    if (control_parse_name(name, b, sizeof b, &k))
        fail_msg("'%s' accepted as '%s'", name, b);
}

static void test_parse_name(void **state)
{
    (void)state;
    expect_name("deploy.job", "deploy", NODE_JOBFILE);
    expect_name("deploy.status", "deploy", NODE_STATUSFILE);
    expect_name("deploy.rate", "deploy", NODE_RATEFILE);
    expect_name("deploy.json", "deploy", NODE_JSONFILE);
    expect_name("a.b.job", "a.b", NODE_JOBFILE);
    expect_name("x.status.job", "x.status", NODE_JOBFILE);
    expect_name("j.job", "j", NODE_JOBFILE);
    expect_no_name(".job");
    expect_no_name(".status");
    expect_no_name("deploy");
    expect_no_name("deploy.jobs");
    expect_no_name("deploy.JOB");
    expect_no_name("deploy.job~");
    expect_no_name("");
    /* x must fit the caller's buffer (with its NUL). */
    char b[8];
    enum node_kind k;
    assert_true(control_parse_name("1234567.job", b, sizeof b, &k));
    assert_string_equal(b, "1234567");
    assert_false(control_parse_name("12345678.job", b, sizeof b, &k));
}

static void test_creatable(void **state)
{
    (void)state;
    char b[64];
    assert_true(control_name_creatable("deploy.job", b, sizeof b));
    assert_string_equal(b, "deploy");
    assert_true(control_name_creatable("a b-c_d.e.job", b, sizeof b));
    assert_false(control_name_creatable("deploy.status", b, sizeof b));
    assert_false(control_name_creatable("deploy.rate", b, sizeof b));
    assert_false(control_name_creatable("deploy.json", b, sizeof b));
    assert_false(control_name_creatable("deploy", b, sizeof b));
    assert_false(control_name_creatable(".job", b, sizeof b));
    assert_false(control_name_creatable("a\nstate: done.job", b, sizeof b));
    assert_false(control_name_creatable("a\033[2J.job", b, sizeof b));
    assert_false(control_name_creatable("a\x7f.job", b, sizeof b));
    assert_false(control_name_creatable("\t.job", b, sizeof b));
    char longname[300];
    memset(longname, 'x', 260);
    strcpy(longname + 260, ".job");
    assert_false(control_name_creatable(longname, b, sizeof b));
}

static struct job *job(enum job_state st, const char *text)
{
    struct job *j = calloc(1, sizeof *j);
    assert_non_null(j);
    j->state = st;
    j->job_visible = true;
    if (text) {
        j->text = strdup(text);
        assert_non_null(j->text);
        j->len = j->cap = strlen(text);
        j->dirty = true;
    }
    return j;
}

static void job_free(struct job *j)
{
    free(j->text);
    free(j);
}

static void test_touch_resumes(void **state)
{
    (void)state;
    const int times = FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME;
    const int now = FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW;
    struct job *j = job(JOB_INTERRUPTED, NULL);
    assert_true(control_touch_resumes(j, NODE_JOBFILE, times));
    assert_true(control_touch_resumes(j, NODE_JOBFILE, now));
    assert_true(control_touch_resumes(j, NODE_JOBFILE,
                                      FUSE_SET_ATTR_MTIME));
    assert_false(control_touch_resumes(j, NODE_JOBFILE,
                                       times | FUSE_SET_ATTR_SIZE));
    assert_false(control_touch_resumes(j, NODE_JOBFILE, FUSE_SET_ATTR_SIZE));
    assert_false(control_touch_resumes(j, NODE_JOBFILE, FUSE_SET_ATTR_MODE));
    assert_false(control_touch_resumes(j, NODE_STATUSFILE, times));
    assert_false(control_touch_resumes(NULL, NODE_JOBFILE, times));
    enum job_state others[] = { JOB_NEW, JOB_STARTING, JOB_RUNNING,
                                JOB_DONE, JOB_FAILED, JOB_CANCELLED };
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        j->state = others[i];
        if (control_touch_resumes(j, NODE_JOBFILE, times))
            fail_msg("touch resumes a job in state %d", others[i]);
    }
    job_free(j);
}

static void test_flush(void **state)
{
    (void)state;
    const char *text = "source = tpl/a.raw\ntarget = lun0\n";
    struct job *j = job(JOB_NEW, text);
    assert_int_equal(control_flush_decide(j), CONTROL_FLUSH_START);
    j->state = JOB_DONE;            /* rewritten after a run: again */
    assert_int_equal(control_flush_decide(j), CONTROL_FLUSH_START);
    j->state = JOB_FAILED;
    assert_int_equal(control_flush_decide(j), CONTROL_FLUSH_START);
    j->state = JOB_RUNNING;
    assert_int_equal(control_flush_decide(j), CONTROL_FLUSH_NOTHING);
    j->state = JOB_STARTING;
    assert_int_equal(control_flush_decide(j), CONTROL_FLUSH_NOTHING);
    j->state = JOB_NEW;
    j->dirty = false;               /* nothing written since the start */
    assert_int_equal(control_flush_decide(j), CONTROL_FLUSH_NOTHING);
    job_free(j);
    assert_int_equal(control_flush_decide(NULL), CONTROL_FLUSH_ENOENT);

    const char *empty[] = { "", "\n\n", "  \t\r\n", "# a comment\n",
                            "# one\n   # two  \n\n", "#source = a\n" };
    for (size_t i = 0; i < sizeof empty / sizeof *empty; i++) {
        j = job(JOB_NEW, empty[i]);
        if (control_flush_decide(j) != CONTROL_FLUSH_EMPTY)
            fail_msg("text %zu (\"%s\") is not found empty", i, empty[i]);
        job_free(j);
    }
    /* One key line after comments and blanks is a job; a comment after
     * a key does not hide it. */
    const char *jobs[] = { "# c\n\n  source = a\n", "x", "\n\ttarget=b # c\n" };
    for (size_t i = 0; i < sizeof jobs / sizeof *jobs; i++) {
        j = job(JOB_NEW, jobs[i]);
        if (control_flush_decide(j) != CONTROL_FLUSH_START)
            fail_msg("text %zu is not started", i);
        job_free(j);
    }
}

static void test_unlink(void **state)
{
    (void)state;
    assert_int_equal(control_unlink_decide(NULL, NODE_JOBFILE),
                     CONTROL_UNLINK_ENOENT);
    assert_int_equal(control_unlink_decide(NULL, NODE_STATUSFILE),
                     CONTROL_UNLINK_ENOENT);
    struct job *j = job(JOB_DONE, NULL);
    assert_int_equal(control_unlink_decide(j, NODE_JOBFILE),
                     CONTROL_UNLINK_FORGET);
    assert_int_equal(control_unlink_decide(j, NODE_STATUSFILE),
                     CONTROL_UNLINK_FORGET);
    assert_int_equal(control_unlink_decide(j, NODE_RATEFILE),
                     CONTROL_UNLINK_EPERM);
    assert_int_equal(control_unlink_decide(j, NODE_JSONFILE),
                     CONTROL_UNLINK_EPERM);
    j->job_visible = false;     /* x.job removed, x.status still there */
    assert_int_equal(control_unlink_decide(j, NODE_JOBFILE),
                     CONTROL_UNLINK_ENOENT);
    assert_int_equal(control_unlink_decide(j, NODE_STATUSFILE),
                     CONTROL_UNLINK_FORGET);
    j->job_visible = true;
    j->state = JOB_RUNNING;
    assert_int_equal(control_unlink_decide(j, NODE_JOBFILE),
                     CONTROL_UNLINK_CANCEL);
    assert_int_equal(control_unlink_decide(j, NODE_STATUSFILE),
                     CONTROL_UNLINK_EBUSY);
    assert_int_equal(control_unlink_decide(j, NODE_RATEFILE),
                     CONTROL_UNLINK_EPERM);
    j->state = JOB_STARTING;
    assert_int_equal(control_unlink_decide(j, NODE_JOBFILE),
                     CONTROL_UNLINK_STARTING);
    assert_int_equal(control_unlink_decide(j, NODE_STATUSFILE),
                     CONTROL_UNLINK_STARTING);
    enum job_state stopped[] = { JOB_NEW, JOB_FAILED, JOB_CANCELLED,
                                 JOB_INTERRUPTED };
    for (size_t i = 0; i < sizeof stopped / sizeof *stopped; i++) {
        j->state = stopped[i];
        assert_int_equal(control_unlink_decide(j, NODE_JOBFILE),
                         CONTROL_UNLINK_FORGET);
    }
    job_free(j);
}

static void test_job_text_to_spec(void **state)
{
    (void)state;
    const char *text = "# deploy the template\n"
                       "source = tpl/debian-12.qcow2\n"
                       "target = lun0\n"
                       "verify = yes\n";
    struct copy_spec spec;
    struct errmsg em = { "" };
    assert_int_equal(copy_spec_parse(text, strlen(text), &spec, &em), 0);
    assert_string_equal(spec.source, "tpl/debian-12.qcow2");
    assert_string_equal(spec.target, "lun0");
    assert_true(spec.copy.verify);
    assert_int_equal(copy_spec_check(&spec, COPY_SPEC_FILE, &em), 0);
    /* A job file naming a path that climbs out is refused, saying why. */
    const char *bad = "source = tpl/../../etc/shadow\ntarget = lun0\n";
    em.text[0] = '\0';
    int r = copy_spec_parse(bad, strlen(bad), &spec, &em);
    if (r == 0)
        r = copy_spec_check(&spec, COPY_SPEC_FILE, &em);
    assert_true(r < 0);
    assert_true(em.text[0] != '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_name),
        cmocka_unit_test(test_creatable),
        cmocka_unit_test(test_touch_resumes),
        cmocka_unit_test(test_flush),
        cmocka_unit_test(test_unlink),
        cmocka_unit_test(test_job_text_to_spec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
