/*
 * import.c -- `propstream import`: CSV exports to events on a Kafka topic.
 *
 *   propstream import -b HOST:PORT -t events --format-in rees46 FILE...
 *   propstream import -o out.json --format json --format-in online-retail F
 *   propstream import -b ... --format-in generic \
 *       --map customer_id=user,type=action,product_id=sku,ts=time FILE
 *
 * Turns real exports into the events of contract section 1 (the mappings of
 * ../shared/data/SOURCES.md):
 *   - rees46 (REES46 / Open CDP behaviour data): view -> CLICK, cart ->
 *     WISHLIST, purchase -> PURCHASE with amount = price; other event types
 *     (remove_from_cart) are skipped as "unmapped_type".  customer =
 *     user_id, product = product_id, ts = event_time.
 *   - online-retail (UCI Online Retail): every line -> PURCHASE of StockCode
 *     with amount = Quantity x UnitPrice (rounded to 1e-6 to drop binary
 *     noise), ts = InvoiceDate taken as UTC.  Skipped: "cancelled"
 *     (InvoiceNo starting with C), "negative_quantity" (stock adjustments
 *     with Quantity < 0 on normal invoices), "missing_customer".
 *     CustomerID "17850.0" becomes "17850".
 *   - generic: --map FIELD=COLUMN,... names the header columns of the
 *     contract fields; customer_id, type and ts are required, the rest
 *     optional.  type is a contract symbol (case-insensitive); ts and
 *     signup_ts are epoch milliseconds or a date (below).
 * Columns are found by header name (case-insensitive), so their order does
 * not matter; a header without a needed column is an error for that file.
 *
 * event_id: the mapped column if any, else "<id-prefix>:<line>" where the
 * prefix defaults to the file's base name: deterministic, so re-importing
 * the same file yields the same ids and the processor's dedup drops them.
 *
 * Dates: "YYYY-MM-DD HH:MM[:SS[.fff]]" with ' ' or 'T', optionally followed
 * by " UTC", "Z" or "+00:00"; also the UCI original "M/D/YYYY H:MM".  All
 * are UTC.  Day-of-month and ranges are checked.
 *
 * The CSV reader (csv_next) is RFC 4180 plus the usual tolerance: quoted
 * fields with commas, doubled quotes and line breaks, LF or CRLF, a UTF-8
 * BOM, a last line without a newline.  It never fails on content: every
 * record is handed to the mapping, which rejects it with a reason
 * ("truncated" for too few fields, "extra_fields", "bad_date",
 * "bad_number", "bad_encoding" for NUL bytes or invalid UTF-8, "oversized"
 * past 1 MiB, "unterminated_quote", ...) or turns it into an event that is
 * then checked by ps_event_validate (whose reason names are reused).
 * Blank lines are ignored and not counted.  Invariant: rows = events +
 * sum(skipped).
 *
 * Order: good rows are kept in memory as 64-byte records whose strings are
 * interned (one copy per distinct customer / product / campaign); when the
 * input is not in non-decreasing ts order they are sorted by (ts, file,
 * line) -- a stable sort -- before anything is produced, so a processor
 * sees event time move forward.  The Kafka key is the customer id.
 *
 * Output on stdout: one JSON object, the summary (print_summary()); a human
 * line and the first line numbers of each skip reason on stderr.  Exit 0 on
 * success (skipped rows included), 2 on bad usage, 1 on an unreadable or
 * unrecognisable file (header without the needed columns), I/O or delivery
 * failure.
 */
#include "commands.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>

#include "../common/config.h"
#include "../common/error.h"
#include "../common/event.h"
#include "../consumer/decode.h"
#include "event_writer.h"

/* ===================================================================
 * Options
 * =================================================================== */

typedef struct imp_opts {
    char *bootstrap;
    char *topic;
    char *output;
    char *format;
    char *format_in;
    char *map;
    char *id_prefix;
    int64_t schema_id;
    int64_t show_lines;
} imp_opts;

#define O(f) offsetof(imp_opts, f)
static const ps_option imp_options[] = {
    PS_EVENT_OUTPUT_OPTIONS(O),
    {"format-in", 'i', PS_OPT_STR, NULL, 1, 0, NULL,
     "input CSV layout: rees46, online-retail or generic (with --map)",
     O(format_in), 0, "rees46|online-retail|generic"},
    {"map", 'm', PS_OPT_STR, NULL, 1, 0, NULL,
     "generic mapping FIELD=COLUMN,... for event_id, customer_id, type, "
     "product_id, amount, ts, signup_ts, campaign",
     O(map), 0},
    {"id-prefix", 0, PS_OPT_STR, NULL, 1, 0, NULL,
     "event ids without an event_id column are PREFIX:LINE (default: the "
     "file's base name)",
     O(id_prefix), 0},
    {"show-lines", 0, PS_OPT_INT, "5", 0, 1000, "lines",
     "line numbers printed per skip reason", O(show_lines), 0},
};
#undef O
#define IMP_NOPTS (sizeof(imp_options) / sizeof(imp_options[0]))

/* ===================================================================
 * CSV reader
 * =================================================================== */

#define CSV_MAX_RECORD (1u << 20) /* bytes kept of one record */
#define CSV_MAX_FIELDS 4096

typedef enum csv_status {
    CSV_OK,
    CSV_UNTERMINATED, /* EOF inside a quoted field */
    CSV_OVERSIZED     /* more than CSV_MAX_RECORD bytes or fields */
} csv_status;

typedef struct csv_reader {
    FILE *fp;
    char buf[1 << 16];
    size_t pos, len;
    bool eof;
    uint64_t line; /* physical line of the next byte, 1-based */
    /* the current record: fields NUL-terminated in rec at fstart[] */
    char *rec;
    size_t rec_len, rec_cap;
    size_t *fstart;
    size_t nfields, fcap;
    uint64_t rec_line; /* line where the record starts */
    csv_status status;
    bool has_nul;
} csv_reader;

static int csv_open(csv_reader *r, const char *path)
{
    memset(r, 0, sizeof(*r));
    r->fp = fopen(path, "rb");
    if (r->fp == NULL)
        return -1;
    r->line = 1;
    return 0;
}

static void csv_close(csv_reader *r)
{
    if (r->fp != NULL)
        fclose(r->fp);
    free(r->rec);
    free(r->fstart);
    memset(r, 0, sizeof(*r));
}

/* Next byte or EOF; -2 on a read error. */
static inline int csv_getc(csv_reader *r)
{
    if (r->pos == r->len) {
        if (r->eof)
            return EOF;
        r->len = fread(r->buf, 1, sizeof(r->buf), r->fp);
        r->pos = 0;
        if (r->len == 0) {
            r->eof = true;
            return ferror(r->fp) ? -2 : EOF;
        }
    }
    return (unsigned char)r->buf[r->pos++];
}

