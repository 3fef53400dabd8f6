/* Unit tests of image identity (backends/image-id.c), the identity of
 * local files and block devices (backends/file.c), the LU designator
 * choice of iSCSI (backends/iscsi-id.c), and the refusal of a target that
 * is the source: every spelling of one local file (hard link, symlink,
 * `//`, `./`) is one image, and opening it as a target with distinct_from
 * fails with -EINVAL before anything is truncated. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "backends/image-open.h"
#include "backends/iscsi-priv.h"

#define DATA_LEN 8192

struct fixture {
    char dir[256];
    char src[300];      /* a regular file with DATA_LEN bytes */
    uint8_t data[DATA_LEN];
    struct loop *loop;
    char loopdev[64];   /* attached loop device, "" if none */
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof f->dir, "%s/test-image-id.XXXXXX",
             tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->src, sizeof f->src, "%s/src.raw", f->dir);
    for (size_t i = 0; i < DATA_LEN; i++)
        f->data[i] = (uint8_t)(i * 131 + 7) | 1;
    int fd = open(f->src, O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0 || write(fd, f->data, DATA_LEN) != DATA_LEN)
        return -1;
    close(fd);
    f->loop = loop_new();
    *state = f;
    return f->loop ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[600];
    if (f->loopdev[0]) {
        snprintf(cmd, sizeof cmd, "losetup -d %s", f->loopdev);
        if (system(cmd) != 0)
            fprintf(stderr, "could not detach %s\n", f->loopdev);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", f->dir);
    loop_free(f->loop);
    free(f);
    return 0;
}

/* Open `path` read-only (a source); fails the test on error. */
static struct image *open_source(struct fixture *f, const char *path)
{
    struct image_open_opts o = { .format = IMAGE_FORMAT_RAW };
    struct image *img = NULL;
    struct errmsg em = { "" };
    int r = image_open(f->loop, path, &o, &img, &em);
    if (r < 0)
        fail_msg("open %s: %s", path, em.text);
    return img;
}

/* Open `path` as a --create --overwrite target distinct from `src`. */
static int open_target(struct fixture *f, const char *path,
                       const struct image *src, struct image **out,
                       struct errmsg *em)
{
    struct image_open_opts o = {
        .write = true, .create = true, .overwrite = true,
        .create_size = DATA_LEN, .format = IMAGE_FORMAT_RAW,
        .distinct_from = src,
    };
    return image_open(f->loop, path, &o, out, em);
}

static void assert_source_intact(struct fixture *f)
{
    uint8_t buf[DATA_LEN + 1];
    int fd = open(f->src, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, buf, sizeof buf), DATA_LEN);
    close(fd);
    assert_memory_equal(buf, f->data, DATA_LEN);
}

/* ---- image-id.c ------------------------------------------------------- */

static void test_id_keys(void **state)
{
    (void)state;
    struct image_id a = { 0 }, b = { 0 }, none = { 0 };
    assert_true(image_id_empty(&a));
    image_id_add(&a, "iscsi:%s:%d", "iqn.x", 1);
    image_id_add(&a, "lu:naa:%s", "5001");
    image_id_add(&a, "ignored:%d", 3);      /* full: dropped */
    assert_string_equal(a.key[0], "iscsi:iqn.x:1");
    assert_string_equal(a.key[1], "lu:naa:5001");
    assert_false(image_id_empty(&a));
    /* Any shared key, in any slot. */
    image_id_add(&b, "iscsi:iqn.y:1");
    assert_false(image_id_same(&a, &b));
    image_id_add(&b, "lu:naa:5001");
    assert_true(image_id_same(&a, &b));
    assert_true(image_id_same(&b, &a));
    /* Empty ids are never the same as anything, not even each other. */
    assert_false(image_id_same(&none, &none));
    assert_false(image_id_same(&a, &none));
    /* Long keys are cut, not overflowed. */
    char longkey[IMAGE_ID_KEY_MAX * 2];
    memset(longkey, 'k', sizeof longkey - 1);
    longkey[sizeof longkey - 1] = '\0';
    struct image_id c = { 0 };
    image_id_add(&c, "%s", longkey);
    assert_int_equal(strlen(c.key[0]), IMAGE_ID_KEY_MAX - 1);
}

