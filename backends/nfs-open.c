/* nfs-open.c — open an nfs:// image: parse the URL, connect and mount
 * (synchronous libnfs calls), apply the open rules of image-open.h, then
 * hand the context to the loop (nfs.c).
 *
 * URL: nfs://server/export[/dir...]/file[?nfsport=N&mountport=M&...],
 * parsed by libnfs (query arguments such as nfsport/mountport skip the
 * portmapper).  libnfs mounts the directory part of the path; when the
 * server refuses that directory (it is inside an export, not an export),
 * its parents are tried in turn and the rest of the path is opened
 * relative to the export that mounted.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nfsc/libnfs.h>

#include "nfs-image.h"
#include "protocols.h"

/* Timeouts: opening must fail within seconds when a server does not
 * answer; on the data path a busy server (COMMIT of a large file) gets
 * longer.  libnfs takes whole seconds. */
#define OPEN_TIMEOUT_MS 5000
#define DATA_TIMEOUT_MS 60000
/* TCP SYN retries when connecting (a dead host fails in a few seconds). */
#define TCP_SYN_COUNT 2
/* Reconnect attempts after a connection drop (libnfs auto-reconnect). */
#define RECONNECT_RETRIES 10

#define CREATE_MODE 0644
/* Diagnosing a failed connection: how long a test connect may take. */
#define CONNECT_PROBE_MS 3000

/* A mounted export: context, export path and the file's path inside it. */
struct nfs_mounted {
    struct nfs_context *nfs;
    char *server;
    char *export;       /* what was mounted, e.g. "/export" */
    char *file;         /* path relative to the export, e.g. "/dir/f.img" */
};

static void mounted_release(struct nfs_mounted *m)
{
    if (m->nfs)
        nfs_destroy_context(m->nfs);
    free(m->server);
    free(m->export);
    free(m->file);
    *m = (struct nfs_mounted){ 0 };
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
    nfs_set_autoreconnect(nfs, 0);      /* fail fast while opening */
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

/* Mount the directory part of `url`, falling back to its parents. */
static int mount_url(const char *url, struct nfs_mounted *m,
                     struct errmsg *err)
{
    struct nfs_url *u;
    struct nfs_context *nfs = new_context(url, &u, err);
    if (!nfs)
        return -EINVAL;
    char *server = strdup(u->server);
    char *dir = strdup(u->path);
    char *file = strdup(u->file);
    nfs_destroy_url(u);
    nfs_destroy_context(nfs);
    nfs = NULL;
    if (!server || !dir || !file) {
        free(server);
        free(dir);
        free(file);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }

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

/* Apply the source/target rules; on success *fh is open and *size set. */
static int open_file(const char *url, struct nfs_mounted *m,
                     const struct image_open_opts *opts, struct nfsfh **fh,
                     uint64_t *size, bool *created, struct errmsg *err)
{
    struct nfs_stat_64 st;
    int r = nfs_stat64(m->nfs, m->file, &st);
    bool exists = r == 0;
    if (r < 0 && r != -ENOENT) {
        errmsg_set(err, "%s: cannot stat %s on export %s: %s", url, m->file,
                   m->export, nfs_get_error(m->nfs));
        return r;
    }
    if (exists && S_ISDIR(st.nfs_mode)) {
        errmsg_set(err, "%s: is a directory", url);
        return -EISDIR;
    }
    if (exists && !S_ISREG(st.nfs_mode)) {
        errmsg_set(err, "%s: not a regular file", url);
        return -EINVAL;
    }
    *created = false;
    if (!opts->write) {
        if (!exists) {
            errmsg_set(err, "%s: no such file (%s on export %s)", url,
                       m->file, m->export);
            return -ENOENT;
        }
        r = nfs_open(m->nfs, m->file, O_RDONLY, fh);
        if (r < 0) {
            errmsg_set(err, "%s: cannot open %s: %s", url, m->file,
                       nfs_get_error(m->nfs));
            return r;
        }
        *size = st.nfs_size;
        return 0;
    }
    if (!exists && !opts->create) {
        errmsg_set(err, "%s: no such file (%s on export %s); use --create "
                   "to create it", url, m->file, m->export);
        return -ENOENT;
    }
    if (exists && st.nfs_size > 0 && !opts->overwrite) {
        errmsg_set(err, "%s exists and is not empty (%" PRIu64 " bytes); "
                   "use --overwrite to replace it", url,
                   (uint64_t)st.nfs_size);
        return -EEXIST;
    }
    int flags = O_RDWR | (exists ? 0 : O_CREAT);
    r = nfs_open2(m->nfs, m->file, flags, CREATE_MODE, fh);
    if (r < 0) {
        errmsg_set(err, "%s: cannot %s %s: %s", url,
                   exists ? "open" : "create", m->file,
                   nfs_get_error(m->nfs));
        return r;
    }
    if (!opts->create) {
        *size = st.nfs_size;
        return 0;
    }
    /* Drop old contents first so the new size is all holes. */
    r = nfs_ftruncate(m->nfs, *fh, 0);
    if (r == 0 && opts->create_size)
        r = nfs_ftruncate(m->nfs, *fh, opts->create_size);
    if (r < 0) {
        errmsg_set(err, "%s: cannot set the size of %s to %" PRIu64 ": %s",
                   url, m->file, opts->create_size, nfs_get_error(m->nfs));
        nfs_close(m->nfs, *fh);
        *fh = NULL;
        return r;
    }
    *size = opts->create_size;
    *created = true;
    return 0;
}

/* True if the URL's query sets `key`. */
static bool url_has_arg(const char *url, const char *key)
{
    const char *q = strchr(url, '?');
    size_t n = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, n) == 0 && q[n] == '=')
            return true;
        q = strchr(q, '&');
    }
    return false;
}

