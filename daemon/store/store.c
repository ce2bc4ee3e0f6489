/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store of store.h: an in-memory index (hash map + list in
 * insertion order) backed by two files in <dir>.
 *
 * <name>.xml, the bulk file, libvirt's bulk format with one processing
 * instruction in front that libvirt's parser ignores:
 *
 *     <?qsnapd-store generation="7"?>
 *     <snapshots current='NAME'>
 *       <domainsnapshot>…</domainsnapshot>
 *     </snapshots>
 *
 * It is only ever replaced whole (write_file_atomic(): temp file, fsync,
 * rename, fsync of the folder). A file without the instruction (libvirt's
 * own) is generation 0. Entries are sliced out of the text, so they come
 * back byte for byte as committed; each slice is checked with libxml2.
 *
 * <name>.journal, the transactions since: one record each,
 *
 *     "QSJ1 " GENERATION " " LENGTH " " CRC "\n" PAYLOAD
 *
 * GENERATION 16 and LENGTH (of PAYLOAD) and CRC 8 lower-case hex digits:
 * a 40-byte header. CRC is the CRC-32 (IEEE 802.3) of the first 31 header
 * bytes followed by PAYLOAD. PAYLOAD is the transaction's ops in order,
 * lengths in decimal bytes:
 *
 *     "P " NAMELEN " " XMLLEN "\n" NAME "\n" XML "\n"
 *     "D " NAMELEN "\n" NAME "\n"
 *     "C " NAMELEN "\n" NAME "\n"        or "C -\n" for no current entry
 *
 * A record is appended with one pwrite() and fdatasync(). Reading stops
 * at the first record that is incomplete (a crash mid-append), fails its
 * CRC or does not apply: that one and everything after it are ignored.
 * Records of an older generation than the bulk file are already in it
 * (a crash after the bulk file was replaced but before the journal was)
 * and are skipped; so replaying is never applied twice.
 *
 * Compaction, when the journal would exceed max(64 KiB, bulk file size):
 * write the bulk file with generation + 1, then replace the journal with
 * an empty file (rename, never truncation in place). The transaction that
 * triggers it is not journalled: the new bulk file is its commit point.
 *
 * A reader opens the bulk file, then the journal, then checks that the
 * bulk file's path still names what it opened. The journal of a newer
 * generation is only created after its bulk file is in place, so if that
 * check holds the pair is consistent: the bulk file is immutable and the
 * journal only grows until it is replaced. Otherwise it retries.
 */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "store/store-internal.h"
#include "store/xml-util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

/* ---- the store ---- */

