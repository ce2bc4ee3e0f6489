/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the XML codecs (xml-*.c) share: the hardened libxml2 set-up (no
 * network, no entities, no DTD declarations, bounded attribute and
 * namespace counts, errors captured with line numbers instead of printed),
 * the helpers that read modelled elements and keep unknown ones verbatim,
 * and a small writer with XML escaping. Only xml-*.c include this file:
 * libxml2 stays behind the codecs' plain-struct APIs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

#include "util/error.h"
#include "util/util.h"

/* libxml2 2.12 made the structured error argument const. */
#if LIBXML_VERSION >= 21200
#define XML_ERROR_CONST const
#else
#define XML_ERROR_CONST
#endif

DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDoc *, xmlFreeDoc);
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlNode *, xmlFreeNode);
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlBuffer *, xmlBufferFree);
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlParserCtxt *, xmlFreeParserCtxt);
DEFINE_TRIVIAL_CLEANUP_FUNC(FILE *, fclose);

static inline void xml_freep(xmlChar **p) {
        if (*p)
                xmlFree(*p);
}

/* ---- Characters ------------------------------------------------------------ */

/* Length of the UTF-8 sequence at s if it encodes an XML 1.0 Char, else 0. */
size_t xml_char_len(const char *s);
bool xml_is_blank_char(char c);
bool xml_is_blank(const char *s);
/* Strips XML whitespace from both ends, in place. */
char *xml_strip_blank(char *s);
/* Decimal digits only; -ERANGE past UINT64_MAX. */
int xml_parse_u64(const char *s, uint64_t *ret);
/* Optional '-', decimal digits; -ERANGE outside int64_t. */
int xml_parse_i64(const char *s, int64_t *ret);

/* Checks shared by parsers and writers (what we write we can read back):
 * NULL when the value is fine, else what is wrong with it. */
const char *xml_check_absolute_path(const char *s);
/* libvirt matches a disk by target ("vda") or by an absolute source path. */
const char *xml_check_disk_name(const char *s);
/* Some kept element is an empty string (the writer would emit nothing). */
bool xml_strv_has_blank(char *const *l);

/* Sorted (name, index) pairs, for duplicate checks and lookups that stay
 * O(n log n) with thousands of entries. get() reads the name of the item
 * at items + i * item_size; items without a name are left out. */
typedef struct XmlNameRef {
        const char *name;
        size_t index;
} XmlNameRef;

int xml_name_index_new(const char *(*get)(const void *item), const void *items, size_t item_size, size_t n,
                       XmlNameRef **ret, size_t *ret_n);
/* 1 and the first two indices of a name that occurs more than once, 0 if
 * all names differ. */
int xml_name_index_find_duplicate(const XmlNameRef *refs, size_t n, size_t *ret_first, size_t *ret_second);
/* The first entry of that name, NULL when there is none. */
const XmlNameRef *xml_name_index_lookup(const XmlNameRef *refs, size_t n, const char *name);

/* User values quoted in error messages are cut to this many bytes. */
#define XML_QUOTE_MAX 64
char *xml_message_quote(const char *s, size_t max, char buf[static XML_QUOTE_MAX + 4]);
/* A short, printable copy of s for an error message, valid in the statement. */
#define XML_QUOTE(s) xml_message_quote((s), XML_QUOTE_MAX, (char[XML_QUOTE_MAX + 4]) { 0 })

/* An append-only view of a strv that remembers its length: util's
 * strv_push() walks the vector each time, and a 4 MiB document can hold a
 * million unknown elements. */
typedef struct XmlList {
        char ***strv;
        size_t n, allocated;
} XmlList;

int xml_list_push(XmlList *list, char *v); /* takes v */

/* ---- Parser ---------------------------------------------------------------- */

typedef struct XmlParser {
        xmlDoc *doc;
        char *error;
        bool xml_failed;      /* libxml2 reported an error */
        bool declaration_refused; /* the internal DTD subset declared something */

        bool handlers_saved;
        xmlStructuredErrorFunc saved_serror;
        void *saved_serror_data;
        xmlGenericErrorFunc saved_gerror;
        void *saved_gerror_data;
} XmlParser;

/* Sets p->error to "line N: <message>" (no prefix without a node) and
 * returns r. */
int xml_parser_error(XmlParser *p, int r, const xmlNode *node, const char *fmt, ...) _printf_(4, 5);

/* libxml2's error handlers are thread-local; these route them into p until
 * xml_parser_done() puts the caller's back. */
