/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store's bulk file (store.c has the format): written from
 * the index, and read back by slicing the text into entries, each checked
 * by xml-util's hardened parser, in one pass.
 */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>

#include "store/store-internal.h"
#include "store/xml-util.h"

/* ---- entries, checked by xml-util's hardened parser ---- */

bool store_is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* At most QUOTE_MAX bytes of s for an error message, cut at a character. */
char *store_quote(const char *s) {
        size_t n = strlen(s);

        if (n <= QUOTE_MAX)
                return strdup(s);
        n = QUOTE_MAX;
        while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80)
                n--;
        return strprintf("%.*s…", (int) n, s);
}

static bool node_is(const xmlNode *n, const char *name) {
        return n && n->type == XML_ELEMENT_NODE && !n->ns && xmlStrEqual(n->name, BAD_CAST name);
}

/* text starts with the start tag of element `name`. */
static bool has_tag(const char *text, const char *end, const char *name) {
        size_t n = strlen(name);

        return (size_t) (end - text) > n + 1 && text[0] == '<' && memcmp(text + 1, name, n) == 0 &&
                (store_is_space(text[n + 1]) || text[n + 1] == '>' || text[n + 1] == '/');
}

/* Checks that text is exactly one well-formed <entry_element> element, a
 * document of its own, and returns the string value of its first <name>
 * child (libvirt's "string(./name)"). -EINVAL with *ret_error otherwise. */
int entry_parse(const char *text, size_t len, const char *entry_element, char **ret_name, char **ret_error) {
        _cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
        _cleanup_(xml_freep) xmlChar *name = NULL;
        xmlNode *root;
        int r;

        if (!has_tag(text, text + len, entry_element)) {
                *ret_error = strprintf("entry XML must be one <%s> element and nothing else (no XML declaration)",
                                       entry_element);
                return -EINVAL;
        }
        r = xml_read_document(text, len, &doc, ret_error);
        if (r < 0)
                return r;
        root = xmlDocGetRootElement(doc);
        if (!node_is(root, entry_element) || doc->children != root || root->next) {
                *ret_error = strprintf("entry XML must be one <%s> element (without a default namespace) and nothing else",
                                       entry_element);
                return -EINVAL;
        }
        for (xmlNode *c = root->children; c; c = c->next)
                if (node_is(c, "name")) {
                        name = xmlNodeGetContent(c);
                        if (!name)
                                return -ENOMEM;
                        break;
                }
        if (isempty((const char *) name)) {
                *ret_error = strprintf("<%s> has no <name> or an empty one", entry_element);
                return -EINVAL;
        }
        *ret_name = strdup((const char *) name);
        return *ret_name ? 0 : -ENOMEM;
}

/* ---- the bulk file ---- */

/* The text between single quotes in current='…'. Newlines and tabs as
 * character references, or a parser would turn them into spaces. */
static const char *attribute_escape(char c) {
        switch (c) {
        case '&':
                return "&amp;";
        case '<':
                return "&lt;";
        case '>':
                return "&gt;";
        case '\'':
                return "&apos;";
        case '"':
                return "&quot;";
        case '\n':
                return "&#10;";
        case '\r':
                return "&#13;";
        case '\t':
                return "&#9;";
        default:
                return NULL;
        }
}

static size_t attribute_escaped_size(const char *s) {
        size_t n = 0;

        for (; *s; s++) {
                const char *e = attribute_escape(*s);
                n += e ? strlen(e) : 1;
        }
        return n;
}

static char *attribute_escape_copy(char *p, const char *s) {
        for (; *s; s++) {
                const char *e = attribute_escape(*s);

                if (e)
                        p = stpcpy(p, e);
                else
                        *p++ = *s;
        }
        return p;
}

/* Bytes of the bulk file for idx at generation gen: the part before the
 * entries, the entries, and the closing tag. */
uint64_t base_file_size(const Store *s, const Index *idx, uint64_t gen) {
        uint64_t n;

        n = (uint64_t) snprintf(NULL, 0, "<?%s generation=\"%" PRIu64 "\"?>\n<%s>\n", GENERATION_PI, gen, s->root_element);
        if (idx->current)
                n += STRLEN(" current=''") + attribute_escaped_size(idx->current->name);
        return n + idx->body_size + STRLEN("</>\n") + strlen(s->root_element);
}

