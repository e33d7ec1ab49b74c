/*
 * error.c -- names of error codes and the errstr setter (see error.h).
 */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *ps_err_str(int err)
{
    switch (err) {
    case PS_OK: return "success";
    case PS_ERR: return "error";
    case PS_ERR_NOMEM: return "out of memory";
    case PS_ERR_IO: return "I/O error";
    case PS_ERR_CONFIG: return "invalid configuration";
    case PS_ERR_STATE: return "invalid saved state";
    case PS_ERR_DECODE: return "undecodable input";
    default: return "unknown error";
    }
}

void ps_set_err(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;

    if (errstr == NULL || errstr_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}
