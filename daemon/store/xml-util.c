/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The parts of the XML codecs that do not depend on the document type:
 * characters, numbers and names, the readers for modelled elements, the
 * verbatim keeping of unknown ones, and copies. The hardened parser is
 * xml-parser.c, the escaping writer xml-writer.c (one header: xml-util.h).
 * Nothing here logs or keeps state between calls.
 */

#include <stdarg.h>
#include <stdio.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>

#include "store/xml-util.h"

int xml_list_push(XmlList *list, char *v) {
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

/* ---- Characters ---------------------------------------------------------- */

/* Length of the UTF-8 sequence at s if it encodes an XML 1.0 Char, else 0.
 * Names and paths can come from D-Bus, where a string may hold characters
 * that no XML document can carry, not even as a character reference. */
size_t xml_char_len(const char *str) {
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

bool xml_is_blank_char(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool xml_is_blank(const char *s) {
        for (; *s; s++)
                if (!xml_is_blank_char(*s))
                        return false;
        return true;
}

/* Strips XML whitespace from both ends, in place. */
char *xml_strip_blank(char *s) {
        size_t n;

        while (xml_is_blank_char(*s))
                s++;
        n = strlen(s);
        while (n > 0 && xml_is_blank_char(s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* A copy of s for an error message: short, and valid UTF-8 without control
 * characters, because messages end up in D-Bus error strings. */
char *xml_message_quote(const char *s, size_t max, char buf[static XML_QUOTE_MAX + 4]) {
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

int xml_parse_u64(const char *s, uint64_t *ret) {
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

/* Optional sign, decimal digits, int64 range. */
int xml_parse_i64(const char *s, int64_t *ret) {
        bool negative = s[0] == '-';
        uint64_t v;
        int r;

        r = xml_parse_u64(s + negative, &v);
        if (r < 0)
                return r;
        if (v > (uint64_t) INT64_MAX + negative)
                return -ERANGE;
        *ret = negative ? (int64_t) (0 - v) : (int64_t) v;
        return 0;
}

const char *xml_check_absolute_path(const char *s) {
        if (isempty(s))
                return "is empty";
        if (s[0] != '/')
                return "is not an absolute path";
        return NULL;
}

const char *xml_check_disk_name(const char *s) {
        if (isempty(s) || xml_is_blank(s))
                return "is empty";
        if (strchr(s, '/') && s[0] != '/')
                return "is neither a disk target nor an absolute path";
        return NULL;
}

bool xml_strv_has_blank(char *const *l) {
        for (; l && *l; l++)
                if (isempty(*l))
                        return true;
        return false;
}

/* ---- Name index ------------------------------------------------------------ */

static int compare_name_refs(const void *a, const void *b) {
        const XmlNameRef *x = a, *y = b;
        int c = strcmp(x->name, y->name);

        if (c != 0)
                return c;
        return x->index < y->index ? -1 : x->index > y->index;
}

int xml_name_index_new(const char *(*get)(const void *item), const void *items, size_t item_size, size_t n,
                       XmlNameRef **ret, size_t *ret_n) {
        _cleanup_free_ XmlNameRef *refs = NULL;
        size_t k = 0;

        refs = new0(XmlNameRef, n);
        if (!refs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const char *name = get((const char *) items + i * item_size);

                if (name)
                        refs[k++] = (XmlNameRef) { .name = name, .index = i };
        }
        qsort(refs, k, sizeof(XmlNameRef), compare_name_refs);
        *ret = TAKE_PTR(refs);
        *ret_n = k;
        return 0;
}

int xml_name_index_find_duplicate(const XmlNameRef *refs, size_t n, size_t *ret_first, size_t *ret_second) {
        for (size_t i = 1; i < n; i++)
                if (streq(refs[i - 1].name, refs[i].name)) {
                        /* Among equal names the sort is by position. */
                        *ret_first = refs[i - 1].index;
                        *ret_second = refs[i].index;
                        return 1;
                }
        return 0;
}

const XmlNameRef *xml_name_index_lookup(const XmlNameRef *refs, size_t n, const char *name) {
        size_t lo = 0, hi = n;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(refs[mid].name, name);

                if (c == 0) {
                        while (mid > lo && streq(refs[mid - 1].name, name))
                                mid--;
                        return &refs[mid];
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

bool xml_node_is(const xmlNode *n, const char *name) {
        return n->type == XML_ELEMENT_NODE && !n->ns && xmlStrEqual(n->name, BAD_CAST name);
}

/* Children that are neither modelled nor kept: comments, processing
 * instructions, formatting whitespace. Returns 1 to skip, 0 for an element,
 * or an error for stray text, which would otherwise vanish silently. */
int xml_parser_skip_node(XmlParser *p, const xmlNode *parent, const xmlNode *n) {
        switch (n->type) {
        case XML_ELEMENT_NODE:
                return 0;
        case XML_TEXT_NODE:
        case XML_CDATA_SECTION_NODE: {
                const char *t = (const char *) n->content;

                if (!t || xml_is_blank(t))
                        return 1;
                while (xml_is_blank_char(*t))
                        t++;
                return xml_parser_error(p, -EINVAL, n, "unexpected text in <%s>: '%s'",
                                        (const char *) parent->name, XML_QUOTE(t));
        }
        default:
                return 1;
        }
}

/* A copy of an attribute without namespace, NULL when absent. Unlike
 * xmlGetNoNsProp() this never falls back to defaults from a DTD. */
int xml_attr_get(const xmlNode *n, const char *name, char **ret) {
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
int xml_node_text(XmlParser *p, const xmlNode *n, char **ret) {
        _cleanup_(xml_freep) xmlChar *v = NULL;
        char *s;

        for (const xmlNode *c = n->children; c; c = c->next)
                if (c->type == XML_ELEMENT_NODE)
                        return xml_parser_error(p, -EINVAL, c, "<%s> may only contain text, found <%s>",
                                                (const char *) n->name, (const char *) c->name);

        v = xmlNodeGetContent(n);
        s = strdup(v ? (const char *) v : "");
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int xml_parser_check_once(XmlParser *p, const xmlNode *n, const xmlNode **seen) {
        if (*seen)
                return xml_parser_error(p, -EINVAL, n, "<%s> appears more than once, first on line %ld",
                                        (const char *) n->name, xmlGetLineNo(*seen));
        *seen = n;
        return 0;
}

int xml_parser_text_once(XmlParser *p, const xmlNode *n, const xmlNode **seen, char **ret) {
        int r;

        r = xml_parser_check_once(p, n, seen);
        if (r < 0)
                return r;
        return xml_node_text(p, n, ret);
}

/* A namespace name as the document wrote it. Without entity substitution
 * libxml2 keeps an ampersand in a declaration's value as the text "&#38;"
 * in xmlNs.href (for attributes it builds entity nodes instead): escaping
 * that again would write "&amp;#38;", a different name, which libxml2 then
 * refuses as a URI on the next read. */
static char *ns_href(const xmlNs *ns) {
        const char *h = ns->href ? (const char *) ns->href : "";
        char *s, *o;

        s = o = strdup(h);
        if (!s)
                return NULL;
        while (*h)
                if (strncmp(h, "&#38;", 5) == 0) {
                        *o++ = '&';
                        h += 5;
                } else
                        *o++ = *h++;
        *o = 0;
        return s;
}

/* Keeps the attributes of n that are not in known (and the namespace
 * declarations they need) as name="value" text. Declarations come first so
 * that a second round trip yields the same order. */
int xml_collect_attributes(const xmlNode *n, const char *const *known, const char *skip_namespace, char ***ret) {
        _cleanup_strv_free_ char **l = NULL, **prefixes = NULL;
        int r;

        for (const xmlNs *ns = n->nsDef; ns; ns = ns->next) {
                _cleanup_free_ char *href = NULL;

                if (skip_namespace && ns->href && xmlStrEqual(ns->href, BAD_CAST skip_namespace))
                        continue;
                href = ns_href(ns);
                if (!href)
                        return -ENOMEM;
                r = xml_strv_extend_escaped_attr(&l, ns->prefix ? "xmlns" : NULL,
                                                 ns->prefix ? (const char *) ns->prefix : "xmlns", href);
                if (r < 0)
                        return r;
                r = strv_extend(&prefixes, ns->prefix ? (const char *) ns->prefix : "");
                if (r < 0)
                        return r;
        }

        /* A prefixed attribute whose prefix was declared further up needs the
         * declaration here, since only this element is written back. */
        for (const xmlAttr *a = n->properties; a; a = a->next) {
                _cleanup_free_ char *href = NULL;
                const char *prefix;

                if (!a->ns || !a->ns->prefix)
                        continue;
                prefix = (const char *) a->ns->prefix;
                if (streq(prefix, "xml") || strv_contains((const char *const *) prefixes, prefix))
                        continue;
                href = ns_href(a->ns);
                if (!href)
                        return -ENOMEM;
                r = xml_strv_extend_escaped_attr(&l, "xmlns", prefix, href);
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
                r = xml_strv_extend_escaped_attr(&l, a->ns ? (const char *) a->ns->prefix : NULL,
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
void xml_strip_formatting(xmlNode *n) {
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
                        xml_strip_formatting(c);
                else if (c->type == XML_TEXT_NODE && has_element && !has_text) {
                        xmlUnlinkNode(c);
                        xmlFreeNode(c);
                }
        }
}

int xml_dump_element(xmlDoc *doc, const xmlNode *n, int level, char **ret) {
        _cleanup_(xmlFreeNodep) xmlNode *copy = NULL;
        _cleanup_(xmlBufferFreep) xmlBuffer *buf = NULL;
        char *s;
        int r;

        /* xmlDocCopyNode() declares on the copy the namespaces that n uses
         * but an ancestor declares. */
        copy = xmlDocCopyNode((xmlNode *) n, doc, 1);
        if (!copy)
                return -ENOMEM;
        xml_strip_formatting(copy);

        buf = xmlBufferCreate();
        if (!buf)
                return -ENOMEM;
        /* libxml2 writes non-ASCII in attribute values as character
         * references when the document declared no encoding, and as UTF-8
         * when it did: dump as UTF-8 always, or a document with
         * encoding="UTF-8" would change bytes on its second round trip. */
        {
                const xmlChar *saved = doc->encoding;

                doc->encoding = BAD_CAST "UTF-8";
                r = xmlNodeDump(buf, doc, copy, level, 1);
                doc->encoding = saved;
                if (r < 0)
                        return -ENOMEM;
        }

        s = strdup((const char *) xmlBufferContent(buf));
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

void xml_strip_secrets(xmlNode *n) {
        for (; n; n = n->next) {
                if (n->type != XML_ELEMENT_NODE)
                        continue;
                if (xml_node_is(n, "graphics")) {
                        xmlAttr *a = xmlHasNsProp(n, BAD_CAST "passwd", NULL);

                        if (a)
                                xmlRemoveProp(a);
                }
                xml_strip_secrets(n->children);
        }
}

int xml_element_without_secrets(const char *element, int level, char **ret) {
        _cleanup_(xml_parser_done) XmlParser p = {};
        xmlNode *root;
        int r;

        /* Only <graphics passwd=…> is secret: most elements need no parse. */
        if (!strstr(element, "passwd") || !strstr(element, "graphics")) {
                *ret = strdup(element);
                return *ret ? 0 : -ENOMEM;
        }
        xml_parser_install_handlers(&p);
        r = xml_parser_read(&p, element, strlen(element));
        if (r < 0)
                return -EINVAL;
        root = xmlDocGetRootElement(p.doc);
        if (!root)
                return -EINVAL;
        xml_strip_secrets(root);
        return xml_dump_element(p.doc, root, level, ret);
}

int xml_parser_keep_element(XmlParser *p, xmlNode *n, int level, XmlList *list) {
        _cleanup_free_ char *s = NULL;
        int r;

        r = xml_dump_element(p->doc, n, level, &s);
        if (r < 0)
                return r;
        r = xml_list_push(list, s);
        if (r < 0)
                return r;
        TAKE_PTR(s);
        return 0;
}

int xml_parser_keep_children(XmlParser *p, xmlNode *n, char ***strv) {
        XmlList extra = { .strv = strv };

        for (xmlNode *c = n->children; c; c = c->next) {
                int r = xml_parser_skip_node(p, n, c);

                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                r = xml_parser_keep_element(p, c, 0, &extra);
                if (r < 0)
                        return r;
        }
        return 0;
}

int xml_parser_items(XmlParser *p,
                     xmlNode *n,
                     const char *child,
                     size_t item_size,
                     int (*parse)(XmlParser *p, xmlNode *c, void *item, void *userdata),
                     void (*done)(void *item),
                     const char *(*name)(const void *item),
                     void *userdata,
                     const char *empty_hint,
                     void **ret,
                     size_t *ret_n) {
        _cleanup_free_ const xmlNode **nodes = NULL;
        _cleanup_free_ XmlNameRef *refs = NULL;
        char *items = NULL;
        size_t n_items = 0, allocated = 0, n_refs, first, second;
        int r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        goto fail;
                if (r > 0)
                        continue;
                if (!xml_node_is(c, child)) {
                        r = xml_parser_error(p, -EINVAL, c, "unexpected <%s> in <%s>, expected <%s>",
                                             XML_QUOTE((const char *) c->name), (const char *) n->name, child);
                        goto fail;
                }
                if (n_items == allocated) {
                        size_t a = allocated > 0 ? allocated * 2 : 4;
                        char *k = reallocarray(items, a, item_size);
                        const xmlNode **m;

                        if (!k) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        items = k;
                        m = reallocarray(nodes, a, sizeof(xmlNode *));
                        if (!m) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        nodes = m;
                        allocated = a;
                }
                memset(items + n_items * item_size, 0, item_size);
                r = parse(p, c, items + n_items * item_size, userdata);
                if (r < 0)
                        goto fail;
                nodes[n_items++] = c;
        }

        if (n_items == 0 && empty_hint) {
                r = xml_parser_error(p, -EINVAL, n, "<%s> has no <%s>; %s", (const char *) n->name, child, empty_hint);
                goto fail;
        }
        if (name && n_items > 1) {
                r = xml_name_index_new(name, items, item_size, n_items, &refs, &n_refs);
                if (r < 0)
                        goto fail;
                if (xml_name_index_find_duplicate(refs, n_refs, &first, &second) > 0) {
                        r = xml_parser_error(p, -EINVAL, nodes[second], "%s '%s' appears more than once in <%s>, first on line %ld",
                                             child, XML_QUOTE(name(items + second * item_size)), (const char *) n->name,
                                             xmlGetLineNo(nodes[first]));
                        goto fail;
                }
        }

        *ret = items;
        *ret_n = n_items;
        return 0;

fail:
        for (size_t i = 0; i < n_items; i++)
                done(items + i * item_size);
        free(items);
        return r;
}

int xml_set_error(char **ret_error, int r, const char *fmt, ...) {
        va_list ap;
        char *m = NULL;

        if (!ret_error)
                return r;
        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        if (!m)
                return -ENOMEM;
        free(*ret_error);
        *ret_error = m;
        return r;
}

int xml_parser_check_empty(XmlParser *p, const xmlNode *n) {
        for (const xmlNode *c = n->children; c; c = c->next) {
                int r = xml_parser_skip_node(p, n, c);

                if (r < 0)
                        return r;
                if (r == 0)
                        return xml_parser_error(p, -EINVAL, c, "<%s> must be empty, found <%s>", (const char *) n->name,
                                                (const char *) c->name);
        }
        return 0;
}

int xml_parser_path_attr(XmlParser *p, const xmlNode *n, const char *attr, char **ret) {
        _cleanup_free_ char *v = NULL;
        const char *problem;
        int r;

        r = xml_attr_get(n, attr, &v);
        if (r < 0)
                return r;
        if (v) {
                problem = xml_check_absolute_path(v);
                if (problem)
                        return xml_parser_error(p, -EINVAL, n, "<%s %s='%s'> %s", (const char *) n->name, attr,
                                                XML_QUOTE(v), problem);
        }
        *ret = TAKE_PTR(v);
        return 0;
}

int xml_parser_disk_name(XmlParser *p, const xmlNode *n, const char *(*check)(const char *name), char **ret) {
        _cleanup_free_ char *name = NULL;
        const char *problem;
        int r;

        r = xml_attr_get(n, "name", &name);
        if (r < 0)
                return r;
        if (!name)
                return xml_parser_error(p, -EINVAL, n, "<disk> has no name= attribute");
        problem = check ? check(name) : NULL;
        if (problem)
                return xml_parser_error(p, -EINVAL, n, "<disk name='%s'> %s", XML_QUOTE(name), problem);
        *ret = TAKE_PTR(name);
        return 0;
}

int xml_parser_description(XmlParser *p, const xmlNode *n, const xmlNode **seen, char **ret) {
        _cleanup_free_ char *text = NULL;
        int r;

        r = xml_parser_text_once(p, n, seen, &text);
        if (r < 0)
                return r;
        *ret = isempty(text) ? NULL : TAKE_PTR(text);
        return 0;
}

int xml_parser_parent(XmlParser *p, const xmlNode *n, const char *(*check)(const char *name), char **ret) {
        const xmlNode *seen_name = NULL;
        _cleanup_free_ char *name = NULL;
        const char *problem;
        int r;

        for (const xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                if (!xml_node_is(c, "name"))
                        return xml_parser_error(p, -EINVAL, c, "unexpected <%s> in <parent>, expected <name>",
                                                XML_QUOTE((const char *) c->name));
                r = xml_parser_text_once(p, c, &seen_name, &name);
                if (r < 0)
                        return r;
                problem = check(name);
                if (problem)
                        return xml_parser_error(p, -EINVAL, c, "<parent><name> %s", problem);
        }
        if (!seen_name)
                return xml_parser_error(p, -EINVAL, n, "<parent> has no <name>");
        *ret = TAKE_PTR(name);
        return 0;
}

/* ---- Copy ------------------------------------------------------------------ */

int xml_strv_copy(char *const *l, char ***ret) {
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

int xml_strdup_to(const char *s, char **ret) {
        if (!s) {
                *ret = NULL;
                return 0;
        }
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

void xml_items_free(void *items, size_t n, size_t item_size, void (*done)(void *item)) {
        for (size_t i = 0; i < n; i++)
                done((char *) items + i * item_size);
        free(items);
}

int xml_items_copy(const void *items,
                   size_t n,
                   size_t item_size,
                   int (*copy)(const void *from, void *to),
                   void (*done)(void *item),
                   void **ret,
                   size_t *ret_n) {
        char *c;
        int r;

        *ret = NULL;
        *ret_n = 0;
        if (n == 0)
                return 0;
        c = calloc(n, item_size);
        if (!c)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                r = copy((const char *) items + i * item_size, c + i * item_size);
                if (r < 0) {
                        xml_items_free(c, i, item_size, done);
                        return r;
                }
        }
        *ret = c;
        *ret_n = n;
        return 0;
}