int base_format(const Store *s, const Index *idx, uint64_t gen, char **ret, size_t *ret_size) {
        uint64_t size = base_file_size(s, idx, gen);
        char *buf, *p;

        if (size >= SIZE_MAX)
                return -EFBIG;
        buf = malloc(size + 1);
        if (!buf)
                return -ENOMEM;
        p = buf + sprintf(buf, "<?%s generation=\"%" PRIu64 "\"?>\n<%s", GENERATION_PI, gen, s->root_element);
        if (idx->current) {
                p = stpcpy(p, " current='");
                p = attribute_escape_copy(p, idx->current->name);
                *p++ = '\'';
        }
        p = stpcpy(p, ">\n");
        for (const Entry *e = idx->first; e; e = e->next) {
                p = stpcpy(p, ENTRY_INDENT);
                memcpy(p, e->xml, e->xml_len);
                p += e->xml_len;
                *p++ = '\n';
        }
        p += sprintf(p, "</%s>\n", s->root_element);
        assert((uint64_t) (p - buf) == size);
        *ret = buf;
        *ret_size = (size_t) size;
        return 0;
}

static bool has_prefix(const char *p, const char *end, const char *prefix) {
        size_t n = strlen(prefix);
        return (size_t) (end - p) >= n && memcmp(p, prefix, n) == 0;
}

/* Just past the next token, or NULL. */
static const char *find_after(const char *p, const char *end, const char *token) {
        size_t n = strlen(token);
        const char *t = memmem(p, (size_t) (end - p), token, n);

        return t ? t + n : NULL;
}

/* p at the '<' of a start tag: just past its '>', or NULL. Quotes matter:
 * an attribute value may hold '>'. */
static const char *scan_start_tag(const char *p, const char *end, bool *ret_empty) {
        for (p++; p < end; p++) {
                if (*p == '"' || *p == '\'') {
                        p = memchr(p + 1, *p, (size_t) (end - p - 1));
                        if (!p)
                                return NULL;
                } else if (*p == '>') {
                        *ret_empty = p[-1] == '/';
                        return p + 1;
                }
        }
        return NULL;
}

/* Comments, processing instructions and CDATA sections: just past their
 * end; NULL when p is not at one or it does not end. */
static const char *skip_markup(const char *p, const char *end) {
        if (has_prefix(p, end, "<!--"))
                return find_after(p + 4, end, "-->");
        if (has_prefix(p, end, "<![CDATA["))
                return find_after(p + 9, end, "]]>");
        if (has_prefix(p, end, "<?"))
                return find_after(p + 2, end, "?>");
        return NULL;
}

/* p at the '<' of an element's start tag: just past its end tag, or NULL.
 * Only has to be right for well-formed text: libxml2 checks the slice. */
static const char *scan_element(const char *p, const char *end) {
        size_t depth = 0;

        for (;;) {
                bool empty;

                if (has_prefix(p, end, "<!--") || has_prefix(p, end, "<![CDATA[") || has_prefix(p, end, "<?"))
                        p = skip_markup(p, end);
                else if (has_prefix(p, end, "<!"))
                        return NULL;
                else if (has_prefix(p, end, "</")) {
                        p = memchr(p, '>', (size_t) (end - p));
                        if (!p || depth == 0)
                                return NULL;
                        p++;
                        if (--depth == 0)
                                return p;
                } else {
                        p = scan_start_tag(p, end, &empty);
                        if (!p)
                                return NULL;
                        if (!empty)
                                depth++;
                        else if (depth == 0)
                                return p;
                }
                if (!p)
                        return NULL;
                p = memchr(p, '<', (size_t) (end - p));
                if (!p)
                        return NULL;
        }
}

static size_t line_of(const char *buf, const char *at) {
        size_t line = 1;

        for (const char *p = buf; p < at; p++)
                line += *p == '\n';
        return line;
}

static int base_error(char **ret_error, const char *path, const char *buf, const char *at, const char *fmt, ...)
        _printf_(5, 6);
static int base_error(char **ret_error, const char *path, const char *buf, const char *at, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        *ret_error = at ? strprintf("%s:%zu: %s", path, line_of(buf, at), msg) : strprintf("%s: %s", path, msg);
        return -EBADMSG;
}

/* generation="N" */
static int parse_generation_pi(const char *content, uint64_t *ret) {
        const char *p = content;
        uint64_t g = 0;

        if (!p || strncmp(p, "generation=\"", 12) != 0)
                return -EINVAL;
        p += 12;
        if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '"'))
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (g > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                g = g * 10 + (uint64_t) (*p - '0');
        }
        if (strcmp(p, "\"") != 0)
                return -EINVAL;
        *ret = g;
        return 0;
}

