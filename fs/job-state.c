/* job-state.c — job state files.  See job-state.h. */
#include "job-state.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STATE_MAGIC "imgfs-job-state: 1"
/* A state file holds at most a job text (1 MiB) and a few lines. */
#define STATE_MAX (1024 * 1024 + 16 * 1024)

/* Directory part of `path` (malloc'd): "." when there is none. */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static int fsync_dir(const char *path)
{
    char *d = dir_of(path);
    if (!d)
        return -ENOMEM;
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(d);
    if (fd < 0)
        return -errno;
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

/* `s` with control characters as spaces, "-" when empty. */
static void put_value(FILE *f, const char *key, const char *s)
{
    fprintf(f, "%s: ", key);
    if (!s || !*s)
        fputc('-', f);
    for (; s && *s; s++)
        fputc((unsigned char)*s < 0x20 || *s == 0x7f ? ' ' : *s, f);
    fputc('\n', f);
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int job_state_write(const char *path, const struct kept_job *st,
                    struct errmsg *err)
{
    char *buf = NULL;
    size_t blen = 0;
    FILE *f = open_memstream(&buf, &blen);
    if (!f) {
        errmsg_set(err, "state file %s: out of memory", path);
        return -ENOMEM;
    }
    fprintf(f, STATE_MAGIC "\n");
    put_value(f, "state", st->state);
    fprintf(f, "watermark: %llu\n", (unsigned long long)st->watermark);
    fprintf(f, "bytes-total: %llu\n", (unsigned long long)st->total);
    put_value(f, "source", st->source);
    put_value(f, "target", st->target);
    fprintf(f, "uid: %u\ngid: %u\n", (unsigned)st->uid, (unsigned)st->gid);
    put_value(f, "error", st->error);
    fputc('\n', f);
    if (st->text && st->len)
        fwrite(st->text, 1, st->len, f);
    if (fclose(f) != 0) {
        free(buf);
        errmsg_set(err, "state file %s: out of memory", path);
        return -ENOMEM;
    }

    char *tmp = NULL;
    if (asprintf(&tmp, "%s.tmp", path) < 0) {
        free(buf);
        errmsg_set(err, "state file %s: out of memory", path);
        return -ENOMEM;
    }
    const char *step = "create";
    int r = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                  0600);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    step = "write";
    r = write_all(fd, buf, blen);
    if (r == 0) {
        step = "fsync";
        if (fsync(fd) < 0)
            r = -errno;
    }
    if (close(fd) < 0 && r == 0) {
        step = "close";
        r = -errno;
    }
    if (r == 0) {
        step = "rename";
        if (rename(tmp, path) < 0)
            r = -errno;
    }
    if (r == 0) {
        step = "fsync the directory of";
        r = fsync_dir(path);
    }
out:
    if (r < 0) {
        if (strcmp(step, "fsync the directory of") != 0)
            unlink(tmp);
        errmsg_set(err, "state file %s: %s: %s", path, step, strerror(-r));
    }
    free(tmp);
    free(buf);
    return r;
}

static uint64_t number(const char *v)
{
    return strtoull(v, NULL, 10);
}

int job_state_read(const char *path, struct kept_job *st,
                   struct errmsg *err)
{
    memset(st, 0, sizeof *st);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > STATE_MAX) {
        close(fd);
        errmsg_set(err, "state file %s: not a regular file of at most %d "
                   "bytes", path, STATE_MAX);
        return -EINVAL;
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';

    bool magic = false, have_state = false, have_wm = false;
    char *p = buf, *end = buf + got;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        if (line_end == p) {            /* blank line: the job text follows */
            p = nl ? nl + 1 : end;
            break;
        }
        *line_end = '\0';
        char *colon = strstr(p, ": ");
        if (colon) {
            *colon = '\0';
            const char *v = colon + 2;
            bool none = !strcmp(v, "-");
            if (!strcmp(p, "imgfs-job-state"))
                magic = !strcmp(v, "1");
            else if (!strcmp(p, "state")) {
                snprintf(st->state, sizeof st->state, "%s", v);
                have_state = true;
            } else if (!strcmp(p, "watermark")) {
                st->watermark = number(v);
                have_wm = true;
            } else if (!strcmp(p, "bytes-total"))
                st->total = number(v);
            else if (!strcmp(p, "source"))
                snprintf(st->source, sizeof st->source, "%s", none ? "" : v);
            else if (!strcmp(p, "target"))
                snprintf(st->target, sizeof st->target, "%s", none ? "" : v);
            else if (!strcmp(p, "uid"))
                st->uid = (uid_t)number(v);
            else if (!strcmp(p, "gid"))
                st->gid = (gid_t)number(v);
            else if (!strcmp(p, "error"))
                snprintf(st->error, sizeof st->error, "%s", none ? "" : v);
        }
        p = nl ? nl + 1 : end;
    }
    if (!magic || !have_state || !have_wm) {
        free(buf);
        errmsg_set(err, "state file %s: not an imgfs job state (missing %s)",
                   path, !magic ? "the imgfs-job-state line"
                        : !have_state ? "state" : "watermark");
        return -EINVAL;
    }
    st->len = (size_t)(end - p);
    if (st->len) {
        st->text = malloc(st->len);
        if (!st->text) {
            free(buf);
            return -ENOMEM;
        }
        memcpy(st->text, p, st->len);
    }
    free(buf);
    return 0;
}

