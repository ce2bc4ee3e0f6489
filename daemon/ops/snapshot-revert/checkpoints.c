/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CheckRevert's note on checkpoints (docs/checkpoints.md §2.9): which
 * usable checkpoints a revert would leave unusable for incremental
 * backups. Judged from the metadata and the frozen files' headers, never
 * by running qemu-img (CheckRevert answers anybody, before polkit).
 */
#include "core/gate.h"
#include "ops/snapshot-revert/internal.h"
#include "qemu/image.h"
#include "util/util.h"

static const RevertDisk *reverted_disk(const RevertPlan *p, const char *target) {
        for (size_t i = 0; i < p->n_disks; i++)
                if (streq(p->disks[i].target, target))
                        return p->disks + i;
        return NULL;
}

/* External: the checkpoint's bitmap on this disk lives in the image that
 * was the disk's active file when it was made (its recorded <domain>), and
 * follows to overlays made after: it is in the frozen chain exactly when
 * that image is one of the chain's layers. */
static bool kept_by_external(const RevertPlan *p, const Checkpoint *c, const RevertDisk *rd,
                             const ImageChain *chain) {
        _cleanup_(domain_def_freep) DomainDef *rec = NULL;
        _cleanup_free_ char *why = NULL;
        const DomainDisk *disk;

        if (!c->def->domain_xml ||
            domain_def_parse(c->def->domain_xml, strlen(c->def->domain_xml), &rec, &why) < 0 ||
            !(disk = domain_def_find_disk(rec, rd->target)))
                /* No record: only a checkpoint older than the snapshot can be in its files. */
                return p->snapshot_time > 0 && c->def->has_creation_time && c->def->creation_time < p->snapshot_time;
        for (size_t k = 0; k < chain->n_layers; k++)
                if (streq(chain->layers[k].path, disk->source))
                        return true;
        return false;
}

int revert_plan_checkpoint_note(const RevertPlan *p, char **ret) {
        Domain *d = p->domain;
        _cleanup_free_ ImageChain *chains = new0(ImageChain, p->n_disks + 1);
        _cleanup_strv_free_ char **quoted = NULL;
        _cleanup_free_ char *names = NULL;
        size_t n = 0;

        if (!chains)
                return -ENOMEM;
        for (size_t i = 0; p->external && i < p->n_disks; i++) {
                _cleanup_free_ char *why = NULL;

                /* Unreadable: treated as holding nothing (Revert itself would say why). */
                (void) gate_read_chain(d, p->disks[i].file, p->disks[i].format, chains + i, &why);
        }
        for (Checkpoint *c = d->checkpoints.first; c; c = c->next) {
                bool lost = false;

                if (c->problems)
                        continue; /* unusable already */
                for (size_t k = 0; k < c->def->n_disks && !lost; k++) {
                        const CheckpointDisk *cd = c->def->disks + k;
                        const RevertDisk *rd = cd->type == CHECKPOINT_TYPE_BITMAP ? reverted_disk(p, cd->name) : NULL;

                        if (rd)
                                lost = !p->external || !kept_by_external(p, c, rd, chains + (rd - p->disks));
                }
                if (!lost)
                        continue;
                if (strv_extendf(&quoted, "'%s'", c->def->name) < 0)
                        goto oom;
                n++;
        }
        for (size_t i = 0; i < p->n_disks; i++)
                image_chain_done(chains + i);
        if (n == 0) {
                *ret = NULL;
                return 0;
        }
        names = strv_join(quoted, ", ");
        if (!names)
                return -ENOMEM;
        *ret = p->external
                ? strprintf("%s %s become%s unusable for incremental backups: %s not in the files snapshot '%s' "
                            "froze (made after it, or on another branch); take a full backup after the revert.",
                            n == 1 ? "Checkpoint" : "Checkpoints", names, n == 1 ? "s" : "", n == 1 ? "its bitmap is"
                                                                                              : "their bitmaps are",
                            p->name)
                : strprintf("%s %s become%s unusable for incremental backups: reverted to internal snapshot '%s', "
                            "which changes data no bitmap records; take a full backup after the revert.",
                            n == 1 ? "Checkpoint" : "Checkpoints", names, n == 1 ? "s" : "", p->name);
        return *ret ? 0 : -ENOMEM;
oom:
        for (size_t i = 0; i < p->n_disks; i++)
                image_chain_done(chains + i);
        return -ENOMEM;
}
