/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qsnapctl's output and input helpers: units for sizes and bandwidths,
 * aligned tables in virsh's style, JSON documents, times, messages and
 * files. Nothing here talks to the bus.
 */
#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include <libxml/parser.h>

#include "cli.h"

void usage_error(const char *fmt, ...) {
        va_list ap;

        fputs("qsnapctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'qsnapctl --help' or 'qsnapctl help VERB'.\n", stderr);
}

void fail(const char *fmt, ...) {
        va_list ap;

        fputs("error: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* ---- units ---- */

static const struct {
        const char *suffix;
        uint64_t factor;
} size_units[] = {
        /* binary (qemu-img's and systemd's meaning of a bare K/M/G) */
        { "KiB", 1ULL << 10 }, { "MiB", 1ULL << 20 }, { "GiB", 1ULL << 30 }, { "TiB", 1ULL << 40 },
        { "PiB", 1ULL << 50 }, { "EiB", 1ULL << 60 },
        { "K", 1ULL << 10 },   { "M", 1ULL << 20 },   { "G", 1ULL << 30 },   { "T", 1ULL << 40 },
        { "P", 1ULL << 50 },   { "E", 1ULL << 60 },
        /* decimal, as disk vendors count */
        { "kB", 1000ULL },     { "KB", 1000ULL },     { "MB", 1000000ULL },  { "GB", 1000000000ULL },
        { "TB", 1000000000000ULL }, { "PB", 1000000000000000ULL },
        { "B", 1 },            { "", 1 },
};

int parse_size(const char *s, bool bandwidth, uint64_t *ret) {
        _cleanup_free_ char *copy = NULL;
        char *end = NULL;
        size_t n;
        double v;

        if (isempty(s))
                return -EINVAL;
        copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        n = strlen(copy);
        while (n > 0 && isspace((unsigned char) copy[n - 1]))
                copy[--n] = '\0';
        if (bandwidth && n >= 2 && streq(copy + n - 2, "/s"))
                copy[n -= 2] = '\0';
        if (!isdigit((unsigned char) copy[0]) && copy[0] != '.')
                return -EINVAL;
        errno = 0;
        v = strtod(copy, &end);
        if (errno != 0 || end == copy || v < 0 || !isfinite(v))
                return -EINVAL;
        while (isspace((unsigned char) *end))
                end++;
        for (size_t i = 0; i < ELEMENTSOF(size_units); i++) {
                if (!streq(end, size_units[i].suffix))
                        continue;
                double bytes = v * (double) size_units[i].factor;
                if (bytes >= 18446744073709551615.0)
                        return -ERANGE;
                if (size_units[i].factor == 1 && floor(v) != v)
                        return -EINVAL; /* a fraction of a byte */
                *ret = (uint64_t) llround(bytes);
                return 0;
        }
        return -EINVAL;
}

char *format_size(uint64_t bytes) {
        static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        double v = (double) bytes;
        size_t i = 0;

        if (bytes < 1024)
                return strprintf("%" PRIu64 " B", bytes);
        v /= 1024.0;
        while (v >= 1024.0 && i + 1 < ELEMENTSOF(units)) {
                v /= 1024.0;
                i++;
        }
        if (v < 10.0)
                return strprintf("%.1f %s", v, units[i]);
        return strprintf("%.0f %s", v, units[i]);
}

char *format_rate(uint64_t bytes_per_sec) {
        _cleanup_free_ char *s = format_size(bytes_per_sec);

        return s ? strjoin(s, "/s") : NULL;
}

char *format_duration(uint64_t seconds) {
        if (seconds >= 3600)
                return strprintf("%" PRIu64 ":%02" PRIu64 ":%02" PRIu64, seconds / 3600, seconds / 60 % 60,
                                 seconds % 60);
        return strprintf("%" PRIu64 ":%02" PRIu64, seconds / 60, seconds % 60);
}

char *format_time(uint64_t epoch) {
        time_t t = (time_t) epoch;
        struct tm tm;
        char buf[64];

        if (!localtime_r(&t, &tm) || strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S %z", &tm) == 0)
                return strprintf("%" PRIu64, epoch);
        return strdup(buf);
}

/* ---- tables ---- */

struct Table {
        size_t n_columns;
        char **cells; /* header row first, row-major */
        size_t n_cells;
};

Table *table_free(Table *t) {
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t);
        return NULL;
}

static int table_push(Table *t, const char *s) {
        char **cells = realloc(t->cells, (t->n_cells + 1) * sizeof(char *));

        if (!cells)
                return -ENOMEM;
        t->cells = cells;
        t->cells[t->n_cells] = strdup(strempty(s));
        if (!t->cells[t->n_cells])
                return -ENOMEM;
        t->n_cells++;
        return 0;
}

Table *table_new(const char *first, ...) {
        _cleanup_(table_freep) Table *t = new0(Table, 1);
        va_list ap;

        if (!t)
                return NULL;
        va_start(ap, first);
        for (const char *s = first; s; s = va_arg(ap, const char *)) {
                if (table_push(t, s) < 0) {
                        va_end(ap);
                        return NULL;
                }
                t->n_columns++;
        }
        va_end(ap);
        return TAKE_PTR(t);
}

int table_add(Table *t, const char *first, ...) {
        va_list ap;
        const char *s = first;
        int r = 0;

        va_start(ap, first);
        for (size_t i = 0; i < t->n_columns; i++) {
                if (i > 0)
                        s = va_arg(ap, const char *);
                r = table_push(t, s);
                if (r < 0)
                        break;
        }
        va_end(ap);
        return r;
}

/* Display width of UTF-8 text: one column per code point (enough for names). */
static size_t text_width(const char *s) {
        size_t w = 0;

        for (; *s; s++)
                if (((unsigned char) *s & 0xC0) != 0x80)
                        w++;
        return w;
}

void table_print(Table *t, FILE *f) {
        _cleanup_free_ size_t *width = new0(size_t, t->n_columns);
        size_t total = 0;

        if (!width)
                return;
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t w = text_width(t->cells[i]);
                if (w > width[i % t->n_columns])
                        width[i % t->n_columns] = w;
        }
        for (size_t i = 0; i < t->n_columns; i++)
                total += width[i] + (i + 1 < t->n_columns ? 3 : 0);
        for (size_t i = 0; i < t->n_cells; i++) {
                size_t col = i % t->n_columns;
                bool last = col + 1 == t->n_columns;

                if (col == 0)
                        fputc(' ', f);
                fputs(t->cells[i], f);
                if (!last)
                        for (size_t k = text_width(t->cells[i]); k < width[col] + 3; k++)
                                fputc(' ', f);
                if (last) {
                        fputc('\n', f);
                        if (i + 1 == t->n_columns) { /* the rule under the header */
                                for (size_t k = 0; k < total + 2; k++)
                                        fputc('-', f);
                                fputc('\n', f);
                        }
                }
        }
}

/* ---- JSON ---- */

void json_print(json_object *o) {
        puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                       JSON_C_TO_STRING_NOSLASHESCAPE));
}

