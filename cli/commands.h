/*
 * commands.h -- the subcommands of the propstream binary.
 *
 * Each takes the argv of its subcommand (argv[0] is the subcommand name) and
 * returns the process exit code: 0 success, 1 runtime failure, 2 bad
 * usage or configuration.
 */
#ifndef PS_COMMANDS_H
#define PS_COMMANDS_H

int ps_cmd_run(int argc, char **argv);    /* consumer/run.c */
int ps_cmd_broker(int argc, char **argv); /* cli/broker.c */
int ps_cmd_gen(int argc, char **argv);    /* cli/gen.c */
int ps_cmd_import(int argc, char **argv); /* cli/import.c */
int ps_cmd_status(int argc, char **argv); /* cli/status.c */
int ps_cmd_dlq(int argc, char **argv);    /* cli/dlq.c */

#endif
