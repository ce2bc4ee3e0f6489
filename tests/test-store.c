/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the metadata store (daemon/store/store.c): round trips against
 * a model, transactions, compaction, the exact file formats, generations
 * (a crash between the bulk file's rename and the journal's replacement),
 * a torn journal tail at every byte, damaged records, the read cap, odd
 * names, byte-exact entries, injected I/O failures, and the crash test: a
 * writer process killed with SIGKILL at random instants while this process
 * loads concurrently, every loaded state checked against the writer's
 * deterministic sequence of transactions. Exits non-zero on failure.
 *
 * QSNAP_STORE_CRASH_ROUNDS overrides the number of kill rounds.
 */

/* This file defines open() (see test_reader_race()); fortified headers
 * would define it too. */
#undef _FORTIFY_SOURCE

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "store/store.h"
#include "test-check.h"
#include "util/util.h"

#define MAX(a, b) ((a) > (b) ? (a) : (b))

#define UUID "0b7a5d43-5a3e-4f5e-8d4e-6c1f2a9b3c7d"

#define CHECK_R(call, want)                                                             \
        do {                                                                            \
                int _r = (call), _w = (want);                                           \
                n_checks++;                                                             \
                if (_r != _w) {                                                         \
                        n_failed++;                                                     \
                        fprintf(stderr, "%s:%d: %s: %s returned %d (%s), want %d\n",    \
                                __FILE__, __LINE__, __func__, #call, _r,                \
                                _r < 0 ? strerror(-_r) : "ok", _w);                     \
                }                                                                       \
        } while (0)

#define CHECK_CONTAINS(haystack, needle)                                                \
        do {                                                                            \
                const char *_h = (haystack), *_n = (needle);                            \
                n_checks++;                                                             \
                if (!_h || !strstr(_h, _n)) {                                           \
                        n_failed++;                                                     \
                        fprintf(stderr, "%s:%d: %s: '%s' not found in: %s\n", __FILE__, \
                                __LINE__, __func__, _n, strna(_h));                     \
                }                                                                       \
        } while (0)

/* ---- files ---- */

static char *make_dir(void) {
        char *d = strprintf("%s/test-store-XXXXXX", getenv("TMPDIR") ?: "/tmp");

        if (!d || !mkdtemp(d)) {
                perror("mkdtemp");
                exit(EXIT_FAILURE);
        }
        return d;
}

static void remove_dir(char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (d) {
                while ((de = readdir(d)))
                        if (!STR_IN_SET(de->d_name, ".", "..") && unlinkat(dirfd(d), de->d_name, 0) < 0)
                                (void) unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
                closedir(d);
        }
        (void) rmdir(dir);
        free(dir);
}

static char *base_path(const char *dir) {
        return strprintf("%s/%s.xml", dir, UUID);
}

static char *journal_path(const char *dir) {
        return strprintf("%s/%s.journal", dir, UUID);
}

/* NULL when missing. */
static char *slurp(const char *path, size_t *ret_size) {
        char *buf = NULL;
        size_t n = 0;
        int r;

        r = read_full_file(path, SIZE_MAX, &buf, &n);
        if (r < 0)
                return NULL;
        if (ret_size)
                *ret_size = n;
        return buf;
}

static void spew(const char *path, const char *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        if (fd < 0 || write(fd, data, size) != (ssize_t) size) {
                fprintf(stderr, "cannot write %s: %m\n", path);
                exit(EXIT_FAILURE);
        }
        close(fd);
}

static int64_t file_size(const char *path) {
        struct stat st;

        return stat(path, &st) < 0 ? -1 : (int64_t) st.st_size;
}

static unsigned count_temporary_files(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        while (d && (de = readdir(d)))
                n += strstr(de->d_name, ".tmp-") != NULL;
        if (d)
                closedir(d);
        return n;
}

/* stderr into a file for a while, to check what was logged. */
typedef struct Capture {
        int saved;
        char *path;
} Capture;

static void capture_begin(Capture *c, const char *dir) {
        int fd;

        fflush(stderr);
        c->path = strprintf("%s/stderr", dir);
        fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        c->saved = dup(STDERR_FILENO);
        dup2(fd, STDERR_FILENO);
        close(fd);
}

static char *capture_end(Capture *c) {
        char *text;

        fflush(stderr);
        dup2(c->saved, STDERR_FILENO);
        close(c->saved);
        text = slurp(c->path, NULL);
        unlink(c->path);
        free(c->path);
        fputs(strempty(text), stderr); /* still visible in the test log */
        return text;
}

/* ---- entries and the model ---- */

static char *xml_escape(const char *s) {
        size_t n = 0;
        char *r, *p;

        for (const char *q = s; *q; q++)
                n += 6;
        r = p = malloc(n + 1);
        for (; *s; s++) {
                switch (*s) {
                case '&':
                        p = stpcpy(p, "&amp;");
                        break;
                case '<':
                        p = stpcpy(p, "&lt;");
                        break;
                case '>':
                        p = stpcpy(p, "&gt;");
                        break;
                case '\r':
                        p = stpcpy(p, "&#13;");
                        break;
                default:
                        *p++ = *s;
                }
        }
        *p = 0;
        return r;
}

static char *make_entry(const char *name, const char *description) {
        _cleanup_free_ char *n = xml_escape(name), *d = xml_escape(description ?: "");

        return strprintf("<domainsnapshot>\n  <name>%s</name>\n  <description>%s</description>\n"
                         "  <state>shutoff</state>\n  <creationTime>1700000000</creationTime>\n</domainsnapshot>",
                         n, d);
}

typedef struct Model {
        char **names, **xmls;
        size_t n, allocated;
        char *current;
} Model;

static void model_done(Model *m) {
        for (size_t i = 0; i < m->n; i++) {
                free(m->names[i]);
                free(m->xmls[i]);
        }
        free(m->names);
        free(m->xmls);
        free(m->current);
        *m = (Model) {};
}

static ssize_t model_find(const Model *m, const char *name) {
        for (size_t i = 0; i < m->n; i++)
                if (streq(m->names[i], name))
                        return (ssize_t) i;
        return -1;
}

static void model_copy(Model *dst, const Model *src) {
        *dst = (Model) { .n = src->n, .allocated = src->n };
        dst->names = new0(char *, src->n);
        dst->xmls = new0(char *, src->n);
        for (size_t i = 0; i < src->n; i++) {
                dst->names[i] = strdup(src->names[i]);
                dst->xmls[i] = strdup(src->xmls[i]);
        }
        dst->current = src->current ? strdup(src->current) : NULL;
}

static void model_apply_one(Model *m, const StoreOp *op) {
        ssize_t i;

        switch (op->type) {
        case STORE_OP_PUT:
                i = model_find(m, op->name);
                if (i >= 0) {
                        free(m->xmls[i]);
                        m->xmls[i] = strdup(op->xml);
                        return;
                }
                if (m->n == m->allocated) {
                        m->allocated = m->allocated ? m->allocated * 2 : 16;
                        m->names = reallocarray(m->names, m->allocated, sizeof(char *));
                        m->xmls = reallocarray(m->xmls, m->allocated, sizeof(char *));
                }
                m->names[m->n] = strdup(op->name);
                m->xmls[m->n] = strdup(op->xml);
                m->n++;
                return;
        case STORE_OP_DELETE:
                i = model_find(m, op->name);
                assert(i >= 0);
                if (streq_ptr(m->current, op->name))
                        m->current = mfree(m->current);
                free(m->names[i]);
                free(m->xmls[i]);
                memmove(m->names + i, m->names + i + 1, (m->n - (size_t) i - 1) * sizeof(char *));
                memmove(m->xmls + i, m->xmls + i + 1, (m->n - (size_t) i - 1) * sizeof(char *));
                m->n--;
                return;
        case STORE_OP_CURRENT: {
                char *c = op->name ? strdup(op->name) : NULL; /* op->name may be m->current */

                free(m->current);
                m->current = c;
                return;
        }
        }
}

static void model_apply(Model *m, const StoreOp *ops, size_t n) {
        for (size_t i = 0; i < n; i++)
                model_apply_one(m, ops + i);
}