int nfs_image_open(struct loop *loop, const char *url,
                   const struct image_open_opts *opts, struct image **out,
                   struct errmsg *err)
{
    *out = NULL;
    struct nfs_mounted m = { 0 };
    int r = mount_url(url, &m, err);
    if (r < 0)
        return r;

    struct nfsfh *fh = NULL;
    uint64_t size = 0;
    bool created = false;
    r = open_file(url, &m, opts, &fh, &size, &created, err);
    if (r < 0) {
        mounted_release(&m);
        return r;
    }

    struct image *img = image_alloc(&nfs_image_ops, loop, url);
    struct nfs_image *ni = calloc(1, sizeof *ni);
    if (!img || !ni) {
        free(ni);
        image_free_shell(img);
        nfs_close(m.nfs, fh);
        mounted_release(&m);
        errmsg_set(err, "%s: out of memory", url);
        return -ENOMEM;
    }
    ni->img = img;
    ni->nfs = m.nfs;
    m.nfs = NULL;
    ni->fh = fh;
    ni->readmax = nfs_get_readmax(ni->nfs);
    ni->writemax = nfs_get_writemax(ni->nfs);
    if (ni->readmax == 0)
        ni->readmax = NFS_BLKSIZE;
    if (ni->writemax == 0)
        ni->writemax = NFS_BLKSIZE;
    ni->growable = opts->write && opts->growable;
    mounted_release(&m);

    nfs_set_timeout(ni->nfs, DATA_TIMEOUT_MS);
    if (!url_has_arg(url, "autoreconnect"))
        nfs_set_autoreconnect(ni->nfs, RECONNECT_RETRIES);

    img->priv = ni;
    img->size = size;
    img->block_size = 1;
    img->max_request = 0;       /* requests are split here */
    img->read_only = !opts->write;
    img->reads_as_zero = created;
    img->can_unmap = false;
    nfs_image_attach(ni);
    *out = img;
    return 0;
}
