/* imgfs.c — main: dispatch to the subcommands. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "imgfs-version.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: imgfs COMMAND [options] ...\n"
        "\n"
        "Commands:\n"
        "  copy [options] SOURCE TARGET   copy an image (imgfs copy --help)\n"
        "  mount [options] MOUNTPOINT NAME=URL...\n"
        "                                 mount images as files (imgfs mount --help)\n"
        "  wait MOUNT/control/NAME.job    follow a job started in a mount\n"
        "  -V, --version                  print the version\n"
        "\n"
        "Images: nfs://server/export/path[?nfsport=N&mountport=M],\n"
        "        iscsi://[user@]host[:port]/iqn/lun, null:, zero:SIZE, local paths.\n"
        "iSCSI CHAP password: $IMGFS_ISCSI_SECRET_FILE (a file) or $IMGFS_ISCSI_PASSWORD.\n"
        "\n"
        "Exit status: 0 --help and --version, 2 no or unknown command;\n"
        "otherwise the command's (imgfs COMMAND --help; man imgfs).\n");
}

/* Print "imgfs VERSION", with the git description of the checkout it was
 * built from when there is one, to stdout.  Outside a checkout the
 * description is the version itself (meson's fallback). */
static void print_version(void)
{
    if (IMGFS_GIT_DESCRIBE[0] && strcmp(IMGFS_GIT_DESCRIBE, IMGFS_VERSION))
        printf("imgfs %s (git %s)\n", IMGFS_VERSION, IMGFS_GIT_DESCRIBE);
    else
        printf("imgfs %s\n", IMGFS_VERSION);
}

int main(int argc, char **argv)
{
    /* libnfs and libiscsi write to sockets; a dead peer must be an error,
     * not a signal. */
    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        print_version();
        return 0;
    }
    if (!strcmp(cmd, "copy"))
        return cmd_copy(argc - 1, argv + 1);
    if (!strcmp(cmd, "mount"))
        return cmd_mount(argc - 1, argv + 1);
    if (!strcmp(cmd, "wait"))
        return cmd_wait(argc - 1, argv + 1);
    fprintf(stderr, "imgfs: unknown command '%s' (try imgfs --help)\n", cmd);
    return 2;
}
