/* mount-images.c — fs_mount_add_image (mount.h): each NAME=URL of a mount
 * checked and added as a top-level entry. */
#include "mount-priv.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static bool is_nfs_dir_url(const char *url)
{
    const char *q = strchr(url, '?');
    size_t len = q ? (size_t)(q - url) : strlen(url);
    return len > 0 && url[len - 1] == '/';
}

static int add_export(struct nfs_export *e)
{
    struct nfs_export **v = realloc(fs_global->exports,
                                    (fs_global->nexports + 1) * sizeof *v);
    if (!v)
        return -ENOMEM;
    fs_global->exports = v;
    v[fs_global->nexports++] = e;
    return 0;
}

/* An NFS file or directory `url` as `name`: its export is opened (kept
 * for the mount's life) and the entry looked up.  0, or -1 with `em`. */
static int add_nfs(const char *name, const char *url, struct errmsg *em)
{
    bool dir = is_nfs_dir_url(url);
    struct nfs_export *e;
    char *file = NULL;
    struct stat st;
    int r = nfs_export_open(url, dir, &e, &file, &st, em);
    if (r < 0) {
        errmsg_prefix(em, "%s", name);
        return -1;
    }
    if (add_export(e) < 0) {
        nfs_export_close(e);
        free(file);
        errmsg_set(em, "%s: out of memory", name);
        return -1;
    }
    struct node *n = node_new(dir ? NODE_NFSDIR : NODE_NFSFILE,
                              fs_global->root, name);
    if (!n) {
        free(file);
        errmsg_set(em, "%s: out of memory", name);
        return -1;
    }
    n->exp = e;
    n->relpath = dir ? strdup("") : file;
    n->read_only = fs_global->read_only;
    if (!n->relpath) {
        errmsg_set(em, "%s: out of memory", name);
        return -1;
    }
    if (dir != S_ISDIR(st.st_mode)) {
        errmsg_set(em, "%s: %s is %s (directories end with '/')", name, url,
                   dir ? "not a directory" : "a directory");
        return -1;
    }
    return 0;
}

/* An iSCSI LUN, local file, null: or zero: `url` as `name`: opened once
 * on `tmp_loop` to check it and learn its size (fixed while mounted).
 * 0, or -1 with `em`. */
static int add_fixed(struct loop *tmp_loop, const char *name,
                     const char *url, struct errmsg *em)
{
    char *path = NULL;
    if (!strstr(url, "://") && strncmp(url, "null:", 5) &&
        strncmp(url, "zero:", 5)) {
        path = realpath(url, NULL);
        if (!path) {
            errmsg_set(em, "%s: %s: %s", name, url, strerror(errno));
            return -1;
        }
    }
    const char *open_url = path ? path : url;
    /* overwrite without create: open the existing image for writing,
     * never truncating it. */
    struct image_open_opts o = { .write = !fs_global->read_only,
                                 .overwrite = true,
                                 .format = IMAGE_FORMAT_RAW };
    struct image *img;
    int r = image_open_protocol(tmp_loop, open_url, &o, &img, em);
    if (r < 0 && o.write && (r == -EROFS || r == -EACCES || r == -EPERM ||
                             !strncmp(url, "zero:", 5))) {
        o.write = false;
        r = image_open_protocol(tmp_loop, open_url, &o, &img, em);
    }
    if (r < 0) {
        errmsg_prefix(em, "%s", name);
        free(path);
        return -1;
    }
    struct node *n = node_new(NODE_IMAGE, fs_global->root, name);
    if (!n) {
        image_close(img);
        free(path);
        errmsg_set(em, "%s: out of memory", name);
        return -1;
    }
    n->url = path ? path : strdup(url);
    n->fixed_size = img->size;
    n->id_ino = node_id_ino(img);
    n->read_only = fs_global->read_only || !o.write || img->read_only;
    n->lun = true;
    image_close(img);
    if (!n->url) {
        errmsg_set(em, "%s: out of memory", name);
        return -1;
    }
    return 0;
}

int fs_mount_add_image(struct fs_mount *m, const char *name, const char *url,
                       struct errmsg *em)
{
    (void)m;
    if (!*name || strchr(name, '/') || !strcmp(name, "control") ||
        !strcmp(name, ".") || !strcmp(name, "..")) {
        errmsg_set(em, "'%s': bad name (no '/', not 'control')", name);
        return -1;
    }
    if (node_child(fs_global->root, name)) {
        errmsg_set(em, "'%s': name used twice", name);
        return -1;
    }
    if (!strncmp(url, "nfs://", 6))
        return add_nfs(name, url, em);
    struct loop *tmp_loop = loop_new();
    if (!tmp_loop) {
        errmsg_set(em, "%s: %s", name, strerror(errno));
        return -1;
    }
    int r = add_fixed(tmp_loop, name, url, em);
    loop_free(tmp_loop);
    return r;
}
