/* STUB, being written. */
#include "commands.h"
#include <stdio.h>
int cmd_copy(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "imgfs copy: not built yet\n");
    return 1;
}
