/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The parts of the XML codecs that do not depend on the document type: the
 * hardened libxml2 parser set-up and its error capture, the pre-scan that
 * bounds what libxml2 2.9 would spend quadratic time on, the readers for
 * modelled elements, the verbatim keeping of unknown ones, and the escaping
 * writer. Nothing here logs or keeps state between calls.
 */

#include <stdarg.h>
#include <stdio.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>

#include "xml-util.h"

/* libxml2 2.9 checks attributes and namespaces pairwise: without a bound,
 * one 4 MiB start tag keeps it busy for minutes. libvirt's elements carry a
 * handful of attributes and its documents a few namespaces. */
#define MAX_ATTRIBUTES_PER_ELEMENT 256U
#define MAX_NAMESPACE_DECLARATIONS 128U
#define PRESCAN_MAX_DEPTH 512U

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

/* ---- Parser --------------------------------------------------------------- */

int xml_parser_error(XmlParser *p, int r, const xmlNode *node, const char *fmt, ...) {
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
        XmlParser *p = userdata;
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
        XmlParser *p = ctxt->_private;

        if (!p->declaration_refused) {
                free(p->error);
                p->error = strprintf("line %d: %s declarations are not allowed: '%s'",
                                     xmlSAX2GetLineNumber(ctxt), what, XML_QUOTE((const char *) name));
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
void xml_parser_install_handlers(XmlParser *p) {
        p->saved_serror = xmlStructuredError;
        p->saved_serror_data = xmlStructuredErrorContext;
        p->saved_gerror = xmlGenericError;
        p->saved_gerror_data = xmlGenericErrorContext;
        p->handlers_saved = true;

        xmlSetStructuredErrorFunc(p, parser_capture_error);
        xmlSetGenericErrorFunc(NULL, parser_ignore_generic_error);
}

void xml_parser_done(XmlParser *p) {
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
static int parser_check_tree(XmlParser *p, xmlNode *n) {
        for (; n; n = n->next) {
                int r;

                if (n->type == XML_ENTITY_REF_NODE)
                        return xml_parser_error(p, -EINVAL, n, "entity references are not allowed: '&%s;'",
                                                XML_QUOTE((const char *) n->name));
                if (n->type == XML_DTD_NODE) {
                        for (const xmlNode *c = n->children; c; c = c->next)
                                if (c->type == XML_ELEMENT_DECL || c->type == XML_ATTRIBUTE_DECL || c->type == XML_ENTITY_DECL)
                                        return xml_parser_error(p, -EINVAL, c, "DTD declarations are not allowed: '%s'",
                                                                XML_QUOTE((const char *) c->name));
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
 * quotes in start tags, and the namespace declarations in scope (on the
 * open elements), which is what libxml2 searches: a bulk file may declare
 * the same namespace in each of thousands of sibling domains. Refusing NUL
 * bytes keeps the text ASCII-compatible (no UTF-16), so the bytes it looks
 * at are the characters they seem. */
static int parser_prescan(XmlParser *p, const char *xml, size_t size) {
        const char *s = xml, *end = xml + size, *nul;
        /* Declarations made by each open element. libxml2 refuses documents
         * deeper than 256 elements; past the stack they are counted but never
         * released, which can only make the bound stricter. */
        unsigned declared_at[PRESCAN_MAX_DEPTH];
        unsigned in_scope = 0;
        size_t open_elements = 0;

        nul = memchr(xml, '\0', size);
        if (nul)
                return xml_parser_error(p, -EBADMSG, NULL,
                                        "line %ld: document contains a NUL byte (UTF-16 and UCS-4 are not supported)",
                                        line_of(xml, nul));

        while ((s = memchr(s, '<', (size_t) (end - s)))) {
                const char *tag = s++;
                unsigned n_attrs = 0, n_ns;
                bool name_start = false, end_tag;
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
                end_tag = s < end && *s == '/';
                n_ns = 0;
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
                                return xml_parser_error(p, -EINVAL, NULL, "line %ld: element has more than %u attributes",
                                                        line_of(xml, tag), MAX_ATTRIBUTES_PER_ELEMENT);
                        if (xml_is_blank_char(*s)) {
                                name_start = true;
                                continue;
                        }
                        if (name_start && has_prefix(s, end, "xmlns") && in_scope + ++n_ns > MAX_NAMESPACE_DECLARATIONS)
                                return xml_parser_error(p, -EINVAL, NULL,
                                                        "line %ld: document declares more than %u namespaces in scope",
                                                        line_of(xml, tag), MAX_NAMESPACE_DECLARATIONS);
                        name_start = false;
                }

                if (end_tag) {
                        if (open_elements > 0 && --open_elements < PRESCAN_MAX_DEPTH)
                                in_scope -= declared_at[open_elements];
                } else if (s < end && s[-1] != '/') {
                        if (open_elements < PRESCAN_MAX_DEPTH)
                                declared_at[open_elements] = n_ns;
                        open_elements++;
                        in_scope += n_ns;
                }
        }
        return 0;
}

int xml_parser_read(XmlParser *p, const char *xml, size_t size) {
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
                return xml_parser_error(p, -EBADMSG, NULL, "document is empty");

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
                        return xml_parser_error(p, -EBADMSG, NULL, "document is not well-formed XML");
                return p->error ? -EBADMSG : -ENOMEM;
        }

        r = parser_check_tree(p, doc->children);
        if (r < 0)
                return r;

        p->doc = TAKE_PTR(doc);
        return 0;
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

/* ---- Writer --------------------------------------------------------------- */

void xml_writer_fail(XmlWriter *w, int r) {
        if (w->error == 0)
                w->error = r;
}

void xml_w_puts(XmlWriter *w, const char *s) {
        if (w->error == 0 && fputs(s, w->f) < 0)
                xml_writer_fail(w, -ENOMEM);
}

void xml_w_printf(XmlWriter *w, const char *fmt, ...) {
        va_list ap;

        if (w->error != 0)
                return;
        va_start(ap, fmt);
        if (vfprintf(w->f, fmt, ap) < 0)
                xml_writer_fail(w, -ENOMEM);
        va_end(ap);
}

/* Escapes for element text (attribute = false) or for an attribute value
 * in either kind of quotes. Characters XML cannot carry fail with -EINVAL.
 * \r and, in attributes, \t and \n become references, or a parser would
 * normalize them away. */
int xml_escape_to(FILE *f, const char *s, bool attribute) {
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

void xml_w_escaped(XmlWriter *w, const char *s, bool attribute) {
        int r;

        if (w->error != 0)
                return;
        r = xml_escape_to(w->f, s, attribute);
        if (r < 0)
                xml_writer_fail(w, r);
}

/* " name='value'", nothing when value is NULL. */
void xml_w_attr(XmlWriter *w, const char *name, const char *value) {
        if (!value)
                return;
        xml_w_printf(w, " %s='", name);
        xml_w_escaped(w, value, true);
        xml_w_puts(w, "'");
}

void xml_w_extra_attributes(XmlWriter *w, char *const *l) {
        for (; l && *l; l++) {
                xml_w_puts(w, " ");
                xml_w_puts(w, *l);
        }
}

void xml_w_extra_elements(XmlWriter *w, int level, char *const *l) {
        for (; l && *l; l++)
                xml_w_printf(w, "%*s%s\n", level * 2, "", *l);
}

/* <tag>text</tag> */
void xml_w_text_element(XmlWriter *w, int level, const char *tag, const char *text) {
        xml_w_printf(w, "%*s<%s>", level * 2, "", tag);
        xml_w_escaped(w, text, false);
        xml_w_printf(w, "</%s>\n", tag);
}

int xml_strv_extend_escaped_attr(char ***l, const char *prefix, const char *name, const char *value) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        size_t size = 0;
        int r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        if (fprintf(f, "%s%s%s=\"", prefix ?: "", prefix ? ":" : "", name) < 0)
                return -ENOMEM;
        r = xml_escape_to(f, value, true);
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