static void test_chain_and_check(void **state)
{
    (void)state;
    struct image base = { .name = "base.raw" }, mid = { .name = "mid.qcow2" },
                 top = { .name = "top.qcow2" }, other = { .name = "o" };
    image_id_add(&base.id, "file:1:10");
    image_id_add(&mid.id, "file:1:11");
    image_id_add(&top.id, "file:1:12");
    image_id_add(&other.id, "file:1:13");
    top.backing = &mid;
    mid.backing = &base;
    assert_ptr_equal(image_chain_find(&top, &top.id), &top);
    assert_ptr_equal(image_chain_find(&top, &base.id), &base);
    assert_null(image_chain_find(&top, &other.id));
    assert_null(image_chain_find(NULL, &base.id));

    struct errmsg em = { "" };
    assert_int_equal(image_id_check_distinct(&other.id, "t", &top, &em), 0);
    assert_int_equal(image_id_check_distinct(&top.id, "t", NULL, &em), 0);
    struct image_id empty = { 0 };
    assert_int_equal(image_id_check_distinct(&empty, "null:", &top, &em), 0);
    assert_int_equal(image_id_check_distinct(&top.id, "t", &top, &em),
                     -EINVAL);
    assert_string_equal(em.text, "t and top.qcow2 are the same image");
    assert_int_equal(image_id_check_distinct(&base.id, "t", &top, &em),
                     -EINVAL);
    assert_string_equal(em.text,
                        "t is the backing file base.raw of top.qcow2");
}

/* ---- local files ------------------------------------------------------ */

static void test_file_spellings(void **state)
{
    struct fixture *f = *state;
    char hard[320], sym[320], slashes[320], dot[320], other[320];
    snprintf(hard, sizeof hard, "%s/hard.raw", f->dir);
    snprintf(sym, sizeof sym, "%s/sym.raw", f->dir);
    snprintf(slashes, sizeof slashes, "%s//src.raw", f->dir);
    snprintf(dot, sizeof dot, "%s/./src.raw", f->dir);
    snprintf(other, sizeof other, "%s/other.raw", f->dir);
    assert_int_equal(link(f->src, hard), 0);
    assert_int_equal(symlink("src.raw", sym), 0);
    int fd = open(other, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, f->data, DATA_LEN), DATA_LEN);
    close(fd);

    struct image *src = open_source(f, f->src);
    struct stat st;
    assert_int_equal(stat(f->src, &st), 0);
    char want[IMAGE_ID_KEY_MAX];
    snprintf(want, sizeof want, "file:%ju:%ju", (uintmax_t)st.st_dev,
             (uintmax_t)st.st_ino);
    assert_string_equal(src->id.key[0], want);
    assert_string_equal(src->id.key[1], "");

    const char *aliases[] = { hard, sym, slashes, dot };
    for (size_t i = 0; i < 4; i++) {
        struct image *a = open_source(f, aliases[i]);
        assert_true(image_id_same(&src->id, &a->id));
        image_close(a);
        /* As a --create --overwrite target: refused, nothing truncated. */
        struct image *t = NULL;
        struct errmsg em = { "" };
        assert_int_equal(open_target(f, aliases[i], src, &t, &em), -EINVAL);
        assert_null(t);
        char msg[1200];
        snprintf(msg, sizeof msg, "%s and %s are the same image", aliases[i],
                 f->src);
        assert_string_equal(em.text, msg);
        assert_source_intact(f);
    }
    /* A different file with the same bytes is a different image. */
    struct image *o = open_source(f, other);
    assert_false(image_id_same(&src->id, &o->id));
    image_close(o);
    struct image *t = NULL;
    struct errmsg em = { "" };
    assert_int_equal(open_target(f, other, src, &t, &em), 0);
    image_close(t);
    image_close(src);
    assert_source_intact(f);
}

/* A qcow2-like chain: the target may be neither the top nor a backing
 * image of the source. */
