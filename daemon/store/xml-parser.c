/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The hardened libxml2 parser set-up of xml-util.h: no network, no
 * entities, no DTD declarations (refused where the parser meets them, and
 * again in the tree), the pre-scan that bounds what libxml2 2.9 would
 * spend quadratic time on, errors captured with line numbers instead of
 * printed; and the two ways in: a codec's document, a tree to walk.
 */

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>

#include "store/xml-util.h"

/* libxml2 2.9 checks attributes and namespaces pairwise: without a bound,
 * one 4 MiB start tag keeps it busy for minutes. libvirt's elements carry a
 * handful of attributes and its documents a few namespaces. */
#define MAX_ATTRIBUTES_PER_ELEMENT 256U
#define MAX_NAMESPACE_DECLARATIONS 128U
#define PRESCAN_MAX_DEPTH 512U

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
        if (size > INT_MAX)
                return xml_parser_error(p, -EFBIG, NULL, "document too large for libxml2");

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

int xml_read_document(const char *xml, size_t size, xmlDoc **ret_doc, char **ret_error) {
        _cleanup_(xml_parser_done) XmlParser p = {};
        int r;

        xml_parser_install_handlers(&p);
        r = xml_parser_read(&p, xml, size);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                *ret_error = p.error ? TAKE_PTR(p.error) : strdup("not well-formed XML");
                return -EINVAL;
        }
        *ret_doc = TAKE_PTR(p.doc);
        return 0;
}

int xml_parser_check_root(XmlParser *p, const xmlNode *root, const char *name) {
        if (!root)
                return xml_parser_error(p, -EINVAL, NULL, "document has no root element");
        if (xml_node_is(root, name))
                return 0;
        if (root->ns && xmlStrEqual(root->name, BAD_CAST name))
                return xml_parser_error(p, -EINVAL, root, "root element <%s> is in namespace '%s', expected none", name,
                                        XML_QUOTE((const char *) root->ns->href));
        return xml_parser_error(p, -EINVAL, root, "root element is <%s%s%s>, expected <%s>",
                                root->ns && root->ns->prefix ? (const char *) root->ns->prefix : "",
                                root->ns && root->ns->prefix ? ":" : "", XML_QUOTE((const char *) root->name), name);
}

int xml_parse_document(const char *xml,
                       size_t size,
                       size_t max_size,
                       const char *root_name,
                       int (*parse)(XmlParser *p, xmlNode *root, void *userdata),
                       void *userdata,
                       char **ret_error) {
        _cleanup_(xml_parser_done) XmlParser p = {};
        int r;

        if (size > max_size)
                r = xml_parser_error(&p, -EFBIG, NULL, "document is %zu bytes, larger than the limit of %zu bytes", size,
                                     max_size);
        else {
                xml_parser_install_handlers(&p);
                r = xml_parser_read(&p, xml, size);
                if (r >= 0 && root_name)
                        r = xml_parser_check_root(&p, xmlDocGetRootElement(p.doc), root_name);
                if (r >= 0)
                        r = parse(&p, xmlDocGetRootElement(p.doc), userdata);
        }
        if (r >= 0)
                return r;
        if (ret_error && p.error)
                *ret_error = TAKE_PTR(p.error);
        return r == -ENOMEM ? r : -QSNAP_E_INVALID_XML;
}
