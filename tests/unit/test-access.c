/* Unit tests of fs/access.c (with the attributes fs/tree.c reports for
 * the mount root and top-level images under -o uid/gid/umask):
 * access_permitted follows owner / group / other bits like the kernel,
 * root reads and writes anything, supplementary groups count and an
 * incomplete group list never grants more; job_check_access refuses a job
 * whose writer may not search the root, read the source or write the
 * target, naming the uid and the image. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/fs.h"

static struct imgfs fs;
static struct node *img_a, *img_b, *img_ro;

static struct access_cred cred(uid_t uid, gid_t gid, unsigned ngroups,
                               const gid_t *groups)
{
    struct access_cred c = { .uid = uid, .gid = gid, .ngroups = ngroups };
    if (ngroups)
        memcpy(c.groups, groups, ngroups * sizeof *groups);
    return c;
}

static struct stat file(mode_t mode, uid_t uid, gid_t gid)
{
    struct stat st = { .st_mode = S_IFREG | mode, .st_uid = uid,
                       .st_gid = gid };
    return st;
}

static void test_owner_group_other(void **state)
{
    (void)state;
    struct access_cred c = cred(1000, 1000, 0, NULL);
    struct stat own = file(0640, 1000, 50);
    assert_int_equal(access_permitted(&c, &own, R_OK | W_OK), 0);
    assert_int_equal(access_permitted(&c, &own, X_OK), -EACCES);
    /* Owner bits decide for the owner, even when group bits would allow. */
    struct stat own_ro = file(0466, 1000, 1000);
    assert_int_equal(access_permitted(&c, &own_ro, W_OK), -EACCES);
    struct stat grp = file(0640, 0, 1000);
    assert_int_equal(access_permitted(&c, &grp, R_OK), 0);
    assert_int_equal(access_permitted(&c, &grp, W_OK), -EACCES);
    struct stat other = file(0604, 0, 0);
    assert_int_equal(access_permitted(&c, &other, R_OK), 0);
    assert_int_equal(access_permitted(&c, &other, W_OK), -EACCES);
    /* Group bits decide for members, even when other bits would allow. */
    struct stat grp_none = file(0604, 0, 1000);
    assert_int_equal(access_permitted(&c, &grp_none, R_OK), -EACCES);
}

static void test_supplementary_groups(void **state)
{
    (void)state;
    gid_t groups[] = { 7, 50 };
    struct access_cred c = cred(1000, 1000, 2, groups);
    struct stat st = file(0660, 0, 50);
    assert_int_equal(access_permitted(&c, &st, R_OK | W_OK), 0);
    struct access_cred lone = cred(1000, 1000, 1, groups);
    assert_int_equal(access_permitted(&lone, &st, R_OK), -EACCES);
    /* Groups not known: other bits are not enough, as the file's group
     * (whose bits may say less) might be one of them. */
    struct access_cred unknown = lone;
    unknown.groups_incomplete = true;
    struct stat all = file(0606, 0, 50);
    assert_int_equal(access_permitted(&lone, &all, R_OK), 0);
    assert_int_equal(access_permitted(&unknown, &all, R_OK), -EACCES);
    struct stat mine = file(0600, 1000, 50);
    assert_int_equal(access_permitted(&unknown, &mine, R_OK), 0);
}

static void test_root(void **state)
{
    (void)state;
    struct access_cred r = cred(0, 0, 0, NULL);
    struct stat none = file(0000, 1000, 1000);
    assert_int_equal(access_permitted(&r, &none, R_OK | W_OK), 0);
    assert_int_equal(access_permitted(&r, &none, X_OK), -EACCES);
    struct stat dir = { .st_mode = S_IFDIR | 0700, .st_uid = 1000 };
    assert_int_equal(access_permitted(&r, &dir, X_OK | W_OK), 0);
}

static int setup(void **state)
{
    (void)state;
    fs_global = &fs;
    pthread_mutex_init(&fs.tree_lock, NULL);
    pthread_mutex_init(&fs.jobs_lock, NULL);
    fs.root = node_new(NODE_ROOT, NULL, "");
    img_a = node_new(NODE_IMAGE, fs.root, "a");
    img_b = node_new(NODE_IMAGE, fs.root, "b");
    img_ro = node_new(NODE_IMAGE, fs.root, "ro");
    assert_non_null(img_ro);
    img_a->fixed_size = img_b->fixed_size = img_ro->fixed_size = 1 << 20;
    img_ro->read_only = true;
    return 0;
}

/* job_check_access for a writer, with the mount owned by root:`gid`
 * under `umask`; the message goes to `msg`. */
static int check(struct access_cred c, gid_t gid, mode_t umask,
                 struct node *src, struct node *dst, char *msg)
{
    fs.uid = 0;
    fs.gid = gid;
    fs.umask = umask;
    struct job j = { .writer = c };
    struct errmsg em = { "" };
    int r = job_check_access(&j, src, dst, &em);
    strcpy(msg, em.text);
    return r;
}

static void test_job_check_access(void **state)
{
    (void)state;
    char msg[sizeof ((struct errmsg *)0)->text];
    gid_t staff[] = { 50 };
    struct access_cred user = cred(1000, 1000, 0, NULL);
    struct access_cred member = cred(1000, 1000, 1, staff);
    struct access_cred root = cred(0, 0, 0, NULL);

    /* Defaults (umask 077): only root. */
    assert_int_equal(check(root, 0, 077, img_a, img_b, msg), 0);
    assert_int_equal(check(user, 0, 077, img_a, img_b, msg), -EACCES);
    assert_string_equal(msg, "permission denied: uid 1000 may not read "
                        "source 'a'");
    /* gid=50,umask=007: members of group 50 read and write. */
    assert_int_equal(check(member, 50, 007, img_a, img_b, msg), 0);
    assert_int_equal(check(user, 50, 007, img_a, img_b, msg), -EACCES);
    /* umask=002: everyone reads, only the group writes. */
    assert_int_equal(check(user, 50, 002, img_a, img_b, msg), -EACCES);
    assert_string_equal(msg, "permission denied: uid 1000 may not write "
                        "target 'b'");
    assert_int_equal(check(member, 50, 002, img_a, img_b, msg), 0);
    /* Read-only images have no write bits, whatever the umask. */
    assert_int_equal(check(member, 50, 0, img_a, img_ro, msg), -EACCES);
    assert_string_equal(msg, "permission denied: uid 1000 may not write "
                        "target 'ro'");
    assert_int_equal(check(member, 50, 0, img_ro, img_a, msg), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_owner_group_other),
        cmocka_unit_test(test_supplementary_groups),
        cmocka_unit_test(test_root),
        cmocka_unit_test_setup(test_job_check_access, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