/* The prolog and the root's start tag, checked by libxml2 as a document of
 * their own (with a closing tag added): encoding, generation, current. */
static int base_parse_head(const Store *s, const char *buf, const char *head_end, bool root_empty,
                           uint64_t *ret_gen, char **ret_current, char **ret_error) {
        _cleanup_free_ char *text = NULL, *error = NULL;
        _cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
        _cleanup_(xml_freep) xmlChar *current = NULL;
        size_t head = (size_t) (head_end - buf);
        bool have_gen = false;
        uint64_t gen = 0;
        xmlNode *root;
        int r;

        if (head > INT_MAX / 2)
                return base_error(ret_error, s->base_path, NULL, NULL, "the part before the first entry is too large");
        text = root_empty ? memdup_nul(buf, head) : strprintf("%.*s</%s>", (int) head, buf, s->root_element);
        if (!text)
                return -ENOMEM;
        r = xml_read_document(text, strlen(text), &doc, &error);
        if (r == -EINVAL)
                return base_error(ret_error, s->base_path, NULL, NULL, "%s", error);
        if (r < 0)
                return r;
        if (doc->encoding && strcasecmp((const char *) doc->encoding, "UTF-8") != 0 &&
            strcasecmp((const char *) doc->encoding, "UTF8") != 0)
                return base_error(ret_error, s->base_path, NULL, NULL, "encoding %s is not supported, only UTF-8",
                                  (const char *) doc->encoding);
        root = xmlDocGetRootElement(doc);
        if (!root || root->nsDef)
                return base_error(ret_error, s->base_path, NULL, NULL,
                                  "namespace declarations on <%s> are not supported", s->root_element);

        for (xmlNode *n = doc->children; n && n != root; n = n->next) {
                if (n->type != XML_PI_NODE || !xmlStrEqual(n->name, BAD_CAST GENERATION_PI))
                        continue;
                if (have_gen)
                        return base_error(ret_error, s->base_path, NULL, NULL, "more than one <?%s?>", GENERATION_PI);
                if (parse_generation_pi((const char *) n->content, &gen) < 0)
                        return base_error(ret_error, s->base_path, NULL, NULL, "malformed <?%s %s?>",
                                          GENERATION_PI, strna((const char *) n->content));
                have_gen = true;
        }

        current = xmlGetNoNsProp(root, BAD_CAST "current");
        if (!isempty((const char *) current)) {
                *ret_current = strdup((const char *) current);
                if (!*ret_current)
                        return -ENOMEM;
        } else
                *ret_current = NULL;
        *ret_gen = gen;
        return 0;
}

/* Splits the bulk file into entries, each checked by libxml2 (the same
 * check as a commit's), in one pass: memory and time O(size). Around the
 * entries only whitespace, comments and processing instructions. */
/* Up to and past the root's start tag: whitespace, comments and processing
 * instructions only. *pp is where the root's content starts then. */
static int base_parse_prolog(const Store *s, const char *buf, const char **pp, const char *end, bool *ret_empty,
                             char **ret_error) {
        const char *p = *pp, *q;

        for (;;) {
                while (p < end && store_is_space(*p))
                        p++;
                if (p >= end)
                        return base_error(ret_error, s->base_path, NULL, NULL, "no <%s> element", s->root_element);
                if (!has_prefix(p, end, "<!--") && !has_prefix(p, end, "<?"))
                        break;
                q = skip_markup(p, end);
                if (!q)
                        return base_error(ret_error, s->base_path, buf, p, "unterminated comment or processing instruction");
                p = q;
        }
        if (has_prefix(p, end, "<!"))
                return base_error(ret_error, s->base_path, buf, p, "DTDs are not allowed");
        if (!has_tag(p, end, s->root_element))
                return base_error(ret_error, s->base_path, buf, p, "expected <%s> as the root element", s->root_element);
        p = scan_start_tag(p, end, ret_empty);
        if (!p)
                return base_error(ret_error, s->base_path, NULL, NULL, "unterminated <%s> tag", s->root_element);
        *pp = p;
        return 0;
}

/* One <entry_element> at p (up to q) into idx. */
static int base_parse_entry(const Store *s, const char *buf, const char *p, const char *q, Index *idx, char **ret_error) {
        _cleanup_free_ char *name = NULL, *error = NULL;
        int r;

        r = entry_parse(p, (size_t) (q - p), s->entry_element, &name, &error);
        if (r == -EINVAL)
                return base_error(ret_error, s->base_path, buf, p, "entry %zu: %s", idx->n + 1, error);
        if (r < 0)
                return r;
        if (index_find(idx, name, strlen(name))) {
                _cleanup_free_ char *quoted = store_quote(name);
                return base_error(ret_error, s->base_path, buf, p, "entry %zu: duplicate name '%s'", idx->n + 1,
                                  strna(quoted));
        }
        return index_add(idx, name, strlen(name), p, (size_t) (q - p), NULL);
}

