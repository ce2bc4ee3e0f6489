/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img on descriptors (issue #10 §3). qsnapd opens every file a
 * qemu-img command reads or writes (core/gate.c: through the path gate,
 * the chain as qsnapd's own header reader sees it) and the command line
 * names them "/proc/self/fd/N" in json: specifications that spell out
 * every layer, the bottom one with "backing": null. qemu-img therefore
 * follows no backing name of any header (json: and protocol names
 * included), and a file or folder swapped in after the check cannot
 * redirect it: it reopens the very inode qsnapd opened. Measured on QEMU
 * 7.2: commit, rebase (the new backing given as -b json:…), snapshot -c/-a/
 * -d, info, bitmap, measure and convert all take such names; where a name
 * lands in a header (rebase -b), a second `rebase -u -b <real name>` writes
 * the real one.
 *
 * An ImgCmd is the argument vector plus the descriptors the child gets as
 * 3, 4, … (qemu/child.c); plans made before anything is opened (Delete's)
 * name images by placeholders that core resolves when the command runs.
 * No D-Bus, no path gate in here.
 */
#pragma once

#include <stdbool.h>

#include "qemu/child.h"
#include "store/xml-domain.h"

typedef struct ImgLayer {
        int fd;            /* opened by qsnapd; moves into the ImgCmd */
        DiskFormat format;
} ImgLayer;

typedef struct ImgCmd {
        char **argv;
        int *fds;          /* the child's descriptors 3, 4, … */
        size_t n_fds;
} ImgCmd;

/* QEMU_IMG_BINARY and the subcommand ("commit", "rebase", …). */
int img_cmd_init(ImgCmd *c, const char *subcommand);
void img_cmd_done(ImgCmd *c);
/* Literal arguments, NULL-terminated. */
int img_cmd_add(ImgCmd *c, ...) _sentinel_;
int img_cmd_add_strv(ImgCmd *c, char *const *args);
/* The chain layers[0] (the image) … layers[n-1] (its bottom) as one
 * "json:{…}" name in *ret; the descriptors move into c (all of them, also
 * on failure). */
int img_cmd_chain_name(ImgCmd *c, ImgLayer *layers, size_t n, char **ret);
/* The same, appended as the next argument. */
int img_cmd_add_chain(ImgCmd *c, ImgLayer *layers, size_t n);
/* Whether name is such a "json:{…}" name (every layer a /proc/self/fd/N
 * file, nothing else): what a data-copying `rebase -b json:…` leaves in a
 * header until the header-only rebase writes the real name. */
bool img_name_is_fd_chain(const char *name);

/* Runs it to its end (blocking; short header edits only): the exit
 * status, 128 + signal, or -errno; output in *ret_output. */
int img_cmd_run(ImgCmd *c, char **ret_output);
/* As an asynchronous child (qemu/child.h). The descriptors stay in c:
 * img_cmd_done() once spawned closes qsnapd's copies. */
int img_cmd_spawn(ImgCmd *c, sd_event *e, ChildOutputFunc output, ChildDoneFunc done, void *userdata, Child **ret);

/* Placeholders: a plan names an image before it is opened. IMG_CHAIN: the
 * file and every backing file below it; IMG_LAYER: the file alone (its
 * backing never opened), both through the path gate. */
typedef enum ImgPlaceholder {
        IMG_CHAIN,
        IMG_LAYER,
        IMG_FILE,  /* the file alone, not a domain's image: qsnapd's own UEFI store (no path gate) */
} ImgPlaceholder;

char *img_placeholder(ImgPlaceholder kind, const char *path, DiskFormat format);
/* 1 and the parts when arg is a placeholder (*ret_path points into arg), else 0. */
int img_placeholder_parse(const char *arg, ImgPlaceholder *ret_kind, DiskFormat *ret_format, const char **ret_path);
/* The path a placeholder names, or arg itself (for messages and logs). */
const char *img_arg_display(const char *arg);