static bool model_matches(const Model *m, const StoreEntry *e, size_t n, const char *current, bool verbose) {
        if (n != m->n) {
                if (verbose)
                        fprintf(stderr, "  %zu entries, want %zu\n", n, m->n);
                return false;
        }
        for (size_t i = 0; i < n; i++)
                if (!streq(e[i].name, m->names[i]) || !streq(e[i].xml, m->xmls[i])) {
                        if (verbose)
                                fprintf(stderr, "  entry %zu is '%s', want '%s'%s\n", i, e[i].name, m->names[i],
                                        streq(e[i].name, m->names[i]) ? " (XML differs)" : "");
                        return false;
                }
        if (!streq_ptr(current, m->current)) {
                if (verbose)
                        fprintf(stderr, "  current '%s', want '%s'\n", strna(current), strna(m->current));
                return false;
        }
        return true;
}

/* A fresh Store on dir (as a restarted daemon would open it) equals m. */
static bool store_matches_cap(const char *dir, const Model *m, uint64_t cap, StoreStats *ret_stats) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *current = NULL, *error = NULL;
        StoreEntry *entries = NULL;
        size_t n = 0;
        bool ok;
        int r;

        if (store_open(dir, UUID, "snapshots", "domainsnapshot", cap, &s) < 0)
                return false;
        r = store_load(s, &entries, &n, &current, &error);
        if (r < 0) {
                fprintf(stderr, "  load failed: %s\n", strna(error));
                return false;
        }
        ok = model_matches(m, entries, n, current, true);
        if (ret_stats)
                store_get_stats(s, ret_stats);
        store_entries_free(entries, n);
        return ok;
}

static bool store_matches(const char *dir, const Model *m) {
        return store_matches_cap(dir, m, 0, NULL);
}

static Store *open_store(const char *dir) {
        Store *s = NULL;

        if (store_open(dir, UUID, "snapshots", "domainsnapshot", 0, &s) < 0) {
                fprintf(stderr, "store_open failed\n");
                exit(EXIT_FAILURE);
        }
        return s;
}

static int commit(Store *s, Model *m, const StoreOp *ops, size_t n) {
        int r = store_commit(s, ops, n);

        if (r >= 0)
                model_apply(m, ops, n);
        return r;
}

static int put(Store *s, Model *m, const char *name, const char *description) {
        _cleanup_free_ char *xml = make_entry(name, description);
        StoreOp op = { .type = STORE_OP_PUT, .name = name, .xml = xml };

        return commit(s, m, &op, 1);
}

static int del(Store *s, Model *m, const char *name) {
        StoreOp op = { .type = STORE_OP_DELETE, .name = name };
        return commit(s, m, &op, 1);
}

static int set_current(Store *s, Model *m, const char *name) {
        StoreOp op = { .type = STORE_OP_CURRENT, .name = name };
        return commit(s, m, &op, 1);
}

/* Makes the writer rewrite the bulk file now (with a no-op transaction),
 * so that the bulk file alone holds the whole state. */
static void compact_now(Store *s, Model *m) {
        StoreStats before, after;

        store_get_stats(s, &before);
        store_set_compaction_threshold(s, 1);
        CHECK_R(set_current(s, m, m->current), 0);
        store_set_compaction_threshold(s, 0);
        store_get_stats(s, &after);
        CHECK(after.generation > before.generation && after.journal_size == 0);
}

/* What libvirt's bulk reader does with the file: <snapshots current=…>,
 * each <domainsnapshot>'s <name>, in order. */
static bool libvirt_style_matches(const char *dir, const Model *m) {
        _cleanup_free_ char *path = base_path(dir);
        xmlDoc *doc = xmlReadFile(path, NULL, XML_PARSE_NONET);
        xmlChar *current;
        xmlNode *root;
        size_t i = 0;
        bool ok = true;

        if (!doc)
                return false;
        root = xmlDocGetRootElement(doc);
        ok = root && xmlStrEqual(root->name, BAD_CAST "snapshots");
        current = ok ? xmlGetProp(root, BAD_CAST "current") : NULL;
        ok = ok && streq_ptr((const char *) current, m->current);
        for (xmlNode *c = ok ? root->children : NULL; c; c = c->next) {
                if (c->type != XML_ELEMENT_NODE)
                        continue;
                ok = ok && xmlStrEqual(c->name, BAD_CAST "domainsnapshot") && i < m->n;
                for (xmlNode *n = ok ? c->children : NULL; n; n = n->next)
                        if (n->type == XML_ELEMENT_NODE && xmlStrEqual(n->name, BAD_CAST "name")) {
                                xmlChar *t = xmlNodeGetContent(n);
                                ok = ok && streq((const char *) t, m->names[i]);
                                xmlFree(t);
                                break;
                        }
                i++;
        }
        ok = ok && i == m->n;
        xmlFree(current);
        xmlFreeDoc(doc);
        return ok;
}

/* ---- the tests ---- */

static void test_empty_and_round_trip(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir), *current = NULL, *error = NULL;
        StoreEntry *entries = (StoreEntry *) 0x1;
        Model m = {};
        size_t n = 99;

        /* Missing files: an empty store, no files created by loading. */
        CHECK_R(store_load(s, &entries, &n, &current, &error), 0);
        CHECK(n == 0 && !current && !error);
        store_entries_free(entries, n);
        CHECK(file_size(bp) < 0 && file_size(jp) < 0);

        CHECK_R(put(s, &m, "a", "first"), 0);
        CHECK_R(put(s, &m, "b", "second"), 0);
        CHECK_R(set_current(s, &m, "a"), 0);
        CHECK_R(put(s, &m, "c", "third"), 0);
        CHECK(store_matches(dir, &m));
        CHECK(file_size(jp) > 0 && file_size(bp) < 0); /* no compaction yet */

        /* Replacing keeps the place; deleting the current one clears current. */
        CHECK_R(put(s, &m, "a", "first, changed"), 0);
        CHECK(store_matches(dir, &m));
        CHECK(m.n == 3 && streq(m.names[0], "a"));
        CHECK_R(del(s, &m, "a"), 0);
        CHECK(!m.current);
        CHECK(store_matches(dir, &m));
        CHECK_R(set_current(s, &m, "c"), 0);
        CHECK_R(set_current(s, &m, NULL), 0);
        CHECK(store_matches(dir, &m));

        /* Loading through the writer gives the same, and it keeps working. */
        {
                StoreEntry *e = NULL;
                size_t k = 0;
                _cleanup_free_ char *cur = NULL;

                CHECK_R(store_load(s, &e, &k, &cur, NULL), 0);
                CHECK(model_matches(&m, e, k, cur, true));
                store_entries_free(e, k);
        }
        CHECK_R(put(s, &m, "d", "fourth"), 0);
        CHECK(store_matches(dir, &m));

        /* A commit without a load loads first. */
        {
                _cleanup_(store_freep) Store *t = open_store(dir);

                CHECK_R(put(t, &m, "e", "fifth"), 0);
                CHECK(store_matches(dir, &m));
        }

        model_done(&m);
        remove_dir(dir);
}