void xml_parser_install_handlers(XmlParser *p);
void xml_parser_done(XmlParser *p);

/* Parses xml into p->doc: -EBADMSG when not well-formed, -EINVAL for
 * entities, DTD declarations or too many attributes or namespaces. The
 * caller checks the size cap before. */
int xml_parser_read(XmlParser *p, const char *xml, size_t size);

/* One document read by the same hardened parser, for code that walks the
 * tree itself (store.c): *ret_doc is the caller's. -EINVAL with *ret_error
 * ("line N: what") when refused, -ENOMEM. */
int xml_read_document(const char *xml, size_t size, xmlDoc **ret_doc, char **ret_error);

/* The root element is <name> in no namespace; else an error saying what it
 * is instead. */
int xml_parser_check_root(XmlParser *p, const xmlNode *root, const char *name);

/* The skeleton of every codec's _parse(): a document above max_size is
 * refused, any other one read by the hardened parser, its root checked to
 * be <root_name> (unless NULL) and handed to parse() (NULL when there is
 * none and root_name is NULL). Every refusal,
 * the parser's or parse()'s, is -QSNAP_E_INVALID_XML with *ret_error (when
 * ret_error is set) saying "line N: what was wrong"; running out of memory
 * stays -ENOMEM. parse() returns 0 or a negative errno (-EINVAL for what
 * it refuses, through xml_parser_error()). */
int xml_parse_document(const char *xml,
                       size_t size,
                       size_t max_size,
                       const char *root_name,
                       int (*parse)(XmlParser *p, xmlNode *root, void *userdata),
                       void *userdata,
                       char **ret_error);

/* An element of that name in no namespace. */
bool xml_node_is(const xmlNode *n, const char *name);

/* 1 for comments, processing instructions and formatting whitespace, 0 for
 * an element, an error naming the parent for stray text. */
int xml_parser_skip_node(XmlParser *p, const xmlNode *parent, const xmlNode *n);

/* A copy of an attribute without namespace, NULL when absent (never a DTD
 * default). */
int xml_attr_get(const xmlNode *n, const char *name, char **ret);

/* The text of an element that may hold only text. */
int xml_node_text(XmlParser *p, const xmlNode *n, char **ret);

/* Refuses a second occurrence of an element, naming the first one's line. */
int xml_parser_check_once(XmlParser *p, const xmlNode *n, const xmlNode **seen);
/* Both: an element that may appear once, and its text. */
int xml_parser_text_once(XmlParser *p, const xmlNode *n, const xmlNode **seen, char **ret);

/* The attributes of n not in known, and the namespace declarations they
 * need, as name="value" text; declarations of skip_namespace (NULL: none)
 * are left out because the writer declares that namespace itself. */
int xml_collect_attributes(const xmlNode *n, const char *const *known, const char *skip_namespace, char ***ret);

/* Drops whitespace-only text from elements that hold only elements, so that
 * libxml2 can indent a fragment to its place. Mixed content stays as is. */
void xml_strip_formatting(xmlNode *n);

/* Serializes n on its own, with the namespace declarations it borrows from
 * its ancestors, indented for nesting `level` deep (the first line carries
 * no indentation: the writer adds it). */
int xml_dump_element(xmlDoc *doc, const xmlNode *n, int level, char **ret);

/* xml_dump_element(), appended to list. */
int xml_parser_keep_element(XmlParser *p, xmlNode *n, int level, XmlList *list);

/* Every element child of n kept verbatim and unindented into *strv (the
 * children of <driver>, <source>, <target>… that a codec does not model). */
int xml_parser_keep_children(XmlParser *p, xmlNode *n, char ***strv);

/* The <child> elements of n (libvirt's <disks><disk…/></disks>), each
 * parsed by parse() into the next item_size bytes of a growing array; any
 * other element is an error naming n. Items must differ in name() (NULL:
 * not checked); the second of a pair is named with the first one's line.
 * No <child> at all is an error saying empty_hint, or fine when it is
 * NULL. done() frees one item; on failure everything is freed. */
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
                     size_t *ret_n);

/* *ret_error (when ret_error is set) = the formatted message; returns r.
 * For the pure functions beside the parsers that report errors the same
 * way but have no XmlParser (the align functions). */
int xml_set_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);

/* n may hold no element (comments and whitespace are fine). */
int xml_parser_check_empty(XmlParser *p, const xmlNode *n);

