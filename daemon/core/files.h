/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * File references and metadata renames, shared by every operation that
 * merges, commits or discards image files (snapshot delete, revert, block
 * commit): what snapshots record, the file graph of a disk, the metadata
 * transaction, and removing what nothing references. No D-Bus in here.
 */
#pragma once

#include <sys/types.h>

#include "core/domain.h"

/* Where disk `target`'s file `from` is named, `to` is named from now on. */
typedef struct FileRename {
        char *target;
        char *from, *to;
        DiskFormat to_format;
        bool recorded;        /* also in the embedded <domain>s (what snapshots froze) */
} FileRename;

/* The source (format) of disk `target` in the <domain> the snapshot
 * recorded; NULL (qcow2) when it recorded none. */
char *snapshot_recorded_source(const SnapshotDef *def, const char *target);
DiskFormat snapshot_recorded_format(const SnapshotDef *def, const char *target);
/* A disk of a snapshot's XML, by target name. */
const SnapshotDisk *snapshot_def_find_disk(const SnapshotDef *def, const char *target);

/* The folder of a file ("." for a bare name). */
char *file_dir_of(const char *file);

typedef struct FileGraph {
        char **files;         /* every file seen */
        char **backings;      /* per file: its backing file ("" for none) */
        DiskFormat *formats;  /* per file */
        size_t n;
        char **foreign;       /* qcow2 files in the same folders that nothing of ours names */
        char **foreign_backings;
        bool unreadable;      /* a file that exists had a chain the gate would not read */
} FileGraph;

void file_graph_done(FileGraph *g);
ssize_t file_graph_find(const FileGraph *g, const char *file);
/* Every file of disk `target` that the domain or any snapshot names, with
 * its chain. */
int file_graph_build(Domain *d, const char *target, FileGraph *g);
/* Adds the qcow2 images in the folders of the graph's files that the
 * graph does not know (foreign): never touched, but what they read stays. */
int file_graph_scan_folders(FileGraph *g);
size_t file_graph_foreign_overlays(const FileGraph *g, const char *file);
/* The files whose backing file is `file` (an empty list, never NULL unless
 * out of memory). */
char **file_graph_overlays(const FileGraph *g, const char *file);

/* The renames applied to the domain's definitions (stored, Disks emitted). */
void domain_apply_renames(Domain *d, const FileRename *renames, size_t n);
/* Removes the victims' metadata and applies the renames to every other
 * snapshot, in one store transaction, then tells the observers. */
int snapshot_metadata_commit(Domain *d, Snapshot *const *victims, size_t n_victims, const FileRename *renames,
                             size_t n_renames, char **ret_message);

/* A block commit merged the files `from` of disk `target` into `into`:
 * every snapshot that names one of them (<source>, <revertDisks>, the
 * recorded <domain>) names `into` from now on, in one store transaction.
 * Logs a failure. */
int snapshot_metadata_rename_files(Domain *d, const char *target, char *const *from, const char *into);

/* Removes those of `files` that nothing reads or names any more: no
 * chain of the domain, no snapshot's metadata (<source>, <revertDisks>,
 * recorded <domain>, memory file), no image beside it based on it. */
void domain_remove_unreferenced_files(Domain *d, char *const *files);