static void test_transactions(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *jp = journal_path(dir);
        _cleanup_free_ char *xa = make_entry("a", "A"), *xb = make_entry("b", "B"), *xc = make_entry("c", "C");
        _cleanup_free_ char *xa2 = make_entry("a", "A2");
        Model m = {};
        int64_t size;

        {
                StoreOp ops[] = {
                        { .type = STORE_OP_PUT, .name = "a", .xml = xa },
                        { .type = STORE_OP_PUT, .name = "b", .xml = xb },
                        { .type = STORE_OP_CURRENT, .name = "b" },
                        { .type = STORE_OP_PUT, .name = "c", .xml = xc },
                };
                CHECK_R(commit(s, &m, ops, ELEMENTSOF(ops)), 0);
                CHECK(store_matches(dir, &m));
        }
        {
                /* Put and delete in one transaction; delete and re-put moves to the end. */
                StoreOp ops[] = {
                        { .type = STORE_OP_PUT, .name = "x", .xml = "<domainsnapshot><name>x</name></domainsnapshot>" },
                        { .type = STORE_OP_DELETE, .name = "x" },
                        { .type = STORE_OP_DELETE, .name = "a" },
                        { .type = STORE_OP_PUT, .name = "a", .xml = xa2 },
                        { .type = STORE_OP_CURRENT, .name = "a" },
                };
                CHECK_R(commit(s, &m, ops, ELEMENTSOF(ops)), 0);
                CHECK(m.n == 3 && streq(m.names[2], "a"));
                CHECK(store_matches(dir, &m));
        }

        /* A failing op undoes the ones before it, in memory and on disk. */
        size = file_size(jp);
        {
                StoreOp ops[] = {
                        { .type = STORE_OP_DELETE, .name = "b" },
                        { .type = STORE_OP_PUT, .name = "y", .xml = "<domainsnapshot><name>y</name></domainsnapshot>" },
                        { .type = STORE_OP_CURRENT, .name = "y" },
                        { .type = STORE_OP_DELETE, .name = "nope" },
                };
                CHECK_R(store_commit(s, ops, ELEMENTSOF(ops)), -ENOENT);
        }
        {
                StoreOp ops[] = {
                        { .type = STORE_OP_DELETE, .name = "c" },
                        { .type = STORE_OP_CURRENT, .name = "c" },
                };
                CHECK_R(store_commit(s, ops, ELEMENTSOF(ops)), -ENOENT);
        }
        CHECK(file_size(jp) == size);
        CHECK(store_matches(dir, &m));
        /* The writer's own index was rolled back too: b and c still there. */
        CHECK_R(del(s, &m, "b"), 0);
        CHECK_R(del(s, &m, "c"), 0);
        CHECK(store_matches(dir, &m));

        /* Bad entries are refused before anything happens. */
        {
                static const struct {
                        const char *name, *xml;
                } bad[] = {
                        { "a", "<domainsnapshot><name>a</name>" },                               /* not well-formed */
                        { "a", "<domainsnapshot><name>b</name></domainsnapshot>" },              /* name mismatch */
                        { "a", "<?xml version='1.0'?><domainsnapshot><name>a</name></domainsnapshot>" },
                        { "a", "<domaincheckpoint><name>a</name></domaincheckpoint>" },          /* wrong element */
                        { "a", "<domainsnapshot><name>a</name></domainsnapshot><!-- x -->" },    /* trailing markup */
                        { "a", "<domainsnapshot><name>a</name></domainsnapshot><x/>" },
                        { "a", "<domainsnapshot><name>&ent;</name></domainsnapshot>" },          /* undeclared entity */
                        { "a", "<domainsnapshot><description>no name</description></domainsnapshot>" },
                        { "a", "<domainsnapshot><name></name></domainsnapshot>" },
                        { "a", "<domainsnapshot xmlns='urn:x'><name>a</name></domainsnapshot>" }, /* other namespace */
                        { "a", "<domainsnapshot><name>a\xff</name></domainsnapshot>" },          /* not UTF-8 */
                        { "a", "" },
                        { NULL, "<domainsnapshot><name>a</name></domainsnapshot> trailing" },
                };
                size = file_size(jp);
                for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                        StoreOp op = { .type = STORE_OP_PUT, .name = bad[i].name, .xml = bad[i].xml };
                        n_checks++;
                        if (store_commit(s, &op, 1) != -EINVAL) {
                                n_failed++;
                                fprintf(stderr, "bad entry %zu accepted: %s\n", i, bad[i].xml);
                        }
                }
                {
                        StoreOp ops[] = {
                                { .type = STORE_OP_DELETE, .name = NULL },
                                { .type = STORE_OP_CURRENT, .name = "" },
                                { .type = STORE_OP_PUT, .name = "a", .xml = NULL },
                                { .type = (StoreOpType) 42, .name = "a" },
                        };
                        for (size_t i = 0; i < ELEMENTSOF(ops); i++)
                                CHECK_R(store_commit(s, ops + i, 1), -EINVAL);
                }
                CHECK(file_size(jp) == size);
                CHECK(store_matches(dir, &m));
        }

        /* Whitespace around the element is dropped; a NULL name comes from the XML. */
        {
                StoreOp op = { .type = STORE_OP_PUT, .xml = "\n  <domainsnapshot><name> sp </name></domainsnapshot>\n\n" };
                StoreOp mop = { .type = STORE_OP_PUT, .name = " sp ", .xml = "<domainsnapshot><name> sp </name></domainsnapshot>" };

                CHECK_R(store_commit(s, &op, 1), 0);
                model_apply(&m, &mop, 1);
                CHECK(store_matches(dir, &m));
        }
        CHECK_R(store_commit(s, NULL, 0), 0);

        model_done(&m);
        remove_dir(dir);
}

static void test_golden_format(void) {
        static const char record1[] =
                "QSJ1 0000000000000000 0000003f 4bfde920\n"
                "P 1 47\na\n<domainsnapshot><name>a</name></domainsnapshot>\nC 1\na\n";
        static const char record2[] = "QSJ1 0000000000000000 0000000a 284ee7f6\nC -\nD 1\na\n";
        static const char base[] =
                "<?qsnapd-store generation=\"1\"?>\n"
                "<snapshots current='a'>\n"
                "  <domainsnapshot><name>a</name></domainsnapshot>\n"
                "</snapshots>\n";
        const char *xml = "<domainsnapshot><name>a</name></domainsnapshot>";
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir);
        _cleanup_free_ char *j = NULL, *b = NULL, *expected = strprintf("%s%s", record1, record2);
        StoreOp t1[] = { { .type = STORE_OP_PUT, .name = "a", .xml = xml }, { .type = STORE_OP_CURRENT, .name = "a" } };
        StoreOp t2[] = { { .type = STORE_OP_CURRENT }, { .type = STORE_OP_DELETE, .name = "a" } };
        StoreStats st;

        /* The CRC is zlib's crc32() (checked with Python's zlib). */
        CHECK_R(store_commit(s, t1, 2), 0);
        CHECK_R(store_commit(s, t2, 2), 0);
        j = slurp(jp, NULL);
        CHECK(j && streq(j, expected));
        if (j && !streq(j, expected))
                fprintf(stderr, "journal:\n%s\nwant:\n%s\n", j, expected);

        /* Forced compaction: the transaction goes into the new bulk file. */
        store_set_compaction_threshold(s, 1);
        CHECK_R(store_commit(s, t1, 2), 0);
        b = slurp(bp, NULL);
        CHECK(b && streq(b, base));
        if (b && !streq(b, base))
                fprintf(stderr, "bulk file:\n%s\nwant:\n%s\n", b, base);
        CHECK(file_size(jp) == 0);
        store_get_stats(s, &st);
        CHECK(st.generation == 1 && st.n_compactions == 1 && st.journal_size == 0 && st.n_entries == 1);

        remove_dir(dir);
}

static void test_compaction(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir);
        Model m = {};
        StoreStats st;
        uint64_t max_journal_seen = 0;

        /* Default threshold: the journal never outgrows max(64 KiB, bulk
         * file), and the bulk file is rewritten only O(log) times while it
         * grows: amortized O(1) per commit. */
        for (unsigned i = 0; i < 400; i++) {
                _cleanup_free_ char *name = strprintf("snap-%u", i);
                char desc[900];

                memset(desc, 'a' + (char) (i % 26), sizeof(desc) - 1);
                desc[sizeof(desc) - 1] = 0;
                CHECK_R(put(s, &m, name, desc), 0);
                if (i % 7 == 3)
                        CHECK_R(set_current(s, &m, name), 0);
                if (i % 5 == 4) {
                        _cleanup_free_ char *victim = strprintf("snap-%u", i - 2);
                        CHECK_R(del(s, &m, victim), 0);
                }
                store_get_stats(s, &st);
                CHECK(st.journal_size <= MAX(64U * 1024U, st.base_size));
                max_journal_seen = MAX(max_journal_seen, st.journal_size);
        }
        store_get_stats(s, &st);
        fprintf(stderr, "default threshold: %" PRIu64 " compactions for 400 puts, bulk file %" PRIu64
                        " bytes, journal %" PRIu64 " bytes (max %" PRIu64 ")\n",
                st.n_compactions, st.base_size, st.journal_size, max_journal_seen);
        CHECK(st.n_compactions >= 2 && st.n_compactions <= 5);
        CHECK(st.generation == st.n_compactions);
        CHECK(max_journal_seen > 60000);
        CHECK(store_matches(dir, &m));
        compact_now(s, &m);
        CHECK(libvirt_style_matches(dir, &m));

        /* Small threshold: many compactions, all preserving everything. */
        store_set_compaction_threshold(s, 2048);
        for (unsigned i = 0; i < 200; i++) {
                _cleanup_free_ char *name = strprintf("small-%u", i);

                CHECK_R(put(s, &m, name, "x"), 0);
                if (i % 3 == 0)
                        CHECK_R(set_current(s, &m, name), 0);
                if (i % 4 == 1)
                        CHECK_R(del(s, &m, m.names[i % m.n]), 0);
                if (i % 50 == 0)
                        CHECK(store_matches(dir, &m));
        }
        store_get_stats(s, &st);
        CHECK(st.n_compactions > 20);
        CHECK(st.journal_size <= 2048);
        CHECK(store_matches(dir, &m));
        compact_now(s, &m);
        CHECK(libvirt_style_matches(dir, &m));
        CHECK(count_temporary_files(dir) == 0);
        CHECK(file_size(bp) > 0 && file_size(jp) >= 0);

        model_done(&m);
        remove_dir(dir);
}