static int csv_put(csv_reader *r, char c)
{
    if (r->rec_len + 1 >= CSV_MAX_RECORD) {
        r->status = CSV_OVERSIZED;
        return 0;
    }
    if (r->rec_len + 1 >= r->rec_cap) {
        size_t cap = r->rec_cap ? r->rec_cap * 2 : 4096;
        char *p = realloc(r->rec, cap);
        if (p == NULL)
            return -1;
        r->rec = p;
        r->rec_cap = cap;
    }
    if (c == '\0')
        r->has_nul = true;
    r->rec[r->rec_len++] = c;
    return 0;
}

/* Close the current field (NUL-terminate) and start a new one. */
static int csv_end_field(csv_reader *r, bool start_next)
{
    if (r->rec_len + 1 >= r->rec_cap || r->rec_cap == 0) {
        size_t cap = r->rec_cap ? r->rec_cap * 2 : 4096;
        char *p = realloc(r->rec, cap);
        if (p == NULL)
            return -1;
        r->rec = p;
        r->rec_cap = cap;
    }
    r->rec[r->rec_len++] = '\0';
    if (!start_next)
        return 0;
    if (r->nfields >= CSV_MAX_FIELDS) {
        r->status = CSV_OVERSIZED;
        r->nfields = CSV_MAX_FIELDS - 1; /* keep overwriting the last */
    }
    if (r->nfields == r->fcap) {
        size_t cap = r->fcap ? r->fcap * 2 : 32;
        size_t *p = realloc(r->fstart, cap * sizeof(*p));
        if (p == NULL)
            return -1;
        r->fstart = p;
        r->fcap = cap;
    }
    r->fstart[r->nfields++] = r->rec_len;
    return 0;
}

static inline const char *csv_field(const csv_reader *r, size_t i)
{
    return r->rec + r->fstart[i];
}

/* Length of field i (stops at an embedded NUL: such records are rejected
 * as bad_encoding anyway). */
static inline size_t csv_field_len(const csv_reader *r, size_t i)
{
    return strlen(csv_field(r, i));
}

/*
 * Read the next record.  Returns 1 (record in r, status tells whether it
 * was cut short), 0 at end of file, -1 on a read error or out of memory.
 * Empty lines come back as one empty field.
 */
static int csv_next(csv_reader *r)
{
    enum { S_START, S_UNQUOTED, S_QUOTED, S_QUOTE_SEEN } st = S_START;
    bool any = false;
    int c;

    r->rec_len = 0;
    r->nfields = 0;
    r->status = CSV_OK;
    r->has_nul = false;
    r->rec_line = r->line;
    if (r->fcap == 0) {
        r->fstart = malloc(32 * sizeof(*r->fstart));
        if (r->fstart == NULL)
            return -1;
        r->fcap = 32;
    }
    r->fstart[0] = 0; /* field 0 starts at offset 0 */
    r->nfields = 1;

    for (;;) {
        c = csv_getc(r);
        if (c == -2)
            return -1;
        if (c == EOF) {
            if (!any)
                return 0;
            if (st == S_QUOTED)
                r->status = CSV_UNTERMINATED;
            break;
        }
        any = true;
        if (c == '\n')
            r->line++;
        switch (st) {
        case S_START:
            if (c == '"') {
                st = S_QUOTED;
                continue;
            }
            st = S_UNQUOTED;
            /* fall through */
        case S_UNQUOTED:
            if (c == ',') {
                if (csv_end_field(r, true) != 0)
                    return -1;
                st = S_START;
            } else if (c == '\n') {
                size_t start = r->fstart[r->nfields - 1];
                if (r->rec_len > start && r->rec[r->rec_len - 1] == '\r')
                    r->rec_len--;
                goto done;
            } else if (csv_put(r, (char)c) != 0) {
                return -1;
            }
            break;
        case S_QUOTED:
            if (c == '"')
                st = S_QUOTE_SEEN;
            else if (csv_put(r, (char)c) != 0)
                return -1;
            break;
        case S_QUOTE_SEEN:
            if (c == '"') {
                if (csv_put(r, '"') != 0)
                    return -1;
                st = S_QUOTED;
            } else if (c == ',') {
                if (csv_end_field(r, true) != 0)
                    return -1;
                st = S_START;
            } else if (c == '\n') {
                goto done;
            } else if (c != '\r') {
                /* text after a closing quote: keep it (lenient) */
                if (csv_put(r, (char)c) != 0)
                    return -1;
                st = S_UNQUOTED;
            }
            break;
        }
    }
    /* EOF: an unquoted last field may still end in '\r' */
    if (st == S_UNQUOTED) {
        size_t start = r->fstart[r->nfields - 1];
        if (r->rec_len > start && r->rec[r->rec_len - 1] == '\r')
            r->rec_len--;
    }
done:
    if (csv_end_field(r, false) != 0)
        return -1;
    return 1;
}

/* ===================================================================
 * Field parsing
 * =================================================================== */

static void trim(const char **s, size_t *len)
{
    while (*len > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && ((*s)[*len - 1] == ' ' || (*s)[*len - 1] == '\t'))
        (*len)--;
}

/* A finite decimal number filling the whole (trimmed) field. */
static bool parse_number(const char *s, double *out)
{
    size_t len = strlen(s);
    char tmp[64], *end;
    trim(&s, &len);
    if (len == 0 || len >= sizeof(tmp))
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    /* no hex, inf or nan: only digits, sign, point, exponent */
    for (size_t i = 0; i < len; i++)
        if (strchr("0123456789+-.eE", tmp[i]) == NULL)
            return false;
    errno = 0;
    *out = strtod(tmp, &end);
    return *end == '\0' && errno == 0 && isfinite(*out);
}

