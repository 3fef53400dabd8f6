/* STUB, being written. */
#include "mount-cmd.h"
#include <stdio.h>
int cmd_mount(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "imgfs mount: not built yet\n");
    return 1;
}
int cmd_wait(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "imgfs wait: not built yet\n");
    return 1;
}