static void test_file_backing_chain(void **state)
{
    struct fixture *f = *state;
    char top_path[320];
    snprintf(top_path, sizeof top_path, "%s/top.raw", f->dir);
    int fd = open(top_path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    close(fd);
    struct image *base = open_source(f, f->src);
    struct image *top = open_source(f, top_path);
    top->backing = base;        /* what a format layer does */
    struct image *t = NULL;
    struct errmsg em = { "" };
    assert_int_equal(open_target(f, f->src, top, &t, &em), -EINVAL);
    char msg[1200];
    snprintf(msg, sizeof msg, "%s is the backing file %s of %s", f->src,
             f->src, top_path);
    assert_string_equal(em.text, msg);
    assert_source_intact(f);
    top->backing = NULL;
    image_close(top);
    image_close(base);
}

static void test_created_files_are_owner_only(void **state)
{
    struct fixture *f = *state;
    char path[320];
    snprintf(path, sizeof path, "%s/new.raw", f->dir);
    mode_t old = umask(0);      /* the mode must not rely on the umask */
    struct image *src = open_source(f, f->src);
    struct image *t = NULL;
    struct errmsg em = { "" };
    int r = open_target(f, path, src, &t, &em);
    umask(old);
    assert_int_equal(r, 0);
    image_close(t);
    image_close(src);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

/* A block device and a second device node for it (same st_rdev).  Needs
 * root and a free loop device; skipped otherwise. */
static void test_block_device_alias(void **state)
{
    struct fixture *f = *state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "losetup -f --show '%s' 2>/dev/null", f->src);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(f->loopdev, sizeof f->loopdev, p)) {
        if (p)
            pclose(p);
        f->loopdev[0] = '\0';
        skip();
    }
    pclose(p);
    f->loopdev[strcspn(f->loopdev, "\n")] = '\0';
    struct stat st;
    assert_int_equal(stat(f->loopdev, &st), 0);
    assert_true(S_ISBLK(st.st_mode));
    char alias[320];
    snprintf(alias, sizeof alias, "%s/alias-dev", f->dir);
    if (mknod(alias, S_IFBLK | 0600, st.st_rdev) < 0)
        skip();

    struct image *dev = open_source(f, f->loopdev);
    char want[IMAGE_ID_KEY_MAX];
    snprintf(want, sizeof want, "blk:%ju", (uintmax_t)st.st_rdev);
    assert_string_equal(dev->id.key[0], want);
    struct image *a = open_source(f, alias);
    assert_true(image_id_same(&dev->id, &a->id));
    image_close(a);
    /* The device's backing file is another image (a file, not the
     * device): the device node alias is refused as a target. */
    struct image_open_opts o = { .write = true, .format = IMAGE_FORMAT_RAW,
                                 .distinct_from = dev };
    struct image *t = NULL;
    struct errmsg em = { "" };
    assert_int_equal(image_open(f->loop, alias, &o, &t, &em), -EINVAL);
    assert_null(t);
    image_close(dev);
    assert_source_intact(f);
}

/* ---- iSCSI LU designators (VPD page 0x83) ------------------------------ */

static struct scsi_inquiry_device_designator designator(
    enum scsi_designator_type type, enum scsi_association assoc,
    enum scsi_codeset cs, const void *bytes, int len)
{
    return (struct scsi_inquiry_device_designator){
        .code_set = cs, .association = assoc, .designator_type = type,
        .designator_length = len, .designator = (char *)bytes,
    };
}

static void lu_id(struct scsi_inquiry_device_designator *list, size_t n,
                  char *out)
{
    for (size_t i = 0; i < n; i++)
        list[i].next = i + 1 < n ? &list[i + 1] : NULL;
    struct scsi_inquiry_device_identification di = {
        .designators = n ? list : NULL };
    struct image_id id = { 0 };
    iscsi_lu_identity(&di, &id);
    strcpy(out, id.key[0]);
}

