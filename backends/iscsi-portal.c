/* iscsi-portal.c — what a login to an iSCSI portal needs besides
 * libiscsi: a plain TCP reachability check, used only to explain a failed
 * login ("cannot connect: Connection refused" rather than libiscsi's
 * generic text), and the CHAP secret file, read only if no one but its
 * owner can reach it. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "iscsi-priv.h"

/* Split "host", "host:port", "[v6]" or "[v6]:port" (default port 3260). */
static int split_portal(const char *portal, char *host, size_t hsize,
                        char *port, size_t psize)
{
    const char *h = portal, *p = NULL;
    size_t hlen;
    if (*portal == '[') {
        const char *end = strchr(portal, ']');
        if (!end)
            return -EINVAL;
        h = portal + 1;
        hlen = (size_t)(end - h);
        if (end[1] == ':')
            p = end + 2;
    } else {
        const char *colon = strrchr(portal, ':');
        if (colon && strchr(portal, ':') == colon) {
            hlen = (size_t)(colon - portal);
            p = colon + 1;
        } else {
            hlen = strlen(portal);
        }
    }
    if (hlen == 0 || hlen >= hsize)
        return -EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    snprintf(port, psize, "%s", p && *p ? p : "3260");
    return 0;
}

int iscsi_portal_check(const char *portal)
{
    char host[256], port[64];
    if (split_portal(portal, host, sizeof host, port, sizeof port) < 0)
        return -EINVAL;
    char *end;
    errno = 0;
    long n = strtol(port, &end, 10);
    if (errno || *end || end == port || n < 1 || n > 65535)
        return -EINVAL;
    return 0;
}

static int try_connect(const struct addrinfo *ai, int timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            r = -errno;
        } else {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            int n = poll(&p, 1, timeout_ms);
            int soerr = 0;
            socklen_t len = sizeof soerr;
            if (n == 0)
                r = -ETIMEDOUT;
            else if (n < 0)
                r = -errno;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
                r = -errno;
            else
                r = -soerr;
        }
    }
    close(fd);
    return r;
}

int iscsi_probe_portal(const char *portal, int timeout_ms)
{
    char host[256], port[32];
    if (split_portal(portal, host, sizeof host, port, sizeof port) < 0)
        return -EINVAL;
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    int r = -EHOSTUNREACH;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        r = try_connect(ai, timeout_ms);
        if (r == 0)
            break;
    }
    freeaddrinfo(res);
    return r;
}

/* Read the first line of the open secret file `fd` into `pw`; returns
 * the length or -errno. */
static ssize_t read_first_line(int fd, char *pw, size_t size)
{
    size_t got = 0;
    while (got + 1 < size) {
        ssize_t n = read(fd, pw + got, size - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
        if (memchr(pw, '\n', got))
            break;
    }
    pw[got] = '\0';
    pw[strcspn(pw, "\r\n")] = '\0';
    return (ssize_t)strlen(pw);
}

int iscsi_read_secret_file(const char *file, char *pw, size_t size,
                           struct errmsg *err)
{
    if (size < 2)
        return -EINVAL;
    /* O_NONBLOCK: a FIFO must not hang the open; it is refused below. */
    int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        errmsg_set(err, "cannot read CHAP secret file %s "
                   "($IMGFS_ISCSI_SECRET_FILE): %s", file, strerror(e));
        return -e;
    }
    struct stat st;
    int r = 0;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        errmsg_set(err, "cannot stat CHAP secret file %s "
                   "($IMGFS_ISCSI_SECRET_FILE): %s", file, strerror(-r));
    } else if (!S_ISREG(st.st_mode)) {
        r = -EINVAL;
        errmsg_set(err, "IMGFS_ISCSI_SECRET_FILE %s is not a regular file",
                   file);
    } else if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        r = -EPERM;
        errmsg_set(err, "IMGFS_ISCSI_SECRET_FILE %s has mode %04o: it must "
                   "not be accessible by group or others (chmod 600 %s)",
                   file, (unsigned)(st.st_mode & 07777), file);
    } else {
        ssize_t n = read_first_line(fd, pw, size);
        if (n < 0) {
            r = (int)n;
            errmsg_set(err, "cannot read CHAP secret file %s "
                       "($IMGFS_ISCSI_SECRET_FILE): %s", file, strerror(-r));
        } else if (n == 0) {
            r = -EINVAL;
            errmsg_set(err, "CHAP secret file %s is empty", file);
        }
    }
    close(fd);
    if (r < 0)
        memset(pw, 0, size);
    return r;
}
