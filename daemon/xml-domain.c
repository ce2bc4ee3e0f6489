/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt <domain> codec: domain XML text in, DomainDef out, and back.
 * It owns the libxml2 parser set-up for domain documents (no network, no
 * entities, no DTD, a size cap, errors captured instead of printed), the
 * validation of every element we model, the verbatim keeping of what we do
 * not model, and a writer shaped like `virsh dumpxml`. Nothing here logs or
 * keeps state between calls: errors travel back in *ret_error.
 */

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

#include "util.h"
#include "xml-domain.h"

/* libxml2 2.12 made the structured error argument const. */
#if LIBXML_VERSION >= 21200
#define XML_ERROR_CONST const
#else
#define XML_ERROR_CONST
#endif

/* User values quoted in error messages are cut to this many bytes. */
#define QUOTE_MAX 64

/* libxml2 2.9 checks attributes and namespaces pairwise: without a bound,
 * one 4 MiB start tag keeps it busy for minutes. libvirt's elements carry a
 * handful of attributes and its documents a few namespaces. */
#define MAX_ATTRIBUTES_PER_ELEMENT 256U
#define MAX_NAMESPACE_DECLARATIONS 128U

/* Depth of the elements whose unknown children we keep, for indentation. */
#define LEVEL_DOMAIN_CHILD 1
#define LEVEL_DEVICES_CHILD 2
#define LEVEL_DISK_CHILD 3

DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDoc *, xmlFreeDoc);
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlNode *, xmlFreeNode);
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlBuffer *, xmlBufferFree);
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlParserCtxt *, xmlFreeParserCtxt);
DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose);

static inline void xml_freep(xmlChar **p) {
        if (*p)
                xmlFree(*p);
}

/* An append-only view of a strv that remembers its length: util's
 * strv_push() walks the vector each time, and a 4 MiB document can hold a
 * million unknown elements. */
typedef struct List {
        char ***strv;
        size_t n, allocated;
} List;

static int list_push(List *list, char *v) {
        if (list->n + 2 > list->allocated) {
                size_t a = list->allocated > 0 ? list->allocated * 2 : 8;
                char **c = reallocarray(*list->strv, a, sizeof(char *));

                if (!c)
                        return -ENOMEM;
                *list->strv = c;
                list->allocated = a;
        }
        (*list->strv)[list->n++] = v;
        (*list->strv)[list->n] = NULL;
        return 0;
}

static const char *const disk_format_table[_DISK_FORMAT_MAX] = {
        [DISK_FORMAT_QCOW2] = "qcow2",
        [DISK_FORMAT_RAW] = "raw",
};

const char *disk_format_to_string(DiskFormat f) {
        if (f < 0 || f >= _DISK_FORMAT_MAX)
                return NULL;
        return disk_format_table[f];
}

DiskFormat disk_format_from_string(const char *s) {
        if (!s)
                return _DISK_FORMAT_INVALID;
        for (DiskFormat f = 0; f < _DISK_FORMAT_MAX; f++)
                if (streq(disk_format_table[f], s))
                        return f;
        return _DISK_FORMAT_INVALID;
}

static void domain_disk_done(DomainDisk *d) {
        free(d->target);
        free(d->bus);
        free(d->source);
        strv_free(d->backing_chain);
        free(d->backing_formats);
        strv_free(d->extra_elements);
        strv_free(d->extra_attributes);
        strv_free(d->extra_driver_attributes);
        strv_free(d->extra_source_attributes);
        strv_free(d->extra_target_attributes);
        *d = (DomainDisk) {};
}

DomainDef *domain_def_free(DomainDef *def) {
        if (!def)
                return NULL;

        free(def->type);
        free(def->name);
        free(def->uuid);
        free(def->description);
        free(def->os_type);
        free(def->arch);
        free(def->machine);
        free(def->emulator);
        free(def->monitor_path);
        for (size_t i = 0; i < def->n_disks; i++)
                domain_disk_done(&def->disks[i]);
        free(def->disks);
        strv_free(def->extra_domain);
        strv_free(def->extra_os);
        strv_free(def->extra_devices);
        strv_free(def->extra_domain_attributes);
        strv_free(def->extra_vcpu_attributes);
        strv_free(def->extra_os_attributes);
        free(def);
        return NULL;
}

DomainDisk *domain_def_find_disk(const DomainDef *def, const char *target) {
        if (!def || !target)
                return NULL;
        for (size_t i = 0; i < def->n_disks; i++)
                if (streq_ptr(def->disks[i].target, target))
                        return &def->disks[i];
        return NULL;
}

/* ---- Characters ---------------------------------------------------------- */

/* Length of the UTF-8 sequence at s if it encodes an XML 1.0 Char, else 0.
 * Names and paths can come from D-Bus, where a string may hold characters
 * that no XML document can carry, not even as a character reference. */
static size_t xml_char_len(const char *str) {
        const unsigned char *s = (const unsigned char *) str;
        uint32_t c;
        size_t n;

        if (s[0] < 0x80) {
                c = s[0];
                n = 1;
        } else if ((s[0] & 0xE0) == 0xC0) {
                c = s[0] & 0x1F;
                n = 2;
        } else if ((s[0] & 0xF0) == 0xE0) {
                c = s[0] & 0x0F;
                n = 3;
        } else if ((s[0] & 0xF8) == 0xF0) {
                c = s[0] & 0x07;
                n = 4;
        } else
                return 0;

        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xC0) != 0x80)
                        return 0;
                c = (c << 6) | (s[i] & 0x3F);
        }

        if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) || (n == 4 && c < 0x10000))
                return 0; /* overlong */

        if (c == 0x9 || c == 0xA || c == 0xD ||
            (c >= 0x20 && c <= 0xD7FF) ||
            (c >= 0xE000 && c <= 0xFFFD) ||
            (c >= 0x10000 && c <= 0x10FFFF))
                return n;
        return 0;
}