static void test_iscsi_designators(void **state)
{
    (void)state;
    char key[IMAGE_ID_KEY_MAX];
    /* What tgtd answers: NAA 6 with IEEE company id 0 (twice) and T10
     * "IET     00010001" padded to 36 bytes: numbers per target host,
     * not names of the LU: no key. */
    static const unsigned char tgt_naa[16] = { 0x60, 0, 0, 0, 0, 0, 0, 0,
                                               0x0e, 0, 0, 0, 0, 1, 0, 1 };
    char iet[36] = "IET     00010001";
    struct scsi_inquiry_device_designator tgtd[3] = {
        designator(SCSI_DESIGNATOR_TYPE_NAA, SCSI_ASSOCIATION_LOGICAL_UNIT,
                   SCSI_CODESET_BINARY, tgt_naa, 16),
        designator(SCSI_DESIGNATOR_TYPE_NAA, SCSI_ASSOCIATION_LOGICAL_UNIT,
                   SCSI_CODESET_BINARY, tgt_naa, 8),
        designator(SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID,
                   SCSI_ASSOCIATION_LOGICAL_UNIT, SCSI_CODESET_ASCII, iet,
                   36),
    };
    lu_id(tgtd, 3, key);
    assert_string_equal(key, "");

    /* NAA 5 with a company id beats the others; target-port
     * designators are ignored. */
    static const unsigned char naa5[8] = { 0x50, 0x01, 0x40, 0x5a, 1, 2, 3,
                                           4 };
    static const unsigned char eui[8] = { 0x00, 0x14, 0x05, 9, 9, 9, 9, 9 };
    static const char t10[] = "LIO-ORG 3f1e2a7c-9b44-4c1d-8f00-aa";
    struct scsi_inquiry_device_designator mixed[4] = {
        designator(SCSI_DESIGNATOR_TYPE_NAA, SCSI_ASSOCIATION_TARGET_PORT,
                   SCSI_CODESET_BINARY, naa5, 8),
        designator(SCSI_DESIGNATOR_TYPE_T10_VENDORT_ID,
                   SCSI_ASSOCIATION_LOGICAL_UNIT, SCSI_CODESET_ASCII, t10,
                   (int)strlen(t10)),
        designator(SCSI_DESIGNATOR_TYPE_EUI_64,
                   SCSI_ASSOCIATION_LOGICAL_UNIT, SCSI_CODESET_BINARY, eui,
                   8),
        designator(SCSI_DESIGNATOR_TYPE_NAA, SCSI_ASSOCIATION_LOGICAL_UNIT,
                   SCSI_CODESET_BINARY, naa5, 8),
    };
    lu_id(mixed, 4, key);
    assert_string_equal(key, "lu:naa:5001405a01020304");
    lu_id(mixed, 3, key);       /* without the LU's NAA: EUI-64 */
    assert_string_equal(key, "lu:eui64:0014050909090909");
    lu_id(mixed, 2, key);       /* then a long T10 vendor id */
    assert_string_equal(key, "lu:t10:4c494f2d4f52472033663165326137632d39"
                             "6234342d346331642d386630302d6161");
    lu_id(mixed, 1, key);       /* a target port's NAA only: nothing */
    assert_string_equal(key, "");

    /* Long SCSI name strings are cut and hashed: two names that share
     * the first 64 bytes stay apart, and the key fits. */
    char n1[200], n2[200];
    memset(n1, 'q', sizeof n1);
    memcpy(n2, n1, sizeof n2);
    n2[150] = 'r';
    struct scsi_inquiry_device_designator s1 = designator(
        SCSI_DESIGNATOR_TYPE_SCSI_NAME_STRING, SCSI_ASSOCIATION_LOGICAL_UNIT,
        SCSI_CODESET_UTF8, n1, 200);
    struct scsi_inquiry_device_designator s2 = s1;
    s2.designator = n2;
    char k1[IMAGE_ID_KEY_MAX], k2[IMAGE_ID_KEY_MAX];
    lu_id(&s1, 1, k1);
    lu_id(&s2, 1, k2);
    assert_true(strncmp(k1, "lu:name:7171", 12) == 0);
    assert_true(strlen(k1) < IMAGE_ID_KEY_MAX - 1);
    assert_string_not_equal(k1, k2);

    /* The target name key is case-folded. */
    struct image_id a = { 0 }, b = { 0 };
    iscsi_target_identity("iqn.2025-01.Org.Example:LUNs", 3, &a);
    iscsi_target_identity("iqn.2025-01.org.example:luns", 3, &b);
    assert_string_equal(a.key[0], "iscsi:iqn.2025-01.org.example:luns:3");
    assert_true(image_id_same(&a, &b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_keys),
        cmocka_unit_test(test_chain_and_check),
        cmocka_unit_test_setup_teardown(test_file_spellings, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_backing_chain, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_created_files_are_owner_only,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_block_device_alias, setup,
                                        teardown),
        cmocka_unit_test(test_iscsi_designators),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