void json_print_fields(const char *key, json_object *value, ...) {
        json_object *o = json_object_new_object();
        va_list ap;

        va_start(ap, value);
        while (key) {
                json_object_object_add(o, key, value);
                key = va_arg(ap, const char *);
                if (key)
                        value = va_arg(ap, json_object *);
        }
        va_end(ap);
        json_print(o);
        json_object_put(o);
}

json_object *json_str(const char *s) {
        return s ? json_object_new_string(s) : NULL;
}

/* ---- files ---- */

int read_input(const char *path, char **ret) {
        size_t cap = 4096, len = 0;
        _cleanup_free_ char *buf = malloc(cap);
        _cleanup_close_ int fd = -EBADF;
        int in;

        if (!buf)
                return -ENOMEM;
        if (streq(path, "-"))
                in = STDIN_FILENO;
        else {
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return -errno;
                in = fd;
        }
        for (;;) {
                ssize_t k;

                if (len + 1 >= cap) {
                        char *b;
                        if (cap >= 64u << 20)
                                return -EFBIG;
                        b = realloc(buf, cap * 2);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        cap *= 2;
                }
                k = read(in, buf + len, cap - len - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t) k;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        return 0;
}

xmlDocPtr xml_parse(const char *xml) {
        return xmlReadMemory(xml, (int) strlen(xml), "qsnapd.xml", NULL,
                             XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
}

static xmlNodePtr element_from(xmlNodePtr k, const char *name) {
        for (; k; k = k->next)
                if (k->type == XML_ELEMENT_NODE && xmlStrEqual(k->name, BAD_CAST name))
                        return k;
        return NULL;
}

xmlNodePtr xml_child(xmlNodePtr n, const char *name) {
        return n ? element_from(n->children, name) : NULL;
}

xmlNodePtr xml_next(xmlNodePtr n, const char *name) {
        return n ? element_from(n->next, name) : NULL;
}

char *xml_attr(xmlNodePtr n, const char *name) {
        xmlChar *v = n ? xmlGetProp(n, BAD_CAST name) : NULL;
        char *r = v ? strdup((const char *) v) : NULL;

        xmlFree(v);
        return r;
}

void print_xml_text(const char *xml) {
        fputs(xml, stdout);
        if (xml[0] && xml[strlen(xml) - 1] != '\n')
                fputc('\n', stdout);
}

char *xml_escape(const char *s) {
        size_t n = 1;
        char *r, *p;

        for (const char *q = s; *q; q++)
                n += strchr("<>&'\"", *q) ? 6 : 1;
        r = p = malloc(n);
        if (!r)
                return NULL;
        for (; *s; s++)
                switch (*s) {
                case '<': p = stpcpy(p, "&lt;"); break;
                case '>': p = stpcpy(p, "&gt;"); break;
                case '&': p = stpcpy(p, "&amp;"); break;
                case '\'': p = stpcpy(p, "&apos;"); break;
                case '"': p = stpcpy(p, "&quot;"); break;
                default: *p++ = *s;
                }
        *p = '\0';
        return r;
}

int strappendf(char **buf, const char *fmt, ...) {
        va_list ap;
        char *add = NULL, *n;

        va_start(ap, fmt);
        if (vasprintf(&add, fmt, ap) < 0) {
                va_end(ap);
                return -ENOMEM;
        }
        va_end(ap);
        n = strjoin(strempty(*buf), add);
        free(add);
        if (!n)
                return -ENOMEM;
        free(*buf);
        *buf = n;
        return 0;
}

/* ---- virsh's option lists ---- */

/* "a,b=c,,d" → ["a", "b=c,d"] */
static char **split_commas(const char *s) {
        _cleanup_strv_free_ char **l = NULL;
        _cleanup_free_ char *cur = malloc(strlen(s) + 1);
        size_t n = 0;

        if (!cur)
                return NULL;
        for (const char *p = s;; p++) {
                if (*p == ',' && p[1] == ',') {
                        cur[n++] = ',';
                        p++;
                        continue;
                }
                if (*p == ',' || *p == '\0') {
                        cur[n] = '\0';
                        if (strv_extend(&l, cur) < 0)
                                return NULL;
                        n = 0;
                        if (*p == '\0')
                                break;
                        continue;
                }
                cur[n++] = *p;
        }
        return TAKE_PTR(l);
}

int parse_option_list(const char *option, const char *spec, const char *const *keys, const char *bare_first,
                      char ***ret_items, const char **values) {
        _cleanup_strv_free_ char **items = split_commas(spec);
        size_t n_keys = strv_length((char **) keys);

        if (!items)
                return -ENOMEM;
        for (size_t k = 0; k < n_keys; k++)
                values[k] = NULL;
        for (size_t i = 0; items[i]; i++) {
                char *eq = strchr(items[i], '=');
                const char *key = eq ? items[i] : bare_first;
                size_t k;

                if (eq)
                        *eq = '\0';
                for (k = 0; key && (i == 0 || eq) && k < n_keys; k++)
                        if (streq(keys[k], key))
                                break;
                if (!key || (i > 0 && !eq) || k == n_keys || values[k]) {
                        _cleanup_free_ char *expected = NULL;
                        bool repeated = key && k < n_keys && values[k];

                        for (size_t e = 0; e < n_keys; e++)
                                if (!streq_ptr(keys[e], bare_first) &&
                                    strappendf(&expected, "%s%s=", expected ? ", " : "", keys[e]) < 0)
                                        return -ENOMEM;
                        if (eq)
                                *eq = '=';
                        usage_error("--%s: %s item '%s' in '%s' (expected %s%s%s)", option,
                                    repeated ? "a repeated" : "an unknown", items[i], spec, strempty(bare_first),
                                    bare_first ? " first, then " : "", strempty(expected));
                        return -EINVAL;
                }
                values[k] = eq ? eq + 1 : items[i];
        }
        *ret_items = TAKE_PTR(items);
        return 0;
}