/* A crash after the new bulk file's rename but before the journal was
 * replaced: the old records are in the bulk file already and must not be
 * replayed again (here a replayed PUT would resurrect a deleted entry and a
 * replayed CURRENT would move current). */
static void test_generations(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir);
        _cleanup_free_ char *old_journal = NULL, *new_journal = NULL, *mixed = NULL;
        size_t old_size = 0, new_size = 0;
        Model m = {};
        StoreStats st;

        CHECK_R(put(s, &m, "keep", "k"), 0);
        store_set_compaction_threshold(s, 1);
        CHECK_R(put(s, &m, "base", "b"), 0); /* compacts: generation 1 */
        store_set_compaction_threshold(s, 0);
        CHECK_R(put(s, &m, "ghost", "g"), 0);
        CHECK_R(set_current(s, &m, "ghost"), 0);
        CHECK_R(put(s, &m, "keep", "k2"), 0);
        old_journal = slurp(jp, &old_size);
        CHECK(old_journal && old_size > 0);

        store_set_compaction_threshold(s, 1);
        {
                StoreOp ops[] = { { .type = STORE_OP_DELETE, .name = "ghost" }, { .type = STORE_OP_CURRENT, .name = "base" } };
                CHECK_R(commit(s, &m, ops, 2), 0); /* compacts: generation 2 */
        }
        store_set_compaction_threshold(s, 0);
        store_get_stats(s, &st);
        CHECK(st.generation == 2 && file_size(jp) == 0);

        /* As if the crash came right after the rename. */
        spew(jp, old_journal, old_size);
        CHECK(store_matches_cap(dir, &m, 0, &st));
        CHECK(st.n_stale_records == 3 && st.needs_compaction);

        /* The writer appends after stale records only after replacing them:
         * its next commit compacts. */
        {
                _cleanup_(store_freep) Store *w = open_store(dir);

                CHECK_R(put(w, &m, "after", "a"), 0);
                store_get_stats(w, &st);
                CHECK(st.generation == 3 && st.journal_size == 0);
                CHECK(store_matches_cap(dir, &m, 0, &st));
                CHECK(st.n_stale_records == 0);
        }

        /* Stale records followed by current ones (a journal replacement that
         * failed, after which the writer kept appending): skip, then apply.
         * (s is no longer the writer: w compacted after it.) */
        model_done(&m);
        {
                _cleanup_(store_freep) Store *w = open_store(dir);
                StoreEntry *e = NULL;
                size_t n = 0;
                _cleanup_free_ char *cur = NULL;
                Model fresh = {};

                /* Rebuild the model from what is on disk now, then add records. */
                CHECK_R(store_load(w, &e, &n, &cur, NULL), 0);
                for (size_t i = 0; i < n; i++) {
                        StoreOp op = { .type = STORE_OP_PUT, .name = e[i].name, .xml = e[i].xml };
                        model_apply(&fresh, &op, 1);
                }
                fresh.current = cur ? strdup(cur) : NULL;
                store_entries_free(e, n);

                CHECK_R(put(w, &fresh, "mixed-1", "m1"), 0);
                CHECK_R(del(w, &fresh, "mixed-1"), 0);
                CHECK_R(put(w, &fresh, "mixed-2", "m2"), 0);
                new_journal = slurp(jp, &new_size);
                mixed = malloc(old_size + new_size + 1);
                memcpy(mixed, old_journal, old_size);
                memcpy(mixed + old_size, new_journal, new_size);
                spew(jp, mixed, old_size + new_size);
                CHECK(store_matches_cap(dir, &fresh, 0, &st));
                CHECK(st.n_stale_records == 3 && st.ignored_bytes == 0);
                model_done(&fresh);
        }

        /* A record of a newer generation than the bulk file (a bulk file
         * restored from a backup): ignored, with a warning. */
        {
                _cleanup_free_ char *b = slurp(bp, NULL);
                _cleanup_free_ char *older = NULL;
                char *g = strstr(b, "generation=\"");

                CHECK(g);
                older = strprintf("<?qsnapd-store generation=\"0\"?>%s", strchr(g, '>') + 1);
                spew(bp, older, strlen(older));
                {
                        _cleanup_(store_freep) Store *r = open_store(dir);
                        StoreEntry *e = NULL;
                        size_t n = 0;

                        CHECK_R(store_load(r, &e, &n, NULL, NULL), 0);
                        store_get_stats(r, &st);
                        CHECK(st.ignored_bytes > 0 && st.needs_compaction);
                        store_entries_free(e, n);
                }
        }

        remove_dir(dir);
}

/* The last record cut at every length: the state before it, until it is whole. */
static void test_torn_tail(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *jp = journal_path(dir), *full = NULL, *big = NULL;
        size_t full_size = 0;
        Model before = {}, after = {};
        int64_t start;
        unsigned bad = 0;

        CHECK_R(put(s, &before, "one", "1"), 0);
        CHECK_R(put(s, &before, "two", "2"), 0);
        CHECK_R(set_current(s, &before, "one"), 0);
        start = file_size(jp);
        model_copy(&after, &before);
        big = make_entry("three <&> 'x'", "a longer description, so that the record spans some hundred bytes");
        {
                StoreOp ops[] = {
                        { .type = STORE_OP_PUT, .name = "three <&> 'x'", .xml = big },
                        { .type = STORE_OP_DELETE, .name = "two" },
                        { .type = STORE_OP_CURRENT, .name = "three <&> 'x'" },
                };
                CHECK_R(commit(s, &after, ops, ELEMENTSOF(ops)), 0);
        }
        full = slurp(jp, &full_size);
        CHECK(full && start > 0 && (size_t) start < full_size);

        log_set_max_level(LOG_WARNING); /* one notice per length otherwise */
        for (size_t len = (size_t) start; len <= full_size; len++) {
                StoreStats st;
                bool ok;

                spew(jp, full, len);
                ok = store_matches_cap(dir, len < full_size ? &before : &after, 0, &st);
                ok = ok && st.ignored_bytes == (len < full_size ? len - (size_t) start : 0);
                ok = ok && st.needs_compaction == (len != (size_t) start && len != full_size);
                if (!ok) {
                        bad++;
                        fprintf(stderr, "  torn at %zu of %zu: wrong state\n", len, full_size);
                }
        }
        log_set_max_level(LOG_INFO);
        n_checks++;
        if (bad > 0)
                n_failed++;
        fprintf(stderr, "torn tail: %zu lengths checked\n", full_size - (size_t) start + 1);

        /* A writer on a torn journal rewrites both files before appending. */
        spew(jp, full, (size_t) start + 17);
        {
                _cleanup_(store_freep) Store *w = open_store(dir);
                StoreStats st;

                CHECK_R(put(w, &before, "four", "4"), 0);
                store_get_stats(w, &st);
                CHECK(st.n_compactions == 1 && st.journal_size == 0);
                CHECK(store_matches_cap(dir, &before, 0, &st));
                CHECK(st.ignored_bytes == 0 && !st.needs_compaction);
        }

        model_done(&before);
        model_done(&after);
        remove_dir(dir);
}

/* Damage in the middle: the valid prefix survives, with a warning that
 * names the file and the offset. */