/* An attribute that must be an absolute path when present; NULL when absent. */
int xml_parser_path_attr(XmlParser *p, const xmlNode *n, const char *attr, char **ret);

/* A <disk>'s name=, which it must have; check() judges it (NULL: fine). */
int xml_parser_disk_name(XmlParser *p, const xmlNode *n, const char *(*check)(const char *name), char **ret);

/* <description> (once); libvirt reads an empty one as none (NULL). */
int xml_parser_description(XmlParser *p, const xmlNode *n, const xmlNode **seen, char **ret);

/* libvirt's <parent><name>NAME</name></parent>; check() judges NAME as
 * the document's own <name> is judged (NULL: fine). */
int xml_parser_parent(XmlParser *p, const xmlNode *n, const char *(*check)(const char *name), char **ret);

/* What libvirt leaves out unless asked for secure output
 * (VIR_DOMAIN_XML_SECURE): the passwd= of every <graphics> in n, its
 * siblings and below. */
void xml_strip_secrets(xmlNode *n);

/* A kept element (as xml_dump_element() wrote it for `level`) without its
 * secrets; a copy when it holds none. */
int xml_element_without_secrets(const char *element, int level, char **ret);

/* ---- Writer ---------------------------------------------------------------- */

/* Remembers the first failure so that the writing code reads straight. */
typedef struct XmlWriter {
        FILE *f;
        int error;
} XmlWriter;

void xml_writer_fail(XmlWriter *w, int r);
void xml_w_puts(XmlWriter *w, const char *s);
void xml_w_printf(XmlWriter *w, const char *fmt, ...) _printf_(2, 3);

/* Escapes for element text (attribute = false) or for an attribute value in
 * either kind of quotes. Characters XML cannot carry fail with -EINVAL. */
int xml_escape_to(FILE *f, const char *s, bool attribute);
void xml_w_escaped(XmlWriter *w, const char *s, bool attribute);
/* " name='value'", nothing when value is NULL. */
void xml_w_attr(XmlWriter *w, const char *name, const char *value);
void xml_w_extra_attributes(XmlWriter *w, char *const *l);
void xml_w_extra_elements(XmlWriter *w, int level, char *const *l);
/* <tag>text</tag> on its own line, `level` deep. */
void xml_w_text_element(XmlWriter *w, int level, const char *tag, const char *text);

/* The header snapshots and checkpoints share, `level` deep, each element
 * only when set: <name>, <description>, libvirt's <parent><name>…</name>
 * </parent>, <creationTime>. */
void xml_w_moment_name(XmlWriter *w, int level, const char *name, const char *description);
void xml_w_moment_parent(XmlWriter *w, int level, const char *parent, bool has_creation_time, int64_t creation_time);

/* Appends prefix:name="value" (escaped) to *l. */
int xml_strv_extend_escaped_attr(char ***l, const char *prefix, const char *name, const char *value);

/* A kept element (stored unindented) re-serialized to nest `level` deep.
 * root_name, when set, is what the element must be (-EINVAL otherwise);
 * without secure, <graphics passwd=…> is left out of it, as libvirt does
 * for an embedded <domain>. */
int xml_reindent(const char *xml, const char *root_name, int level, bool secure, char **ret);
/* xml_reindent() written on its own line(s), `level` deep. */
void xml_w_kept(XmlWriter *w, int level, const char *xml, const char *root_name, bool secure);
void xml_w_kept_list(XmlWriter *w, int level, char *const *l);

/* Runs write() on a memory stream and returns what it wrote; write()'s
 * failure or the writer's first one is returned instead. */
int xml_format_to_string(int (*write)(XmlWriter *w, const void *userdata), const void *userdata, char **ret);

/* ---- Copy ------------------------------------------------------------------ */

/* Arrays of items of item_size bytes (a codec's disks). _free() runs done()
 * on each, then frees the array. _copy() makes a new array with copy(from,
 * to) per item (to starts zeroed; on failure copy() leaves nothing behind
 * in it); NULL and 0 for none; on failure nothing is left allocated. */
void xml_items_free(void *items, size_t n, size_t item_size, void (*done)(void *item));
int xml_items_copy(const void *items,
                   size_t n,
                   size_t item_size,
                   int (*copy)(const void *from, void *to),
                   void (*done)(void *item),
                   void **ret,
                   size_t *ret_n);

/* Keeps NULL apart from an empty vector. */
int xml_strv_copy(char *const *l, char ***ret);
int xml_strdup_to(const char *s, char **ret);
