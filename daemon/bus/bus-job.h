/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block job objects at /org/example/Snapshot1/domain/<dom>/job/<id>.
 */
#pragma once

#include "bus/bus-manager.h"
#include "core/domain.h"

#define QSNAP_JOB_INTERFACE "org.example.BlockJob1"

char *bus_job_path(Domain *d, const Job *j);
int bus_job_register(Bus *b);
void bus_job_emit(Bus *b, Domain *d, Job *j, JobEvent e);
