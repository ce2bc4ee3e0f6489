/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The small escaping writer of xml-util.h: what every codec's _format()
 * writes with, kept elements re-indented to their place (secrets left
 * out unless asked for), and a memory stream to write into.
 */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include <libxml/parser.h>

#include "store/xml-util.h"

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

void xml_w_moment_name(XmlWriter *w, int level, const char *name, const char *description) {
        if (name)
                xml_w_text_element(w, level, "name", name);
        if (!isempty(description))
                xml_w_text_element(w, level, "description", description);
}

void xml_w_moment_parent(XmlWriter *w, int level, const char *parent, bool has_creation_time, int64_t creation_time) {
        if (parent) {
                xml_w_printf(w, "%*s<parent>\n", level * 2, "");
                xml_w_text_element(w, level + 1, "name", parent);
                xml_w_printf(w, "%*s</parent>\n", level * 2, "");
        }
        if (has_creation_time)
                xml_w_printf(w, "%*s<creationTime>%" PRIi64 "</creationTime>\n", level * 2, "", creation_time);
}

int xml_reindent(const char *xml, const char *root_name, int level, bool secure, char **ret) {
        _cleanup_(xml_parser_done) XmlParser p = {};
        xmlNode *root;
        int r;

        /* Serialized text only indents after line breaks: a one-line
         * element reads the same at any depth. */
        if (!root_name && !strchr(xml, '\n')) {
                *ret = strdup(xml);
                return *ret ? 0 : -ENOMEM;
        }

        xml_parser_install_handlers(&p);
        r = xml_parser_read(&p, xml, strlen(xml));
        if (r < 0)
                return -EINVAL;
        root = xmlDocGetRootElement(p.doc);
        if (!root || (root_name && !xml_node_is(root, root_name)))
                return -EINVAL;
        if (!secure)
                xml_strip_secrets(root->children);
        return xml_dump_element(p.doc, root, level, ret);
}

void xml_w_kept(XmlWriter *w, int level, const char *xml, const char *root_name, bool secure) {
        _cleanup_free_ char *s = NULL;
        int r;

        if (w->error != 0)
                return;
        r = xml_reindent(xml, root_name, level, secure, &s);
        if (r < 0) {
                xml_writer_fail(w, r);
                return;
        }
        xml_w_printf(w, "%*s%s\n", level * 2, "", s);
}

void xml_w_kept_list(XmlWriter *w, int level, char *const *l) {
        for (; l && *l; l++)
                xml_w_kept(w, level, *l, NULL, true);
}

int xml_format_to_string(int (*write)(XmlWriter *w, const void *userdata), const void *userdata, char **ret) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        XmlWriter w = {};
        size_t size = 0;
        int r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        w.f = f;

        r = write(&w, userdata);
        if (r < 0)
                return r;
        if (w.error < 0)
                return w.error;
        if (fflush(f) != 0 || ferror(f))
                return -ENOMEM;
        f = (fclose(f), NULL);

        *ret = TAKE_PTR(buf);
        return 0;
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