static void test_damaged_records(void) {
        char *dir = make_dir();
        _cleanup_free_ char *jp = journal_path(dir), *full = NULL;
        int64_t offsets[5];
        Model states[5] = {};
        size_t size = 0;

        {
                _cleanup_(store_freep) Store *s = open_store(dir);
                Model m = {};

                for (unsigned i = 0; i < 5; i++) {
                        _cleanup_free_ char *name = strprintf("r%u", i);

                        offsets[i] = MAX(file_size(jp), 0);
                        model_copy(&states[i], &m); /* the state before record i */
                        CHECK_R(put(s, &m, name, "payload"), 0);
                }
                model_done(&m);
        }
        full = slurp(jp, &size);

        static const struct {
                const char *what;
                size_t record, at; /* byte at offsets[record] + at */
                char value;
        } cases[] = {
                { "payload byte", 2, 60, 'Z' },
                { "CRC digit", 2, 31, 'g' },
                { "CRC value", 2, 38, '0' },
                { "magic", 1, 0, 'X' },
                { "length", 3, 29, 'f' },
                { "generation", 3, 20, '1' },
        };
        for (size_t c = 0; c < ELEMENTSOF(cases); c++) {
                _cleanup_free_ char *copy = malloc(size), *log = NULL, *expect = NULL;
                size_t at = (size_t) offsets[cases[c].record] + cases[c].at;
                Capture cap;

                memcpy(copy, full, size);
                if (copy[at] == cases[c].value)
                        copy[at] ^= 1;
                else
                        copy[at] = cases[c].value;
                spew(jp, copy, size);
                capture_begin(&cap, dir);
                CHECK(store_matches(dir, &states[cases[c].record]));
                log = capture_end(&cap);
                expect = strprintf("%s: ", jp);
                CHECK_CONTAINS(log, expect);
                free(expect);
                expect = strprintf("at offset %" PRIi64 ";", offsets[cases[c].record]);
                CHECK_CONTAINS(log, expect);
                CHECK(log && (strstr(log, "<4>") || strstr(log, "warning:"))); /* a warning, not a notice */
        }

        /* Garbage inserted between records. */
        {
                _cleanup_free_ char *copy = malloc(size + 7);
                size_t at = (size_t) offsets[3];

                memcpy(copy, full, at);
                memcpy(copy + at, "garbage", 7);
                memcpy(copy + at + 7, full + at, size - at);
                spew(jp, copy, size + 7);
                CHECK(store_matches(dir, &states[3]));
        }

        for (unsigned i = 0; i < 5; i++)
                model_done(&states[i]);
        remove_dir(dir);
}

static void test_read_cap(void) {
        char *dir = make_dir();
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir);
        Model m = {};

        /* Commits that would make the bulk file exceed the cap are refused. */
        {
                _cleanup_(store_freep) Store *s = NULL;
                unsigned i;
                int r = 0;

                CHECK_R(store_open(dir, UUID, "snapshots", "domainsnapshot", 3000, &s), 0);
                for (i = 0; i < 100 && r == 0; i++) {
                        _cleanup_free_ char *name = strprintf("cap-%u", i);
                        char desc[300];

                        memset(desc, 'c', sizeof(desc) - 1);
                        desc[sizeof(desc) - 1] = 0;
                        r = put(s, &m, name, desc);
                }
                CHECK(r == -EFBIG && i > 3);
                CHECK(file_size(bp) <= 3000 && file_size(jp) <= 3000);
                CHECK(store_matches_cap(dir, &m, 3000, NULL));
                /* Deleting makes room again. */
                CHECK_R(del(s, &m, m.names[0]), 0);
                CHECK_R(put(s, &m, "fits", "now"), 0);
                CHECK(store_matches_cap(dir, &m, 3000, NULL));
        }

        /* Files larger than the cap: -EFBIG naming the file, size, cap and setting. */
        {
                _cleanup_(store_freep) Store *s = NULL;
                _cleanup_free_ char *error = NULL, *needle = NULL;
                StoreEntry *e = NULL;
                size_t n = 0;

                CHECK(file_size(bp) > 1000);
                CHECK_R(store_open(dir, UUID, "snapshots", "domainsnapshot", 1000, &s), 0);
                CHECK_R(store_load(s, &e, &n, NULL, &error), -EFBIG);
                needle = strprintf("%s is %" PRIi64 " bytes", bp, file_size(bp));
                CHECK_CONTAINS(error, needle);
                CHECK_CONTAINS(error, "read cap of 1000 bytes");
                CHECK_CONTAINS(error, "--metadata-read-cap=");
                CHECK(!e && n == 0);
        }
        {
                _cleanup_(store_freep) Store *s = open_store(dir);
                _cleanup_(store_freep) Store *r = NULL;
                _cleanup_free_ char *error = NULL;
                uint64_t cap;

                store_set_compaction_threshold(s, UINT64_MAX);
                for (unsigned i = 0; i < 20; i++) {
                        _cleanup_free_ char *name = strprintf("j-%u", i);
                        CHECK_R(put(s, &m, name, "in the journal"), 0);
                }
                cap = (uint64_t) file_size(bp) + 10;
                CHECK(file_size(jp) > (int64_t) cap);
                CHECK_R(store_open(dir, UUID, "snapshots", "domainsnapshot", cap, &r), 0);
                CHECK_R(store_load(r, NULL, NULL, NULL, &error), -EFBIG);
                CHECK_CONTAINS(error, jp);
                /* A commit through a store with that cap does not make it worse. */
                CHECK_R(store_commit(r, &(StoreOp) { .type = STORE_OP_CURRENT }, 1), -EFBIG);
        }

        model_done(&m);
        remove_dir(dir);
}

static void test_odd_names(void) {
        static const char *const names[] = {
                "it's \"quoted\"",
                "<&>",
                "a&amp;b",
                "snäpshot ☃ 😀",
                " leading and trailing ",
                "tab\there, newline\nthere, cr\rtoo",
                "]]> and <![CDATA[",
                "-- <!-- not a comment -->",
                "/slash/and\\backslash",
                "'",
        };
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *long_name = malloc(301);
        Model m = {};

        memset(long_name, 'L', 300);
        long_name[300] = 0;
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                CHECK_R(put(s, &m, names[i], names[i]), 0);
                CHECK_R(set_current(s, &m, names[i]), 0);
                CHECK(store_matches(dir, &m));
        }
        CHECK_R(put(s, &m, long_name, "300 characters"), 0);

        /* The same name spelled differently in the XML is the same entry. */
        {
                const char *xml = "<domainsnapshot><name><![CDATA[<&>]]></name><description>cdata</description></domainsnapshot>";
                const char *xml2 = "<domainsnapshot><name>&#x3C;&#38;&gt;</name><description>refs</description></domainsnapshot>";
                StoreOp op = { .type = STORE_OP_PUT, .name = "<&>", .xml = xml };

                CHECK_R(commit(s, &m, &op, 1), 0);
                op.xml = xml2;
                CHECK_R(commit(s, &m, &op, 1), 0);
                CHECK(m.n == ELEMENTSOF(names) + 1);
        }
        CHECK_R(set_current(s, &m, "tab\there, newline\nthere, cr\rtoo"), 0);
        CHECK(store_matches(dir, &m));

        /* Through the bulk file: current='…' escaped, names decoded the same. */
        store_set_compaction_threshold(s, 1);
        CHECK_R(set_current(s, &m, "it's \"quoted\""), 0);
        CHECK(store_matches(dir, &m));
        CHECK(libvirt_style_matches(dir, &m));
        CHECK_R(set_current(s, &m, "tab\there, newline\nthere, cr\rtoo"), 0);
        CHECK(store_matches(dir, &m));
        CHECK(libvirt_style_matches(dir, &m));
        CHECK_R(set_current(s, &m, long_name), 0);
        CHECK(store_matches(dir, &m));
        CHECK(libvirt_style_matches(dir, &m));
        CHECK_R(del(s, &m, "'"), 0);
        CHECK(store_matches(dir, &m));

        model_done(&m);
        remove_dir(dir);
}

/* Entries come back byte for byte, through the journal and the bulk file. */
static void test_byte_exact(void) {
        static const char *const xmls[] = {
                "<domainsnapshot>\r\n  <name>crlf</name>\r\n\t<description>tab\ttab</description>\r\n</domainsnapshot>",
                "<domainsnapshot  a=\"1\"   b='2' ><name>attrs</name><x c='&apos;\"&gt;' d=\"'&quot;>\"/></domainsnapshot >",
                "<domainsnapshot><name>markup</name><!-- <domainsnapshot> --><?pi </domainsnapshot> ?>"
                "<![CDATA[</domainsnapshot><x>]]><empty/><e></e></domainsnapshot>",
                "<domainsnapshot xmlns:qsnap='http://example.org/qsnap/1'><name>ns</name><qsnap:x qsnap:y='z'/></domainsnapshot>",
                "<domainsnapshot><name>deep</name><domain type='kvm'><devices><disk><source file='/a&gt;b'/></disk>"
                "</devices></domain></domainsnapshot>",
                "<domainsnapshot><name>unicode ☃</name><description>&#x1F600; 😀 &lt;</description></domainsnapshot>",
        };
        static const char *const names[] = { "crlf", "attrs", "markup", "ns", "deep", "unicode ☃" };
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        Model m = {};

        for (size_t i = 0; i < ELEMENTSOF(xmls); i++) {
                StoreOp op = { .type = STORE_OP_PUT, .name = names[i], .xml = xmls[i] };
                CHECK_R(commit(s, &m, &op, 1), 0);
        }
        CHECK(store_matches(dir, &m));
        store_set_compaction_threshold(s, 1);
        CHECK_R(set_current(s, &m, "markup"), 0);
        CHECK(store_matches(dir, &m));
        CHECK(libvirt_style_matches(dir, &m));

        model_done(&m);
        remove_dir(dir);
}

