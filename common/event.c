/*
 * event.c -- names of event types and byte-string helpers (see event.h).
 */
#include "event.h"

#include <string.h>
#include <strings.h>

static const char *const type_names[PS_EVENT_TYPE_COUNT] = {
    "CLICK", "WISHLIST", "PURCHASE", "SPEND"};

const char *ps_event_type_name(ps_event_type type)
{
    if ((unsigned)type >= PS_EVENT_TYPE_COUNT)
        return "?";
    return type_names[type];
}

int ps_event_type_parse(const char *s, size_t len, ps_event_type *type)
{
    for (int i = 0; i < PS_EVENT_TYPE_COUNT; i++) {
        if (strlen(type_names[i]) == len &&
            strncasecmp(s, type_names[i], len) == 0) {
            *type = (ps_event_type)i;
            return 0;
        }
    }
    return -1;
}

bool ps_str_eq(ps_str a, ps_str b)
{
    if (a.ptr == NULL || b.ptr == NULL)
        return a.ptr == b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}
