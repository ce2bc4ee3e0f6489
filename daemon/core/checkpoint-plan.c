/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A new checkpoint's definition (see checkpoint-plan.h), shared by the
 * operations that create checkpoints.
 */
#include <inttypes.h>

#include "core/checkpoint-plan.h"
#include "core/checkpoint.h"
#include "core/disk.h"
#include "util/util.h"

int checkpoint_plan_define(Domain *d, CheckpointDef *def, int64_t now, char ***targets, char ***sources,
                           char **ret_message) {
        const DomainDef *dom = domain_current_def(d);
        int r;

        if (!def->name && !(def->name = strprintf("%" PRId64, now)))
                return -ENOMEM;
        if (checkpoint_tree_find(&d->checkpoints, def->name)) {
                *ret_message = strprintf("Domain '%s' already has a checkpoint named '%s'.", d->def->name, def->name);
                return -QSNAP_E_ALREADY_EXISTS;
        }
        /* libvirt's qemu driver takes only bitmaps named as the checkpoint. */
        for (size_t i = 0; i < def->n_disks; i++)
                if (def->disks[i].bitmap && !streq(def->disks[i].bitmap, def->name)) {
                        *ret_message = strprintf("Disk %s: bitmap '%s' differs from the checkpoint's name '%s'; a new "
                                                 "checkpoint's bitmaps are named after it.", def->disks[i].name,
                                                 def->disks[i].bitmap, def->name);
                        return -QSNAP_E_UNSUPPORTED;
                }
        r = checkpoint_def_align(def, dom, ret_message);
        if (r < 0)
                return r;
        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *disk = domain_def_find_disk(dom, def->disks[i].name);

                if (def->disks[i].type != CHECKPOINT_TYPE_BITMAP || !disk)
                        continue;
                if (disk->format != DISK_FORMAT_QCOW2) {
                        *ret_message = strprintf("Checkpoint for disk %s unsupported for storage type raw: its image "
                                                 "cannot hold a bitmap.", disk->target);
                        return -QSNAP_E_UNSUPPORTED;
                }
                if (domain_disk_job(d, disk->target)) {
                        *ret_message = strprintf("A block job runs on disk %s of domain '%s'; create the checkpoint "
                                                 "after it ended.", disk->target, d->def->name);
                        return -QSNAP_E_BUSY;
                }
                if ((targets && strv_extend(targets, disk->target) < 0) ||
                    (sources && strv_extend(sources, disk->source) < 0))
                        return -ENOMEM;
        }
        free(def->parent);
        def->parent = d->checkpoints.current ? strdup(checkpoint_name(d->checkpoints.current)) : NULL;
        if (d->checkpoints.current && !def->parent)
                return -ENOMEM;
        def->creation_time = now;
        def->has_creation_time = true;
        def->domain_xml = mfree(def->domain_xml);
        return domain_format_xml(d, false, true, &def->domain_xml);
}