static bool element_name_is_valid(const char *s) {
        if (isempty(s) || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", s[0]))
                return false;
        for (; *s; s++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", *s))
                        return false;
        return true;
}

int store_open(const char *dir,
               const char *basename,
               const char *root_element,
               const char *entry_element,
               uint64_t read_cap,
               Store **ret) {
        _cleanup_(store_freep) Store *s = NULL;

        if (isempty(dir) || isempty(basename) || strchr(basename, '/') || STR_IN_SET(basename, ".", "..") ||
            !element_name_is_valid(root_element) || !element_name_is_valid(entry_element) || !ret)
                return -EINVAL;

        s = new0(Store, 1);
        if (!s)
                return -ENOMEM;
        s->journal_fd = -EBADF;
        s->read_cap = read_cap ?: STORE_READ_CAP_DEFAULT;
        s->dir = strdup(dir);
        s->basename = strdup(basename);
        s->base_path = strprintf("%s/%s.xml", dir, basename);
        s->journal_path = strprintf("%s/%s.journal", dir, basename);
        s->root_element = strdup(root_element);
        s->entry_element = strdup(entry_element);
        if (!s->dir || !s->basename || !s->base_path || !s->journal_path || !s->root_element || !s->entry_element)
                return -ENOMEM;

        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        index_done(&s->index);
        safe_close(s->journal_fd);
        free(s->dir);
        free(s->basename);
        free(s->base_path);
        free(s->journal_path);
        free(s->root_element);
        free(s->entry_element);
        free(s);
        return NULL;
}

void store_entries_free(StoreEntry *entries, size_t n) {
        for (size_t i = 0; entries && i < n; i++) {
                free(entries[i].name);
                free(entries[i].xml);
        }
        free(entries);
}

void store_set_compaction_threshold(Store *s, uint64_t bytes) {
        s->compaction_threshold = bytes;
}

void store_get_stats(const Store *s, StoreStats *ret) {
        *ret = (StoreStats) {
                .generation = s->generation,
                .base_size = s->base_size,
                .journal_size = s->journal_size,
                .n_entries = s->index.n,
                .n_compactions = s->n_compactions,
                .n_stale_records = s->n_stale_records,
                .ignored_bytes = s->ignored_bytes,
                .needs_compaction = s->needs_compaction,
        };
}

/* ---- loading ---- */

static int file_too_big(const char *path, uint64_t size, uint64_t cap, char **ret_error) {
        *ret_error = strprintf("%s is %" PRIu64 " bytes, more than the metadata read cap of %" PRIu64
                               " bytes; raise the cap (qsnapd --metadata-read-cap=BYTES) to read it",
                               path, size, cap);
        return -EFBIG;
}

/* The whole file behind fd, refusing more than cap bytes. */
static int read_fd_capped(int fd, const char *path, uint64_t cap, char **ret, size_t *ret_size, char **ret_error) {
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, allocated;
        struct stat st;

        if (fstat(fd, &st) < 0) {
                *ret_error = strprintf("Cannot stat %s: %s", path, strerror(errno));
                return -errno;
        }
        if ((uint64_t) st.st_size > cap)
                return file_too_big(path, (uint64_t) st.st_size, cap, ret_error);

        allocated = (size_t) st.st_size + 4096;
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (allocated - n < 2) {
                        char *b = realloc(buf, allocated * 2);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        allocated *= 2;
                }
                k = pread(fd, buf + n, allocated - n - 1, (off_t) n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        *ret_error = strprintf("Cannot read %s: %s", path, strerror(errno));
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > cap) /* it grew while we read */
                        return file_too_big(path, n, cap, ret_error);
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

static int open_for_reading(const char *path, int *ret_fd, char **ret_error) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);

        if (fd < 0 && errno != ENOENT) {
                *ret_error = strprintf("Cannot open %s: %s", path, strerror(errno));
                return -errno;
        }
        *ret_fd = fd; /* -1: missing */
        return 0;
}

typedef struct Loaded {
        Index index;
        uint64_t generation;
        uint64_t base_size;
        JournalResult journal;
} Loaded;

static int load_files(const Store *s, Loaded *l, char **ret_error) {
        _cleanup_free_ char *base = NULL, *journal = NULL;
        _cleanup_close_ int base_fd = -EBADF, journal_fd = -EBADF;
        size_t base_size = 0, journal_size = 0;
        int r;

        /* A consistent pair: the bulk file still in place after the journal
         * was opened (see the top of this file). */
        for (unsigned attempt = 0;; attempt++) {
                struct stat a, b;
                bool same;

                base_fd = safe_close(base_fd);
                journal_fd = safe_close(journal_fd);
                r = open_for_reading(s->base_path, &base_fd, ret_error);
                if (r < 0)
                        return r;
                if (base_fd >= 0 && fstat(base_fd, &a) < 0) {
                        *ret_error = strprintf("Cannot stat %s: %s", s->base_path, strerror(errno));
                        return -errno;
                }
                r = open_for_reading(s->journal_path, &journal_fd, ret_error);
                if (r < 0)
                        return r;
                if (stat(s->base_path, &b) < 0) {
                        if (errno != ENOENT) {
                                *ret_error = strprintf("Cannot stat %s: %s", s->base_path, strerror(errno));
                                return -errno;
                        }
                        same = base_fd < 0;
                } else
                        same = base_fd >= 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
                if (same)
                        break;
                if (attempt >= LOAD_ATTEMPTS) {
                        *ret_error = strprintf("%s keeps being replaced while it is read", s->base_path);
                        return -EAGAIN;
                }
        }

        if (base_fd >= 0) {
                r = read_fd_capped(base_fd, s->base_path, s->read_cap, &base, &base_size, ret_error);
                if (r < 0)
                        return r;
                r = base_parse(s, base, base_size, &l->index, &l->generation, ret_error);
                if (r < 0)
                        return r;
                l->base_size = base_size;
        }
        if (journal_fd >= 0) {
                r = read_fd_capped(journal_fd, s->journal_path, s->read_cap, &journal, &journal_size, ret_error);
                if (r < 0)
                        return r;
                r = journal_replay(s, journal, journal_size, l->generation, &l->index, &l->journal);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int entries_copy(const Index *idx, StoreEntry **ret, size_t *ret_n) {
        StoreEntry *entries;
        size_t i = 0;

        entries = new0(StoreEntry, idx->n);
        if (!entries)
                return -ENOMEM;
        for (const Entry *e = idx->first; e; e = e->next, i++) {
                entries[i].name = strdup(e->name);
                entries[i].xml = memdup_nul(e->xml, e->xml_len);
                if (!entries[i].name || !entries[i].xml) {
                        store_entries_free(entries, i + 1);
                        return -ENOMEM;
                }
        }
        *ret = entries;
        *ret_n = idx->n;
        return 0;
}

int store_load(Store *s, StoreEntry **ret_entries, size_t *ret_n, char **ret_current, char **ret_error) {
        _cleanup_free_ char *error = NULL, *current = NULL;
        StoreEntry *entries = NULL;
        Loaded l = {};
        size_t n = 0;
        int r;

        r = load_files(s, &l, &error);
        if (r >= 0 && ret_entries)
                r = entries_copy(&l.index, &entries, &n);
        if (r >= 0 && ret_current && l.index.current) {
                current = strdup(l.index.current->name);
                if (!current)
                        r = -ENOMEM;
        }
        if (r < 0) {
                index_done(&l.index);
                store_entries_free(entries, n);
                if (ret_error)
                        *ret_error = error ? TAKE_PTR(error) : strprintf("Cannot load %s: %s", s->base_path, strerror(-r));
                return r;
        }

        index_done(&s->index);
        s->index = l.index;
        s->loaded = true;
        s->generation = l.generation;
        s->base_size = l.base_size;
        s->journal_size = l.journal.valid_size;
        s->journal_fd = safe_close(s->journal_fd);
        s->n_stale_records = l.journal.n_stale;
        s->ignored_bytes = l.journal.ignored_bytes;
        s->needs_compaction = l.journal.n_stale > 0 || l.journal.ignored_bytes > 0;

        if (ret_entries)
                *ret_entries = entries;
        if (ret_n)
                *ret_n = n;
        if (ret_current)
                *ret_current = TAKE_PTR(current);
        return 0;
}

/* ---- writing ---- */

static int fsync_directory(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

/* Leftovers of write_file_atomic() killed between create and rename. */
static void remove_temporary_files(Store *s) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ char *p1 = NULL, *p2 = NULL;
        struct dirent *de;

        if (s->temporary_files_cleaned)
                return;
        p1 = strprintf("%s.xml.tmp-", s->basename);
        p2 = strprintf("%s.journal.tmp-", s->basename);
        d = opendir(s->dir);
        if (!p1 || !p2 || !d)
                return;
        while ((de = readdir(d))) {
                const char *suffix = NULL;

                if (strncmp(de->d_name, p1, strlen(p1)) == 0)
                        suffix = de->d_name + strlen(p1);
                else if (strncmp(de->d_name, p2, strlen(p2)) == 0)
                        suffix = de->d_name + strlen(p2);
                if (isempty(suffix) || strspn(suffix, "0123456789") != strlen(suffix))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        log_debug_errno(errno, "Cannot remove %s/%s: %m", s->dir, de->d_name);
        }
        s->temporary_files_cleaned = true;
}

/* Writes the whole index as the bulk file of the next generation and
 * starts an empty journal. The bulk file's rename is the commit point. */
static int store_compact(Store *s) {
        _cleanup_free_ char *buf = NULL;
        uint64_t gen = s->generation + 1;
        size_t size;
        int r;

        r = base_format(s, &s->index, gen, &buf, &size);
        if (r < 0)
                return log_error_errno(r, "Cannot format %s: %m", s->base_path);
        r = mkdir_p(s->dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Cannot create %s: %m", s->dir);

        r = write_file_atomic(s->base_path, buf, size, 0600);
        /* Even on failure the rename may have happened (only the folder's
         * fsync failed): this generation number is used up either way, and
         * the next commit rewrites the file from memory. */
        s->generation = gen;
        if (r < 0) {
                s->needs_compaction = true;
                return log_error_errno(r, "Failed to write %s: %m", s->base_path);
        }
        s->base_size = size;
        s->n_compactions++;

        s->journal_fd = safe_close(s->journal_fd);
        r = write_file_atomic(s->journal_path, "", 0, 0600);
        if (r < 0) {
                /* Committed all the same: the old records are now stale. */
                log_warning_errno(r, "Failed to replace %s (its records are older than %s and ignored); retrying at the next change: %m",
                                  s->journal_path, s->base_path);
                s->needs_compaction = true;
                return 0;
        }
        s->journal_size = 0;
        s->needs_compaction = false;
        return 0;
}

/* Opens the journal for appending, creating it (durably) when missing.
 * -ESTALE when it is not what we loaded: then the caller compacts. */
static int journal_open(Store *s) {
        struct stat st;
        int fd, r;

        /* One fstat() per append: cheap next to the fdatasync(), and it
         * catches a journal truncated or replaced behind our back. */
        if (s->journal_fd >= 0) {
                if (fstat(s->journal_fd, &st) >= 0 && (uint64_t) st.st_size == s->journal_size && st.st_nlink > 0)
                        return 0;
                s->journal_fd = safe_close(s->journal_fd);
                return -ESTALE;
        }
        fd = open(s->journal_path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT && s->journal_size == 0) {
                r = mkdir_p(s->dir, 0700);
                if (r < 0)
                        return log_error_errno(r, "Cannot create %s: %m", s->dir);
                r = write_file_atomic(s->journal_path, "", 0, 0600);
                if (r < 0)
                        return log_error_errno(r, "Cannot create %s: %m", s->journal_path);
                fd = open(s->journal_path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        }
        if (fd < 0) {
                if (errno == ENOENT)
                        return -ESTALE;
                return log_error_errno(errno, "Cannot open %s: %m", s->journal_path);
        }
        if (fstat(fd, &st) < 0 || (uint64_t) st.st_size != s->journal_size) {
                safe_close(fd);
                return -ESTALE;
        }
        s->journal_fd = fd;
        return 0;
}

static int journal_append(Store *s, const char *rec, size_t size) {
        size_t done = 0;
        int r;

        while (done < size) {
                ssize_t k = pwrite(s->journal_fd, rec + done, size - done, (off_t) (s->journal_size + done));

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        r = k < 0 ? -errno : -EIO;
                        goto fail;
                }
                done += (size_t) k;
        }
        if (fdatasync(s->journal_fd) < 0) {
                r = -errno;
                goto fail;
        }
        s->journal_size += size;
        return 0;

fail:
        /* Take back what may have reached the file. If even that fails, the
         * next commit replaces the journal, making these bytes stale. */
        if (ftruncate(s->journal_fd, (off_t) s->journal_size) < 0 || fdatasync(s->journal_fd) < 0)
                s->needs_compaction = true;
        return log_error_errno(r, "Failed to append to %s: %m", s->journal_path);
}

static uint64_t journal_limit(const Store *s) {
        uint64_t t = s->compaction_threshold ?: MAX(COMPACTION_MIN, s->base_size);

        return MIN(t, s->read_cap);
}

static const char *skip_space(const char *p) {
        while (store_is_space(*p))
                p++;
        return p;
}

typedef struct Checked {
        Op *ops;
        char **names; /* PUT names parsed from the XML */
        size_t n;
} Checked;

static void checked_done(Checked *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->names[i]);
        free(c->names);
        free(c->ops);
}

/* Public ops to internal ones; each PUT's XML checked. Logs. */
static int ops_check(const Store *s, const StoreOp *ops, size_t n_ops, Checked *c) {
        c->ops = new0(Op, n_ops);
        c->names = new0(char *, n_ops);
        if (!c->ops || !c->names)
                return log_oom();
        c->n = n_ops;

        for (size_t i = 0; i < n_ops; i++) {
                const StoreOp *op = ops + i;
                Op *o = c->ops + i;

                if ((unsigned) op->type > STORE_OP_CURRENT)
                        return log_error_errno(EINVAL, "%s: unknown op type %d.", s->base_path, (int) op->type);
                o->type = op->type;
                switch (op->type) {
                case STORE_OP_PUT: {
                        _cleanup_free_ char *error = NULL;
                        const char *start, *end;
                        int r;

                        if (!op->xml)
                                return log_error_errno(EINVAL, "%s: PUT without XML.", s->base_path);
                        start = skip_space(op->xml);
                        end = start + strlen(start);
                        while (end > start && store_is_space(end[-1]))
                                end--;
                        r = entry_parse(start, (size_t) (end - start), s->entry_element, &c->names[i], &error);
                        if (r == -EINVAL) {
                                _cleanup_free_ char *quoted = store_quote(strempty(op->name));
                                return log_error_errno(r, "%s: entry '%s' refused: %s", s->base_path, strna(quoted), error);
                        }
                        if (r < 0)
                                return log_error_errno(r, "%s: cannot check entry XML: %m", s->base_path);
                        if (op->name && !streq(op->name, c->names[i])) {
                                _cleanup_free_ char *q1 = store_quote(op->name), *q2 = store_quote(c->names[i]);
                                return log_error_errno(EINVAL, "%s: PUT of '%s' with XML whose <name> is '%s'.",
                                                       s->base_path, strna(q1), strna(q2));
                        }
                        o->name = c->names[i];
                        o->name_len = strlen(o->name);
                        o->xml = start;
                        o->xml_len = (size_t) (end - start);
                        break;
                }
                case STORE_OP_DELETE:
                case STORE_OP_CURRENT:
                        if (op->type == STORE_OP_DELETE && !op->name)
                                return log_error_errno(EINVAL, "%s: DELETE without a name.", s->base_path);
                        if (op->name && !op->name[0])
                                return log_error_errno(EINVAL, "%s: empty entry name.", s->base_path);
                        o->name = op->name;
                        o->name_len = op->name ? strlen(op->name) : 0;
                        break;
                }
        }
        return 0;
}

int store_commit(Store *s, const StoreOp *ops, size_t n_ops) {
        _cleanup_(checked_done) Checked c = {};
        _cleanup_free_ char *rec = NULL;
        uint64_t new_size;
        size_t rec_size;
        Txn t;
        int r;

        if (!s || (!ops && n_ops > 0))
                return -EINVAL;
        if (n_ops == 0)
                return 0;
        if (!s->loaded) {
                _cleanup_free_ char *error = NULL;

                r = store_load(s, NULL, NULL, NULL, &error);
                if (r < 0)
                        return log_error_errno(r, "%s", error);
        }

        remove_temporary_files(s);
        r = ops_check(s, ops, n_ops, &c);
        if (r < 0)
                return r;

        r = txn_begin(&t, &s->index, n_ops);
        if (r < 0)
                return log_oom();
        for (size_t i = 0; i < n_ops; i++) {
                r = txn_apply(&t, &s->index, c.ops + i);
                if (r == -ENOENT) {
                        _cleanup_free_ char *quoted = store_quote(c.ops[i].name);
                        log_error_errno(r, "%s: %s of '%s', which is not there.", s->base_path,
                                        c.ops[i].type == STORE_OP_DELETE ? "DELETE" : "CURRENT", strna(quoted));
                        goto fail;
                }
                if (r < 0) {
                        log_oom();
                        goto fail;
                }
        }

        /* Whatever we write must stay readable under the cap. */
        new_size = base_file_size(s, &s->index, s->generation + 1);
        if (new_size > s->read_cap) {
                r = log_error_errno(EFBIG, "%s would grow to %" PRIu64 " bytes, more than the metadata read cap of %" PRIu64
                                    " bytes; raise the cap (qsnapd --metadata-read-cap=BYTES) first.",
                                    s->base_path, new_size, s->read_cap);
                goto fail;
        }

        r = record_encode(s->generation, c.ops, n_ops, &rec, &rec_size);
        if (r < 0) {
                log_error_errno(r, "%s: cannot encode the transaction: %m", s->journal_path);
                goto fail;
        }

        r = -ESTALE;
        if (!s->needs_compaction && s->journal_size + rec_size <= journal_limit(s)) {
                r = journal_open(s);
                if (r >= 0)
                        r = journal_append(s, rec, rec_size);
        }
        if (r == -ESTALE)
                r = store_compact(s);
        if (r < 0)
                goto fail;

        txn_finish(&t);
        return 0;

fail:
        txn_rollback(&t, &s->index);
        return r;
}

int store_remove(Store *s) {
        _cleanup_free_ char *error = NULL;
        bool atomic = true;
        int r;

        if (!s->loaded && store_load(s, NULL, NULL, NULL, &error) < 0) {
                /* Unreadable: remove it anyway, just not atomically. */
                log_warning("Removing %s although it cannot be read: %s", s->base_path, error);
                atomic = false;
        }

        s->journal_fd = safe_close(s->journal_fd);
        if (atomic && access(s->journal_path, F_OK) >= 0) {
                /* An empty bulk file of a newer generation first: from then on
                 * the state is "empty" whatever else a crash leaves behind. */
                Index empty = {};
                _cleanup_free_ char *buf = NULL;
                size_t size;

                r = base_format(s, &empty, s->generation + 1, &buf, &size);
                if (r < 0)
                        return log_oom();
                r = write_file_atomic(s->base_path, buf, size, 0600);
                s->generation++; /* used up even on failure, see store_compact() */
                if (r < 0) {
                        s->needs_compaction = true;
                        return log_error_errno(r, "Failed to write %s: %m", s->base_path);
                }
                /* Memory follows the disk at once, should an unlink below fail. */
                index_done(&s->index);
                s->base_size = size;
                s->needs_compaction = true;
        }
        if (unlink(s->journal_path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove %s: %m", s->journal_path);
        if (unlink(s->base_path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove %s: %m", s->base_path);
        remove_temporary_files(s);
        r = fsync_directory(s->dir);
        if (r < 0 && r != -ENOENT)
                return log_error_errno(r, "Failed to sync %s: %m", s->dir);

        index_done(&s->index);
        s->loaded = true;
        s->generation = 0;
        s->base_size = 0;
        s->journal_size = 0;
        s->needs_compaction = false;
        return 0;
}
