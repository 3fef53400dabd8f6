/* rw-exerciser.c — random reads, writes and truncates on one file, every
 * read checked against an in-memory model of what the file must contain.
 *
 *   rw-exerciser [--lun] [--ops N] [--max-size BYTES] FILE SEED...
 *
 * For each SEED (a decimal number) the file is first put into a known
 * state, then N operations (default 20000) drawn from a generator seeded
 * with SEED run on it:
 *   - writes of 1 byte to 1.5 MiB at any offset (unaligned; for a file,
 *     also far beyond the end: the gap must read as zeroes), through one
 *     of two descriptors;
 *   - reads at random offsets (pread) and reads that continue where the
 *     descriptor's offset stands (read(2): sequential readers, whose
 *     read-ahead a later write must not outlive);
 *   - whole-file sequential re-reads with 64 KiB to 1 MiB reads;
 *   - truncates, fsync, fstat (size), and closing and reopening one of the
 *     descriptors, sometimes with O_TRUNC.
 * A file (default) starts empty and grows and shrinks up to --max-size
 * (default 4 MiB).  With --lun, FILE is a fixed-size device as the mount
 * presents iSCSI LUNs: it starts filled with a pattern; writes are
 * clipped at its size (a write starting at the end fails with ENOSPC);
 * ftruncate to S <= size makes [S, size) read as zeroes and keeps the
 * size; ftruncate beyond the size fails with EFBIG or EINVAL and changes
 * nothing; O_TRUNC makes the whole device read as zeroes.
 *
 * Every result is compared with the model: the first difference is
 * printed (seed, operation number, offset, expected and actual byte or
 * length) and the program exits 1.  Exit 0 when all seeds passed, 2 on
 * usage or setup errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MiB (1024u * 1024)

struct ex {
    const char *path;
    bool lun;
    uint64_t max_size;      /* file: largest size; lun: the device size */
    uint64_t seed;
    unsigned long op;       /* current operation number */
    uint64_t rng;
    uint8_t *model;         /* max_size bytes */
    uint64_t size;          /* model size */
    int fd[2];
    uint8_t *buf;           /* scratch for reads and writes */
    unsigned long counts[8];
};

enum { C_WRITE, C_READ, C_SEQ, C_REREAD, C_TRUNC, C_FSYNC, C_REOPEN,
       C_STAT };

static const char *const count_names[] = {
    "writes", "preads", "reads", "rereads", "truncates", "fsyncs",
    "reopens", "stats",
};