static bool is_blank_char(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_blank(const char *s) {
        for (; *s; s++)
                if (!is_blank_char(*s))
                        return false;
        return true;
}

/* Strips XML whitespace from both ends, in place. */
static char *strip_blank(char *s) {
        size_t n;

        while (is_blank_char(*s))
                s++;
        n = strlen(s);
        while (n > 0 && is_blank_char(s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* A copy of s for an error message: short, and valid UTF-8 without control
 * characters, because messages end up in D-Bus error strings. */
static char *message_quote(const char *s, size_t max, char buf[static QUOTE_MAX + 4]) {
        size_t i = 0, o = 0;

        if (!s)
                s = "";
        while (s[i] && o < max) {
                size_t n = xml_char_len(s + i);

                if (n == 0 || (unsigned char) s[i] < 0x20) {
                        buf[o++] = '?';
                        i++;
                        continue;
                }
                if (o + n > max)
                        break;
                memcpy(buf + o, s + i, n);
                o += n;
                i += n;
        }
        if (s[i])
                memcpy(buf + o, "...", 3), o += 3;
        buf[o] = '\0';
        return buf;
}

#define QUOTE(s) message_quote((s), QUOTE_MAX, (char[QUOTE_MAX + 4]) { 0 })

/* ---- Checks shared by parser and writer ----------------------------------- */

/* Each returns NULL when the value is fine, else what is wrong with it. The
 * writer uses them too, so that what we write we can read back. */

static const char *check_name(const char *s) {
        if (isempty(s) || is_blank(s))
                return "<name> is empty";
        return NULL;
}

static const char *check_domain_type(const char *s) {
        if (!s || !STR_IN_SET(s, "kvm", "qemu"))
                return "is not supported, expected 'kvm' or 'qemu'";
        return NULL;
}

static const char *check_absolute_path(const char *s) {
        if (isempty(s))
                return "is empty";
        if (s[0] != '/')
                return "is not an absolute path";
        return NULL;
}

static const char *check_target_dev(const char *s) {
        size_t n;

        if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
                return "must match [a-z][a-z0-9]*";
        for (n = 1; s[n]; n++)
                if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9')))
                        return "must match [a-z][a-z0-9]*";
        if (n > 16)
                return "is longer than 16 characters";
        return NULL;
}

static const char *check_bus(const char *s) {
        /* libvirt's disk bus names. */
        if (!s || !STR_IN_SET(s, "virtio", "scsi", "sata", "ide", "usb", "sd", "fdc", "xen", "uml", "none"))
                return "is not a known disk bus";
        return NULL;
}

static const char *check_text(const char *s) {
        if (isempty(s) || is_blank(s))
                return "is empty";
        return NULL;
}

/* Canonical lower-case 8-4-4-4-12 form. libvirt also accepts 32 bare hex
 * digits, and surrounding whitespace. */
static int uuid_canonicalize(const char *s, char ret[static 37]) {
        char hex[33];
        size_t n = 0, len = strlen(s);

        if (len != 36 && len != 32)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];

                if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
                        if (c != '-')
                                return -EINVAL;
                        continue;
                }
                if (c >= 'A' && c <= 'F')
                        c = (char) (c - 'A' + 'a');
                else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                        return -EINVAL;
                hex[n++] = c;
        }
        hex[n] = '\0';

        snprintf(ret, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
        return 0;
}

static int parse_u64(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!*s)
                return -EINVAL;
        for (; *s; s++) {
                unsigned d;

                if (*s < '0' || *s > '9')
                        return -EINVAL;
                d = (unsigned) (*s - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        *ret = v;
        return 0;
}

static const struct {
        const char *unit;
        uint64_t bytes;
} memory_units[] = {
        /* Case does not matter, as in libvirt's virScaleInteger(). */
        { "b", 1 },
        { "byte", 1 },
        { "bytes", 1 },
        { "KB", UINT64_C(1000) },
        { "k", UINT64_C(1) << 10 },
        { "KiB", UINT64_C(1) << 10 },
        { "MB", UINT64_C(1000000) },
        { "M", UINT64_C(1) << 20 },
        { "MiB", UINT64_C(1) << 20 },
        { "GB", UINT64_C(1000000000) },
        { "G", UINT64_C(1) << 30 },
        { "GiB", UINT64_C(1) << 30 },
        { "TB", UINT64_C(1000000000000) },
        { "T", UINT64_C(1) << 40 },
        { "TiB", UINT64_C(1) << 40 },
        { "PB", UINT64_C(1000000000000000) },
        { "P", UINT64_C(1) << 50 },
        { "PiB", UINT64_C(1) << 50 },
        { "EB", UINT64_C(1000000000000000000) },
        { "E", UINT64_C(1) << 60 },
        { "EiB", UINT64_C(1) << 60 },
};

static int compare_disk_refs(const void *a, const void *b) {
        const DomainDisk *const *x = a, *const *y = b;
        int c = strcmp((*x)->target, (*y)->target);

        if (c != 0)
                return c;
        return *x < *y ? -1 : *x > *y;
}

/* Sorting keeps this O(n log n): documents may list tens of thousands of
 * disks. Returns 1 and the two earliest indices sharing a target, 0 if all
 * targets differ. */
static int find_duplicate_target(const DomainDisk *disks, size_t n, size_t *ret_first, size_t *ret_second) {
        _cleanup_free_ const DomainDisk **refs = NULL;

        if (n < 2)
                return 0;
        refs = calloc(n, sizeof(DomainDisk *));
        if (!refs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                refs[i] = &disks[i];
        qsort(refs, n, sizeof(DomainDisk *), compare_disk_refs);

        for (size_t i = 1; i < n; i++)
                if (streq(refs[i - 1]->target, refs[i]->target)) {
                        size_t first = (size_t) (refs[i - 1] - disks), second = (size_t) (refs[i] - disks);

                        /* Among equal targets the sort is by position, so the
                         * pair found first is the earliest two. */
                        *ret_first = first;
                        *ret_second = second;
                        return 1;
                }
        return 0;
}

/* ---- Parser ---------------------------------------------------------------- */

typedef struct Parser {
        xmlDoc *doc;
        char *error;
        bool xml_failed;      /* libxml2 reported an error */
        bool declaration_refused; /* the internal DTD subset declared something */

        bool handlers_saved;
        xmlStructuredErrorFunc saved_serror;
        void *saved_serror_data;
        xmlGenericErrorFunc saved_gerror;
        void *saved_gerror_data;
} Parser;

static int parser_error(Parser *p, int r, const xmlNode *node, const char *fmt, ...) _printf_(4, 5);
static int parser_error(Parser *p, int r, const xmlNode *node, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        long line = node ? xmlGetLineNo(node) : 0;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;

        free(p->error);
        p->error = line > 0 ? strprintf("line %ld: %s", line, msg) : TAKE_PTR(msg);
        if (!p->error)
                return -ENOMEM;
        return r;
}

/* Keeps the first error libxml2 reports; the ones after it are fallout. */
static void parser_capture_error(void *userdata, XML_ERROR_CONST xmlError *e) {
        Parser *p = userdata;
        char buf[512];
        size_t n = 0;

        if (!e || e->level < XML_ERR_ERROR)
                return;
        p->xml_failed = true;
        if (p->error)
                return;

        /* One line of printable UTF-8: libxml2 ends messages with a newline
         * and sometimes quotes raw input bytes in the middle. */
        for (const char *m = e->message ?: "unknown XML error"; *m && n < sizeof(buf) - 4;) {
                size_t l = xml_char_len(m);

                if (l == 0 || (unsigned char) *m < 0x20) {
                        buf[n++] = (*m == '\n' || *m == '\t') ? ' ' : '?';
                        m++;
                } else {
                        memcpy(buf + n, m, l);
                        n += l;
                        m += l;
                }
        }
        while (n > 0 && buf[n - 1] == ' ')
                n--;
        buf[n] = '\0';

        p->error = e->line > 0 ? strprintf("line %d: %s", e->line, buf) : strdup(buf);
}

static void parser_ignore_generic_error(void *userdata, const char *fmt, ...) {
}

/* SAX callbacks for DTD declarations. Refusing every entity declaration is
 * what makes billion-laughs and external entities (XXE) impossible, rather
 * than relying on expansion limits; attribute defaults and element rules
 * would change what a document says without being in it. */
static void parser_refuse_declaration(xmlParserCtxt *ctxt, const char *what, const xmlChar *name) {
        Parser *p = ctxt->_private;

        if (!p->declaration_refused) {
                free(p->error);
                p->error = strprintf("line %d: %s declarations are not allowed: '%s'",
                                     xmlSAX2GetLineNumber(ctxt), what, QUOTE((const char *) name));
        }
        p->declaration_refused = true;
        xmlStopParser(ctxt);
}

static void parser_refuse_entity(
                void *ctx,
                const xmlChar *name,
                int type,
                const xmlChar *public_id,
                const xmlChar *system_id,
                xmlChar *content) {
        parser_refuse_declaration(ctx, "entity", name);
}

static void parser_refuse_attribute(
                void *ctx,
                const xmlChar *element,
                const xmlChar *fullname,
                int type,
                int def,
                const xmlChar *default_value,
                xmlEnumeration *tree) {
        xmlFreeEnumeration(tree); /* the callback owns it */
        parser_refuse_declaration(ctx, "DTD attribute", fullname);
}

static void parser_refuse_element(void *ctx, const xmlChar *name, int type, xmlElementContent *content) {
        parser_refuse_declaration(ctx, "DTD element", name);
}

/* libxml2 reports errors through thread-local handlers; ours live only
 * for the duration of one parse so that nothing reaches stderr and the
 * caller's handlers are back afterwards. */
static void parser_install_handlers(Parser *p) {
        p->saved_serror = xmlStructuredError;
        p->saved_serror_data = xmlStructuredErrorContext;
        p->saved_gerror = xmlGenericError;
        p->saved_gerror_data = xmlGenericErrorContext;
        p->handlers_saved = true;

        xmlSetStructuredErrorFunc(p, parser_capture_error);
        xmlSetGenericErrorFunc(NULL, parser_ignore_generic_error);
}

static void parser_done(Parser *p) {
        if (p->handlers_saved) {
                xmlSetStructuredErrorFunc(p->saved_serror_data, p->saved_serror);
                xmlSetGenericErrorFunc(p->saved_gerror_data, p->saved_gerror);
        }
        if (p->doc)
                xmlFreeDoc(p->doc);
        free(p->error);
}

/* A backstop behind the SAX callbacks: nothing in the tree may refer to an
 * entity or come from a DTD declaration. */
static int parser_check_tree(Parser *p, xmlNode *n) {
        for (; n; n = n->next) {
                int r;

                if (n->type == XML_ENTITY_REF_NODE)
                        return parser_error(p, -EINVAL, n, "entity references are not allowed: '&%s;'",
                                            QUOTE((const char *) n->name));
                if (n->type == XML_DTD_NODE) {
                        for (const xmlNode *c = n->children; c; c = c->next)
                                if (c->type == XML_ELEMENT_DECL || c->type == XML_ATTRIBUTE_DECL || c->type == XML_ENTITY_DECL)
                                        return parser_error(p, -EINVAL, c, "DTD declarations are not allowed: '%s'",
                                                            QUOTE((const char *) c->name));
                        continue;
                }
                if (n->type == XML_ELEMENT_NODE)
                        for (xmlAttr *a = n->properties; a; a = a->next) {
                                r = parser_check_tree(p, a->children);
                                if (r < 0)
                                        return r;
                        }
                r = parser_check_tree(p, n->children);
                if (r < 0)
                        return r;
        }
        return 0;
}

static bool has_prefix(const char *s, const char *end, const char *prefix) {
        size_t n = strlen(prefix);
        return (size_t) (end - s) >= n && memcmp(s, prefix, n) == 0;
}

/* Just past the next `token`, or end. */
static const char *skip_past(const char *s, const char *end, const char *token) {
        const char *t = memmem(s, (size_t) (end - s), token, strlen(token));
        return t ? t + strlen(token) : end;
}

static long line_of(const char *xml, const char *at) {
        long line = 1;

        for (const char *s = xml; s < at; s++)
                line += *s == '\n';
        return line;
}

/* One linear pass over the raw text before libxml2 sees it, for the
 * MAX_ATTRIBUTES_PER_ELEMENT and MAX_NAMESPACE_DECLARATIONS bounds. It only
 * has to be right for documents libxml2 would accept: it counts '=' outside
 * quotes in start tags. Refusing NUL bytes keeps the text ASCII-compatible
 * (no UTF-16), so the bytes it looks at are the characters they seem. */
static int parser_prescan(Parser *p, const char *xml, size_t size) {
        const char *s = xml, *end = xml + size, *nul;
        unsigned n_ns = 0;

        nul = memchr(xml, '\0', size);
        if (nul)
                return parser_error(p, -EBADMSG, NULL, "line %ld: document contains a NUL byte (UTF-16 and UCS-4 are not supported)",
                                    line_of(xml, nul));

        while ((s = memchr(s, '<', (size_t) (end - s)))) {
                const char *tag = s++;
                unsigned n_attrs = 0;
                bool name_start = false;
                char quote = 0;

                if (has_prefix(s, end, "!--")) {
                        s = skip_past(s + 3, end, "-->");
                        continue;
                }
                if (has_prefix(s, end, "![CDATA[")) {
                        s = skip_past(s, end, "]]>");
                        continue;
                }
                if (has_prefix(s, end, "?")) {
                        s = skip_past(s, end, "?>");
                        continue;
                }
                if (has_prefix(s, end, "!")) {
                        /* <!DOCTYPE …[ internal subset ]>: whatever it declares is
                         * refused later; here only its end matters. */
                        int depth = 0;

                        for (; s < end; s++) {
                                if (quote) {
                                        if (*s == quote)
                                                quote = 0;
                                } else if (has_prefix(s, end, "<!--"))
                                        s = skip_past(s + 4, end, "-->") - 1;
                                else if (has_prefix(s, end, "<?"))
                                        s = skip_past(s + 2, end, "?>") - 1;
                                else if (*s == '"' || *s == '\'')
                                        quote = *s;
                                else if (*s == '[')
                                        depth++;
                                else if (*s == ']')
                                        depth--;
                                else if (*s == '>' && depth <= 0)
                                        break;
                        }
                        continue;
                }

                /* A start or end tag. */
                for (; s < end; s++) {
                        if (quote) {
                                if (*s == quote)
                                        quote = 0;
                                continue;
                        }
                        if (*s == '>')
                                break;
                        if (*s == '"' || *s == '\'') {
                                quote = *s;
                                continue;
                        }
                        if (*s == '=' && ++n_attrs > MAX_ATTRIBUTES_PER_ELEMENT)
                                return parser_error(p, -EINVAL, NULL, "line %ld: element has more than %u attributes",
                                                    line_of(xml, tag), MAX_ATTRIBUTES_PER_ELEMENT);
                        if (is_blank_char(*s)) {
                                name_start = true;
                                continue;
                        }
                        if (name_start && has_prefix(s, end, "xmlns") && ++n_ns > MAX_NAMESPACE_DECLARATIONS)
                                return parser_error(p, -EINVAL, NULL,
                                                    "line %ld: document declares more than %u namespaces",
                                                    line_of(xml, tag), MAX_NAMESPACE_DECLARATIONS);
                        name_start = false;
                }
        }
        return 0;
}

static int parser_read(Parser *p, const char *xml, size_t size) {
        _cleanup_(xmlFreeParserCtxtp) xmlParserCtxt *ctxt = NULL;
        _cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
        int options = XML_PARSE_NONET | XML_PARSE_BIG_LINES;
        int r;

#if LIBXML_VERSION >= 21300
        options |= XML_PARSE_NO_XXE;
#endif

        /* Tolerate callers that count the terminating NUL. */
        if (size > 0 && xml[size - 1] == '\0')
                size--;
        if (size == 0)
                return parser_error(p, -EBADMSG, NULL, "document is empty");

        r = parser_prescan(p, xml, size);
        if (r < 0)
                return r;

        ctxt = xmlCreateMemoryParserCtxt(xml, (int) size);
        if (!ctxt)
                return -ENOMEM;
        /* Not XML_PARSE_NOENT, DTDLOAD, DTDATTR or DTDVALID: nothing may be
         * substituted or fetched. */
        r = xmlCtxtUseOptions(ctxt, options);
        if (r != 0)
                return -EINVAL;
        ctxt->_private = p;
        ctxt->sax->entityDecl = parser_refuse_entity;
        ctxt->sax->attributeDecl = parser_refuse_attribute;
        ctxt->sax->elementDecl = parser_refuse_element;

        (void) xmlParseDocument(ctxt);
        doc = TAKE_PTR(ctxt->myDoc);

        if (p->declaration_refused)
                return p->error ? -EINVAL : -ENOMEM;
        if (p->xml_failed || !ctxt->wellFormed || !doc) {
                if (!p->error && !p->xml_failed)
                        return parser_error(p, -EBADMSG, NULL, "document is not well-formed XML");
                return p->error ? -EBADMSG : -ENOMEM;
        }

        r = parser_check_tree(p, doc->children);
        if (r < 0)
                return r;

        p->doc = TAKE_PTR(doc);
        return 0;
}

static bool node_is(const xmlNode *n, const char *name) {
        return n->type == XML_ELEMENT_NODE && !n->ns && xmlStrEqual(n->name, BAD_CAST name);
}

static bool node_is_monitor(const xmlNode *n) {
        return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
                xmlStrEqual(n->ns->href, BAD_CAST QSNAP_XML_NAMESPACE) &&
                xmlStrEqual(n->name, BAD_CAST "monitor");
}

/* Children that are neither modelled nor kept: comments, processing
 * instructions, formatting whitespace. Returns 1 to skip, 0 for an element,
 * or an error for stray text, which would otherwise vanish silently. */
static int parser_skip_node(Parser *p, const xmlNode *parent, const xmlNode *n) {
        switch (n->type) {
        case XML_ELEMENT_NODE:
                return 0;
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE: {
                const char *t = (const char *) n->content;

                if (!t || is_blank(t))
                        return 1;
                while (is_blank_char(*t))
                        t++;
                return parser_error(p, -EINVAL, n, "unexpected text in <%s>: '%s'",
                                    (const char *) parent->name, QUOTE(t));
        }
        default:
                return 1;
        }
}

/* A copy of an attribute without namespace, NULL when absent. Unlike
 * xmlGetNoNsProp() this never falls back to defaults from a DTD. */
static int attr_get(const xmlNode *n, const char *name, char **ret) {
        for (const xmlAttr *a = n->properties; a; a = a->next) {
                _cleanup_(xml_freep) xmlChar *v = NULL;
                char *s;

                if (a->ns || !xmlStrEqual(a->name, BAD_CAST name))
                        continue;
                v = xmlNodeListGetString(n->doc, a->children, 1);
                s = strdup(v ? (const char *) v : "");
                if (!s)
                        return -ENOMEM;
                *ret = s;
                return 0;
        }
        *ret = NULL;
        return 0;
}

/* The text of an element that may hold only text. */
static int node_text(Parser *p, const xmlNode *n, char **ret) {
        _cleanup_(xml_freep) xmlChar *v = NULL;
        char *s;

        for (const xmlNode *c = n->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE)
                        return parser_error(p, -EINVAL, c, "<%s> may only contain text, found <%s>",
                                            (const char *) n->name, (const char *) c->name);

        v = xmlNodeGetContent(n);
        s = strdup(v ? (const char *) v : "");
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static int parser_check_once(Parser *p, const xmlNode *n, const xmlNode **seen) {
        if (*seen)
                return parser_error(p, -EINVAL, n, "<%s> appears more than once, first on line %ld",
                                    (const char *) n->name, xmlGetLineNo(*seen));
        *seen = n;
        return 0;
}

static int strv_extend_escaped_attr(char ***l, const char *prefix, const char *name, const char *value);

/* Keeps the attributes of n that are not in known (and the namespace
 * declarations they need) as name="value" text. Declarations come first so
 * that a second round trip yields the same order. */
static int collect_attributes(const xmlNode *n, const char *const *known, char ***ret) {
        _cleanup_strv_free_ char **l = NULL, **prefixes = NULL;
        int r;

        for (const xmlNs *ns = n->nsDef; ns; ns = ns->next) {
                /* The writer declares our own namespace itself. */
                if (ns->href && xmlStrEqual(ns->href, BAD_CAST QSNAP_XML_NAMESPACE))
                        continue;
                r = strv_extend_escaped_attr(&l, ns->prefix ? "xmlns" : NULL,
                                             ns->prefix ? (const char *) ns->prefix : "xmlns",
                                             ns->href ? (const char *) ns->href : "");
                if (r < 0)
                        return r;
                r = strv_extend(&prefixes, ns->prefix ? (const char *) ns->prefix : "");
                if (r < 0)
                        return r;
        }

        /* A prefixed attribute whose prefix was declared further up needs the
         * declaration here, since only this element is written back. */
        for (const xmlAttr *a = n->properties; a; a = a->next) {
                const char *prefix;

                if (!a->ns || !a->ns->prefix)
                        continue;
                prefix = (const char *) a->ns->prefix;
                if (streq(prefix, "xml") || strv_contains((const char *const *) prefixes, prefix))
                        continue;
                r = strv_extend_escaped_attr(&l, "xmlns", prefix, a->ns->href ? (const char *) a->ns->href : "");
                if (r < 0)
                        return r;
                r = strv_extend(&prefixes, prefix);
                if (r < 0)
                        return r;
        }

        for (const xmlAttr *a = n->properties; a; a = a->next) {
                _cleanup_(xml_freep) xmlChar *v = NULL;

                if (!a->ns && strv_contains(known, (const char *) a->name))
                        continue;
                v = xmlNodeListGetString(n->doc, a->children, 1);
                r = strv_extend_escaped_attr(&l, a->ns ? (const char *) a->ns->prefix : NULL,
                                             (const char *) a->name, v ? (const char *) v : "");
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(l);
        return 0;
}

/* Drops whitespace-only text from elements that hold only elements, so
 * that libxml2 can indent the fragment to its place in our output and a
 * second round trip writes the same bytes. Mixed content stays as is. */
static void strip_formatting(xmlNode *n) {
        bool has_element = false, has_text = false;
        xmlNode *next;

        for (xmlNode *c = n->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE)
                        has_element = true;
                else if (c->type == XML_CDATA_SECTION_NODE || (c->type == XML_TEXT_NODE && !xmlIsBlankNode(c)))
                        has_text = true;

        for (xmlNode *c = n->children; c; c = next) {
                next = c->next;
                if (c->type == XML_ELEMENT_NODE)
                        strip_formatting(c);
                else if (c->type == XML_TEXT_NODE && has_element && !has_text) {
                        xmlUnlinkNode(c);
                        xmlFreeNode(c);
                }
        }
}

/* Serializes an unknown element on its own, with the namespace declarations
 * it borrowed from its ancestors (xmlDocCopyNode() adds them to the copy). */
static int parser_keep_element(Parser *p, xmlNode *n, int level, List *list) {
        _cleanup_(xmlFreeNodep) xmlNode *copy = NULL;
        _cleanup_(xmlBufferFreep) xmlBuffer *buf = NULL;
        _cleanup_free_ char *s = NULL;
        int r;

        copy = xmlDocCopyNode(n, p->doc, 1);
        if (!copy)
                return -ENOMEM;
        strip_formatting(copy);

        buf = xmlBufferCreate();
        if (!buf)
                return -ENOMEM;
        if (xmlNodeDump(buf, p->doc, copy, level, 1) < 0)
                return -ENOMEM;

        s = strdup((const char *) xmlBufferContent(buf));
        if (!s)
                return -ENOMEM;
        r = list_push(list, s);
        if (r < 0)
                return r;
        TAKE_PTR(s);
        return 0;
}

static int parser_memory(Parser *p, const xmlNode *n, uint64_t *ret_kib) {
        _cleanup_free_ char *text = NULL, *unit = NULL;
        const char *name = (const char *) n->name, *number;
        uint64_t value, scale = 1024, bytes;
        int r;

        r = node_text(p, n, &text);
        if (r < 0)
                return r;
        r = attr_get(n, "unit", &unit);
        if (r < 0)
                return r;

        if (unit) {
                scale = 0;
                for (size_t i = 0; i < ELEMENTSOF(memory_units); i++)
                        if (strcasecmp(memory_units[i].unit, unit) == 0) {
                                scale = memory_units[i].bytes;
                                break;
                        }
                if (scale == 0)
                        return parser_error(p, -EINVAL, n, "<%s> has an unknown unit: '%s'", name, QUOTE(unit));
        }

        number = strip_blank(text);
        r = parse_u64(number, &value);
        if (r == -ERANGE || (r >= 0 && value > UINT64_MAX / scale))
                return parser_error(p, -EINVAL, n, "<%s> is too large: '%s'", name, QUOTE(number));
        if (r < 0)
                return parser_error(p, -EINVAL, n, "<%s> is not a number: '%s'", name, QUOTE(number));
        if (value == 0)
                return parser_error(p, -EINVAL, n, "<%s> must not be zero", name);

        /* Stored in KiB, rounded up like libvirt does. */
        bytes = value * scale;
        *ret_kib = bytes / 1024 + (bytes % 1024 != 0);
        return 0;
}

static int parser_vcpu(Parser *p, const xmlNode *n, unsigned *ret) {
        _cleanup_free_ char *text = NULL;
        const char *number;
        uint64_t v;
        int r;

        r = node_text(p, n, &text);
        if (r < 0)
                return r;
        number = strip_blank(text);
        r = parse_u64(number, &v);
        if (r < 0 || v > UINT_MAX)
                return parser_error(p, -EINVAL, n, "<vcpu> is not a valid count: '%s'", QUOTE(number));
        if (v == 0)
                return parser_error(p, -EINVAL, n, "<vcpu> must not be zero");
        *ret = (unsigned) v;
        return 0;
}

static int parser_path_attr(Parser *p, const xmlNode *n, const char *attr, bool required, char **ret) {
        _cleanup_free_ char *v = NULL;
        const char *problem;
        int r;

        r = attr_get(n, attr, &v);
        if (r < 0)
                return r;
        if (!v) {
                if (required)
                        return parser_error(p, -EINVAL, n, "<%s> has no %s= attribute", (const char *) n->name, attr);
                *ret = NULL;
                return 0;
        }
        problem = check_absolute_path(v);
        if (problem)
                return parser_error(p, -EINVAL, n, "<%s %s='%s'> %s", (const char *) n->name, attr, QUOTE(v), problem);
        *ret = TAKE_PTR(v);
        return 0;
}

static int parser_monitor(Parser *p, const xmlNode *n, const xmlNode **seen, DomainDef *def) {
        int r;

        if (*seen)
                return parser_error(p, -EINVAL, n, "<qsnap:monitor> appears more than once, first on line %ld",
                                    xmlGetLineNo(*seen));
        *seen = n;
        r = parser_path_attr(p, n, "path", true, &def->monitor_path);
        if (r < 0)
                return r;
        return 0;
}

static int parser_disk(Parser *p, xmlNode *n, DomainDisk *ret) {
        _cleanup_(domain_disk_done) DomainDisk d = { .format = DISK_FORMAT_QCOW2 };
        _cleanup_free_ char *type = NULL, *device = NULL;
        const xmlNode *seen_driver = NULL, *seen_source = NULL, *seen_target = NULL;
        List extra = { .strv = &d.extra_elements };
        const char *problem;
        int r;

        r = attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (type && !streq(type, "file"))
                return parser_error(p, -EINVAL, n, "disk type '%s' is not supported: only disk type='file' is supported",
                                    QUOTE(type));
        r = attr_get(n, "device", &device);
        if (r < 0)
                return r;
        if (device && !streq(device, "disk"))
                return parser_error(p, -EINVAL, n, "disk device '%s' is not supported: only device='disk' is supported",
                                    QUOTE(device));
        r = collect_attributes(n, (const char *const[]) { "type", "device", NULL }, &d.extra_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (node_is(c, "driver")) {
                        _cleanup_free_ char *name = NULL, *format = NULL;

                        r = parser_check_once(p, c, &seen_driver);
                        if (r < 0)
                                return r;
                        r = attr_get(c, "name", &name);
                        if (r < 0)
                                return r;
                        if (name && !streq(name, "qemu"))
                                return parser_error(p, -EINVAL, c, "disk driver name '%s' is not supported, expected 'qemu'",
                                                    QUOTE(name));
                        r = attr_get(c, "type", &format);
                        if (r < 0)
                                return r;
                        if (format) {
                                d.format = disk_format_from_string(format);
                                if (d.format < 0)
                                        return parser_error(p, -EINVAL, c,
                                                            "disk driver type '%s' is not supported, expected 'qcow2' or 'raw'",
                                                            QUOTE(format));
                        }
                        r = collect_attributes(c, (const char *const[]) { "name", "type", NULL },
                                               &d.extra_driver_attributes);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "source")) {
                        r = parser_check_once(p, c, &seen_source);
                        if (r < 0)
                                return r;
                        r = parser_path_attr(p, c, "file", true, &d.source);
                        if (r < 0)
                                return r;
                        r = collect_attributes(c, (const char *const[]) { "file", NULL }, &d.extra_source_attributes);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "target")) {
                        r = parser_check_once(p, c, &seen_target);
                        if (r < 0)
                                return r;
                        r = attr_get(c, "dev", &d.target);
                        if (r < 0)
                                return r;
                        if (!d.target)
                                return parser_error(p, -EINVAL, c, "<target> has no dev= attribute");
                        problem = check_target_dev(d.target);
                        if (problem)
                                return parser_error(p, -EINVAL, c, "<target dev='%s'> %s", QUOTE(d.target), problem);
                        r = attr_get(c, "bus", &d.bus);
                        if (r < 0)
                                return r;
                        problem = d.bus ? check_bus(d.bus) : NULL;
                        if (problem)
                                return parser_error(p, -EINVAL, c, "<target bus='%s'> %s", QUOTE(d.bus), problem);
                        r = collect_attributes(c, (const char *const[]) { "dev", "bus", NULL }, &d.extra_target_attributes);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "readonly"))
                        d.readonly = true;
                else if (node_is(c, "transient"))
                        d.transient = true;
                else if (node_is(c, "backingStore"))
                        continue; /* output only: we learn the chain from the image */
                else {
                        r = parser_keep_element(p, c, LEVEL_DISK_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }

        if (!d.source)
                return parser_error(p, -EINVAL, n, "<disk> has no <source file=…/>");
        if (!d.target)
                return parser_error(p, -EINVAL, n, "disk '%s' has no <target dev=…/>", QUOTE(d.source));
        if (!d.bus) {
                d.bus = strdup("virtio");
                if (!d.bus)
                        return -ENOMEM;
        }

        *ret = d;
        d = (DomainDisk) {};
        return 0;
}

static int parser_os(Parser *p, xmlNode *n, DomainDef *def) {
        const xmlNode *seen_type = NULL;
        List extra = { .strv = &def->extra_os };
        const char *problem;
        int r;

        r = collect_attributes(n, (const char *const[]) { NULL }, &def->extra_os_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (node_is(c, "type")) {
                        r = parser_check_once(p, c, &seen_type);
                        if (r < 0)
                                return r;
                        r = node_text(p, c, &def->os_type);
                        if (r < 0)
                                return r;
                        if (check_text(def->os_type))
                                return parser_error(p, -EINVAL, c, "<os><type> is empty");
                        r = attr_get(c, "arch", &def->arch);
                        if (r < 0)
                                return r;
                        problem = def->arch ? check_text(def->arch) : NULL;
                        if (problem)
                                return parser_error(p, -EINVAL, c, "<type arch=…> %s", problem);
                        r = attr_get(c, "machine", &def->machine);
                        if (r < 0)
                                return r;
                        problem = def->machine ? check_text(def->machine) : NULL;
                        if (problem)
                                return parser_error(p, -EINVAL, c, "<type machine=…> %s", problem);
                } else {
                        r = parser_keep_element(p, c, LEVEL_DEVICES_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int parser_devices(Parser *p, xmlNode *n, DomainDef *def, const xmlNode **seen_monitor) {
        _cleanup_free_ const xmlNode **disk_nodes = NULL;
        const xmlNode *seen_emulator = NULL;
        List extra = { .strv = &def->extra_devices };
        size_t allocated = 0, first, second;
        int r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (node_is(c, "emulator")) {
                        const char *problem;

                        r = parser_check_once(p, c, &seen_emulator);
                        if (r < 0)
                                return r;
                        r = node_text(p, c, &def->emulator);
                        if (r < 0)
                                return r;
                        problem = check_absolute_path(def->emulator);
                        if (problem)
                                return parser_error(p, -EINVAL, c, "<emulator> '%s' %s", QUOTE(def->emulator), problem);

                } else if (node_is(c, "disk")) {
                        if (def->n_disks == allocated) {
                                size_t a = allocated > 0 ? allocated * 2 : 4;
                                DomainDisk *disks;
                                const xmlNode **nodes;

                                disks = reallocarray(def->disks, a, sizeof(DomainDisk));
                                if (!disks)
                                        return -ENOMEM;
                                def->disks = disks;
                                nodes = reallocarray(disk_nodes, a, sizeof(xmlNode *));
                                if (!nodes)
                                        return -ENOMEM;
                                disk_nodes = nodes;
                                allocated = a;
                        }
                        r = parser_disk(p, c, &def->disks[def->n_disks]);
                        if (r < 0)
                                return r;
                        disk_nodes[def->n_disks++] = c;

                } else if (node_is_monitor(c)) {
                        r = parser_monitor(p, c, seen_monitor, def);
                        if (r < 0)
                                return r;
                } else {
                        r = parser_keep_element(p, c, LEVEL_DEVICES_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }

        r = find_duplicate_target(def->disks, def->n_disks, &first, &second);
        if (r < 0)
                return r;
        if (r > 0)
                return parser_error(p, -EINVAL, disk_nodes[second], "disk target '%s' is used more than once, first on line %ld",
                                    QUOTE(def->disks[second].target), xmlGetLineNo(disk_nodes[first]));
        return 0;
}

static int parser_domain(Parser *p, xmlNode *root, DomainDef **ret) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        const xmlNode *seen_name = NULL, *seen_uuid = NULL, *seen_description = NULL, *seen_memory = NULL,
                *seen_current = NULL, *seen_vcpu = NULL, *seen_os = NULL, *seen_devices = NULL,
                *seen_monitor = NULL;
        List extra = {};
        const char *problem;
        int r;

        if (!root)
                return parser_error(p, -EINVAL, NULL, "document has no root element");
        if (!node_is(root, "domain")) {
                if (root->ns && xmlStrEqual(root->name, BAD_CAST "domain"))
                        return parser_error(p, -EINVAL, root, "root element <domain> is in namespace '%s', expected none",
                                            QUOTE((const char *) root->ns->href));
                return parser_error(p, -EINVAL, root, "root element is <%s%s%s>, expected <domain>",
                                    root->ns && root->ns->prefix ? (const char *) root->ns->prefix : "",
                                    root->ns && root->ns->prefix ? ":" : "", QUOTE((const char *) root->name));
        }

        def = calloc(1, sizeof(DomainDef));
        if (!def)
                return -ENOMEM;
        def->vcpus = 1;
        extra.strv = &def->extra_domain;

        r = attr_get(root, "type", &def->type);
        if (r < 0)
                return r;
        if (def->type) {
                problem = check_domain_type(def->type);
                if (problem)
                        return parser_error(p, -EINVAL, root, "domain type '%s' %s", QUOTE(def->type), problem);
        }
        r = collect_attributes(root, (const char *const[]) { "type", NULL }, &def->extra_domain_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = root->children; c; c = c->next) {
                r = parser_skip_node(p, root, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (node_is(c, "name")) {
                        r = parser_check_once(p, c, &seen_name);
                        if (r < 0)
                                return r;
                        r = node_text(p, c, &def->name);
                        if (r < 0)
                                return r;
                        problem = check_name(def->name);
                        if (problem)
                                return parser_error(p, -EINVAL, c, "%s", problem);

                } else if (node_is(c, "uuid")) {
                        _cleanup_free_ char *text = NULL;
                        char uuid[37];

                        r = parser_check_once(p, c, &seen_uuid);
                        if (r < 0)
                                return r;
                        r = node_text(p, c, &text);
                        if (r < 0)
                                return r;
                        if (uuid_canonicalize(strip_blank(text), uuid) < 0)
                                return parser_error(p, -EINVAL, c, "<uuid> is not a valid UUID: '%s'", QUOTE(text));
                        def->uuid = strdup(uuid);
                        if (!def->uuid)
                                return -ENOMEM;

                } else if (node_is(c, "description")) {
                        r = parser_check_once(p, c, &seen_description);
                        if (r < 0)
                                return r;
                        r = node_text(p, c, &def->description);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "memory")) {
                        r = parser_check_once(p, c, &seen_memory);
                        if (r < 0)
                                return r;
                        r = parser_memory(p, c, &def->memory_kib);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "currentMemory")) {
                        r = parser_check_once(p, c, &seen_current);
                        if (r < 0)
                                return r;
                        r = parser_memory(p, c, &def->current_memory_kib);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "vcpu")) {
                        r = parser_check_once(p, c, &seen_vcpu);
                        if (r < 0)
                                return r;
                        r = parser_vcpu(p, c, &def->vcpus);
                        if (r < 0)
                                return r;
                        r = collect_attributes(c, (const char *const[]) { NULL }, &def->extra_vcpu_attributes);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "os")) {
                        r = parser_check_once(p, c, &seen_os);
                        if (r < 0)
                                return r;
                        r = parser_os(p, c, def);
                        if (r < 0)
                                return r;

                } else if (node_is(c, "devices")) {
                        r = parser_check_once(p, c, &seen_devices);
                        if (r < 0)
                                return r;
                        r = parser_devices(p, c, def, &seen_monitor);
                        if (r < 0)
                                return r;

                } else if (node_is_monitor(c)) {
                        r = parser_monitor(p, c, &seen_monitor, def);
                        if (r < 0)
                                return r;

                } else {
                        r = parser_keep_element(p, c, LEVEL_DOMAIN_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }

        if (!seen_name)
                return parser_error(p, -EINVAL, root, "<domain> has no <name>");
        if (!seen_memory)
                return parser_error(p, -EINVAL, root, "<domain> has no <memory>");
        if (!seen_current)
                def->current_memory_kib = def->memory_kib;
        else if (def->current_memory_kib > def->memory_kib)
                return parser_error(p, -EINVAL, seen_current,
                                    "<currentMemory> (%" PRIu64 " KiB) is larger than <memory> (%" PRIu64 " KiB)",
                                    def->current_memory_kib, def->memory_kib);

        if (!def->uuid) {
                char uuid[37];

                r = uuid_generate_string(uuid);
                if (r < 0)
                        return r;
                def->uuid = strdup(uuid);
                if (!def->uuid)
                        return -ENOMEM;
                def->uuid_generated = true;
        }
        r = free_and_strdup(&def->type, def->type ?: "kvm");
        if (r < 0)
                return r;
        r = free_and_strdup(&def->os_type, def->os_type ?: "hvm");
        if (r < 0)
                return r;

        *ret = TAKE_PTR(def);
        return 0;
}

int domain_def_parse(const char *xml, size_t size, DomainDef **ret, char **ret_error) {
        _cleanup_(parser_done) Parser p = {};
        DomainDef *def = NULL;
        int r;

        if (!ret || (!xml && size > 0))
                return -EINVAL;

        if (size > XML_MAX_DOCUMENT_SIZE)
                r = parser_error(&p, -EFBIG, NULL, "document is %zu bytes, larger than the limit of %u bytes",
                                 size, XML_MAX_DOCUMENT_SIZE);
        else {
                parser_install_handlers(&p);
                r = parser_read(&p, xml, size);
                if (r >= 0)
                        r = parser_domain(&p, xmlDocGetRootElement(p.doc), &def);
        }
        if (r < 0) {
                if (ret_error && p.error)
                        *ret_error = TAKE_PTR(p.error);
                return r;
        }

        *ret = def;
        return 0;
}

/* ---- Writer ---------------------------------------------------------------- */

/* Remembers the first failure so that the writing code reads straight. */
typedef struct Writer {
        FILE *f;
        int error;
} Writer;

static void writer_fail(Writer *w, int r) {
        if (w->error == 0)
                w->error = r;
}

static void w_puts(Writer *w, const char *s) {
        if (w->error == 0 && fputs(s, w->f) < 0)
                writer_fail(w, -ENOMEM);
}

static void w_printf(Writer *w, const char *fmt, ...) _printf_(2, 3);
static void w_printf(Writer *w, const char *fmt, ...) {
        va_list ap;

        if (w->error != 0)
                return;
        va_start(ap, fmt);
        if (vfprintf(w->f, fmt, ap) < 0)
                writer_fail(w, -ENOMEM);
        va_end(ap);
}

/* Escapes for element text (attribute = false) or for an attribute value
 * in either kind of quotes. Characters XML cannot carry fail with -EINVAL.
 * \r and, in attributes, \t and \n become references, or a parser would
 * normalize them away. */
static int escape_to(FILE *f, const char *s, bool attribute) {
        while (*s) {
                size_t n = xml_char_len(s);
                const char *e = NULL;

                if (n == 0)
                        return -EINVAL;

                switch (*s) {
                case '&':
                        e = "&amp;";
                        break;
                case '<':
                        e = "&lt;";
                        break;
                case '>':
                        e = "&gt;";
                        break;
                case '\r':
                        e = "&#13;";
                        break;
                case '\'':
                        e = attribute ? "&apos;" : NULL;
                        break;
                case '"':
                        e = attribute ? "&quot;" : NULL;
                        break;
                case '\n':
                        e = attribute ? "&#10;" : NULL;
                        break;
                case '\t':
                        e = attribute ? "&#9;" : NULL;
                        break;
                }

                if (e ? fputs(e, f) < 0 : fwrite(s, 1, n, f) != n)
                        return -ENOMEM;
                s += n;
        }
        return 0;
}

static void w_escaped(Writer *w, const char *s, bool attribute) {
        int r;

        if (w->error != 0)
                return;
        r = escape_to(w->f, s, attribute);
        if (r < 0)
                writer_fail(w, r);
}

/* " name='value'", nothing when value is NULL. */
static void w_attr(Writer *w, const char *name, const char *value) {
        if (!value)
                return;
        w_printf(w, " %s='", name);
        w_escaped(w, value, true);
        w_puts(w, "'");
}

static void w_extra_attributes(Writer *w, char *const *l) {
        for (; l && *l; l++) {
                w_puts(w, " ");
                w_puts(w, *l);
        }
}

static void w_extra_elements(Writer *w, int level, char *const *l) {
        for (; l && *l; l++)
                w_printf(w, "%*s%s\n", level * 2, "", *l);
}

/* <tag>text</tag> */
static void w_text_element(Writer *w, int level, const char *tag, const char *text) {
        w_printf(w, "%*s<%s>", level * 2, "", tag);
        w_escaped(w, text, false);
        w_printf(w, "</%s>\n", tag);
}

static int strv_extend_escaped_attr(char ***l, const char *prefix, const char *name, const char *value) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        size_t size = 0;
        int r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (fprintf(f, "%s%s%s=\"", prefix ?: "", prefix ? ":" : "", name) < 0)
                return -ENOMEM;
        r = escape_to(f, value, true);
        if (r < 0)
                return r;
        if (fputs("\"", f) < 0 || fflush(f) != 0)
                return -ENOMEM;
        f = (fclose(f), NULL);

        r = strv_push(l, buf);
        if (r < 0)
                return r;
        TAKE_PTR(buf);
        return 0;
}

static int writer_check_def(const DomainDef *def) {
        int r;

        if (check_name(def->name))
                return -EINVAL;
        if (def->type && check_domain_type(def->type))
                return -EINVAL;
        if (def->uuid && uuid_canonicalize(def->uuid, (char[37]) {}) < 0)
                return -EINVAL;
        /* Written in KiB; parse_memory() must be able to read it back. */
        if (def->memory_kib == 0 || def->memory_kib > UINT64_MAX / 1024 ||
            def->current_memory_kib > def->memory_kib)
                return -EINVAL;
        if (def->os_type && check_text(def->os_type))
                return -EINVAL;
        if ((def->arch && check_text(def->arch)) || (def->machine && check_text(def->machine)))
                return -EINVAL;
        if (def->emulator && check_absolute_path(def->emulator))
                return -EINVAL;
        if (def->monitor_path && check_absolute_path(def->monitor_path))
                return -EINVAL;

        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *d = &def->disks[i];

                if (check_target_dev(d->target) || (d->bus && check_bus(d->bus)) ||
                    check_absolute_path(d->source) || !disk_format_to_string(d->format))
                        return -EINVAL;
                if (d->backing_formats)
                        for (size_t j = 0; d->backing_chain && d->backing_chain[j]; j++)
                                if (!disk_format_to_string(d->backing_formats[j]))
                                        return -EINVAL;
        }

        r = find_duplicate_target(def->disks, def->n_disks, &(size_t) { 0 }, &(size_t) { 0 });
        if (r < 0)
                return r;
        return r > 0 ? -EINVAL : 0;
}

/* libvirt nests the chain: each <backingStore> holds the next one, and an
 * empty <backingStore/> says the chain ends there. */
static void w_backing_chain(Writer *w, const DomainDisk *d) {
        size_t n = strv_length(d->backing_chain);

        for (size_t i = 0; i < n; i++) {
                int level = 2 * (LEVEL_DISK_CHILD + (int) i);

                w_printf(w, "%*s<backingStore type='file'>\n", level, "");
                if (d->backing_formats)
                        w_printf(w, "%*s<format type='%s'/>\n", level + 2, "",
                                 disk_format_to_string(d->backing_formats[i]));
                w_printf(w, "%*s<source", level + 2, "");
                w_attr(w, "file", d->backing_chain[i]);
                w_puts(w, "/>\n");
        }
        w_printf(w, "%*s<backingStore/>\n", 2 * (LEVEL_DISK_CHILD + (int) n), "");
        for (size_t i = n; i-- > 0;)
                w_printf(w, "%*s</backingStore>\n", 2 * (LEVEL_DISK_CHILD + (int) i), "");
}

static void w_disk(Writer *w, const DomainDisk *d, DomainFormatFlags flags) {
        int level = 2 * LEVEL_DISK_CHILD;

        w_printf(w, "%*s<disk type='file' device='disk'", level - 2, "");
        w_extra_attributes(w, d->extra_attributes);
        w_puts(w, ">\n");

        w_printf(w, "%*s<driver name='qemu' type='%s'", level, "", disk_format_to_string(d->format));
        w_extra_attributes(w, d->extra_driver_attributes);
        w_puts(w, "/>\n");

        w_printf(w, "%*s<source", level, "");
        w_attr(w, "file", d->source);
        w_extra_attributes(w, d->extra_source_attributes);
        w_puts(w, "/>\n");

        if ((flags & DOMAIN_FORMAT_BACKING_CHAIN) && d->backing_chain)
                w_backing_chain(w, d);

        w_printf(w, "%*s<target", level, "");
        w_attr(w, "dev", d->target);
        w_attr(w, "bus", d->bus ?: "virtio");
        w_extra_attributes(w, d->extra_target_attributes);
        w_puts(w, "/>\n");

        if (d->readonly)
                w_printf(w, "%*s<readonly/>\n", level, "");
        if (d->transient)
                w_printf(w, "%*s<transient/>\n", level, "");
        w_extra_elements(w, LEVEL_DISK_CHILD, d->extra_elements);
        w_printf(w, "%*s</disk>\n", level - 2, "");
}

static bool strv_has_prefix(char *const *l, const char *prefix) {
        for (; l && *l; l++)
                if (strncmp(*l, prefix, strlen(prefix)) == 0)
                        return true;
        return false;
}

int domain_def_format(const DomainDef *def, DomainFormatFlags flags, char **ret) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        Writer w = {};
        size_t size = 0;
        bool monitor_ns_on_root;
        int r;

        if (!def || !ret)
                return -EINVAL;
        r = writer_check_def(def);
        if (r < 0)
                return r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        w.f = f;

        /* Kept attributes may bind "qsnap" to something else; then the
         * monitor element declares our namespace locally instead. */
        monitor_ns_on_root = def->monitor_path && !strv_has_prefix(def->extra_domain_attributes, "xmlns:qsnap=");

        w_puts(&w, "<domain");
        w_attr(&w, "type", def->type ?: "kvm");
        if (monitor_ns_on_root)
                w_attr(&w, "xmlns:qsnap", QSNAP_XML_NAMESPACE);
        w_extra_attributes(&w, def->extra_domain_attributes);
        w_puts(&w, ">\n");

        w_text_element(&w, 1, "name", def->name);
        if (def->uuid) {
                char uuid[37];

                (void) uuid_canonicalize(def->uuid, uuid); /* checked above */
                w_text_element(&w, 1, "uuid", uuid);
        }
        if (def->description)
                w_text_element(&w, 1, "description", def->description);
        w_printf(&w, "  <memory unit='KiB'>%" PRIu64 "</memory>\n", def->memory_kib);
        w_printf(&w, "  <currentMemory unit='KiB'>%" PRIu64 "</currentMemory>\n",
                 def->current_memory_kib ?: def->memory_kib);
        w_puts(&w, "  <vcpu");
        w_extra_attributes(&w, def->extra_vcpu_attributes);
        w_printf(&w, ">%u</vcpu>\n", def->vcpus ?: 1);

        w_puts(&w, "  <os");
        w_extra_attributes(&w, def->extra_os_attributes);
        w_puts(&w, ">\n    <type");
        w_attr(&w, "arch", def->arch);
        w_attr(&w, "machine", def->machine);
        w_puts(&w, ">");
        w_escaped(&w, def->os_type ?: "hvm", false);
        w_puts(&w, "</type>\n");
        w_extra_elements(&w, LEVEL_DEVICES_CHILD, def->extra_os);
        w_puts(&w, "  </os>\n");

        w_extra_elements(&w, LEVEL_DOMAIN_CHILD, def->extra_domain);

        w_puts(&w, "  <devices>\n");
        if (def->emulator)
                w_text_element(&w, 2, "emulator", def->emulator);
        for (size_t i = 0; i < def->n_disks; i++)
                w_disk(&w, &def->disks[i], flags);
        if (def->monitor_path) {
                w_puts(&w, "    <qsnap:monitor");
                if (!monitor_ns_on_root)
                        w_attr(&w, "xmlns:qsnap", QSNAP_XML_NAMESPACE);
                w_attr(&w, "path", def->monitor_path);
                w_puts(&w, "/>\n");
        }
        w_extra_elements(&w, LEVEL_DEVICES_CHILD, def->extra_devices);
        w_puts(&w, "  </devices>\n");
        w_puts(&w, "</domain>\n");

        if (w.error < 0)
                return w.error;
        if (fflush(f) != 0 || ferror(f))
                return -ENOMEM;
        f = (fclose(f), NULL);

        *ret = TAKE_PTR(buf);
        return 0;
}

/* ---- Copy ------------------------------------------------------------------ */

/* Keeps NULL apart from an empty vector: for backing_chain the two mean
 * "unknown" and "no backing file". */
static int strv_copy(char *const *l, char ***ret) {
        _cleanup_strv_free_ char **c = NULL;
        size_t n;

        if (!l) {
                *ret = NULL;
                return 0;
        }
        n = strv_length(l);
        c = calloc(n + 1, sizeof(char *));
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                c[i] = strdup(l[i]);
                if (!c[i])
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int strdup_to(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int domain_disk_copy(const DomainDisk *s, DomainDisk *ret) {
        _cleanup_(domain_disk_done) DomainDisk d = {
                .format = s->format,
                .readonly = s->readonly,
                .transient = s->transient,
        };

        if (strdup_to(s->target, &d.target) < 0 ||
            strdup_to(s->bus, &d.bus) < 0 ||
            strdup_to(s->source, &d.source) < 0 ||
            strv_copy(s->backing_chain, &d.backing_chain) < 0 ||
            strv_copy(s->extra_elements, &d.extra_elements) < 0 ||
            strv_copy(s->extra_attributes, &d.extra_attributes) < 0 ||
            strv_copy(s->extra_driver_attributes, &d.extra_driver_attributes) < 0 ||
            strv_copy(s->extra_source_attributes, &d.extra_source_attributes) < 0 ||
            strv_copy(s->extra_target_attributes, &d.extra_target_attributes) < 0)
                return -ENOMEM;

        if (s->backing_formats) {
                size_t n = strv_length(s->backing_chain);

                d.backing_formats = calloc(n > 0 ? n : 1, sizeof(DiskFormat));
                if (!d.backing_formats)
                        return -ENOMEM;
                memcpy(d.backing_formats, s->backing_formats, n * sizeof(DiskFormat));
        }

        *ret = d;
        d = (DomainDisk) {};
        return 0;
}

int domain_def_copy(const DomainDef *def, DomainDef **ret) {
        _cleanup_(domain_def_freep) DomainDef *c = NULL;
        int r;

        if (!def || !ret)
                return -EINVAL;

        c = calloc(1, sizeof(DomainDef));
        if (!c)
                return -ENOMEM;
        c->memory_kib = def->memory_kib;
        c->current_memory_kib = def->current_memory_kib;
        c->vcpus = def->vcpus;
        c->uuid_generated = def->uuid_generated;

        if (strdup_to(def->type, &c->type) < 0 ||
            strdup_to(def->name, &c->name) < 0 ||
            strdup_to(def->uuid, &c->uuid) < 0 ||
            strdup_to(def->description, &c->description) < 0 ||
            strdup_to(def->os_type, &c->os_type) < 0 ||
            strdup_to(def->arch, &c->arch) < 0 ||
            strdup_to(def->machine, &c->machine) < 0 ||
            strdup_to(def->emulator, &c->emulator) < 0 ||
            strdup_to(def->monitor_path, &c->monitor_path) < 0 ||
            strv_copy(def->extra_domain, &c->extra_domain) < 0 ||
            strv_copy(def->extra_os, &c->extra_os) < 0 ||
            strv_copy(def->extra_devices, &c->extra_devices) < 0 ||
            strv_copy(def->extra_domain_attributes, &c->extra_domain_attributes) < 0 ||
            strv_copy(def->extra_vcpu_attributes, &c->extra_vcpu_attributes) < 0 ||
            strv_copy(def->extra_os_attributes, &c->extra_os_attributes) < 0)
                return -ENOMEM;

        if (def->n_disks > 0) {
                c->disks = calloc(def->n_disks, sizeof(DomainDisk));
                if (!c->disks)
                        return -ENOMEM;
                for (size_t i = 0; i < def->n_disks; i++) {
                        r = domain_disk_copy(&def->disks[i], &c->disks[i]);
                        if (r < 0)
                                return r;
                        c->n_disks++;
                }
        }

        *ret = TAKE_PTR(c);
        return 0;
}