static bool all_digits(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Hinnant). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[12] = {31, 28, 31, 30, 31, 30,
                               31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

/* Read exactly n digits (n > 0) or, with n == 0, 1..4 digits. */
static bool take_int(const char **p, const char *end, int n, int *out)
{
    int v = 0, k = 0, max = n ? n : 4;
    while (*p < end && k < max && **p >= '0' && **p <= '9') {
        v = v * 10 + (**p - '0');
        (*p)++;
        k++;
    }
    if (k == 0 || (n && k != n))
        return false;
    *out = v;
    return true;
}

static bool take_char(const char **p, const char *end, char c)
{
    if (*p < end && **p == c) {
        (*p)++;
        return true;
    }
    return false;
}

/*
 * Parse a date-time (formats in the file comment) into ms since the epoch,
 * UTC.  Returns false on anything else, including impossible dates.
 */
static bool parse_datetime(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    const char *p, *end;
    int y, mo, d, h, mi, sec = 0, ms = 0;

    trim(&s, &len);
    p = s;
    end = s + len;
    if (len >= 10 && s[4] == '-') {
        if (!take_int(&p, end, 4, &y) || !take_char(&p, end, '-') ||
            !take_int(&p, end, 2, &mo) || !take_char(&p, end, '-') ||
            !take_int(&p, end, 2, &d))
            return false;
        if (!take_char(&p, end, ' ') && !take_char(&p, end, 'T'))
            return false;
        if (!take_int(&p, end, 2, &h) || !take_char(&p, end, ':') ||
            !take_int(&p, end, 2, &mi))
            return false;
    } else {
        /* M/D/YYYY H:MM (the UCI original) */
        if (!take_int(&p, end, 0, &mo) || !take_char(&p, end, '/') ||
            !take_int(&p, end, 0, &d) || !take_char(&p, end, '/') ||
            !take_int(&p, end, 4, &y) || !take_char(&p, end, ' ') ||
            !take_int(&p, end, 0, &h) || !take_char(&p, end, ':') ||
            !take_int(&p, end, 2, &mi))
            return false;
    }
    if (take_char(&p, end, ':')) {
        if (!take_int(&p, end, 2, &sec))
            return false;
        if (take_char(&p, end, '.')) {
            int k = 0;
            while (p < end && *p >= '0' && *p <= '9') {
                if (k < 3)
                    ms = ms * 10 + (*p - '0');
                k++;
                p++;
            }
            if (k == 0)
                return false;
            for (; k < 3; k++)
                ms *= 10;
        }
    }
    /* time zone: only UTC spellings */
    if (p < end) {
        size_t rest = (size_t)(end - p);
        if (!((rest == 1 && *p == 'Z') ||
              (rest == 4 && strncmp(p, " UTC", 4) == 0) ||
              (rest == 6 && strncmp(p, "+00:00", 6) == 0) ||
              (rest == 3 && strncmp(p, "UTC", 3) == 0)))
            return false;
    }
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 ||
        d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return false;
    *out = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000LL +
           (int64_t)sec * 1000 + ms;
    return true;
}

/* ts column of the generic mapping: epoch ms (digits) or a date. */
static bool parse_ts(const char *s, int64_t *out)
{
    size_t len = strlen(s);
    trim(&s, &len);
    if (all_digits(s, len)) {
        if (len > 15)
            return false;
        int64_t v = 0;
        for (size_t i = 0; i < len; i++)
            v = v * 10 + (s[i] - '0');
        *out = v;
        return true;
    }
    return parse_datetime(s, out);
}

static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            if (c < 0x20 && c != '\t')
                return false; /* control characters in ids: no */
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false; /* sequence cut by the end of the field */
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

/* ===================================================================
 * Interned strings: one copy of each distinct id
 * =================================================================== */

typedef struct strtab {
    char *arena;
    size_t used, cap;
    size_t *offs;     /* id -> arena offset */
    uint32_t *lens;   /* id -> length */
    uint8_t *in_event; /* id -> used by an emitted event */
    uint32_t n, ncap;
    uint32_t *slots; /* open addressing: id + 1, 0 = empty */
    uint32_t nslots;
} strtab;

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h ^ (h >> 29);
}

