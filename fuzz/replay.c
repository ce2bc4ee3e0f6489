/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * meson test fuzz-replay: runs every seed (fuzz/corpus/<target>/) and every
 * regression input (fuzz/regressions/<target>/) through its fuzz target in
 * the normal gcc ASan+UBSan build, so that the inputs the fuzzer found stay
 * fixed without clang. A target aborts on a broken invariant and the
 * sanitizers end the process on memory errors and (at exit) leaks. Fails
 * when a target has no seeds: a replay that runs nothing proves nothing.
 *
 * Usage: fuzz-replay FUZZ_DIR [TARGET [FILE…]]
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "util/util.h"

typedef struct Target {
        const char *name;
        int (*run)(const uint8_t *data, size_t size);
} Target;

static const Target targets[] = {
        { "xml-domain", fuzz_xml_domain },
        { "xml-snapshot", fuzz_xml_snapshot },
        { "store", fuzz_store },
        { "qmp", fuzz_qmp },
        { "image", fuzz_image },
        { "xml-checkpoint", fuzz_xml_checkpoint },
        { "xml-backup", fuzz_xml_backup },
};

static int run_file(const Target *t, const char *path) {
        _cleanup_free_ char *data = NULL;
        size_t size;
        int r;

        r = read_full_file(path, 16U * 1024U * 1024U, &data, &size);
        if (r < 0) {
                fprintf(stderr, "%s: cannot read %s: %s\n", t->name, path, strerror(-r));
                return r;
        }
        /* A copy of exactly size bytes, so ASan sees any read past the end. */
        {
                _cleanup_free_ uint8_t *copy = malloc(size ?: 1);
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, data, size);
                t->run(copy, size);
        }
        return 0;
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Runs every regular file in dir; *ret_n counts them. -ENOENT when dir is missing. */
static int run_dir(const Target *t, const char *dir, unsigned *ret_n) {
        _cleanup_strv_free_ char **names = NULL;
        DIR *d;
        struct dirent *de;
        unsigned n = 0;
        int r;

        d = opendir(dir);
        if (!d)
                return -errno;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.' && !streq(de->d_name, "README.md") && strv_extend(&names, de->d_name) < 0) {
                        closedir(d);
                        return -ENOMEM;
                }
        closedir(d);
        if (names)
                qsort(names, strv_length(names), sizeof(char *), cmp_names);

        for (char **name = names; name && *name; name++) {
                _cleanup_free_ char *path = strjoin(dir, "/", *name);
                struct stat st;

                if (!path)
                        return -ENOMEM;
                if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
                        continue;
                r = run_file(t, path);
                if (r < 0)
                        return r;
                n++;
        }
        *ret_n = n;
        return 0;
}

int main(int argc, char *argv[]) {
        unsigned total = 0;
        int r;

        if (argc < 2) {
                fprintf(stderr, "usage: %s FUZZ_DIR [TARGET [FILE…]]\n", argv[0]);
                return 2;
        }
        for (size_t i = 0; i < ELEMENTSOF(targets); i++) {
                const Target *t = &targets[i];
                _cleanup_free_ char *seeds = NULL, *regressions = NULL;
                unsigned n_seeds = 0, n_regressions = 0;

                if (argc >= 3 && !streq(argv[2], t->name))
                        continue;
                if (argc >= 4) {
                        for (int k = 3; k < argc; k++) {
                                r = run_file(t, argv[k]);
                                if (r < 0)
                                        return 1;
                                printf("%s: %s ok\n", t->name, argv[k]);
                        }
                        return 0;
                }

                seeds = strjoin(argv[1], "/corpus/", t->name);
                regressions = strjoin(argv[1], "/regressions/", t->name);
                if (!seeds || !regressions)
                        return 1;
                r = run_dir(t, seeds, &n_seeds);
                if (r < 0) {
                        fprintf(stderr, "%s: %s: %s\n", t->name, seeds, strerror(-r));
                        return 1;
                }
                if (n_seeds == 0) {
                        fprintf(stderr, "%s: no seeds in %s\n", t->name, seeds);
                        return 1;
                }
                r = run_dir(t, regressions, &n_regressions);
                if (r < 0 && r != -ENOENT) {
                        fprintf(stderr, "%s: %s: %s\n", t->name, regressions, strerror(-r));
                        return 1;
                }
                printf("%s: %u seeds, %u regression inputs: ok\n", t->name, n_seeds, n_regressions);
                fflush(stdout);
                total += n_seeds + n_regressions;
        }
        if (total == 0) {
                fprintf(stderr, "no target named %s\n", argc >= 3 ? argv[2] : "(none)");
                return 1;
        }
        printf("%u inputs replayed\n", total);
        return 0;
}
