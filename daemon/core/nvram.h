/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A UEFI domain's variable store (NVRAM), the service snapshot create,
 * revert and delete share: its default path, its creation from the
 * template before QEMU starts, the pflash node an internal snapshot
 * includes, and the copy an external snapshot keeps of it. No D-Bus in
 * here.
 *
 * Files: <state>/nvram/<uuid>_VARS.fd (raw) or .qcow2 unless <nvram> names
 * one; an external snapshot's copy is "<store>.<snapshot name>" beside the
 * store ('/' in the name becomes '_'), 0600, recorded in the snapshot's
 * metadata (<qsnap:nvram file=…/>).
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"

/* The QEMU node names of the two pflash devices. */
#define NVRAM_CODE_NODE "pflash0"
#define NVRAM_VARS_NODE "pflash1"

/* The firmware of def, NULL when it boots BIOS. */
static inline const DomainFirmware *def_firmware(const DomainDef *def) {
        return def && def->firmware.loader ? &def->firmware : NULL;
}

/* DefineDomain: a <loader> without an <nvram> path gets the default one. */
int nvram_def_fill(Manager *m, DomainDef *def);

/* Where manage-domains may point <loader>/<nvram template>: the system's
 * firmware folders (/usr/share/OVMF, /usr/share/qemu, /usr/share/edk2…). */
bool nvram_firmware_path_is_system(const char *path);

/* Before QEMU starts: a missing store is made from the template (a copy,
 * or qemu-img convert to qcow2). -QSNAP_E_QEMU_FAILED with the reason. */
int nvram_prepare(const DomainDef *def, char **ret_message);

/* Internal snapshots (snapshot-save, qemu-img snapshot): 0 without UEFI,
 * 1 when the store is qcow2 and goes into the snapshot as NVRAM_VARS_NODE,
 * -QSNAP_E_UNSUPPORTED with the reason when it is raw. */
int nvram_check_internal(const DomainDef *def, char **ret_message);

/* External snapshots: the copy's path for snapshot `name`. */
char *nvram_snapshot_path(const DomainDef *def, const char *name);
/* Copies the store (as it is now) to path: created exclusively, 0600,
 * fsynced. */
int nvram_snapshot_save(const DomainDef *def, const char *path, char **ret_message);
/* Puts a copy back as the store (QEMU not running): written beside it and
 * renamed over it. *ret_old (may be NULL) gets the store's old bytes, for
 * an undo with nvram_restore_bytes(). */
int nvram_snapshot_restore(const DomainDef *def, const char *path, char **ret_old, size_t *ret_old_size,
                           char **ret_message);
int nvram_restore_bytes(const DomainDef *def, const char *data, size_t size);
/* The copy is only ever in the store's folder: a path elsewhere (metadata
 * from a REDEFINE) is not touched. */
bool nvram_snapshot_path_ok(const DomainDef *def, const char *path);
