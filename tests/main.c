/* The test program: runs every Check suite (or the one named on the command line) and fails when
 * any test failed or when no test ran at all, so an empty or mis-wired suite list cannot pass. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUITE(name) Suite *name(void);
#include "suites.h"
#undef SUITE

typedef struct {
    const char *name;
    Suite *(*make)(void);
} SuiteEntry;

static const SuiteEntry suites[] = {
#define SUITE(name) {#name, name},
#include "suites.h"
#undef SUITE
};

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;
    SRunner *sr = NULL;
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        size_t n = strlen(suites[i].name) - strlen("_suite");
        if (only && (strlen(only) != n || strncmp(only, suites[i].name, n) != 0)) continue;
        Suite *s = suites[i].make();
        if (!sr) sr = srunner_create(s);
        else srunner_add_suite(sr, s);
    }
    if (!sr) {
        fprintf(stderr, "test_loralab: no suite matches '%s'\n", only ? only : "(all)");
        return 1;
    }
    srunner_run_all(sr, CK_NORMAL);
    int ran = srunner_ntests_run(sr), failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    if (ran == 0) {
        fprintf(stderr, "test_loralab: zero tests ran: the suite list is wrong\n");
        return 1;
    }
    return failed == 0 ? 0 : 1;
}
