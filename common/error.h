/*
 * error.h -- one error convention for the whole project.
 *
 * Success is 0 (PS_OK) everywhere; failures are small negative codes.
 * Functions that can fail for a reason worth telling a person also take
 * (errstr, errstr_size) and write one line there, as librdkafka does.
 * Bad input events are data, not errors: they are counted and
 * dead-lettered (see consumer/decode.h), never reported through these codes.
 */
#ifndef PS_ERROR_H
#define PS_ERROR_H

#include <stddef.h>

typedef enum ps_err {
    PS_OK = 0,
    PS_ERR = -1,         /* unspecified failure, see errstr */
    PS_ERR_NOMEM = -2,   /* allocation failed */
    PS_ERR_IO = -3,      /* network or file I/O failed */
    PS_ERR_CONFIG = -4,  /* invalid configuration */
    PS_ERR_STATE = -5,   /* saved state could not be read back */
    PS_ERR_DECODE = -6   /* bytes could not be decoded */
} ps_err;

/* Short English name of a code ("out of memory", ...). */
const char *ps_err_str(int err);

/* snprintf into errstr when it is non-NULL and errstr_size > 0. */
void ps_set_err(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
