/* iscsi-portal.c — a plain TCP reachability check of an iSCSI portal,
 * used only to explain a failed login ("cannot connect: Connection
 * refused" rather than libiscsi's generic text). */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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