/* Bulk files written by others (libvirt), and broken ones. */
static void test_bulk_files(void) {
        static const char libvirt[] =
                "<snapshots current='s2'>\n"
                "  <domainsnapshot>\n"
                "    <name>s1</name>\n"
                "    <state>shutoff</state>\n"
                "    <creationTime>1700000000</creationTime>\n"
                "    <domain type='kvm'>\n"
                "      <name>vm</name>\n"
                "      <description>a '>' in text &amp; more</description>\n"
                "    </domain>\n"
                "  </domainsnapshot>\n"
                "  <!-- a comment between entries -->\n"
                "  <domainsnapshot>\n"
                "    <name>s2</name>\n"
                "    <parent>\n"
                "      <name>s1</name>\n"
                "    </parent>\n"
                "  </domainsnapshot>\n"
                "</snapshots >\n";
        static const struct {
                const char *text, *needle;
        } bad[] = {
                { "", "file is empty" },
                { "<snapshots>\n  <domainsnapshot><name>a</name></domainsnapshot>\n", "missing </snapshots>" },
                { "<snapshots>\n  <domainsnapshot><name>a</name>", "unterminated <domainsnapshot>" },
                { "<snapshots><foo/></snapshots>", "unexpected element" },
                { "<!DOCTYPE snapshots [<!ENTITY x 'y'>]><snapshots/>", "DTDs are not allowed" },
                { "<snapshots><domainsnapshot><name>&x;</name></domainsnapshot></snapshots>", "entry 1: line 1:" },
                { "<snapshots>\n<domainsnapshot><name>a</name></domainsnapshot>\n<domainsnapshot><name>a</name></domainsnapshot></snapshots>",
                  ":3: entry 2: duplicate name 'a'" },
                { "<snapshots><domainsnapshot><nom>a</nom></domainsnapshot></snapshots>", "no <name>" },
                { "<snapshots>text</snapshots>", "unexpected text" },
                { "<other/>", "expected <snapshots>" },
                { "<?xml version='1.0' encoding='ISO-8859-1'?><snapshots/>", "encoding ISO-8859-1" },
                { "<snapshots xmlns='urn:x'/>", "namespace" },
                { "<snapshots></snapshots>junk", "content after" },
                { "<snapshots></snapshots><snapshots></snapshots>", "content after" },
                { "<snapshots><domainsnapshot><name>a</name></domainsnapshot><domainsnapshot><name>b</name></wrong></snapshots>",
                  "entry 2" },
                { "<?qsnapd-store generation=\"x\"?><snapshots/>", "malformed <?qsnapd-store" },
                { "<?qsnapd-store generation=\"1\"?><?qsnapd-store generation=\"2\"?><snapshots/>", "more than one" },
                { "<snapshots current='a></snapshots>", "unterminated <snapshots> tag" },
                { "<snapshots current=a></snapshots>", "line 1: " },
                { "<snapshots><domainsnapshot><name>a</name></domainsnapshot>\xff</snapshots>", "unexpected text" },
        };
        char *dir = make_dir();
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir);
        Model m = {};
        StoreStats st;

        spew(bp, libvirt, strlen(libvirt));
        {
                const char *e1 = strstr(libvirt, "<domainsnapshot>"), *e1_end = strstr(libvirt, "</domainsnapshot>") + 17;
                const char *e2 = strstr(e1_end, "<domainsnapshot>"), *e2_end = strstr(e2, "</domainsnapshot>") + 17;
                _cleanup_free_ char *x1 = strndup(e1, (size_t) (e1_end - e1)), *x2 = strndup(e2, (size_t) (e2_end - e2));
                StoreOp ops[] = {
                        { .type = STORE_OP_PUT, .name = "s1", .xml = x1 },
                        { .type = STORE_OP_PUT, .name = "s2", .xml = x2 },
                        { .type = STORE_OP_CURRENT, .name = "s2" },
                };
                model_apply(&m, ops, ELEMENTSOF(ops));
        }
        CHECK(store_matches_cap(dir, &m, 0, &st));
        CHECK(st.generation == 0);
        {
                _cleanup_(store_freep) Store *s = open_store(dir);

                CHECK_R(put(s, &m, "s3", "from qsnapd"), 0); /* journalled at generation 0 */
                CHECK(store_matches(dir, &m));
                store_set_compaction_threshold(s, 1);
                CHECK_R(del(s, &m, "s3"), 0);
                store_get_stats(s, &st);
                CHECK(st.generation == 1);
                CHECK(store_matches(dir, &m));
                CHECK(libvirt_style_matches(dir, &m));
        }

        /* An empty root and a current that names nothing. */
        spew(bp, "<snapshots current='gone'/>", 27);
        (void) unlink(jp);
        model_done(&m);
        CHECK(store_matches(dir, &m));

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(store_freep) Store *s = open_store(dir);
                _cleanup_free_ char *error = NULL;
                int r;

                spew(bp, bad[i].text, strlen(bad[i].text));
                r = store_load(s, NULL, NULL, NULL, &error);
                n_checks++;
                if (r != -EBADMSG || !error || !strstr(error, bad[i].needle) || strncmp(error, bp, strlen(bp)) != 0) {
                        n_failed++;
                        fprintf(stderr, "bad bulk file %zu: got %d '%s', want -EBADMSG with '%s'\n", i, r, strna(error),
                                bad[i].needle);
                }
                /* A writer refuses to commit on top of a file it cannot read. */
                CHECK(store_commit(s, &(StoreOp) { .type = STORE_OP_CURRENT }, 1) == -EBADMSG);
        }
        {
                _cleanup_(store_freep) Store *s = open_store(dir);
                _cleanup_free_ char *error = NULL;

                spew(bp, "<snapshots>\0</snapshots>", 24);
                CHECK_R(store_load(s, NULL, NULL, NULL, &error), -EBADMSG);
                CHECK_CONTAINS(error, "NUL byte");
        }

        model_done(&m);
        remove_dir(dir);
}

static void test_remove(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir), *empty_base = NULL, *journal = NULL;
        size_t journal_size = 0;
        Model m = {};
        StoreStats st;

        CHECK_R(put(s, &m, "a", "1"), 0);
        store_set_compaction_threshold(s, 1);
        CHECK_R(put(s, &m, "b", "2"), 0);
        store_set_compaction_threshold(s, 0);
        CHECK_R(put(s, &m, "c", "3"), 0);
        CHECK(file_size(bp) > 0 && file_size(jp) > 0);
        journal = slurp(jp, &journal_size);

        CHECK_R(store_remove(s), 0);
        CHECK(file_size(bp) < 0 && file_size(jp) < 0);
        model_done(&m);
        CHECK(store_matches(dir, &m));

        /* The first step of a removal is an empty bulk file of a newer
         * generation: a crash right after it shows an empty store. */
        empty_base = strprintf("<?qsnapd-store generation=\"2\"?>\n<snapshots>\n</snapshots>\n");
        spew(bp, empty_base, strlen(empty_base));
        spew(jp, journal, journal_size);
        CHECK(store_matches(dir, &m));
        (void) unlink(bp);
        (void) unlink(jp);

        /* Usable afterwards, from generation 0. */
        CHECK_R(put(s, &m, "again", "x"), 0);
        CHECK(store_matches_cap(dir, &m, 0, &st));
        CHECK(st.generation == 0);

        /* A store that was never loaded, and one that cannot be read. */
        {
                _cleanup_(store_freep) Store *t = open_store(dir);
                CHECK_R(store_remove(t), 0);
                CHECK(file_size(bp) < 0 && file_size(jp) < 0);
        }
        spew(bp, "<broken", 7);
        spew(jp, "junk", 4);
        {
                _cleanup_(store_freep) Store *t = open_store(dir);
                log_set_max_level(LOG_ERR);
                CHECK_R(store_remove(t), 0);
                log_set_max_level(LOG_INFO);
                CHECK(file_size(bp) < 0 && file_size(jp) < 0);
        }

        model_done(&m);
        remove_dir(dir);
}

