/* commands: the `loralab` subcommands. Each takes the arguments from its own name on (argv[0] is
 * the subcommand's name, e.g. "runs") and returns the process exit status: 0 success, 1 failure,
 * 2 bad usage or bad input (with a message on stderr). */
#ifndef LL_COMMANDS_H
#define LL_COMMANDS_H

int cmd_runs(int argc, char **argv);
int cmd_merge_db(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_merge(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_sweep(int argc, char **argv);
int cmd_analyze(int argc, char **argv);

/* Reads a flag's value given as `--name VALUE` or `--name=VALUE` at argv[*i] into *out (advancing
 * *i past a separate value); returns 0 when argv[*i] is not that flag or its value is missing. */
int cli_flag(int argc, char **argv, int *i, const char *name, const char **out);

#endif
