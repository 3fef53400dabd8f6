/* nfs-mount.c — connect to an NFS server and mount the export that holds
 * a URL's file (synchronous libnfs calls, used only while opening).
 *
 * libnfs parses the URL (query arguments such as nfsport/mountport skip
 * the portmapper) and mounts its directory part.  When the server refuses
 * that directory (it lies inside an export rather than being one), its
 * parents are tried in turn and the rest of the path becomes the file's
 * path inside the export that mounted.  Connection failures are explained
 * in plain words (libnfs' sync mount reports a refused connection only as
 * "nfs_service failed").
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "nfs-image.h"

/* Opening must fail within seconds when a server does not answer
 * (libnfs takes whole seconds). */
#define OPEN_TIMEOUT_MS 5000
/* TCP SYN retries when connecting (a dead host fails in a few seconds). */
#define TCP_SYN_COUNT 2
/* libnfs's own reconnect after a connection drop (its auto-reconnect;
 * the URL's autoreconnect= overrides): without limit, so a connection
 * lost while opening is tried again until the sync calls' timeout.  The
 * data path never rides on it: once the image is open, nfs-reconnect.c
 * takes any loss (libnfs starting a reconnect of its own included) as the
 * end of this context and mounts a new one, with libnfs's reconnect off,
 * paced by its backoff and given up after the reconnect timeout. */
#define RECONNECT_RETRIES (-1)
/* Diagnosing a failed connection: how long a test connect may take. */
#define CONNECT_PROBE_MS 3000

void nfs_mounted_release(struct nfs_mounted *m)
{
    if (m->nfs)
        nfs_destroy_context(m->nfs);
    free(m->server);
    free(m->export);
    free(m->file);
    *m = (struct nfs_mounted){ 0 };
}

/* Query arguments libnfs would silently misread: ports must be numbers,
 * and only NFSv3 is used (libnfs 4.0's NFSv4 is not usable). */
static int check_url_args(const char *url, struct errmsg *err)
{
    const char *q = strchr(url, '?');
    while (q) {
        q++;
        size_t n = strcspn(q, "&");
        const char *eq = memchr(q, '=', n);
        size_t klen = eq ? (size_t)(eq - q) : n;
        const char *val = eq ? eq + 1 : "";
        size_t vlen = eq ? n - klen - 1 : 0;
        bool port = (klen == 7 && strncmp(q, "nfsport", 7) == 0) ||
                    (klen == 9 && strncmp(q, "mountport", 9) == 0);
        if (port) {
            char *end;
            long v = strtol(val, &end, 10);
            if (vlen == 0 || end != val + vlen || v <= 0 || v > 65535) {
                errmsg_set(err, "%s: %.*s must be a port number (1-65535)",
                           url, (int)klen, q);
                return -EINVAL;
            }
        }
        if (klen == 7 && strncmp(q, "version", 7) == 0 &&
            !(vlen == 1 && val[0] == '3')) {
            errmsg_set(err, "%s: only NFS version 3 is supported", url);
            return -EINVAL;
        }
        q = strchr(q, '&');
    }
    return 0;
}

/* A fresh context with our defaults, then the URL's own arguments. */
static struct nfs_context *new_context(const char *url, struct nfs_url **u,
                                       struct errmsg *err)
{
    struct nfs_context *nfs = nfs_init_context();
    if (!nfs) {
        errmsg_set(err, "%s: cannot create an NFS context", url);
        return NULL;
    }
    nfs_set_version(nfs, 3);    /* libnfs' NFSv4 breaks on large I/O */
    nfs_set_timeout(nfs, OPEN_TIMEOUT_MS);
    nfs_set_tcp_syncnt(nfs, TCP_SYN_COUNT);
    /* Must be set before the mount: libnfs 4.0 hands it to the RPC
     * layer when the mount completes (setting it later has no effect).
     * Connecting at open time never retries. */
    nfs_set_autoreconnect(nfs, RECONNECT_RETRIES);
    *u = nfs_parse_url_full(nfs, url);
    if (!*u) {
        errmsg_set(err, "%s: invalid NFS URL (expected "
                   "nfs://server/export/path/file[?nfsport=N&mountport=M]): "
                   "%s", url, nfs_get_error(nfs));
        nfs_destroy_context(nfs);
        return NULL;
    }
    return nfs;
}

/* True if libnfs' text says the connection itself failed (as opposed to
 * the server refusing the mount). */
static bool is_connect_failure(const char *text)
{
    return strstr(text, "onnect") || strstr(text, "timed out") ||
           strstr(text, "portmap") || strstr(text, "Portmap") ||
           strstr(text, "refused") || strstr(text, "resolv") ||
           strstr(text, "nfs_service failed");
}

/* Value of the numeric query argument `key` of `url`, or `dflt`. */
static int url_port_arg(const char *url, const char *key, int dflt)
{
    const char *q = strchr(url, '?');
    size_t n = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, n) == 0 && q[n] == '=')
            return atoi(q + n + 1);
        q = strchr(q, '&');
    }
    return dflt;
}

/* Try a plain TCP connect to server:port (at most CONNECT_PROBE_MS).
 * Returns 0 if it connects, else a positive errno.  libnfs' sync mount
 * reports a refused connection only as "nfs_service failed"; this finds
 * the real reason for the message. */
static int probe_connect(const char *server, int port)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    if (getaddrinfo(server, service, &hints, &ai) != 0)
        return EHOSTUNREACH;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int e = fd < 0 ? errno : 0;
    if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        e = errno;
        if (e == EINPROGRESS) {
            struct pollfd pfd = { fd, POLLOUT, 0 };
            socklen_t len = sizeof e;
            if (poll(&pfd, 1, CONNECT_PROBE_MS) <= 0)
                e = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
                e = errno;
        }
    }
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return e;
}