/* I/O failures in the middle of a commit: nothing changes, and the store
 * recovers once the cause is gone. */
static void test_io_failures(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *s = open_store(dir);
        _cleanup_free_ char *bp = base_path(dir), *jp = journal_path(dir), *blocker = NULL;
        Model m = {};
        StoreStats st;
        struct rlimit saved, limited;
        int64_t size;

        CHECK_R(put(s, &m, "a", "1"), 0);
        CHECK_R(put(s, &m, "b", "2"), 0);

        /* The journal cannot grow (RLIMIT_FSIZE: a short write, then EFBIG). */
        signal(SIGXFSZ, SIG_IGN);
        size = file_size(jp);
        CHECK(getrlimit(RLIMIT_FSIZE, &saved) == 0);
        limited = saved;
        limited.rlim_cur = (rlim_t) size + 20;
        CHECK(setrlimit(RLIMIT_FSIZE, &limited) == 0);
        log_set_max_level(LOG_CRIT);
        CHECK_R(put(s, &m, "c", "this record is longer than twenty bytes"), -EFBIG);
        log_set_max_level(LOG_INFO);
        CHECK(setrlimit(RLIMIT_FSIZE, &saved) == 0);
        CHECK(file_size(jp) == size); /* the partial record was taken back */
        CHECK(store_matches(dir, &m));
        CHECK_R(put(s, &m, "c", "now it fits"), 0);
        CHECK(store_matches(dir, &m));

        /* The bulk file cannot be written (its temporary file's name is taken
         * by a directory). */
        blocker = strprintf("%s.tmp-%d", bp, (int) getpid());
        CHECK(mkdir(blocker, 0700) == 0);
        store_set_compaction_threshold(s, 1);
        log_set_max_level(LOG_CRIT);
        CHECK_R(del(s, &m, "a"), -EISDIR);
        log_set_max_level(LOG_INFO);
        store_get_stats(s, &st);
        CHECK(st.needs_compaction);
        CHECK(store_matches(dir, &m));
        CHECK(rmdir(blocker) == 0);
        store_set_compaction_threshold(s, 0);
        CHECK_R(del(s, &m, "b"), 0); /* compacts (needs_compaction), a new generation */
        store_get_stats(s, &st);
        CHECK(!st.needs_compaction && st.journal_size == 0 && st.generation >= 2);
        CHECK(store_matches(dir, &m));
        CHECK_R(put(s, &m, "d", "appended again"), 0);
        store_get_stats(s, &st);
        CHECK(st.journal_size > 0);
        CHECK(store_matches(dir, &m));

        /* Someone else truncated the journal under the writer: it notices
         * and compacts instead of appending at the wrong offset. */
        CHECK(truncate(jp, 0) == 0);
        CHECK_R(put(s, &m, "e", "after truncation"), 0);
        store_get_stats(s, &st);
        CHECK(st.journal_size == 0);
        CHECK(store_matches(dir, &m));

        model_done(&m);
        remove_dir(dir);
}

/* ---- a reader racing a compaction, deterministically ---- */

/* open() of this program and of what it links, so that a test can act at
 * the exact moment the store opens a file. (With _FILE_OFFSET_BITS=64 the
 * header maps the name to open64, in store.c as here.) */
static const char *open_hook_path;
static void (*open_hook)(void);
static unsigned open_hook_calls;

int open(const char *path, int flags, ...) {
        mode_t mode = 0;

        if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
                va_list ap;

                va_start(ap, flags);
                mode = (mode_t) va_arg(ap, int);
                va_end(ap);
        }
        if (open_hook && open_hook_path && streq(path, open_hook_path)) {
                void (*hook)(void) = open_hook;

                open_hook = NULL;
                open_hook_calls++;
                hook();
        }
        return (int) syscall(SYS_openat, AT_FDCWD, path, flags, mode);
}

static Store *race_writer;
static Model *race_model;
static bool race_append_after;

static void race_compact(void) {
        store_set_compaction_threshold(race_writer, 1);
        CHECK_R(put(race_writer, race_model, "raced in", "between the reader's two opens"), 0);
        store_set_compaction_threshold(race_writer, 0);
        if (race_append_after)
                CHECK_R(put(race_writer, race_model, "raced in too", "a record of the new generation"), 0);
}

/* The writer compacts between the reader's open() of the bulk file and its
 * open() of the journal: the reader holds the old bulk file and would get
 * the new journal (empty, or of the new generation). It must notice and
 * read again, and see everything. */
static void test_reader_race(void) {
        for (unsigned variant = 0; variant < 2; variant++) {
                char *dir = make_dir();
                _cleanup_(store_freep) Store *w = open_store(dir), *r = open_store(dir);
                _cleanup_free_ char *jp = journal_path(dir), *current = NULL;
                StoreEntry *entries = NULL;
                size_t n = 0;
                Model m = {};

                CHECK_R(put(w, &m, "one", "1"), 0);
                store_set_compaction_threshold(w, 1);
                CHECK_R(put(w, &m, "two", "2"), 0);
                store_set_compaction_threshold(w, 0);
                CHECK_R(put(w, &m, "three", "3 in the journal"), 0);
                CHECK_R(set_current(w, &m, "three"), 0);

                race_writer = w;
                race_model = &m;
                race_append_after = variant == 1;
                open_hook_calls = 0;
                open_hook_path = jp;
                open_hook = race_compact;
                CHECK_R(store_load(r, &entries, &n, &current, NULL), 0);
                open_hook = NULL;
                CHECK(open_hook_calls == 1);
                CHECK(model_matches(&m, entries, n, current, true));
                store_entries_free(entries, n);

                model_done(&m);
                remove_dir(dir);
        }
}

/* ---- the crash test ---- */

#define CRASH_SEED UINT64_C(0x5eed5eed12345678)
#define CRASH_THRESHOLD 8192
#define CRASH_MAX_ENTRIES 120

static uint64_t splitmix64(uint64_t *x) {
        uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));

        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        return z ^ (z >> 31);
}

typedef struct GenTxn {
        StoreOp ops[4];
        char *strings[8];
        size_t n_ops, n_strings;
} GenTxn;

static void gen_txn_done(GenTxn *t) {
        for (size_t i = 0; i < t->n_strings; i++)
                free(t->strings[i]);
        *t = (GenTxn) {};
}

static char *gen_keep(GenTxn *t, char *s) {
        t->strings[t->n_strings++] = s;
        return s;
}

/* Transaction k of the writer's sequence: a function of k and of the state
 * after k-1, which it also advances. */
static void gen_txn(Model *m, uint64_t k, GenTxn *t) {
        static const char *const suffixes[] = { "", "", "", " <&>", " 'q' \"qq\"", " snäp ☃", "\ttab" };
        uint64_t rng = CRASH_SEED ^ (k * UINT64_C(0x2545F4914F6CDD1D));
        size_t n_ops = splitmix64(&rng) % 4 == 0 ? 2 + splitmix64(&rng) % 3 : 1;

        *t = (GenTxn) {};
        for (size_t j = 0; j < n_ops; j++) {
                unsigned roll = (unsigned) (splitmix64(&rng) % 100);
                StoreOp *op = t->ops + t->n_ops;

                if (m->n == 0 || (roll < 45 && m->n < CRASH_MAX_ENTRIES)) {
                        char *name = gen_keep(t, strprintf("s%" PRIu64 ".%zu%s", k, j,
                                                           suffixes[splitmix64(&rng) % ELEMENTSOF(suffixes)]));
                        size_t len = 50 + splitmix64(&rng) % 1200;
                        char *desc = malloc(len + 1);

                        for (size_t i = 0; i < len; i++)
                                desc[i] = "abcdefghijklmnopqrstuvwxyz <>&'\"\n"[splitmix64(&rng) % 33];
                        desc[len] = 0;
                        *op = (StoreOp) { .type = STORE_OP_PUT, .name = name, .xml = gen_keep(t, make_entry(name, desc)) };
                        free(desc);
                } else if (roll < 60) {
                        const char *name = m->names[splitmix64(&rng) % m->n];
                        char *desc = strprintf("replaced in %" PRIu64, k);

                        *op = (StoreOp) { .type = STORE_OP_PUT, .name = gen_keep(t, strdup(name)),
                                          .xml = gen_keep(t, make_entry(name, desc)) };
                        free(desc);
                } else if (roll < 88) {
                        *op = (StoreOp) { .type = STORE_OP_DELETE,
                                          .name = gen_keep(t, strdup(m->names[splitmix64(&rng) % m->n])) };
                } else {
                        uint64_t pick = splitmix64(&rng);
                        *op = (StoreOp) { .type = STORE_OP_CURRENT,
                                          .name = pick % 5 == 0 ? NULL : gen_keep(t, strdup(m->names[pick % m->n])) };
                }
                model_apply_one(m, op);
                t->n_ops++;
        }
}