/* splitmix64: the next pseudo-random number of `ex`'s generator. */
static uint64_t next_rand(struct ex *ex)
{
    uint64_t z = (ex->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (n > 0). */
static uint64_t below(struct ex *ex, uint64_t n)
{
    return next_rand(ex) % n;
}

/* A length for a read or write: mostly up to 64 KiB, sometimes up to
 * 1.5 MiB. */
static uint64_t random_len(struct ex *ex)
{
    uint64_t r = below(ex, 100);
    if (r < 35)
        return 1 + below(ex, 4096);
    if (r < 94)
        return 1 + below(ex, 64 * 1024);
    return 1 + below(ex, 3 * MiB / 2);
}

static void die(struct ex *ex, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/* Print the first mismatch (or failed call) and exit 1. */
static void die(struct ex *ex, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "rw-exerciser: %s: seed %" PRIu64 " op %lu: ", ex->path,
            ex->seed, ex->op);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static int open_fd(struct ex *ex, bool trunc)
{
    int fd = open(ex->path, O_RDWR | O_CREAT | (trunc ? O_TRUNC : 0), 0644);
    if (fd < 0)
        die(ex, "open%s: %s", trunc ? " O_TRUNC" : "", strerror(errno));
    return fd;
}

/* O_TRUNC (or ftruncate) on the model. */
static void model_truncate(struct ex *ex, uint64_t size)
{
    if (ex->lun) {
        memset(ex->model + size, 0, ex->max_size - size);
        return;
    }
    if (size > ex->size)
        memset(ex->model + ex->size, 0, size - ex->size);
    ex->size = size;
}

/* Compare `got` bytes read at `off` (asked for `want_len`) with the
 * model. */
static void check_read(struct ex *ex, const char *what, int fdi,
                       uint64_t off, uint64_t want_len, ssize_t got)
{
    if (got < 0)
        die(ex, "%s of %" PRIu64 " bytes at %" PRIu64 " on fd%d: %s", what,
            want_len, off, fdi, strerror(errno));
    uint64_t expect = off >= ex->size ? 0
                      : (ex->size - off < want_len ? ex->size - off
                                                   : want_len);
    if ((uint64_t)got != expect)
        die(ex, "%s of %" PRIu64 " bytes at %" PRIu64 " on fd%d: expected "
            "%" PRIu64 " bytes (size %" PRIu64 "), got %zd", what, want_len,
            off, fdi, expect, ex->size, got);
    if (got && memcmp(ex->buf, ex->model + off, (size_t)got) != 0) {
        size_t i = 0;
        while (ex->buf[i] == ex->model[off + i])
            i++;
        die(ex, "%s of %" PRIu64 " bytes at %" PRIu64 " on fd%d: first "
            "mismatch at offset %" PRIu64 ": expected 0x%02x, got 0x%02x",
            what, want_len, off, fdi, off + i, ex->model[off + i],
            ex->buf[i]);
    }
}

static void op_write(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    uint64_t len = random_len(ex);
    uint64_t off;
    if (ex->lun) {
        off = below(ex, ex->max_size);
        if (below(ex, 10) == 0)         /* end of the device */
            off = ex->max_size - 1 - below(ex, 4096);
    } else {
        /* Mostly inside or just past the end, sometimes far beyond. */
        uint64_t lim = below(ex, 4) ? ex->size + 1 : ex->max_size;
        off = below(ex, lim < ex->max_size ? lim : ex->max_size);
        if (off + len > ex->max_size)
            len = ex->max_size - off;
        if (!len)
            return;
    }
    for (uint64_t i = 0; i < len; i += 8) {
        uint64_t v = next_rand(ex);
        memcpy(ex->buf + i, &v, len - i < 8 ? (size_t)(len - i) : 8);
    }
    ssize_t r = pwrite(ex->fd[fdi], ex->buf, (size_t)len, (off_t)off);
    uint64_t expect = len;
    if (ex->lun && off + len > ex->max_size)
        expect = ex->max_size - off;    /* short write at the end */
    if (r < 0 || (uint64_t)r != expect)
        die(ex, "pwrite of %" PRIu64 " bytes at %" PRIu64 " on fd%d: "
            "expected %" PRIu64 ", got %zd (%s)", len, off, fdi, expect, r,
            r < 0 ? strerror(errno) : "short");
    if (!ex->lun && off > ex->size)
        memset(ex->model + ex->size, 0, off - ex->size);
    memcpy(ex->model + off, ex->buf, (size_t)expect);
    if (off + expect > ex->size)
        ex->size = off + expect;
    ex->counts[C_WRITE]++;
}

static void op_pread(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    uint64_t len = random_len(ex);
    uint64_t off = below(ex, ex->size + 64 * 1024);
    if (off > ex->max_size)
        off = ex->max_size;
    ssize_t r = pread(ex->fd[fdi], ex->buf, (size_t)len, (off_t)off);
    check_read(ex, "pread", fdi, off, len, r);
    ex->counts[C_READ]++;
}

/* read(2) where the descriptor stands: sequential readers. */
static void op_read_on(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    if (below(ex, 8) == 0 &&
        lseek(ex->fd[fdi], (off_t)below(ex, ex->size + 1), SEEK_SET) < 0)
        die(ex, "lseek on fd%d: %s", fdi, strerror(errno));
    off_t pos = lseek(ex->fd[fdi], 0, SEEK_CUR);
    if (pos < 0)
        die(ex, "lseek on fd%d: %s", fdi, strerror(errno));
    static const uint64_t sizes[] = { 4096, 32768, 131072, MiB, 3000 };
    uint64_t len = sizes[below(ex, 5)];
    ssize_t r = read(ex->fd[fdi], ex->buf, (size_t)len);
    check_read(ex, "read", fdi, (uint64_t)pos, len, r);
    ex->counts[C_SEQ]++;
}

/* The whole file from offset 0 on a fresh position, to the end. */
static void op_reread(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    /* Small reads are op_read_on's: a whole file of them costs thousands
     * of round trips. */
    static const uint64_t sizes[] = { 65536, 131072, MiB };
    uint64_t len = sizes[below(ex, 3)];
    if (lseek(ex->fd[fdi], 0, SEEK_SET) < 0)
        die(ex, "lseek on fd%d: %s", fdi, strerror(errno));
    uint64_t pos = 0;
    for (;;) {
        ssize_t r = read(ex->fd[fdi], ex->buf, (size_t)len);
        check_read(ex, "sequential re-read", fdi, pos, len, r);
        if (r == 0)
            break;
        pos += (uint64_t)r;
    }
    ex->counts[C_REREAD]++;
}

static void op_truncate(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    uint64_t size;
    if (ex->lun && below(ex, 8) == 0) {
        /* Beyond the device: refused, nothing changes. */
        size = ex->max_size + 1 + below(ex, MiB);
        if (ftruncate(ex->fd[fdi], (off_t)size) == 0)
            die(ex, "ftruncate to %" PRIu64 " beyond the device size %"
                PRIu64 " succeeded", size, ex->max_size);
        if (errno != EFBIG && errno != EINVAL)
            die(ex, "ftruncate beyond the device: expected EFBIG or "
                "EINVAL, got %s", strerror(errno));
        ex->counts[C_TRUNC]++;
        return;
    }
    size = below(ex, 3) ? below(ex, ex->max_size + 1)
                        : (ex->size ? below(ex, ex->size) : 0);
    if (ftruncate(ex->fd[fdi], (off_t)size) < 0)
        die(ex, "ftruncate to %" PRIu64 " on fd%d: %s", size, fdi,
            strerror(errno));
    model_truncate(ex, size);
    ex->counts[C_TRUNC]++;
}

static void op_fsync(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    if (fsync(ex->fd[fdi]) < 0)
        die(ex, "fsync on fd%d: %s", fdi, strerror(errno));
    ex->counts[C_FSYNC]++;
}

static void op_reopen(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    bool trunc = below(ex, 4) == 0;
    if (close(ex->fd[fdi]) < 0)
        die(ex, "close fd%d: %s", fdi, strerror(errno));
    ex->fd[fdi] = open_fd(ex, trunc);
    if (trunc)
        model_truncate(ex, 0);
    ex->counts[C_REOPEN]++;
}

static void op_stat(struct ex *ex)
{
    int fdi = (int)below(ex, 2);
    struct stat st;
    if (fstat(ex->fd[fdi], &st) < 0)
        die(ex, "fstat fd%d: %s", fdi, strerror(errno));
    if ((uint64_t)st.st_size != ex->size)
        die(ex, "fstat fd%d: size %jd, expected %" PRIu64, fdi,
            (intmax_t)st.st_size, ex->size);
    ex->counts[C_STAT]++;
}

/* Put the file into the known starting state of a seed. */
static void start_seed(struct ex *ex)
{
    ex->op = 0;
    ex->fd[0] = open_fd(ex, !ex->lun);
    ex->fd[1] = open_fd(ex, false);
    if (!ex->lun) {
        ex->size = 0;
        return;
    }
    ex->size = ex->max_size;
    for (uint64_t i = 0; i < ex->max_size; i++)
        ex->model[i] = (uint8_t)(i * 7 + ex->seed + (i >> 12));
    for (uint64_t off = 0; off < ex->max_size; off += MiB) {
        size_t l = ex->max_size - off < MiB ? (size_t)(ex->max_size - off)
                                             : MiB;
        ssize_t r = pwrite(ex->fd[0], ex->model + off, l, (off_t)off);
        if (r < 0 || (size_t)r != l)
            die(ex, "filling the device at %" PRIu64 ": %s", off,
                r < 0 ? strerror(errno) : "short write");
    }
}

static void run_seed(struct ex *ex, unsigned long nops)
{
    memset(ex->counts, 0, sizeof ex->counts);
    ex->rng = ex->seed;
    start_seed(ex);
    for (ex->op = 1; ex->op <= nops; ex->op++) {
        uint64_t r = below(ex, 100);
        if (r < 34)
            op_write(ex);
        else if (r < 56)
            op_pread(ex);
        else if (r < 78)
            op_read_on(ex);
        else if (r < 81)
            op_reread(ex);
        else if (r < 87)
            op_truncate(ex);
        else if (r < 90)
            op_fsync(ex);
        else if (r < 94)
            op_reopen(ex);
        else
            op_stat(ex);
    }
    ex->op = nops;
    op_reread(ex);              /* the end state, once more */
    if (close(ex->fd[0]) < 0 || close(ex->fd[1]) < 0)
        die(ex, "close: %s", strerror(errno));
    printf("%s: seed %" PRIu64 ": %lu operations, no mismatch (", ex->path,
           ex->seed, nops);
    for (unsigned i = 0; i < 8; i++)
        printf("%s%lu %s", i ? ", " : "", ex->counts[i], count_names[i]);
    printf(")\n");
}

static void usage(void)
{
    fprintf(stderr, "usage: rw-exerciser [--lun] [--ops N] "
                    "[--max-size BYTES] FILE SEED...\n");
    exit(2);
}

static uint64_t parse_u64(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    struct ex ex = { .max_size = 4 * MiB };
    unsigned long nops = 20000;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--lun"))
            ex.lun = true;
        else if (!strcmp(argv[i], "--ops") && i + 1 < argc)
            nops = (unsigned long)parse_u64(argv[++i]);
        else if (!strcmp(argv[i], "--max-size") && i + 1 < argc)
            ex.max_size = parse_u64(argv[++i]);
        else
            usage();
    }
    if (argc - i < 2)
        usage();
    ex.path = argv[i++];
    if (ex.lun) {
        struct stat st;
        if (stat(ex.path, &st) < 0 || st.st_size <= 0) {
            fprintf(stderr, "rw-exerciser: %s: no size\n", ex.path);
            return 2;
        }
        ex.max_size = (uint64_t)st.st_size;
    }
    if (!ex.max_size)
        usage();
    ex.model = malloc(ex.max_size);
    ex.buf = malloc(ex.max_size > 2 * MiB ? ex.max_size : 2 * MiB);
    if (!ex.model || !ex.buf) {
        fprintf(stderr, "rw-exerciser: out of memory\n");
        return 2;
    }
    for (; i < argc; i++) {
        ex.seed = parse_u64(argv[i]);
        run_seed(&ex, nops);
    }
    free(ex.model);
    free(ex.buf);
    return 0;
}
