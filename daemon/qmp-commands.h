/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Typed wrappers around qmp_send(): the only place that knows QMP command
 * and argument spellings. Each wrapper builds the arguments and sends; the
 * reply arrives through the generic qmp_reply_func_t. Parsers turn a
 * "return" value into plain C values.
 */
#pragma once

#include <errno.h>
#include <stddef.h>

#include "qmp.h"

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

/* Block graph and external snapshots. */
int64_t qmp_cmd_blockdev_add_overlay(Qmp *qmp, const char *node, const char *filename, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_blockdev_del(Qmp *qmp, const char *node, qmp_reply_func_t cb, void *userdata);
/* One transaction of blockdev-snapshot actions: node[i] gets overlay[i]. */
int64_t qmp_cmd_transaction_blockdev_snapshot(Qmp *qmp, const char *const *nodes, const char *const *overlays, size_t n,
                                              qmp_reply_func_t cb, void *userdata);

/* Internal snapshots and jobs. */
int64_t qmp_cmd_snapshot_save(Qmp *qmp, const char *job_id, const char *tag, const char *vmstate_node,
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
int64_t qmp_cmd_migrate_to_command(Qmp *qmp, const char *shell_command, qmp_reply_func_t cb, void *userdata);
int64_t qmp_cmd_query_migrate(Qmp *qmp, qmp_reply_func_t cb, void *userdata);
int qmp_parse_query_migrate(json_object *result, const char **ret_status, const char **ret_error);
int qmp_parse_migration_event(json_object *data, const char **ret_status);

int64_t qmp_cmd_qom_get(Qmp *qmp, const char *path, const char *property, qmp_reply_func_t cb, void *userdata);
/* The node name of the root of the block graph under a virtio-blk disk
 * (device id = its target name); the reply is a string. */
int64_t qmp_cmd_disk_root_node(Qmp *qmp, const char *device_id, qmp_reply_func_t cb, void *userdata);