/* The root's content from *pp through its end tag; *pp is past it then. */
static int base_parse_entries(const Store *s, const char *buf, const char **pp, const char *end, Index *idx,
                              char **ret_error) {
        const char *p = *pp, *q;
        int r;

        for (;;) {
                while (p < end && store_is_space(*p))
                        p++;
                if (p >= end)
                        return base_error(ret_error, s->base_path, NULL, NULL, "missing </%s> (file truncated?)",
                                          s->root_element);
                if (*p != '<')
                        return base_error(ret_error, s->base_path, buf, p, "unexpected text in <%s>", s->root_element);
                if (has_prefix(p, end, "<!--") || has_prefix(p, end, "<?")) {
                        q = skip_markup(p, end);
                        if (!q)
                                return base_error(ret_error, s->base_path, buf, p, "unterminated comment or processing instruction");
                        p = q;
                        continue;
                }
                if (has_prefix(p, end, "</")) {
                        size_t n = strlen(s->root_element);

                        if ((size_t) (end - p) < n + 3 || memcmp(p + 2, s->root_element, n) != 0)
                                return base_error(ret_error, s->base_path, buf, p, "mismatched end tag");
                        p += n + 2;
                        while (p < end && store_is_space(*p))
                                p++;
                        if (p >= end || *p != '>')
                                return base_error(ret_error, s->base_path, buf, p, "mismatched end tag");
                        *pp = p + 1;
                        return 0;
                }
                if (!has_tag(p, end, s->entry_element))
                        return base_error(ret_error, s->base_path, buf, p, "unexpected element in <%s>, only <%s> may be there",
                                          s->root_element, s->entry_element);
                q = scan_element(p, end);
                if (!q)
                        return base_error(ret_error, s->base_path, buf, p, "unterminated <%s> element", s->entry_element);
                r = base_parse_entry(s, buf, p, q, idx, ret_error);
                if (r < 0)
                        return r;
                p = q;
        }
}

/* After the root: whitespace, comments and processing instructions only. */
static int base_parse_epilog(const Store *s, const char *buf, const char *p, const char *end, char **ret_error) {
        for (;;) {
                while (p < end && store_is_space(*p))
                        p++;
                if (p >= end)
                        return 0;
                if (!has_prefix(p, end, "<!--") && !has_prefix(p, end, "<?"))
                        return base_error(ret_error, s->base_path, buf, p, "content after </%s>", s->root_element);
                p = skip_markup(p, end);
                if (!p)
                        return base_error(ret_error, s->base_path, NULL, NULL, "unterminated comment or processing instruction");
        }
}

int base_parse(const Store *s, const char *buf, size_t size, Index *idx, uint64_t *ret_gen, char **ret_error) {
        _cleanup_free_ char *current = NULL;
        const char *p = buf, *end = buf + size, *nul;
        bool root_empty = false;
        uint64_t gen = 0;
        int r;

        if (size == 0)
                return base_error(ret_error, s->base_path, NULL, NULL, "file is empty");
        nul = memchr(buf, 0, size);
        if (nul)
                return base_error(ret_error, s->base_path, buf, nul, "NUL byte (only UTF-8 is supported)");
        if (has_prefix(p, end, "\xef\xbb\xbf"))
                p += 3;

        r = base_parse_prolog(s, buf, &p, end, &root_empty, ret_error);
        if (r < 0)
                return r;
        r = base_parse_head(s, buf, p, root_empty, &gen, &current, ret_error);
        if (r < 0)
                return r;
        if (!root_empty) {
                r = base_parse_entries(s, buf, &p, end, idx, ret_error);
                if (r < 0)
                        return r;
        }
        r = base_parse_epilog(s, buf, p, end, ret_error);
        if (r < 0)
                return r;

        if (current) {
                idx->current = index_find(idx, current, strlen(current));
                if (!idx->current) {
                        _cleanup_free_ char *quoted = store_quote(current);
                        log_warning("%s: current='%s' names no entry; there is no current entry.", s->base_path, strna(quoted));
                }
        }
        *ret_gen = gen;
        return 0;
}
