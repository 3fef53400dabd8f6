/* Replays every input under tests/fuzz/regressions/ (findings of
 * scripts/fuzz-smoke, one file each) through the same code the fuzz target
 * runs, plus mutated copies of a valid crafted image, under the unit-test
 * build (run it with the ASan build to catch memory errors).  A finding
 * fails by crashing; the test also requires that the inputs do not open
 * as valid images when their name says "refuse-". */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2-build.h"
#include "tests/fuzz/qcow2-fuzz-one.h"

/* Locate tests/fuzz/regressions from the source file path (relative to
 * the build directory, where meson compiles and runs tests) or
 * $SOURCE_DIR. */
static int find_dir(char *out, size_t len)
{
    const char *src = getenv("SOURCE_DIR");
    if (src) {
        snprintf(out, len, "%s/tests/fuzz/regressions", src);
        return 0;
    }
    const char *file = __FILE__;    /* .../tests/unit/test-....c */
    const char *cut = strstr(file, "tests/unit/");
    if (!cut)
        return -1;
    const char *prefixes[] = { "", "../", "../../", "../../../" };
    for (size_t i = 0; i < 4; i++) {
        snprintf(out, len, "%s%.*stests/fuzz/regressions", prefixes[i],
                 (int)(cut - file), file);
        struct stat st;
        if (stat(out, &st) == 0 && S_ISDIR(st.st_mode))
            return 0;
    }
    return -1;
}

static void test_regressions(void **state)
{
    (void)state;
    char dir[1024];
    if (find_dir(dir, sizeof dir) < 0)
        fail_msg("cannot find tests/fuzz/regressions (set SOURCE_DIR)");
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strstr(de->d_name, ".md"))
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static uint8_t buf[4u << 20];
        size_t len = fread(buf, 1, sizeof buf, f);
        fclose(f);
        int r = qcow2_fuzz_one(buf, len);
        if (strncmp(de->d_name, "refuse-", 7) == 0 && r == 0)
            fail_msg("%s opened, but must be refused", de->d_name);
        n++;
    }
    closedir(d);
    print_message("replayed %d regression inputs from %s\n", n, dir);
}

/* Every single-byte mutation of the header area of a valid image, and a
 * few of the L1/L2 area, must be handled without a crash. */
static void test_header_mutations(void **state)
{
    (void)state;
    static uint8_t img[TB_LEN];
    const uint8_t vals[] = { 0x00, 0x01, 0x7f, 0x80, 0xff };
    int opened = 0;
    for (size_t pos = 0; pos < 128; pos++) {
        for (size_t v = 0; v < sizeof vals; v++) {
            tb_make(img, sizeof img);
            memset(img + TB_DATA, 0xcd, TB_CS);
            tb_l2(img, 0, TB_DATA | (1ull << 63));
            img[pos] = vals[v];
            if (qcow2_fuzz_one(img, sizeof img) == 0)
                opened++;
        }
    }
    for (size_t pos = 2 * TB_CS; pos < 2 * TB_CS + 8; pos++) {
        tb_make(img, sizeof img);
        img[pos] ^= 0x5a;
        qcow2_fuzz_one(img, sizeof img);
        tb_make(img, sizeof img);
        tb_l2(img, 0, TB_DATA | (1ull << 63));
        img[TB_L2 + pos - 2 * TB_CS] ^= 0xa5;
        qcow2_fuzz_one(img, sizeof img);
    }
    /* Some mutations are harmless (e.g. padding bytes): those open. */
    assert_true(opened > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regressions),
        cmocka_unit_test(test_header_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