static void model_advance(Model *m, uint64_t *k) {
        GenTxn t;

        (*k)++;
        gen_txn(m, *k, &t);
        gen_txn_done(&t);
}

/* The writer: transactions k+1, k+2, …, each reported on fd once durable. */
_noreturn_ static void crash_writer(const char *dir, Model *m, uint64_t k, int fd) {
        Store *s = NULL;

        if (store_open(dir, UUID, "snapshots", "domainsnapshot", 0, &s) < 0)
                _exit(3);
        store_set_compaction_threshold(s, CRASH_THRESHOLD);
        if (store_load(s, NULL, NULL, NULL, NULL) < 0)
                _exit(4);
        for (;;) {
                GenTxn t;

                k++;
                gen_txn(m, k, &t);
                if (store_commit(s, t.ops, t.n_ops) < 0)
                        _exit(5);
                gen_txn_done(&t);
                if (write(fd, &k, sizeof(k)) != (ssize_t) sizeof(k))
                        _exit(6);
        }
}

/* Reads the writer's reports; returns false at EOF. */
static bool drain(int fd, uint64_t *reported) {
        uint64_t buf[64];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return true; /* EAGAIN */
                if (n == 0)
                        return false;
                assert(n % (ssize_t) sizeof(uint64_t) == 0);
                *reported = buf[n / (ssize_t) sizeof(uint64_t) - 1];
        }
}

/* Advances the model (at *k) to the first state at or after lo that equals
 * the loaded one; fails past hi. */
static bool match_state(Model *m, uint64_t *k, uint64_t lo, uint64_t hi, const StoreEntry *e, size_t n, const char *current) {
        for (;;) {
                if (*k >= lo && model_matches(m, e, n, current, false))
                        return true;
                if (*k >= hi) {
                        fprintf(stderr, "  loaded state is none of the states %" PRIu64 "…%" PRIu64 "; against %" PRIu64 ":\n",
                                lo, hi, *k);
                        (void) model_matches(m, e, n, current, true);
                        return false;
                }
                model_advance(m, k);
        }
}

static bool load_and_match(Store *s, Model *m, uint64_t *k, uint64_t lo, uint64_t hi_fd_reported, int fd,
                           uint64_t *reported, StoreStats *ret_stats) {
        _cleanup_free_ char *current = NULL, *error = NULL;
        StoreEntry *entries = NULL;
        size_t n = 0;
        bool ok;
        int r;

        r = store_load(s, &entries, &n, &current, &error);
        if (r < 0) {
                fprintf(stderr, "  load failed: %s\n", strna(error));
                return false;
        }
        if (fd >= 0)
                (void) drain(fd, reported);
        /* The writer may have made one more transaction visible than it reported. */
        ok = match_state(m, k, lo, (fd >= 0 ? *reported : hi_fd_reported) + 1, entries, n, current);
        if (ret_stats)
                store_get_stats(s, ret_stats);
        store_entries_free(entries, n);
        return ok;
}

static void test_crash(void) {
        char *dir = make_dir();
        _cleanup_(store_freep) Store *reader = open_store(dir);
        const char *env = getenv("QSNAP_STORE_CRASH_ROUNDS");
        unsigned rounds = env ? (unsigned) atoi(env) : 100;
        uint64_t rng = CRASH_SEED, k = 0, start = now_usec(CLOCK_MONOTONIC);
        unsigned n_loads = 0, n_inflight = 0, n_stale = 0, n_torn = 0, n_writer_errors = 0, bad = 0;
        uint64_t max_generation = 0;
        Model m = {};

        log_set_max_level(LOG_WARNING); /* torn tails are normal here; damage is not */
        for (unsigned round = 0; round < rounds && bad == 0; round++) {
                uint64_t reported = k, lo, delay, t0, want;
                int p[2], status;
                StoreStats st;
                pid_t pid;

                /* Mostly 0–20 ms; now and then long enough for many compactions.
                 * And never before the writer's first transaction of the
                 * round (60 in a long one), however slowly a loaded machine
                 * runs it (at most 30 s). */
                delay = round % 25 == 24 ? 300 * USEC_PER_MSEC : splitmix64(&rng) % (20 * USEC_PER_MSEC + 1);
                want = k + (round % 25 == 24 ? 60 : 1);

                if (pipe2(p, O_CLOEXEC) < 0) {
                        perror("pipe2");
                        exit(EXIT_FAILURE);
                }
                fflush(stderr);
                pid = fork();
                if (pid < 0) {
                        perror("fork");
                        exit(EXIT_FAILURE);
                }
                if (pid == 0) {
                        close(p[0]);
                        crash_writer(dir, &m, k, p[1]);
                }
                close(p[1]);
                (void) fcntl(p[0], F_SETFL, O_NONBLOCK);

                /* (b) A concurrent reader sees only whole states, never older
                 * than what was durable when its load began. */
                t0 = now_usec(CLOCK_MONOTONIC);
                do {
                        (void) drain(p[0], &reported);
                        lo = reported;
                        if (!load_and_match(reader, &m, &k, lo, 0, p[0], &reported, NULL)) {
                                fprintf(stderr, "  round %u: concurrent load wrong\n", round);
                                bad++;
                                break;
                        }
                        n_loads++;
                } while (now_usec(CLOCK_MONOTONIC) - t0 < delay ||
                         (reported < want && now_usec(CLOCK_MONOTONIC) - t0 < 30 * USEC_PER_SEC));

                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, &status, 0);
                if (!WIFSIGNALED(status)) {
                        fprintf(stderr, "  round %u: writer failed with %d\n", round, WEXITSTATUS(status));
                        n_writer_errors++;
                }
                (void) fcntl(p[0], F_SETFL, 0);
                while (drain(p[0], &reported))
                        ;
                close(p[0]);

                /* (a) After the kill: the state after the last reported
                 * transaction, or after the one in flight. */
                {
                        _cleanup_(store_freep) Store *fresh = open_store(dir);
                        uint64_t before = k;

                        if (!load_and_match(fresh, &m, &k, reported, reported, -1, NULL, &st)) {
                                fprintf(stderr, "  round %u: state after the kill wrong (reported %" PRIu64 ", was at %" PRIu64 ")\n",
                                        round, reported, before);
                                bad++;
                        }
                }
                n_inflight += k == reported + 1;
                n_stale += st.n_stale_records > 0;
                n_torn += st.ignored_bytes > 0;
                max_generation = MAX(max_generation, st.generation);
        }
        log_set_max_level(LOG_INFO);

        n_checks++;
        if (bad > 0 || n_writer_errors > 0)
                n_failed++;
        fprintf(stderr,
                "crash test: %u rounds, %" PRIu64 " transactions, %u concurrent loads, generation %" PRIu64
                "; after the kill: %u with the in-flight transaction visible, %u with stale records, "
                "%u with a torn tail; %.1f s\n",
                rounds, k, n_loads, max_generation, n_inflight, n_stale, n_torn,
                (double) (now_usec(CLOCK_MONOTONIC) - start) / USEC_PER_SEC);
        CHECK(rounds < 50 || k > 200);
        CHECK(rounds < 50 || max_generation > 10);

        /* Leftover temporary files go at the next writer's first commit. */
        {
                _cleanup_(store_freep) Store *w = open_store(dir);
                GenTxn t;

                k++;
                gen_txn(&m, k, &t);
                CHECK_R(store_commit(w, t.ops, t.n_ops), 0);
                gen_txn_done(&t);
                CHECK(count_temporary_files(dir) == 0);
                CHECK(store_matches(dir, &m));
        }

        model_done(&m);
        remove_dir(dir);
}

int main(int argc, char **argv) {
        test_empty_and_round_trip();
        test_transactions();
        test_golden_format();
        test_compaction();
        test_generations();
        test_torn_tail();
        test_damaged_records();
        test_read_cap();
        test_odd_names();
        test_byte_exact();
        test_bulk_files();
        test_remove();
        test_io_failures();
        test_reader_race();
        test_crash();

        xmlCleanupParser();
        return test_summary();
}
