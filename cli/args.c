/* args: the flag reader the subcommands share (see commands.h). */
#include "commands.h"

#include <string.h>

int cli_flag(int argc, char **argv, int *i, const char *name, const char **out) {
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0) return 0;
    if (argv[*i][n] == '=') {
        *out = argv[*i] + n + 1;
        return 1;
    }
    if (argv[*i][n] != '\0' || *i + 1 >= argc) return 0;
    *out = argv[++*i];
    return 1;
}
