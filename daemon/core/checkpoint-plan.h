/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A new checkpoint's definition, planned the one way libvirt's rules have
 * it, for every operation that makes one (CreateCheckpoint, BackupBegin's
 * checkpoint_xml): the default name, bitmaps named after the checkpoint,
 * each bitmap disk a qcow2 image with no block job on it, the current
 * checkpoint as parent, the creation time and the domain's XML. Nothing
 * is touched: the operation adds the bitmaps. No D-Bus in here.
 */
#pragma once

#include <stdint.h>

#include "core/domain.h"
#include "store/xml-checkpoint.h"

/* Completes def (parsed, not a REDEFINE) for domain d; now: the seconds
 * since the epoch that name the checkpoint when def has no name and are
 * its creationTime. targets and sources (each may be NULL) get the
 * target and image of each disk that takes a bitmap appended. 0, or a
 * named error with *ret_message:
 *   -QSNAP_E_ALREADY_EXISTS: d has a checkpoint of that name;
 *   -QSNAP_E_UNSUPPORTED:    a bitmap not named after the checkpoint, or a
 *                            bitmap disk whose image is not qcow2;
 *   -QSNAP_E_BUSY:           a block job runs on a bitmap disk;
 * and checkpoint_def_align()'s refusals. */
int checkpoint_plan_define(Domain *d, CheckpointDef *def, int64_t now, char ***targets, char ***sources,
                           char **ret_message);
