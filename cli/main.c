/*
 * main.c -- the propstream binary: one executable, several subcommands.
 *
 *   propstream run     consume events, keep statistics, write them to Redis
 *   propstream broker  librdkafka's mock Kafka cluster as a process
 *   propstream gen     synthetic events modelled on the seed analysis
 *   propstream import  CSV exports to events on a Kafka topic
 *   propstream status  live view of a deployment, from Redis only
 *   propstream dlq     dead letters by reason; re-inject them into Kafka
 *
 * Every subcommand parses its own options (common/config.h) and returns
 * its exit code: 0 success, 1 runtime failure, 2 bad usage/configuration.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

#ifndef PS_VERSION
#define PS_VERSION "dev"
#endif

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"run", ps_cmd_run, "consume events from Kafka and publish statistics "
                        "to Redis"},
    {"broker", ps_cmd_broker, "run librdkafka's mock Kafka cluster "
                              "(development and tests)"},
    {"gen", ps_cmd_gen, "generate synthetic events to Kafka or a file"},
    {"import", ps_cmd_import, "CSV exports (REES46, Online Retail, generic) "
                              "to events on Kafka"},
    {"status", ps_cmd_status, "live view from Redis: rates, lag, dead "
                              "letters, segments, triggers"},
    {"dlq", ps_cmd_dlq, "dead letters by reason; list them or re-inject "
                        "them into Kafka"},
};

static void usage(FILE *f)
{
    fprintf(f, "propstream %s -- real-time personalization statistics from "
               "Kafka to Redis\n\nusage: propstream COMMAND [options]   "
               "(propstream COMMAND --help for options)\n\ncommands:\n",
            PS_VERSION);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("propstream %s\n", PS_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "propstream: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