static void strtab_free(strtab *t)
{
    free(t->arena);
    free(t->offs);
    free(t->lens);
    free(t->in_event);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static inline const char *strtab_get(const strtab *t, uint32_t id)
{
    return t->arena + t->offs[id];
}

static int strtab_grow_slots(strtab *t)
{
    uint32_t ns = t->nslots ? t->nslots * 2 : 1024;
    uint32_t *slots = calloc(ns, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (uint32_t id = 0; id < t->n; id++) {
        uint32_t i = (uint32_t)hash_bytes(strtab_get(t, id), t->lens[id]) &
                     (ns - 1);
        while (slots[i] != 0)
            i = (i + 1) & (ns - 1);
        slots[i] = id + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

/* Id of s (added if new); UINT32_MAX when out of memory. */
static uint32_t strtab_intern(strtab *t, const char *s, size_t len)
{
    uint32_t i;
    if ((uint64_t)(t->n + 1) * 2 > t->nslots && strtab_grow_slots(t) != 0)
        return UINT32_MAX;
    i = (uint32_t)hash_bytes(s, len) & (t->nslots - 1);
    while (t->slots[i] != 0) {
        uint32_t id = t->slots[i] - 1;
        if (t->lens[id] == len && memcmp(strtab_get(t, id), s, len) == 0)
            return id;
        i = (i + 1) & (t->nslots - 1);
    }
    if (t->n == UINT32_MAX - 1)
        return UINT32_MAX;
    if (t->n == t->ncap) {
        uint32_t nc = t->ncap ? t->ncap * 2 : 1024;
        size_t *o = realloc(t->offs, nc * sizeof(*o));
        if (o == NULL)
            return UINT32_MAX;
        t->offs = o;
        uint32_t *l = realloc(t->lens, nc * sizeof(*l));
        if (l == NULL)
            return UINT32_MAX;
        t->lens = l;
        uint8_t *u = realloc(t->in_event, nc);
        if (u == NULL)
            return UINT32_MAX;
        t->in_event = u;
        t->ncap = nc;
    }
    if (t->used + len + 1 > t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 65536;
        while (nc < t->used + len + 1)
            nc *= 2;
        char *a = realloc(t->arena, nc);
        if (a == NULL)
            return UINT32_MAX;
        t->arena = a;
        t->cap = nc;
    }
    memcpy(t->arena + t->used, s, len);
    t->arena[t->used + len] = '\0';
    t->offs[t->n] = t->used;
    t->lens[t->n] = (uint32_t)len;
    t->in_event[t->n] = 0;
    t->used += len + 1;
    t->slots[i] = t->n + 1;
    return t->n++;
}

/* ===================================================================
 * Mappings and the in-memory events
 * =================================================================== */

enum { IN_REES46, IN_RETAIL, IN_GENERIC };
static const char *const in_names[] = {"rees46", "online-retail", "generic"};

/* Contract fields a generic mapping may name (also the column roles). */
enum {
    F_EVENT_ID,
    F_CUSTOMER,
    F_TYPE,
    F_PRODUCT,
    F_AMOUNT,
    F_TS,
    F_SIGNUP,
    F_CAMPAIGN,
    F_COUNT
};
static const char *const field_names[F_COUNT] = {
    "event_id", "customer_id", "type",      "product_id",
    "amount",   "ts",          "signup_ts", "campaign"};

#define NONE UINT32_MAX

/* One good row, 64 bytes. */
typedef struct imp_rec {
    int64_t ts;
    int64_t signup_ts; /* 0 = absent */
    double amount;     /* NAN = absent */
    uint64_t order;    /* file index << 40 | line: stable tie-break */
    uint32_t cust, prod, campaign, eid; /* interned ids or NONE */
    uint8_t type;
    uint8_t pad[7];
} imp_rec;

/* Skip reasons: fixed list so the summary always shows the same keys for
 * a format, in a stable order. */
typedef enum skip_reason {
    SK_TRUNCATED,
    SK_EXTRA_FIELDS,
    SK_UNTERMINATED,
    SK_OVERSIZED,
    SK_ENCODING,
    SK_BAD_DATE,
    SK_BAD_NUMBER,
    SK_MISSING_CUSTOMER,
    SK_MISSING_PRODUCT,
    SK_UNMAPPED_TYPE,
    SK_CANCELLED,
    SK_NEGATIVE_QTY,
    SK_INVALID_BASE, /* + ps_bad_reason from ps_event_validate */
    SK_COUNT = SK_INVALID_BASE + PS_BAD_REASON_COUNT
} skip_reason;

static const char *skip_name(int r)
{
    static const char *const names[SK_INVALID_BASE] = {
        "truncated",        "extra_fields",    "unterminated_quote",
        "oversized",        "bad_encoding",    "bad_date",
        "bad_number",       "missing_customer", "missing_product",
        "unmapped_type",    "cancelled",       "negative_quantity"};
    if (r < SK_INVALID_BASE)
        return names[r];
    return ps_bad_reason_name((ps_bad_reason)(r - SK_INVALID_BASE));
}

typedef struct skip_where {
    uint32_t file;
    uint64_t line;
} skip_where;

typedef struct imp_ctx {
    const imp_opts *o;
    int in_fmt;
    int gen_col[F_COUNT]; /* generic: column name index per field */
    char *gen_names[F_COUNT];

    imp_rec *recs;
    size_t n, cap;
    strtab cust, prod, camp, eids;

    uint64_t rows, events, by_type[PS_EVENT_TYPE_COUNT];
    uint64_t skipped[SK_COUNT];
    skip_where *first_lines[SK_COUNT]; /* show_lines each */
    double amount_sum;
    bool need_sort;
    int64_t last_ts;

    char **files;
    size_t nfiles;
} imp_ctx;

static void note_skip(imp_ctx *c, int reason, uint32_t file, uint64_t line)
{
    uint64_t k = c->skipped[reason]++;
    if (k < (uint64_t)c->o->show_lines && c->first_lines[reason] != NULL) {
        c->first_lines[reason][k].file = file;
        c->first_lines[reason][k].line = line;
    }
}

/* Index of the header column named name (case-insensitive, trimmed), or
 * -1. */
static int find_col(const csv_reader *hdr, const char *name)
{
    for (size_t i = 0; i < hdr->nfields; i++) {
        const char *s = csv_field(hdr, i);
        size_t len = csv_field_len(hdr, i);
        if (i == 0 && len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s += 3;
            len -= 3;
        }
        trim(&s, &len);
        if (len == strlen(name) && strncasecmp(s, name, len) == 0)
            return (int)i;
    }
    return -1;
}

/* The columns a file's header provides, per role (-1 when absent). */
typedef struct imp_cols {
    int c[F_COUNT];
    int invoice, qty, price; /* online-retail only */
    size_t nfields;
} imp_cols;

static int resolve_cols(imp_ctx *c, const csv_reader *hdr, imp_cols *cols,
                        const char *path, char *errstr, size_t errstr_size)
{
    const char *need[8];
    int *dst[8];
    int nneed = 0;

    for (int f = 0; f < F_COUNT; f++)
        cols->c[f] = -1;
    cols->invoice = cols->qty = cols->price = -1;
    cols->nfields = hdr->nfields;
#define NEED(name, where)                                                  \
    do {                                                                   \
        need[nneed] = (name);                                              \
        dst[nneed++] = (where);                                            \
    } while (0)
    switch (c->in_fmt) {
    case IN_REES46:
        NEED("event_time", &cols->c[F_TS]);
        NEED("event_type", &cols->c[F_TYPE]);
        NEED("product_id", &cols->c[F_PRODUCT]);
        NEED("price", &cols->c[F_AMOUNT]);
        NEED("user_id", &cols->c[F_CUSTOMER]);
        break;
    case IN_RETAIL:
        NEED("InvoiceNo", &cols->invoice);
        NEED("StockCode", &cols->c[F_PRODUCT]);
        NEED("Quantity", &cols->qty);
        NEED("InvoiceDate", &cols->c[F_TS]);
        NEED("UnitPrice", &cols->price);
        NEED("CustomerID", &cols->c[F_CUSTOMER]);
        break;
    default:
        for (int f = 0; f < F_COUNT; f++)
            if (c->gen_names[f] != NULL)
                NEED(c->gen_names[f], &cols->c[f]);
        break;
    }
#undef NEED
    for (int i = 0; i < nneed; i++) {
        *dst[i] = find_col(hdr, need[i]);
        if (*dst[i] < 0) {
            ps_set_err(errstr, errstr_size,
                       "%s: no column \"%s\" in the header (is it a %s "
                       "file?)",
                       path, need[i], in_names[c->in_fmt]);
            return -1;
        }
    }
    return 0;
}

/* CustomerID "17850.0" -> "17850" (digits, point, zeros only). */
static void strip_float_suffix(const char *s, size_t *len)
{
    const char *dot = memchr(s, '.', *len);
    if (dot == NULL || dot == s || !all_digits(s, (size_t)(dot - s)))
        return;
    for (const char *p = dot + 1; p < s + *len; p++)
        if (*p != '0')
            return;
    *len = (size_t)(dot - s);
}

/* A trimmed string field that must be valid UTF-8. 0, or a skip reason. */
static int get_str(const csv_reader *r, int col, const char **s, size_t *len)
{
    *s = csv_field(r, (size_t)col);
    *len = csv_field_len(r, (size_t)col);
    trim(s, len);
    if (!utf8_valid((const unsigned char *)*s, *len))
        return SK_ENCODING + 1;
    return 0;
}

/*
 * Turn one data record into an imp_rec appended to c->recs, or count the
 * reason it is skipped.  Returns 0, or -1 when out of memory.
 */
static int map_row(imp_ctx *c, const csv_reader *r, const imp_cols *cols,
                   uint32_t file)
{
    imp_rec rec;
    const char *s;
    size_t len;
    int reason = -1, e;
    ps_event ev;
    char detail[128];
    ps_bad_reason bad;
    const char *cust_s = NULL, *prod_s = NULL, *camp_s = NULL, *eid_s = NULL;
    size_t cust_n = 0, prod_n = 0, camp_n = 0, eid_n = 0;

    c->rows++;
    memset(&rec, 0, sizeof(rec));
    rec.amount = NAN;
    rec.cust = rec.prod = rec.campaign = rec.eid = NONE;
    rec.order = ((uint64_t)file << 40) | (r->rec_line & ((1ULL << 40) - 1));

    if (r->status == CSV_UNTERMINATED) {
        reason = SK_UNTERMINATED;
        goto skip;
    }
    if (r->status == CSV_OVERSIZED) {
        reason = SK_OVERSIZED;
        goto skip;
    }
    if (r->nfields < cols->nfields) {
        reason = SK_TRUNCATED;
        goto skip;
    }
    if (r->nfields > cols->nfields) {
        reason = SK_EXTRA_FIELDS;
        goto skip;
    }
    if (r->has_nul) {
        reason = SK_ENCODING;
        goto skip;
    }

    /* customer first: every format needs it, and customers_in_file counts
     * the ids of rows skipped later on too */
    if ((e = get_str(r, cols->c[F_CUSTOMER], &cust_s, &cust_n)) != 0) {
        reason = e - 1;
        goto skip;
    }
    if (c->in_fmt == IN_RETAIL)
        strip_float_suffix(cust_s, &cust_n);
    if (cust_n > 0 && cust_n <= PS_ID_MAX) {
        rec.cust = strtab_intern(&c->cust, cust_s, cust_n);
        if (rec.cust == NONE)
            return -1;
    }

    switch (c->in_fmt) {
    case IN_REES46: {
        const char *t = csv_field(r, (size_t)cols->c[F_TYPE]);
        if (strcmp(t, "view") == 0)
            rec.type = PS_CLICK;
        else if (strcmp(t, "cart") == 0)
            rec.type = PS_WISHLIST;
        else if (strcmp(t, "purchase") == 0)
            rec.type = PS_PURCHASE;
        else {
            reason = SK_UNMAPPED_TYPE;
            goto skip;
        }
        if (!parse_datetime(csv_field(r, (size_t)cols->c[F_TS]), &rec.ts)) {
            reason = SK_BAD_DATE;
            goto skip;
        }
        if (rec.type == PS_PURCHASE &&
            !parse_number(csv_field(r, (size_t)cols->c[F_AMOUNT]),
                          &rec.amount)) {
            reason = SK_BAD_NUMBER;
            goto skip;
        }
        break;
    }
    case IN_RETAIL: {
        double qty, price;
        s = csv_field(r, (size_t)cols->invoice);
        len = strlen(s);
        trim(&s, &len);
        if (len > 0 && (s[0] == 'C' || s[0] == 'c')) {
            reason = SK_CANCELLED;
            goto skip;
        }
        if (!parse_number(csv_field(r, (size_t)cols->qty), &qty) ||
            !parse_number(csv_field(r, (size_t)cols->price), &price)) {
            reason = SK_BAD_NUMBER;
            goto skip;
        }
        if (qty < 0) {
            reason = SK_NEGATIVE_QTY;
            goto skip;
        }
        if (!parse_datetime(csv_field(r, (size_t)cols->c[F_TS]), &rec.ts)) {
            reason = SK_BAD_DATE;
            goto skip;
        }
        rec.type = PS_PURCHASE;
        rec.amount = round(qty * price * 1e6) / 1e6;
        if (rec.amount == 0)
            rec.amount = 0; /* no -0 */
        break;
    }
    default: {
        int col;
        ps_event_type type;
        s = csv_field(r, (size_t)cols->c[F_TYPE]);
        len = strlen(s);
        trim(&s, &len);
        if (ps_event_type_parse(s, len, &type) != 0) {
            reason = SK_UNMAPPED_TYPE;
            goto skip;
        }
        rec.type = (uint8_t)type;
        if (!parse_ts(csv_field(r, (size_t)cols->c[F_TS]), &rec.ts)) {
            reason = SK_BAD_DATE;
            goto skip;
        }
        if ((col = cols->c[F_SIGNUP]) >= 0) {
            s = csv_field(r, (size_t)col);
            len = strlen(s);
            trim(&s, &len);
            if (len > 0 && !parse_ts(csv_field(r, (size_t)col),
                                     &rec.signup_ts)) {
                reason = SK_BAD_DATE;
                goto skip;
            }
        }
        if ((col = cols->c[F_AMOUNT]) >= 0) {
            s = csv_field(r, (size_t)col);
            len = strlen(s);
            trim(&s, &len);
            if (len > 0 && !parse_number(csv_field(r, (size_t)col),
                                         &rec.amount)) {
                reason = SK_BAD_NUMBER;
                goto skip;
            }
        }
        if ((col = cols->c[F_CAMPAIGN]) >= 0) {
            if ((e = get_str(r, col, &camp_s, &camp_n)) != 0) {
                reason = e - 1;
                goto skip;
            }
        }
        if ((col = cols->c[F_EVENT_ID]) >= 0) {
            if ((e = get_str(r, col, &eid_s, &eid_n)) != 0) {
                reason = e - 1;
                goto skip;
            }
        }
        break;
    }
    }

    if (cust_n == 0) {
        reason = SK_MISSING_CUSTOMER;
        goto skip;
    }
    if (cols->c[F_PRODUCT] >= 0) {
        if ((e = get_str(r, cols->c[F_PRODUCT], &prod_s, &prod_n)) != 0) {
            reason = e - 1;
            goto skip;
        }
    }
    if (prod_n == 0 && rec.type != PS_SPEND) {
        reason = SK_MISSING_PRODUCT;
        goto skip;
    }

    /* The contract's own rules (ids, amounts, ts) on the final event. */
    memset(&ev, 0, sizeof(ev));
    ev.event_id.ptr = eid_n ? eid_s : "x";
    ev.event_id.len = eid_n ? (uint32_t)eid_n : 1;
    if (cols->c[F_EVENT_ID] >= 0 && eid_n == 0)
        ev.event_id.len = 0; /* a mapped but empty event_id is bad_id */
    ev.customer_id.ptr = cust_s;
    ev.customer_id.len = (uint32_t)(cust_n > UINT32_MAX ? UINT32_MAX : cust_n);
    ev.product_id.ptr = prod_n ? prod_s : NULL;
    ev.product_id.len = (uint32_t)(prod_n > UINT32_MAX ? UINT32_MAX : prod_n);
    ev.campaign.ptr = camp_n ? camp_s : NULL;
    ev.campaign.len = (uint32_t)(camp_n > UINT32_MAX ? UINT32_MAX : camp_n);
    ev.type = (ps_event_type)rec.type;
    ev.has_amount = !isnan(rec.amount);
    ev.amount = ev.has_amount ? rec.amount : 0;
    ev.ts = rec.ts;
    ev.signup_ts = rec.signup_ts;
    bad = ps_event_validate(&ev, detail, sizeof(detail));
    if (bad != PS_BAD_NONE) {
        reason = SK_INVALID_BASE + (int)bad;
        goto skip;
    }

    if (prod_n > 0 && (rec.prod = strtab_intern(&c->prod, prod_s, prod_n)) ==
                          NONE)
        return -1;
    if (camp_n > 0 && (rec.campaign = strtab_intern(&c->camp, camp_s,
                                                    camp_n)) == NONE)
        return -1;
    if (eid_n > 0 &&
        (rec.eid = strtab_intern(&c->eids, eid_s, eid_n)) == NONE)
        return -1;
    c->cust.in_event[rec.cust] = 1;
    if (rec.prod != NONE)
        c->prod.in_event[rec.prod] = 1;

    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 65536;
        imp_rec *p = realloc(c->recs, nc * sizeof(*p));
        if (p == NULL)
            return -1;
        c->recs = p;
        c->cap = nc;
    }
    if (c->n > 0 && rec.ts < c->last_ts)
        c->need_sort = true;
    c->last_ts = rec.ts;
    c->recs[c->n++] = rec;
    c->events++;
    c->by_type[rec.type]++;
    if (!isnan(rec.amount))
        c->amount_sum += rec.amount;
    return 0;

skip:
    note_skip(c, reason, file, r->rec_line);
    return 0;
}

/* Blank line: one empty unquoted field. */
static bool csv_blank(const csv_reader *r)
{
    return r->nfields == 1 && r->rec_len <= 1 && r->status == CSV_OK;
}

/* Read one file into c.  0, or -1 with errstr (I/O, memory, header). */
static int read_file(imp_ctx *c, const char *path, uint32_t file,
                     char *errstr, size_t errstr_size)
{
    csv_reader *r = malloc(sizeof(*r));
    imp_cols cols;
    int rc = -1, got;

    if (r == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (csv_open(r, path) != 0) {
        ps_set_err(errstr, errstr_size, "%s: %s", path, strerror(errno));
        free(r);
        return -1;
    }
    /* header: the first non-blank record */
    do {
        got = csv_next(r);
    } while (got == 1 && csv_blank(r));
    if (got < 0)
        goto io_error;
    if (got == 0) {
        fprintf(stderr, "propstream import: %s: empty file\n", path);
        rc = 0;
        goto done;
    }
    if (r->status != CSV_OK || r->has_nul) {
        ps_set_err(errstr, errstr_size,
                   "%s: line %" PRIu64 ": the header is not a CSV header",
                   path, r->rec_line);
        goto done;
    }
    if (resolve_cols(c, r, &cols, path, errstr, errstr_size) != 0)
        goto done;

    while ((got = csv_next(r)) == 1) {
        if (csv_blank(r))
            continue;
        if (map_row(c, r, &cols, file) != 0) {
            ps_set_err(errstr, errstr_size, "%s: out of memory at line %" PRIu64,
                       path, r->rec_line);
            goto done;
        }
    }
    if (got < 0)
        goto io_error;
    rc = 0;
    goto done;

io_error:
    ps_set_err(errstr, errstr_size, "%s: read failed: %s", path,
               errno ? strerror(errno) : "out of memory");
done:
    csv_close(r);
    free(r);
    return rc;
}

static int rec_cmp(const void *a, const void *b)
{
    const imp_rec *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static volatile sig_atomic_t imp_stop;

static void imp_on_signal(int sig)
{
    (void)sig;
    imp_stop = 1;
}

/* A NUL-terminated string as a ps_str. */
static ps_str str_of(const char *s)
{
    ps_str r = {s, (uint32_t)strlen(s)};
    return r;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The default event id prefix of a file: its base name, at most 200
 * bytes. */
static void base_prefix(const char *path, char *out, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap < 201 ? cap : 201, "%s", b);
}

/* Produce every record in order.  0 or -1 with errstr. */
static int emit_all(imp_ctx *c, ps_event_encoder *enc, ps_event_output *out,
                    int fmt, uint64_t *emitted, char *errstr,
                    size_t errstr_size)
{
    static char payload[16384];
    char (*prefix)[256] = calloc(c->nfiles ? c->nfiles : 1, sizeof(*prefix));
    int rc = -1;

    if (prefix == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t f = 0; f < c->nfiles; f++) {
        if (c->o->id_prefix != NULL)
            snprintf(prefix[f], sizeof(prefix[f]), "%.200s", c->o->id_prefix);
        else
            base_prefix(c->files[f], prefix[f], sizeof(prefix[f]));
    }
    for (size_t i = 0; i < c->n && !imp_stop; i++) {
        const imp_rec *rec = &c->recs[i];
        char eid[300];
        ps_event ev;
        long len;

        memset(&ev, 0, sizeof(ev));
        if (rec->eid != NONE) {
            ev.event_id = str_of(strtab_get(&c->eids, rec->eid));
        } else {
            snprintf(eid, sizeof(eid), "%s:%" PRIu64,
                     prefix[rec->order >> 40],
                     (uint64_t)(rec->order & ((1ULL << 40) - 1)));
            ev.event_id = str_of(eid);
        }
        ev.customer_id = str_of(strtab_get(&c->cust, rec->cust));
        if (rec->prod != NONE)
            ev.product_id = str_of(strtab_get(&c->prod, rec->prod));
        if (rec->campaign != NONE)
            ev.campaign = str_of(strtab_get(&c->camp, rec->campaign));
        ev.type = (ps_event_type)rec->type;
        ev.has_amount = !isnan(rec->amount);
        ev.amount = rec->amount;
        ev.ts = rec->ts;
        ev.signup_ts = rec->signup_ts;

        len = ps_event_encode(enc, &ev, fmt, (uint32_t)c->o->schema_id,
                              payload, sizeof(payload));
        if (len < 0) {
            ps_set_err(errstr, errstr_size, "cannot encode the event of "
                       "line %" PRIu64, (uint64_t)(rec->order & ((1ULL << 40) - 1)));
            goto done;
        }
        if (ps_event_output_send(out, ev.customer_id.ptr, ev.customer_id.len,
                                 payload, (size_t)len, errstr,
                                 errstr_size) != 0)
            goto done;
        (*emitted)++;
        if ((i & 1023) == 0)
            ps_event_output_poll(out, 0);
    }
    while (ps_event_output_queued(out) > 0 && !imp_stop)
        ps_event_output_drain(out, 1000);
    rc = 0;

done:
    free(prefix);
    return rc;
}

/* ===================================================================
 * Summary
 * =================================================================== */

static void fmt_utc(int64_t ms, char *out, size_t cap)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        snprintf(out, cap, "?");
        return;
    }
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static uint32_t count_used(const strtab *t)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < t->n; i++)
        k += t->in_event[i];
    return k;
}

/*
 * stdout, one line: rows, events, skipped{reason: n} (only reasons that
 * occurred), events_by_type{CLICK, WISHLIST, PURCHASE, SPEND}, customers
 * and products (distinct, in emitted events), customers_in_file (distinct
 * ids on all well-formed rows, skipped ones included), sorted (true when
 * the input was not in time order and the importer sorted it),
 * first_ts/last_ts (ms, null without events), amount_sum, format_in,
 * format, output, files, kafka{delivered, failed} (Kafka only), read_s,
 * elapsed_s, rows_per_s.
 */
static void print_summary(const imp_ctx *c, const ps_event_output *out,
                          int fmt, uint64_t emitted, double read_s,
                          double total_s)
{
    json_t *root = json_object(), *sk = json_object(), *types = json_object(),
           *files = json_array();
    static const char *const tn[4] = {"CLICK", "WISHLIST", "PURCHASE",
                                      "SPEND"};
    uint64_t nskip = 0;

    json_object_set_new(root, "rows", json_integer((json_int_t)c->rows));
    json_object_set_new(root, "events", json_integer((json_int_t)c->events));
    for (int r = 0; r < SK_COUNT; r++) {
        if (c->skipped[r] == 0)
            continue;
        nskip += c->skipped[r];
        json_object_set_new(sk, skip_name(r),
                            json_integer((json_int_t)c->skipped[r]));
    }
    json_object_set_new(root, "skipped", sk);
    json_object_set_new(root, "skipped_total", json_integer((json_int_t)nskip));
    for (int t = 0; t < 4; t++)
        json_object_set_new(types, tn[t],
                            json_integer((json_int_t)c->by_type[t]));
    json_object_set_new(root, "events_by_type", types);
    json_object_set_new(root, "customers",
                        json_integer((json_int_t)count_used(&c->cust)));
    json_object_set_new(root, "products",
                        json_integer((json_int_t)count_used(&c->prod)));
    json_object_set_new(root, "customers_in_file",
                        json_integer((json_int_t)c->cust.n));
    json_object_set_new(root, "sorted", json_boolean(c->need_sort));
    json_object_set_new(root, "first_ts",
                        c->n ? json_integer(c->recs[0].ts) : json_null());
    json_object_set_new(root, "last_ts",
                        c->n ? json_integer(c->recs[c->n - 1].ts)
                             : json_null());
    json_object_set_new(root, "amount_sum", json_real(c->amount_sum));
    json_object_set_new(root, "format_in", json_string(in_names[c->in_fmt]));
    json_object_set_new(root, "format", json_string(ps_event_format_name(fmt)));
    json_object_set_new(root, "output", json_string(c->o->output
                                                        ? c->o->output
                                                        : c->o->topic));
    for (size_t f = 0; f < c->nfiles; f++)
        json_array_append_new(files, json_string(c->files[f]));
    json_object_set_new(root, "files", files);
    json_object_set_new(root, "emitted", json_integer((json_int_t)emitted));
    if (ps_event_output_is_kafka(out)) {
        const ps_event_output_stats *st = ps_event_output_get_stats(out);
        json_t *k = json_object();
        json_object_set_new(k, "bootstrap", json_string(c->o->bootstrap));
        json_object_set_new(k, "topic", json_string(c->o->topic));
        json_object_set_new(k, "delivered",
                            json_integer((json_int_t)st->delivered));
        json_object_set_new(k, "failed", json_integer((json_int_t)st->failed));
        json_object_set_new(root, "kafka", k);
    }
    json_object_set_new(root, "read_s", json_real(read_s));
    json_object_set_new(root, "elapsed_s", json_real(total_s));
    json_object_set_new(root, "rows_per_s",
                        json_real(total_s > 0 ? (double)c->rows / total_s
                                              : 0.0));
    json_dumpf(root, stdout, JSON_COMPACT | JSON_REAL_PRECISION(12));
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(root);

    /* The human version. */
    {
        char a[32] = "-", b[32] = "-";
        if (c->n) {
            fmt_utc(c->recs[0].ts, a, sizeof(a));
            fmt_utc(c->recs[c->n - 1].ts, b, sizeof(b));
        }
        fprintf(stderr,
                "propstream import: %" PRIu64 " rows -> %" PRIu64
                " events (CLICK %" PRIu64 ", WISHLIST %" PRIu64
                ", PURCHASE %" PRIu64 ", SPEND %" PRIu64 "), %" PRIu64
                " skipped; %u customers, %u products; %s .. %s%s; %.2f s "
                "(%.0f rows/s)\n",
                c->rows, c->events, c->by_type[0], c->by_type[1],
                c->by_type[2], c->by_type[3], nskip, count_used(&c->cust),
                count_used(&c->prod), a, b,
                c->need_sort ? " (sorted by time)" : "", total_s,
                total_s > 0 ? (double)c->rows / total_s : 0.0);
    }
    for (int r = 0; r < SK_COUNT; r++) {
        uint64_t k = c->skipped[r];
        uint64_t show = k < (uint64_t)c->o->show_lines ? k
                                                       : (uint64_t)c->o->show_lines;
        if (k == 0)
            continue;
        fprintf(stderr, "propstream import: skipped %" PRIu64 " %s row%s",
                k, skip_name(r), k == 1 ? "" : "s");
        if (show > 0) {
            fprintf(stderr, " (line%s ", k == 1 ? "" : "s");
            for (uint64_t i = 0; i < show; i++) {
                const skip_where *w = &c->first_lines[r][i];
                fprintf(stderr, "%s", i ? ", " : "");
                if (c->nfiles > 1)
                    fprintf(stderr, "%s:", c->files[w->file]);
                fprintf(stderr, "%" PRIu64, w->line);
            }
            fprintf(stderr, "%s)", k > show ? ", ..." : "");
        }
        fputc('\n', stderr);
    }
}

/* ===================================================================
 * The command
 * =================================================================== */

/* --map "field=column,..." into c->gen_names.  0 or -1 with errstr. */
static int parse_map(imp_ctx *c, const char *text, char *errstr,
                     size_t errstr_size)
{
    char *buf = strdup(text), *save = NULL, *tok;
    int rc = -1;

    if (buf == NULL) {
        ps_set_err(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        int f;
        if (eq == NULL || eq == tok || eq[1] == '\0') {
            ps_set_err(errstr, errstr_size,
                       "--map: \"%s\" is not FIELD=COLUMN", tok);
            goto done;
        }
        *eq = '\0';
        for (f = 0; f < F_COUNT; f++)
            if (strcmp(tok, field_names[f]) == 0)
                break;
        if (f == F_COUNT) {
            ps_set_err(errstr, errstr_size,
                       "--map: unknown field \"%s\" (event_id, customer_id, "
                       "type, product_id, amount, ts, signup_ts, campaign)",
                       tok);
            goto done;
        }
        free(c->gen_names[f]);
        c->gen_names[f] = strdup(eq + 1);
        if (c->gen_names[f] == NULL) {
            ps_set_err(errstr, errstr_size, "out of memory");
            goto done;
        }
    }
    for (int f = F_CUSTOMER; f <= F_TS; f++) {
        if ((f == F_CUSTOMER || f == F_TYPE || f == F_TS) &&
            c->gen_names[f] == NULL) {
            ps_set_err(errstr, errstr_size, "--map: %s=COLUMN is required",
                       field_names[f]);
            goto done;
        }
    }
    rc = 0;
done:
    free(buf);
    return rc;
}

int ps_cmd_import(int argc, char **argv)
{
    imp_opts opts;
    ps_config_result res;
    imp_ctx ctx;
    ps_event_encoder *enc = NULL;
    ps_event_output *out = NULL;
    char errstr[512];
    struct sigaction sa;
    int rc = 2, fmt = -1;
    uint64_t emitted = 0;
    double t0 = now_s(), t_read = 0;

    memset(&opts, 0, sizeof(opts));
    memset(&res, 0, sizeof(res));
    memset(&ctx, 0, sizeof(ctx));
    errstr[0] = '\0';

    {
        int prc = ps_config_parse(imp_options, IMP_NOPTS, &opts, &res, argc,
                                  argv, errstr, sizeof(errstr));
        if (prc == 1) {
            rc = 0;
            goto done;
        }
        if (prc != 0)
            goto usage;
    }
    ctx.o = &opts;
    if (res.positional.n == 0) {
        ps_set_err(errstr, sizeof(errstr), "no input FILE given");
        goto usage;
    }
    if ((opts.bootstrap == NULL) == (opts.output == NULL)) {
        ps_set_err(errstr, sizeof(errstr),
                   "give exactly one of --bootstrap (-b) with --topic, or "
                   "--output (-o)");
        goto usage;
    }
    fmt = ps_event_format_parse(opts.format);
    if (fmt < 0) {
        ps_set_err(errstr, sizeof(errstr),
                   "--format: \"%s\" is not confluent, avro or json",
                   opts.format);
        goto usage;
    }
    ctx.in_fmt = -1;
    if (opts.format_in != NULL)
        for (int f = 0; f < 3; f++)
            if (strcmp(opts.format_in, in_names[f]) == 0)
                ctx.in_fmt = f;
    if (ctx.in_fmt < 0) {
        ps_set_err(errstr, sizeof(errstr),
                   "--format-in: give rees46, online-retail or generic");
        goto usage;
    }
    if ((ctx.in_fmt == IN_GENERIC) != (opts.map != NULL)) {
        ps_set_err(errstr, sizeof(errstr),
                   ctx.in_fmt == IN_GENERIC
                       ? "--format-in generic needs --map"
                       : "--map is for --format-in generic only");
        goto usage;
    }
    if (opts.map != NULL && parse_map(&ctx, opts.map, errstr,
                                      sizeof(errstr)) != 0)
        goto usage;
    ctx.files = res.positional.v;
    ctx.nfiles = res.positional.n;
    if (ctx.nfiles >= (1u << 23)) {
        ps_set_err(errstr, sizeof(errstr), "too many files");
        goto usage;
    }

    rc = 1; /* from here on failures are runtime failures */
    for (int r = 0; r < SK_COUNT; r++) {
        ctx.first_lines[r] = calloc((size_t)opts.show_lines + 1,
                                    sizeof(skip_where));
        if (ctx.first_lines[r] == NULL) {
            ps_set_err(errstr, sizeof(errstr), "out of memory");
            goto fail;
        }
    }
    /* Read and map everything first: a bad file stops the import before
     * anything is produced. */
    for (size_t f = 0; f < ctx.nfiles; f++)
        if (read_file(&ctx, ctx.files[f], (uint32_t)f, errstr,
                      sizeof(errstr)) != 0)
            goto fail;
    if (ctx.need_sort)
        qsort(ctx.recs, ctx.n, sizeof(imp_rec), rec_cmp);
    t_read = now_s() - t0;

    enc = ps_event_encoder_new(-1, errstr, sizeof(errstr));
    if (enc == NULL)
        goto fail;
    if (opts.output != NULL) {
        if (ps_event_output_open_file(&out, opts.output, fmt, errstr,
                                      sizeof(errstr)) != 0)
            goto fail;
    } else {
        int krc = ps_event_output_open_kafka(&out, opts.bootstrap,
                                             opts.topic, &res.kafka, errstr,
                                             sizeof(errstr));
        if (krc == 2)
            goto usage;
        if (krc != 0)
            goto fail;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = imp_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (emit_all(&ctx, enc, out, fmt, &emitted, errstr, sizeof(errstr)) !=
        0) {
        print_summary(&ctx, out, fmt, emitted, t_read, now_s() - t0);
        goto fail;
    }
    if (ps_event_output_sync(out, errstr, sizeof(errstr)) != 0)
        goto fail;
    print_summary(&ctx, out, fmt, emitted, t_read, now_s() - t0);
    if (imp_stop) {
        ps_set_err(errstr, sizeof(errstr),
                   "interrupted after %" PRIu64 " events", emitted);
        goto fail;
    }
    if (ps_event_output_is_kafka(out)) {
        const ps_event_output_stats *st = ps_event_output_get_stats(out);
        if (st->failed > 0 || st->delivered != ctx.events) {
            ps_set_err(errstr, sizeof(errstr),
                       "%" PRIu64 " of %" PRIu64 " events not delivered (%s)",
                       ctx.events - st->delivered, ctx.events,
                       st->failed ? st->first_error : "no report");
            goto fail;
        }
    }
    rc = 0;
    goto done;

usage:
    fprintf(stderr, "propstream import: %s\n", errstr);
    fprintf(stderr, "try 'propstream import --help'\n");
    rc = 2;
    goto done;
fail:
    fprintf(stderr, "propstream import: %s\n", errstr);
    rc = 1;
done:
    ps_event_output_close(out, NULL);
    ps_event_encoder_destroy(enc);
    free(ctx.recs);
    strtab_free(&ctx.cust);
    strtab_free(&ctx.prod);
    strtab_free(&ctx.camp);
    strtab_free(&ctx.eids);
    for (int r = 0; r < SK_COUNT; r++)
        free(ctx.first_lines[r]);
    for (int f = 0; f < F_COUNT; f++)
        free(ctx.gen_names[f]);
    ps_config_free(imp_options, IMP_NOPTS, &opts, &res);
    return rc;
}
