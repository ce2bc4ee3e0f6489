/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Typed wrappers around qmp_send(): the only place that knows QMP command
 * and argument spellings. Each wrapper builds the arguments and sends; the
 * reply arrives through the generic qmp_reply_func_t. Parsers turn a
 * "return" value into plain C values.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include "qemu/qmp.h"
#include "store/xml-domain.h"

int64_t qmp_cmd_query_status(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_stop(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_cont(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_quit(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_system_powerdown(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_human_monitor_command(Qmp *qmp, const char *command_line, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_query_block(Qmp *qmp, qmp_reply_func_t cb, void *userdata);

/* QEMU run states ("running", "paused", "postmigrate", …) as QEMU spells
 * them, mapped onto ours by the caller. */
typedef enum QmpRunState {
        QMP_RUN_STATE_RUNNING,
        QMP_RUN_STATE_PAUSED,   /* paused, prelaunch, postmigrate, finish-migrate, restore-vm, inmigrate, suspended, io-error, debug, save-vm, colo, watchdog */
        QMP_RUN_STATE_CRASHED,  /* guest-panicked, internal-error */
        QMP_RUN_STATE_SHUTDOWN, /* shutdown */
        _QMP_RUN_STATE_MAX,
        _QMP_RUN_STATE_INVALID = -EINVAL,
} QmpRunState;

/* From the "return" of query-status. -EBADMSG when malformed. */
int qmp_parse_query_status(json_object *result, QmpRunState *ret_state, char **ret_status_text);

/* The string reply of human-monitor-command. */
int qmp_parse_string(json_object *result, const char **ret);

/* From the "return" of query-block: for each device entry with a qdev
 * path, its qdev and inserted node-name. Arrays end with a NULL entry. */
typedef struct QmpBlockInfo {
        char *qdev;      /* "/machine/peripheral/vda/virtio-backend" */
        char *node_name; /* inserted.node-name, may be NULL */
        char *file;      /* inserted.file, may be NULL */
} QmpBlockInfo;
int qmp_parse_query_block(json_object *result, QmpBlockInfo **ret, size_t *ret_n);
void qmp_block_info_free_many(QmpBlockInfo *infos, size_t n);

/* Descriptors instead of paths: QEMU opens no image, no memory file
 * itself. An fd set holds an image's descriptors (read-write and
 * read-only: QEMU takes the one whose mode fits each (re)open), and
 * "/dev/fdset/N" is the file name that opens from set N. */
char *qmp_fdset_path(unsigned fdset_id);
/* N of "/dev/fdset/N"; -EINVAL for any other name. */
int qmp_parse_fdset_path(const char *filename, unsigned *ret_fdset_id);
/* add-fd: a copy of fd into set fdset_id (opaque: a note QEMU keeps). */
int64_t qmp_cmd_add_fd(Qmp *qmp, unsigned fdset_id, int fd, const char *opaque, qmp_reply_func_t cb, void *userdata);
/* remove-fd: the whole set; QEMU closes it once no node uses it. */
int64_t qmp_cmd_remove_fd(Qmp *qmp, unsigned fdset_id, qmp_reply_func_t cb, void *userdata);
/* getfd: a copy of fd under a name, for "fd:NAME" migration URIs. */
int64_t qmp_cmd_getfd(Qmp *qmp, const char *name, int fd, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_closefd(Qmp *qmp, const char *name, qmp_reply_func_t cb, void *userdata);

/* The cache mode of the nodes QEMU opens for a disk (<driver cache= io=>,
 * libvirt's mapping): given: cache.direct and cache.no-flush go on the
 * format node and on its file node; aio: the file node's, NULL for QEMU's
 * default (threads). All zero: QEMU's defaults, nothing sent. */
typedef struct QmpCache {
        bool given;
        bool direct;
        bool no_flush;
        const char *aio;
} QmpCache;

QmpCache qmp_cache_of(DiskCache cache, DiskIo io);
/* Adds c to a format node's options and its file node's (either NULL:
 * not that one). -EINVAL for aio=native without direct (QEMU refuses it). */
int qmp_cache_apply(const QmpCache *c, json_object *format_node, json_object *file_node);

/* Block graph and external snapshots. */
/* A new qcow2 overlay (no backing yet) in the disk's cache mode. */
int64_t qmp_cmd_blockdev_add_overlay(Qmp *qmp, const char *node, const char *filename, const QmpCache *cache,
                                     qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_blockdev_del(Qmp *qmp, const char *node, qmp_reply_func_t cb, void *userdata);
/* One transaction of blockdev-snapshot actions: node[i] gets overlay[i]. */
int64_t qmp_cmd_transaction_blockdev_snapshot(Qmp *qmp, const char *const *nodes, const char *const *overlays, size_t n,
                                              qmp_reply_func_t cb, void *userdata);

/* Internal snapshots and jobs. */
int64_t qmp_cmd_snapshot_save(Qmp *qmp, const char *job_id, const char *tag, const char *vmstate_node,
                              const char *const *devices, size_t n, qmp_reply_func_t cb, void *userdata);
/* snapshot-delete: removes internal snapshot `tag` from each device node (a job). */
int64_t qmp_cmd_snapshot_delete(Qmp *qmp, const char *job_id, const char *tag, const char *const *devices, size_t n,
                                qmp_reply_func_t cb, void *userdata);
/* snapshot-load: same arguments as snapshot-save; a failure leaves QEMU
 * stopped in run state restore-vm. */
int64_t qmp_cmd_snapshot_load(Qmp *qmp, const char *job_id, const char *tag, const char *vmstate_node,
                              const char *const *devices, size_t n, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_job_dismiss(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_query_jobs(Qmp *qmp, qmp_reply_func_t cb, void *userdata);

typedef struct QmpJobInfo {
        const char *id, *type, *status, *error; /* borrowed from the reply */
        uint64_t current, total;
} QmpJobInfo;
/* 1 and *ret filled when job_id is in the query-jobs reply, 0 when not. */
int qmp_parse_query_jobs(json_object *result, const char *job_id, QmpJobInfo *ret);
/* JOB_STATUS_CHANGE data. */
int qmp_parse_job_status_change(json_object *data, const char **ret_id, const char **ret_status);

/* Memory state to a file through migration. */
int64_t qmp_cmd_migrate_enable_events(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
/* migrate / migrate-incoming through a descriptor given with getfd. */
int64_t qmp_cmd_migrate_to_fd(Qmp *qmp, const char *fdname, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_migrate_incoming_fd(Qmp *qmp, const char *fdname, qmp_reply_func_t cb, void *userdata);
/* A QEMU started with -incoming defer loads the state from uri. */
int64_t qmp_cmd_migrate_incoming(Qmp *qmp, const char *uri, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_query_migrate(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
/* Stops an outgoing migration that is still running (nothing when none is). */
int64_t qmp_cmd_migrate_cancel(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int qmp_parse_query_migrate(json_object *result, const char **ret_status, const char **ret_error);
int qmp_parse_migration_event(json_object *data, const char **ret_status);

/* query-chardev, and the pty behind chardev `label` in its reply
 * ("filename": "pty:/dev/pts/N" → "/dev/pts/N"); NULL when there is none. */
int64_t qmp_cmd_query_chardev(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
/* add_client: the descriptor given with getfd as fdname becomes a client
 * of QEMU's vnc or spice server (its authentication as for any client). */
int64_t qmp_cmd_add_client(Qmp *qmp, const char *protocol, const char *fdname, qmp_reply_func_t cb, void *userdata);
const char *qmp_parse_chardev_pty(json_object *result, const char *label);

int64_t qmp_cmd_qom_get(Qmp *qmp, const char *path, const char *property, qmp_reply_func_t cb, void *userdata);
/* The node name of the root of the block graph under a virtio-blk disk
 * (device id = its target name); the reply is a string. */
int64_t qmp_cmd_disk_root_node(Qmp *qmp, const char *device_id, qmp_reply_func_t cb, void *userdata);
/* Flushes the disk's root node (metadata caches and the file) to stable
 * storage; the reply is HMP's string, "" on success. */
int64_t qmp_cmd_flush_disk(Qmp *qmp, const char *device_id, qmp_reply_func_t cb, void *userdata);

/* ---- block jobs (job.c) ----
 * Every block job is started with "auto-finalize": false and
 * "auto-dismiss": false, so that its end waits in QEMU ("pending", then
 * "concluded") until we took note of it, also across a restart of ours.
 * speed: bytes per second, 0 = unlimited (then not sent); -EINVAL above
 * INT64_MAX. Optional strings may be NULL (then not sent). */

/* block-stream: pull into `device` (a node name) what lies above base_node
 * (NULL: the whole chain). backing_file: the name to write into the
 * header, NULL for QEMU's choice. */
int64_t qmp_cmd_block_stream(Qmp *qmp, const char *job_id, const char *device, const char *base_node,
                             const char *backing_file, uint64_t speed, qmp_reply_func_t cb, void *userdata);
/* block-commit: top_node (NULL: the active layer, an active commit that
 * reaches READY and needs job-complete) into base_node (NULL: the bottom). */
int64_t qmp_cmd_block_commit(Qmp *qmp, const char *job_id, const char *device, const char *top_node,
                             const char *base_node, const char *backing_file, uint64_t speed, qmp_reply_func_t cb,
                             void *userdata);
/* blockdev-mirror onto an existing node; sync: "full", "top" or "none". */
int64_t qmp_cmd_blockdev_mirror(Qmp *qmp, const char *job_id, const char *device, const char *target,
                                const char *sync, uint64_t speed, qmp_reply_func_t cb, void *userdata);

/* The target node of a copy: format "qcow2" or "raw" on a file node;
 * backing_node (qcow2 only): NULL for "backing": null, else the node it
 * stands on; cache: for node and file (qmp_cache_apply(); aio=native, Linux
 * AIO from QEMU's thread, needs direct); preallocate: QEMU's preallocate
 * filter between the format node and the file, which extends the file
 * ahead of the writes in big steps (and trims it back when the node goes). */
int64_t qmp_cmd_blockdev_add_copy_target(Qmp *qmp, const char *node, const char *format, const char *filename,
                                         const char *backing_node, const QmpCache *cache, bool preallocate,
                                         qmp_reply_func_t cb, void *userdata);
/* blockdev-mirror for BlockCopy: write_blocking = "copy-mode":
 * "write-blocking" (guest writes reach the target before they complete);
 * buf_size 0 = QEMU's default. */
int64_t qmp_cmd_blockdev_mirror_copy(Qmp *qmp, const char *job_id, const char *device, const char *target,
                                     const char *sync, uint64_t speed, bool write_blocking, uint64_t buf_size,
                                     qmp_reply_func_t cb, void *userdata);

/* The job-* verbs name the job by "id"; the block-job-* ones by "device"
 * (which is the job id too). */
int64_t qmp_cmd_job_complete(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_job_finalize(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_job_pause(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_job_resume(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata);
/* job-cancel: always a hard cancel; works on any job, also in "pending". */
int64_t qmp_cmd_job_cancel(Qmp *qmp, const char *job_id, qmp_reply_func_t cb, void *userdata);
/* block-job-cancel: without force, a mirror that is READY ends keeping a
 * consistent copy (and emits BLOCK_JOB_COMPLETED, not CANCELLED). */
int64_t qmp_cmd_block_job_cancel(Qmp *qmp, const char *job_id, bool force, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_block_job_set_speed(Qmp *qmp, const char *job_id, uint64_t speed, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_query_block_jobs(Qmp *qmp, qmp_reply_func_t cb, void *userdata);

/* Every entry of a query-jobs "return" (strings borrowed from it); the
 * array is freed with free(). Entries need "id" and "status". */
int qmp_parse_query_jobs_all(json_object *result, QmpJobInfo **ret, size_t *ret_n);

/* query-block-jobs entries: "device" is the job id. */
typedef struct QmpBlockJobInfo {
        const char *id, *type; /* borrowed */
        uint64_t len, offset, speed;
        bool paused;           /* paused by the user (job-pause, or an error with on-error=stop) */
} QmpBlockJobInfo;
int qmp_parse_query_block_jobs(json_object *result, QmpBlockJobInfo **ret, size_t *ret_n);

/* The data of BLOCK_JOB_READY / _COMPLETED / _CANCELLED / _PENDING /
 * _ERROR. Strings borrowed; absent members are NULL / has_progress false. */
typedef struct QmpBlockJobEvent {
        const char *id;        /* "device" (the job id), or "id" (BLOCK_JOB_PENDING) */
        const char *type;      /* "commit", "stream", "mirror", "backup", … */
        const char *error;     /* BLOCK_JOB_COMPLETED: QEMU's text when the job failed */
        const char *operation; /* BLOCK_JOB_ERROR: "read" or "write" */
        const char *action;    /* BLOCK_JOB_ERROR: "ignore", "report" or "stop" */
        bool has_progress;     /* len and offset were present */
        uint64_t len, offset, speed;
} QmpBlockJobEvent;
int qmp_parse_block_job_event(json_object *data, QmpBlockJobEvent *ret);

/* query-named-block-nodes, flat (no nested backing images). */
int64_t qmp_cmd_query_named_block_nodes(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
/* The file of one of its entries, also when QEMU shows it as json:{…}
 * (a node whose backing file is not the one its header names). */
int qmp_node_file(json_object *entry, char **ret);
/* In its reply: the format node (not the protocol node) of a file. 1 and
 * *ret_node (borrowed) when found, 0 when not. */
int qmp_find_format_node(json_object *result, const char *file, const char **ret_node);

/* ---- dirty bitmaps (checkpoints, backups) ----
 * A transaction of bitmap actions; each is one of QEMU's
 * block-dirty-bitmap-* transaction actions. */
typedef enum QmpBitmapActionType {
        QMP_BITMAP_ADD,     /* node, name, persistent, disabled, granularity (0: QEMU's) */
        QMP_BITMAP_REMOVE,  /* node, name */
        QMP_BITMAP_DISABLE, /* node, name */
        QMP_BITMAP_MERGE,   /* into bitmap name on node, from sources */
} QmpBitmapActionType;

typedef struct QmpBitmapSource {
        const char *node, *name;
} QmpBitmapSource;

typedef struct QmpBitmapAction {
        QmpBitmapActionType type;
        const char *node, *name;
        bool persistent, disabled;
        uint64_t granularity;
        const QmpBitmapSource *sources;
        size_t n_sources;
} QmpBitmapAction;

/* Appends the n actions to a transaction's "actions" array. */
int qmp_bitmap_actions_append(json_object *actions, const QmpBitmapAction *a, size_t n);
int64_t qmp_cmd_transaction_bitmaps(Qmp *qmp, const QmpBitmapAction *a, size_t n, qmp_reply_func_t cb, void *userdata);
/* The names of the block-dirty-bitmap-add actions on node among actions
 * recorded with qmp_bitmap_actions_append() (*ret NULL: none; freed by
 * the caller, also on an error). */
int qmp_recorded_bitmap_adds(json_object *actions, const char *node, char ***ret);
/* A transaction of actions recorded earlier with qmp_bitmap_actions_append()
 * (a journal's copy; borrowed). */
int64_t qmp_cmd_transaction_recorded(Qmp *qmp, json_object *actions, qmp_reply_func_t cb, void *userdata);

/* ---- backups (ops/backup) ---- */

typedef enum QmpBackupActionType {
        QMP_BACKUP_BITMAP,          /* one bitmap action (above): bitmap_action */
        QMP_BACKUP_BLOCKDEV_BACKUP, /* blockdev-backup {job-id: name, device: node, target, sync[, bitmap]
                                     * [, filter-node-name: filter_node]}, auto-finalize and auto-dismiss false */
} QmpBackupActionType;

typedef struct QmpBackupAction {
        QmpBackupActionType type;
        QmpBitmapAction bitmap_action;      /* QMP_BACKUP_BITMAP */
        const char *node;
        const char *name;
        const char *target, *sync, *bitmap; /* blockdev-backup; bitmap may be NULL */
        const char *filter_node;            /* blockdev-backup: its copy-before-write filter's name, or NULL */
        uint64_t speed;                     /* blockdev-backup: bytes/s, 0 = unlimited */
        bool bulk;                          /* blockdev-backup: a bulk copy (push), in few large requests */
} QmpBackupAction;

/* One transaction of those actions: all happen, or none. A bulk
 * blockdev-backup gets "x-perf": {"max-workers": 8, "max-chunk": 8 MiB}
 * from a QEMU 6.0 or newer (QEMU's default, 64 requests of 1 MiB in
 * flight, copies 10-30 % slower: docs/performance.md, "Backups"). */
int64_t qmp_cmd_transaction_backup(Qmp *qmp, const QmpBackupAction *actions, size_t n, qmp_reply_func_t cb,
                                   void *userdata);
int64_t qmp_cmd_block_dirty_bitmap_remove(Qmp *qmp, const char *node, const char *name, qmp_reply_func_t cb,
                                          void *userdata);
/* nbd-server-start on a UNIX socket (path) or TCP (host, port as a
 * string); tls_creds: the id of a tls-creds-x509 object, or NULL. */
int64_t qmp_cmd_nbd_server_start(Qmp *qmp, const char *unix_path, const char *host, const char *port,
                                 const char *tls_creds, qmp_reply_func_t cb, void *userdata);
/* Also closes every export of the server (QEMU waits for them). */
int64_t qmp_cmd_nbd_server_stop(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
/* A read-only NBD export `name` of node, with the dirty bitmap `bitmap`
 * (NULL: none) as its qemu:dirty-bitmap:<bitmap> meta context; the bitmap
 * is on bitmap_node ({"node", "name"}), or on node or below it when that is
 * NULL. */
int64_t qmp_cmd_block_export_add_nbd(Qmp *qmp, const char *id, const char *node, const char *name, const char *bitmap,
                                     const char *bitmap_node, qmp_reply_func_t cb, void *userdata);
/* blockdev-add {driver: snapshot-access, node-name: node, file: filter}: the
 * point in time a copy-before-write filter keeps, read-only (QEMU 7.1+). */
int64_t qmp_cmd_blockdev_add_snapshot_access(Qmp *qmp, const char *node, const char *filter, qmp_reply_func_t cb,
                                             void *userdata);
/* A tls-creds-x509 server object reading its certificates from dir. */
int64_t qmp_cmd_object_add_tls_creds_x509(Qmp *qmp, const char *id, const char *dir, qmp_reply_func_t cb,
                                          void *userdata);
int64_t qmp_cmd_object_del(Qmp *qmp, const char *id, qmp_reply_func_t cb, void *userdata);

/* One transaction of blockdev-snapshot actions (node[i] gets overlay[i])
 * followed by the bitmap actions (for the new overlays). */
int64_t qmp_cmd_transaction_snapshot_bitmaps(Qmp *qmp, const char *const *nodes, const char *const *overlays, size_t n,
                                             const QmpBitmapAction *a, size_t n_actions, qmp_reply_func_t cb,
                                             void *userdata);

/* blockdev-reopen of a qcow2 format node with its file child and backing
 * node (NULL: none) named, read-only or read-write. */
int64_t qmp_cmd_blockdev_reopen(Qmp *qmp, const char *node, const char *file_node, const char *backing_node,
                                bool read_only, qmp_reply_func_t cb, void *userdata);

typedef struct QmpNodeBitmap {
        char *name;
        bool recording, persistent, inconsistent, busy;
        uint64_t count, granularity;
} QmpNodeBitmap;

typedef struct QmpNode {
        char *node, *drv, *file; /* file: as qmp_node_file() reads it */
        bool read_only;
        QmpNodeBitmap *bitmaps;  /* named ones only (unnamed ones are jobs') */
        size_t n_bitmaps;
} QmpNode;

/* Every entry of a query-named-block-nodes (flat) reply. */
int qmp_parse_named_nodes(json_object *result, QmpNode **ret, size_t *ret_n);
/* The count of bitmap `name` on node `node` in a query-named-block-nodes
 * reply, looked up in place (nothing else of the reply is copied):
 * -ENOENT when the node or its bitmap is not there. */
int qmp_named_nodes_bitmap_count(json_object *result, const char *node, const char *name, uint64_t *ret);
void qmp_nodes_free(QmpNode *nodes, size_t n);