/* Explain a failed mount that libnfs blames on the connection. */
static int explain_connect_failure(const char *url, const char *server,
                                   const char *export, const char *text,
                                   struct errmsg *err)
{
    if (strchr(server, ':') && !strchr(server, '[')) {
        errmsg_set(err, "%s: cannot connect to %s: libnfs does not take "
                   "server:port; use ?nfsport=N&mountport=M", url, server);
        return -EINVAL;
    }
    if (strstr(text, "timed out")) {
        errmsg_set(err, "%s: no answer from %s within %d s while mounting "
                   "%s", url, server, OPEN_TIMEOUT_MS / 1000, export);
        return -ETIMEDOUT;
    }
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
    int gai = getaddrinfo(server, NULL, &hints, &ai);
    if (gai != 0) {
        errmsg_set(err, "%s: cannot resolve the server name %s: %s", url,
                   server, gai_strerror(gai));
        return -EHOSTUNREACH;
    }
    freeaddrinfo(ai);
    /* The mount talks to mountd (or the portmapper), then to nfsd. */
    int mount_port = url_port_arg(url, "mountport", 111);
    int nfs_port = url_port_arg(url, "nfsport", 0);
    int ports[2] = { mount_port, nfs_port };
    for (int i = 0; i < 2; i++) {
        if (ports[i] <= 0)
            continue;
        int e = probe_connect(server, ports[i]);
        if (e) {
            errmsg_set(err, "%s: cannot connect to %s (port %d%s): %s", url,
                       server, ports[i],
                       ports[i] == 111 && i == 0 ? ", portmapper" : "",
                       strerror(e));
            return -e;
        }
    }
    errmsg_set(err, "%s: cannot connect to %s while mounting %s (port %d "
               "answers; the server's mountd or nfsd port may not): %s", url,
               server, export, mount_port, text);
    return -EIO;
}

static int mount_with_fallback(const char *url, char *server, char *dir,
                               char *file, struct nfs_mounted *m,
                               struct errmsg *err);

/* Split `url` into server, directory and file (whole path as directory
 * with `is_dir`), then mount with the fallback to parents. */
static int mount_url(const char *url, bool is_dir, struct nfs_mounted *m,
                     struct errmsg *err)
{
    int r = check_url_args(url, err);
    if (r < 0)
        return r;
    struct nfs_url *u;
    struct nfs_context *nfs = new_context(url, &u, err);
    if (!nfs)
        return -EINVAL;
    char *server = strdup(u->server);
    char *dir = NULL, *file = NULL;
    if (is_dir) {
        /* parse_url_full cut the last component off as the file. */
        if (asprintf(&dir, "%s%s", u->path, u->file) < 0)
            dir = NULL;
        file = strdup("");
    } else {
        dir = strdup(u->path);
        file = strdup(u->file);
    }
    nfs_destroy_url(u);
    nfs_destroy_context(nfs);
    if (!server || !dir || !file) {
        free(server);
        free(dir);
        free(file);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    return mount_with_fallback(url, server, dir, file, m, err);
}

int nfs_mount_url(const char *url, struct nfs_mounted *m,
                  struct errmsg *err)
{
    return mount_url(url, false, m, err);
}

int nfs_mount_dir_url(const char *url, struct nfs_mounted *m,
                      struct errmsg *err)
{
    return mount_url(url, true, m, err);
}

/* Mount `dir` (takes the three strings), falling back to its parents. */
static int mount_with_fallback(const char *url, char *server, char *dir,
                               char *file, struct nfs_mounted *m,
                               struct errmsg *err)
{
    struct nfs_context *nfs = NULL;
    struct nfs_url *u;
    int r = -ENOENT;
    char first_error[256] = "";
    char *first_export = NULL;
    /* `dir` is cut at its last '/' on every failed attempt. */
    for (;;) {
        const char *export = *dir ? dir : "/";
        nfs = new_context(url, &u, err);
        if (!nfs) {
            r = -EINVAL;
            break;
        }
        nfs_destroy_url(u);
        r = nfs_mount(nfs, server, export);
        if (r == 0)
            break;
        const char *text = nfs_get_error(nfs);
        if (is_connect_failure(text)) {
            r = explain_connect_failure(url, server, export, text, err);
            nfs_destroy_context(nfs);
            nfs = NULL;
            break;
        }
        if (!first_export) {
            first_export = strdup(export);
            snprintf(first_error, sizeof first_error, "%s", text);
        }
        nfs_destroy_context(nfs);
        nfs = NULL;
        char *slash = strrchr(dir, '/');
        if (!slash || !*dir) {
            errmsg_set(err, "%s: mount of %s failed: %s", url,
                       first_export ? first_export : export, first_error);
            break;
        }
        /* Move the last component of dir in front of file. */
        size_t tail = strlen(slash);
        char *nf = malloc(tail + strlen(file) + 1);
        if (!nf) {
            errmsg_set(err, "%s: out of memory", url);
            r = -ENOMEM;
            break;
        }
        memcpy(nf, slash, tail);
        strcpy(nf + tail, file);
        free(file);
        file = nf;
        *slash = '\0';
    }
    free(first_export);
    if (r == 0 && nfs) {
        *m = (struct nfs_mounted){ nfs, server, dir, file };
        return 0;
    }
    free(server);
    free(dir);
    free(file);
    return r < 0 ? r : -EIO;
}