void job_state_free(struct kept_job *st)
{
    free(st->text);
    st->text = NULL;
    st->len = 0;
}

int job_state_remove(const char *path)
{
    if (unlink(path) < 0)
        return errno == ENOENT ? 0 : -errno;
    return fsync_dir(path);
}

int job_state_mkdir(const char *dir, struct errmsg *err)
{
    char *d = strdup(dir);
    if (!d) {
        errmsg_set(err, "out of memory");
        return -ENOMEM;
    }
    /* Missing parents are made 0700 too; existing ones stay as they are. */
    for (char *s = d + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(d, 0700) < 0 && errno != EEXIST) {
            int e = errno;
            errmsg_set(err, "state directory %s: mkdir %s: %s", dir, d,
                       strerror(e));
            free(d);
            return -e;
        }
        *s = '/';
    }
    free(d);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        errmsg_set(err, "state directory %s: %s", dir, strerror(e));
        return -e;
    }
    struct stat sb;
    if (lstat(dir, &sb) < 0) {
        int e = errno;
        errmsg_set(err, "state directory %s: %s", dir, strerror(e));
        return -e;
    }
    if (!S_ISDIR(sb.st_mode)) {
        errmsg_set(err, "state directory %s: not a directory", dir);
        return -ENOTDIR;
    }
    if (sb.st_uid != geteuid()) {
        errmsg_set(err, "state directory %s: owned by uid %u, not by us",
                   dir, (unsigned)sb.st_uid);
        return -EPERM;
    }
    if ((sb.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0) {
        int e = errno;
        errmsg_set(err, "state directory %s: chmod 0700: %s", dir,
                   strerror(e));
        return -e;
    }
    return 0;
}

char *job_state_default_dir(void)
{
    char *s = NULL;
    if (geteuid() == 0)
        return strdup("/var/lib/imgfs/state");
    const char *x = getenv("XDG_STATE_HOME");
    if (x && x[0] == '/') {
        if (asprintf(&s, "%s/imgfs", x) < 0)
            return NULL;
        return s;
    }
    const char *home = getenv("HOME");
    if (!home || home[0] != '/')
        return NULL;
    if (asprintf(&s, "%s/.local/state/imgfs", home) < 0)
        return NULL;
    return s;
}

char *job_state_mount_key(const char *mountpoint)
{
    const char *p = mountpoint;
    while (*p == '/')
        p++;
    size_t n = strlen(p);
    char *out = malloc(3 * n + 2);
    if (!out)
        return NULL;
    size_t o = 0;
    for (; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '/')
            out[o++] = '-';
        else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_')
            out[o++] = (char)c;
        else
            o += (size_t)sprintf(out + o, "%%%02X", c);
    }
    if (o == 0)
        out[o++] = '-';
    out[o] = '\0';
    /* "." and ".." are no directory names of ours. */
    if (!strcmp(out, ".") || !strcmp(out, ".."))
        strcpy(out, out[1] ? "%2E%2E" : "%2E");
    if (o > 200) {
        uint64_t h = 0xcbf29ce484222325ull;     /* FNV-1a */
        for (const char *q = mountpoint; *q; q++) {
            h ^= (unsigned char)*q;
            h *= 0x100000001b3ull;
        }
        sprintf(out + 180, "~%016llx", (unsigned long long)h);
    }
    return out;
}
