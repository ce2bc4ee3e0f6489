#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Every error each method documents, and the test that provokes it.

MATRIX (below) maps each method of interfaces/*.xml ('Domain.Start') to
each error its doc comment lists ('Busy', 'AccessDenied', ...) and to the
tests that make a call of that method answer that error. It is checked
three ways:

- statically (`tests/errors_matrix.py --check`, the `static` test
  `errors-matrix`): the errors of each method here are exactly those its
  doc lists (a documented error without a provoking test fails, and so
  does a row for an error the doc does not list), and every test named
  exists (file, class, method);
- when a named test runs (tests/lib/qsnaptest.py, QsnapTestCase): the test
  fails unless one of its calls of that method answered that error;
- every error any test receives from our methods must be documented for
  that method, or that test fails (also qsnaptest.py), so the errors a
  method "can return" are collected by provoking them.

    tests/errors_matrix.py            print docs/reliability.md's "## Errors" section
    tests/errors_matrix.py --check    exit 1 when the matrix and interfaces/ disagree, a
                                      test is missing, or the section is not current
    tests/errors_matrix.py --write    rewrite the section in place
    tests/errors_matrix.py --suggest FILE
                                      rows from a run with QSNAPTEST_ERRORS_SEEN=FILE
                                      (what each test received), to extend MATRIX by hand
"""

import argparse
import ast
import collections
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'lib'))
import interface_docs  # noqa: E402

HEADING = '## Errors'

# method -> {error: ['test_file.py Class.test_method', ...]}: up to two
# tests per error, the dedicated ones first (tests/test_errors.py,
# tests/test_auth_matrix.py, tests/test_bad_input.py). Collected from a run
# of the whole suite with QSNAPTEST_ERRORS_SEEN set (--suggest).
MATRIX = {
    'BlockJob1.Abort': {
        'InvalidArgument': ['test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job'],
        'OperationInvalid': ['test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job'],
        'Busy': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'Unsupported': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'QemuFailed': ['test_errors.py InjectedRefusalTest.test_job_controls_refused'],
        'NotRunning': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'BlockJob1.Pivot': {
        'OperationInvalid': [
            'test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job',
            'test_blockjobs.py CommitTest.test_active_commit_pivot',
        ],
        'Busy': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'Unsupported': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'NotRunning': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'QemuFailed': ['test_errors.py InjectedRefusalTest.test_job_controls_refused'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'BlockJob1.SetSpeed': {
        'InvalidArgument': ['test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job'],
        'OperationInvalid': ['test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job'],
        'Unsupported': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'NotRunning': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'QemuFailed': ['test_errors.py InjectedRefusalTest.test_job_controls_refused'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'BlockJob1.Pause': {
        'OperationInvalid': ['test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job'],
        'Unsupported': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'NotRunning': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'QemuFailed': ['test_errors.py QemuRefusesTest.test_job_paused_behind_qsnapds_back'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'BlockJob1.Resume': {
        'OperationInvalid': ['test_errors.py JobRefusalsTest.test_bad_arguments_and_an_ended_job'],
        'Unsupported': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'NotRunning': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'QemuFailed': ['test_errors.py InjectedRefusalTest.test_job_controls_refused'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.Start': {
        'InvalidArgument': [
            'test_bad_input.py FlagsTest.test_unknown_flag_bits',
            'test_net_tap.py NetTapTest.test_refusals',
        ],
        'OperationInvalid': [
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state',
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state_messages_say_what_is_wrong',
        ],
        'NotRunning': ['test_lifecycle.py LifecycleTest.test_attach_to_qemu_started_elsewhere'],
        'Busy': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'PathNotAllowed': [
            'test_security.py GateTest.test_header_backing_into_protected_folder',
            'test_security.py GateTest.test_json_and_protocol_backing_names',
            'test_security.py GateTest.test_json_backing_name_is_not_followed',
            'test_net_tap.py NetTapTest.test_refusals',
        ],
        'QemuFailed': [
            'test_bad_input.py QemuFailedTest.test_missing_base_of_transient_disk',
            'test_bad_input.py QemuFailedTest.test_missing_image',
            'test_security.py PerDomainUidTest.test_one_uid_per_qemu',
        ],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py GrantTest.test_domain_detail_rule_grants_one_domain',
        ],
        'InteractiveAuthorizationRequired': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py InteractiveTest.test_auth_admin_needs_interaction',
        ],
    },
    'Domain.OpenConsole': {
        'InvalidArgument': ['test_console.py OpenConsoleTest.test_refusals_ptys_and_sockets'],
        'NotRunning': ['test_console.py OpenConsoleTest.test_refusals_ptys_and_sockets'],
        'Unsupported': [
            'test_console.py OpenConsoleTest.test_refusals_ptys_and_sockets',
            'test_console.py OpenConsoleTest.test_granted_user_reads_the_guest',
        ],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_console.py OpenConsoleTest.test_granted_user_reads_the_guest',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.OpenGraphicsFD': {
        'InvalidArgument': ['test_console.py GraphicsTest.test_vnc_and_spice_clients'],
        'NotRunning': ['test_console.py GraphicsTest.test_vnc_and_spice_clients'],
        'QemuFailed': ['test_console.py GraphicsTest.test_qemu_refuses'],
        'AccessDenied': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.Stop': {
        'InvalidArgument': ['test_bad_input.py FlagsTest.test_unknown_flag_bits'],
        'NotRunning': [
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state',
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state_messages_say_what_is_wrong',
        ],
        'Busy': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py GrantTest.test_domain_detail_rule_grants_one_domain',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.Pause': {
        'NotRunning': [
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state',
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state_messages_say_what_is_wrong',
        ],
        'Busy': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'QemuFailed': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py NobodyTest.test_denied_and_nothing_changed',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.Resume': {
        'NotRunning': [
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state',
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state_messages_say_what_is_wrong',
        ],
        'Busy': [
            'test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait',
            'test_snapshots.py ConcurrencyTest.test_busy_while_a_snapshot_runs',
        ],
        'QemuFailed': ['test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py NobodyTest.test_denied_and_nothing_changed',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.Undefine': {
        'InvalidArgument': ['test_bad_input.py FlagsTest.test_unknown_flag_bits'],
        'HasSnapshots': [
            'test_snapshots_tree.py TreeTest.test_undefine_with_snapshots',
            'test_checkpoints.py ListTest.test_undefine_with_checkpoints',
        ],
        'OperationInvalid': [
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state',
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state_messages_say_what_is_wrong',
        ],
        'Busy': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py NobodyTest.test_denied_and_nothing_changed',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.GetXMLDesc': {
        'InvalidArgument': ['test_bad_input.py FlagsTest.test_unknown_flag_bits'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py NobodyTest.test_denied_and_nothing_changed',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.QemuMonitorCommand': {
        'InvalidArgument': [
            'test_bad_input.py FlagsTest.test_unknown_flag_bits',
            'test_bad_input.py LifecycleErrorsTest.test_bad_monitor_commands',
        ],
        'NotRunning': [
            'test_errors.py QemuKilledMidCallTest.test_killed_while_calls_wait',
            'test_bad_input.py LifecycleErrorsTest.test_wrong_state',
        ],
        'AccessDenied': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
        'InteractiveAuthorizationRequired': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py GrantTest.test_domain_detail_rule_grants_one_domain',
        ],
    },
    'Domain.CreateSnapshot': {
        'AgentUnresponsive': [
            'test_quiesce.py QuiesceTest.test_agent_never_answers_the_freeze',
            'test_quiesce.py QuiesceTest.test_no_agent_in_the_guest',
        ],
        'InvalidArgument': [
            'test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing',
            'test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart',
        ],
        'InvalidXML': [
            'test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing',
            'test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart',
        ],
        'AlreadyExists': [
            'test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing',
            'test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart',
        ],
        'NoSuchDisk': ['test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing'],
        'NoSuchSnapshot': ['test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart'],
        'PathNotAllowed': [
            'test_snapshots.py FlagsAndErrorsTest.test_atomic_failure_on_second_disk',
            'test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing',
        ],
        'NoSpace': ['test_snapshots.py FlagsAndErrorsTest.test_no_space'],
        'OperationInvalid': ['test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing'],
        'Unsupported': [
            'test_snapshots.py DiskKindsTest.test_readonly_and_transient_disks_are_left_out',
            'test_snapshots.py FlagsAndErrorsTest.test_bad_input_changes_nothing',
        ],
        'Busy': ['test_snapshots.py ConcurrencyTest.test_busy_while_a_snapshot_runs'],
        'QemuFailed': ['test_snapshots.py FlagsAndErrorsTest.test_atomic_failure_on_second_disk'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_snapshots_tree.py TreeTest.test_authorization',
        ],
        'InteractiveAuthorizationRequired': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py TierTest.test_define_within_and_beyond_the_roots',
        ],
    },
    'Domain.ListSnapshots': {
        'InvalidArgument': ['test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart'],
    },
    'Domain.LookupSnapshot': {
        'NoSuchSnapshot': [
            'test_snapshots.py ExternalTest.test_offline_disk_only_default_name_and_no_metadata',
            'test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart',
        ],
    },
    'Domain.CreateCheckpoint': {
        'AgentUnresponsive': ['test_quiesce.py CheckpointQuiesceTest.test_checkpoint_quiesce'],
        'QemuFailed': ['test_quiesce.py CheckpointQuiesceTest.test_checkpoint_quiesce'],
        'InvalidArgument': ['test_checkpoints.py RefusalTest.test_bad_requests_change_nothing'],
        'InvalidXML': ['test_checkpoints.py RefusalTest.test_bad_requests_change_nothing'],
        'AlreadyExists': [
            'test_checkpoints.py RefusalTest.test_bad_requests_change_nothing',
            'test_checkpoints.py DeleteTest.test_delete_flags_offline',
        ],
        'NoSuchDisk': ['test_checkpoints.py RefusalTest.test_bad_requests_change_nothing'],
        'NoSuchCheckpoint': ['test_checkpoints.py RefusalTest.test_bad_requests_change_nothing'],
        'PathNotAllowed': ['test_security_img.py QemuImgByDescriptorTest.test_checkpoint_bitmap_through_a_link'],
        'Unsupported': ['test_checkpoints.py RefusalTest.test_bad_requests_change_nothing'],
        'OperationInvalid': ['test_checkpoints.py DeleteTest.test_missing_bitmap_shown_and_repaired'],
        'Busy': ['test_checkpoints.py RefusalTest.test_busy_while_a_job_holds_a_disk'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_checkpoints.py RefusalTest.test_polkit_denies',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.ListCheckpoints': {
        'InvalidArgument': ['test_checkpoints.py ListTest.test_list_lookup_and_xml'],
    },
    'Domain.LookupCheckpoint': {
        'NoSuchCheckpoint': ['test_checkpoints.py ListTest.test_list_lookup_and_xml'],
    },
    'Domain.BlockPull': {
        'InvalidArgument': ['test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow'],
        'NoSuchDisk': [
            'test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow',
            'test_security.py DiskDetailTest.test_disk_detail_is_the_target',
        ],
        'NotRunning': [
            'test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow',
            'test_security.py DiskDetailTest.test_disk_detail_is_the_target',
        ],
        'Busy': [
            'test_blockjobs.py ControlTest.test_two_disks_in_parallel',
            'test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow',
        ],
        'Unsupported': ['test_errors.py TransientDiskTest.test_block_methods_refuse_a_transient_disk'],
        'QemuFailed': ['test_errors.py QemuRefusesTest.test_block_jobs_on_a_node_busy_with_a_job_of_its_own'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.BlockRebase': {
        'InvalidArgument': [
            'test_blockjobs.py RebaseTest.test_partial_pull_to_base',
            'test_blockcopy.py IndexRelativeTest.test_index_notation',
        ],
        'PathNotAllowed': ['test_errors.py RebaseRefusalsTest.test_rebase_refusals'],
        'AlreadyExists': ['test_errors.py RebaseRefusalsTest.test_rebase_refusals'],
        'NoSpace': ['test_errors.py NoSpaceTest.test_full_file_system'],
        'Unsupported': ['test_errors.py TransientDiskTest.test_block_methods_refuse_a_transient_disk'],
        'NoSuchDisk': ['test_errors.py RebaseRefusalsTest.test_rebase_refusals'],
        'NotRunning': ['test_errors.py RebaseRefusalsTest.test_rebase_refusals'],
        'Busy': ['test_errors.py RebaseRefusalsTest.test_rebase_refusals'],
        'QemuFailed': ['test_errors.py QemuRefusesTest.test_block_jobs_on_a_node_busy_with_a_job_of_its_own'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockcopy.py FailureTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.BlockCommit': {
        'InvalidArgument': [
            'test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow',
            'test_blockcopy.py IndexRelativeTest.test_index_notation',
        ],
        'NoSuchDisk': ['test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow'],
        'NotRunning': ['test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow'],
        'Busy': ['test_blockjobs.py RefusalTest.test_refusals_busy_and_shallow'],
        'Unsupported': ['test_errors.py TransientDiskTest.test_block_methods_refuse_a_transient_disk'],
        'QemuFailed': ['test_errors.py QemuRefusesTest.test_block_jobs_on_a_node_busy_with_a_job_of_its_own'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockjobs.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.BackupBegin': {
        'AgentUnresponsive': [
            'test_quiesce.py BackupQuiesceTest.test_backup_quiesce',
            'test_quiesce.py RealGuestTest.test_quiesced_backup_is_clean_then_agent_killed',
        ],
        'QemuFailed': ['test_quiesce.py BackupQuiesceTest.test_backup_quiesce'],
        'InvalidArgument': ['test_backup.py RefusalTest.test_refusals_change_nothing'],
        'InvalidXML': ['test_backup.py RefusalTest.test_refusals_change_nothing'],
        'NoSuchDisk': ['test_backup.py RefusalTest.test_refusals_change_nothing'],
        'NoSuchCheckpoint': ['test_backup.py IncrementalTest.test_unusable_checkpoint_is_refused'],
        'OperationInvalid': [
            'test_backup.py IncrementalTest.test_unusable_checkpoint_is_refused',
            'test_backup.py TcpTest.test_pull_over_tls',
            'test_quiesce.py BackupQuiesceTest.test_refusals',
        ],
        'AlreadyExists': ['test_backup.py RefusalTest.test_refusals_change_nothing'],
        'PathNotAllowed': ['test_backup.py RefusalTest.test_refusals_change_nothing'],
        'NotRunning': ['test_backup.py RefusalTest.test_refusals_change_nothing'],
        'Busy': ['test_backup.py PushTest.test_push_full_while_guest_writes'],
        'Unsupported': [
            'test_backup.py RefusalTest.test_refusals_change_nothing',
            'test_quiesce.py BackupQuiesceTest.test_refusals',
        ],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_backup.py RefusalTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Domain.BackupGetXMLDesc': {
        'OperationInvalid': [
            'test_backup.py RefusalTest.test_refusals_change_nothing',
            'test_backup.py PushTest.test_push_full_while_guest_writes',
        ],
    },
    'Domain.BlockCopy': {
        'InvalidXML': ['test_blockcopy.py FailureTest.test_refusals'],
        'InvalidArgument': ['test_blockcopy.py FailureTest.test_refusals'],
        'PathNotAllowed': ['test_blockcopy.py FailureTest.test_refusals'],
        'AlreadyExists': ['test_blockcopy.py FailureTest.test_refusals'],
        'NoSpace': ['test_errors.py NoSpaceTest.test_full_file_system'],
        'NoSuchDisk': ['test_blockcopy.py FailureTest.test_refusals'],
        'NotRunning': ['test_blockcopy.py FailureTest.test_refusals'],
        'Busy': ['test_blockcopy.py FailureTest.test_refusals'],
        'Unsupported': ['test_errors.py TransientDiskTest.test_block_methods_refuse_a_transient_disk'],
        'QemuFailed': ['test_errors.py QemuRefusesTest.test_block_jobs_on_a_node_busy_with_a_job_of_its_own'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_blockcopy.py FailureTest.test_access_denied',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Manager.DefineDomain': {
        'InvalidArgument': ['test_bad_input.py FlagsTest.test_unknown_flag_bits'],
        'InvalidXML': [
            'test_bad_input.py MalformedXMLTest.test_five_mib_document',
            'test_bad_input.py MalformedXMLTest.test_invalid_definitions',
        ],
        'AlreadyExists': ['test_bad_input.py RedefineTest.test_uuid_clashes'],
        'Busy': ['test_errors.py OfflineMergeTest.test_refusals_while_an_offline_merge_runs'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py GrantTest.test_domain_detail_rule_grants_one_domain',
        ],
        'InteractiveAuthorizationRequired': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_authorization.py NobodyTest.test_denied_and_nothing_changed',
        ],
    },
    'Manager.ListDomains': {
    },
    'Manager.GetDomain': {
        'NoSuchDomain': [
            'test_bad_input.py LookupTest.test_unknown_names_and_paths',
            'test_bad_input.py OddNamesTest.test_odd_names',
        ],
    },
    'Checkpoint.GetXMLDesc': {
        'InvalidArgument': ['test_checkpoints.py ListTest.test_list_lookup_and_xml'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_checkpoints.py RefusalTest.test_polkit_denies',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Checkpoint.ListChildren': {
        'InvalidArgument': ['test_checkpoints.py ListTest.test_list_lookup_and_xml'],
    },
    'Checkpoint.Delete': {
        'InvalidArgument': ['test_checkpoints.py DeleteTest.test_delete_flags_offline'],
        'Busy': ['test_checkpoints.py RefusalTest.test_busy_while_a_job_holds_a_disk'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_checkpoints.py RefusalTest.test_polkit_denies',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Snapshot.GetXMLDesc': {
        'InvalidArgument': ['test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart'],
        'AccessDenied': [
            'test_auth_matrix.py AuthMatrixTest.test_matrix',
            'test_snapshots_tree.py TreeTest.test_authorization',
        ],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Snapshot.ListChildren': {
        'InvalidArgument': ['test_snapshots_tree.py TreeTest.test_redefine_tree_list_filters_and_restart'],
    },
    'Snapshot.Delete': {
        'InvalidArgument': ['test_delete.py FlagsTest.test_flags'],
        'Busy': ['test_delete.py RefusalTest.test_busy_with_a_block_job'],
        'OperationInvalid': [
            'test_delete.py MixedTreeTest.test_internal_and_external',
            'test_delete.py RefusalTest.test_gone_file_refused',
        ],
        'Unsupported': ['test_delete.py MixedTreeTest.test_internal_and_external'],
        'NoSpace': ['test_delete.py NoSpaceTest.test_no_space'],
        'PathNotAllowed': ['test_security.py FifoTest.test_fifo_and_device_in_metadata'],
        'QemuFailed': ['test_errors.py QemuRefusesTest.test_delete_of_an_image_another_process_holds'],
        'AccessDenied': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Snapshot.CheckDelete': {
        'InvalidArgument': ['test_delete.py FlagsTest.test_flags'],
        'LimitsExceeded': ['test_security.py NoBlockingTest.test_dry_runs_limited_per_caller'],
    },
    'Snapshot.Revert': {
        'InvalidArgument': ['test_revert.py RefusalTest.test_flags_auth_and_busy'],
        'Busy': ['test_revert.py RefusalTest.test_flags_auth_and_busy'],
        'OperationInvalid': [
            'test_revert.py ExternalTest.test_branched_tree',
            'test_revert.py InternalTest.test_internal_below_an_external_overlay_is_refused',
        ],
        'PathNotAllowed': [
            'test_security.py FifoTest.test_fifo_and_device_in_metadata',
            'test_security_img.py LinkFreeRemovalTest.test_uefi_store_copy_through_a_link',
        ],
        'Unsupported': [
            'test_revert.py RefusalTest.test_attached_domain',
            'test_revert.py RefusalTest.test_flags_auth_and_busy',
        ],
        'QemuFailed': [
            'test_revert.py InternalTest.test_failed_load_is_recovered',
            'test_revert.py MemoryTest.test_external_with_memory',
        ],
        'NoSpace': ['test_errors.py NoSpaceTest.test_full_file_system'],
        'AccessDenied': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
        'InteractiveAuthorizationRequired': ['test_auth_matrix.py AuthMatrixTest.test_matrix'],
    },
    'Snapshot.CheckRevert': {
        'InvalidArgument': ['test_revert.py RefusalTest.test_flags_auth_and_busy'],
    },
}


def rows_of_test(test_id):
    """The (method, error) rows naming the unittest id
    'test_file.Class.test_method'."""
    module, _, rest = test_id.partition('.')
    ref = '%s.py %s' % (module, rest)
    return [(method, error) for method, errors in MATRIX.items()
            for error, tests in errors.items() if ref in tests]


def _test_index(root):
    """{'test_file.py': {'Class': {'test_method', ...}}} of tests/test_*.py."""
    index = {}
    for path in sorted(os.listdir(os.path.join(root, 'tests'))):
        if not (path.startswith('test_') and path.endswith('.py')):
            continue
        with open(os.path.join(root, 'tests', path)) as f:
            tree = ast.parse(f.read(), path)
        classes = {}
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            classes[cls.name] = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)
                                 and n.name.startswith('test')}
        index[path] = classes
    return index


def problems(root):
    out = []
    methods = interface_docs.methods(os.path.join(root, 'interfaces'))
    by_short = {m.short_key: m for m in methods.values()}
    index = _test_index(root)
    for key, m in by_short.items():
        documented = [interface_docs.short_name(e) for e in m.errors]
        rows = MATRIX.get(key, {})
        for error in documented:
            if not rows.get(error):
                out.append('%s documents %s, but no test in tests/errors_matrix.py provokes it' % (key, error))
        for error in rows:
            if error not in documented:
                out.append('tests/errors_matrix.py: %s -> %s, which %s does not document'
                           % (key, error, os.path.relpath(m.file, root)))
    for key in MATRIX:
        if key not in by_short:
            out.append('tests/errors_matrix.py: %s is no method of interfaces/*.xml' % key)
    for key, errors in MATRIX.items():
        for error, tests in errors.items():
            for ref in tests:
                fname, _, name = ref.partition(' ')
                cls, _, test = name.partition('.')
                if test not in index.get(fname, {}).get(cls, ()):
                    out.append('tests/errors_matrix.py: %s -> %s names %s, which is no test in tests/' % (key, error, ref))
    return out


def section(root):
    methods = interface_docs.methods(os.path.join(root, 'interfaces'))
    out = [HEADING, '',
           'Every error each D-Bus method documents (interfaces/*.xml) and the tests that',
           'provoke it: a call of that method answered with that error while the test ran',
           '(tests/lib/qsnaptest.py fails a test named here that did not receive it, and',
           'any test that receives an error its method does not document). Generated by',
           '`tests/errors_matrix.py --write` from its MATRIX; the `static` test',
           '`errors-matrix` fails when a documented error has no test, the matrix names',
           'an error the docs do not list, or this section is not what the script generates.',
           'Names without a prefix are `org.example.Snapshot1.Error.*`; AccessDenied and',
           'InteractiveAuthorizationRequired are `org.freedesktop.DBus.Error.*`.', '']
    for m in methods.values():
        out += ['### %s' % m.short_key, '']
        documented = [interface_docs.short_name(e) for e in m.errors]
        if not documented:
            out += ['Documents no error.', '']
            continue
        out += ['| error | provoked by |', '|---|---|']
        for error in documented:
            tests = MATRIX.get(m.short_key, {}).get(error, [])
            out.append('| %s | %s |' % (error, '<br>'.join('`tests/%s` %s' % tuple(t.split(' ', 1)) for t in tests)
                                        or '**none**'))
        out.append('')
    return '\n'.join(out).rstrip('\n') + '\n'


def _section_bounds(lines):
    start = next((i for i, l in enumerate(lines) if l.rstrip('\n') == HEADING), None)
    if start is None:
        return None, None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith('## ')), len(lines))
    return start, end


def replace_section(doc, new):
    lines = doc.splitlines(keepends=True)
    start, end = _section_bounds(lines)
    if start is None:
        return doc.rstrip('\n') + '\n\n' + new
    tail = lines[end:]
    return ''.join(lines[:start]) + new + ('\n' if tail else '') + ''.join(tail)


def current_section(doc):
    lines = doc.splitlines(keepends=True)
    start, end = _section_bounds(lines)
    if start is None:
        return None
    return ''.join(lines[start:end]).rstrip('\n') + '\n'


def suggest(path):
    """MATRIX rows from a QSNAPTEST_ERRORS_SEEN file, for the documented errors."""
    methods = {m.key: m for m in interface_docs.methods().values()}
    rows = collections.defaultdict(lambda: collections.defaultdict(set))
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            m = methods.get('%s.%s' % (r['interface'], r['method']))
            if m is None or not r['test'] or r['error'] not in m.errors:
                continue
            module, _, rest = r['test'].partition('.')
            rows[m.short_key][interface_docs.short_name(r['error'])].add('%s.py %s' % (module, rest))
    out = ['MATRIX = {']
    for m in methods.values():
        out.append("    %r: {" % m.short_key)
        for error in [interface_docs.short_name(e) for e in m.errors]:
            tests = sorted(rows[m.short_key].get(error, ()))
            out.append('        %r: %r,' % (error, tests))
        out.append('    },')
    out.append('}')
    return '\n'.join(out) + '\n'


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--root', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p.add_argument('--doc', default=None, help='default: ROOT/docs/reliability.md')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--check', action='store_true')
    g.add_argument('--write', action='store_true')
    g.add_argument('--suggest', metavar='FILE')
    args = p.parse_args()
    if args.suggest:
        sys.stdout.write(suggest(args.suggest))
        return 0
    doc_path = args.doc or os.path.join(args.root, 'docs', 'reliability.md')
    found = problems(args.root)
    new = section(args.root)
    if args.write:
        with open(doc_path) as f:
            doc = f.read()
        with open(doc_path, 'w') as f:
            f.write(replace_section(doc, new))
    elif args.check:
        with open(doc_path) as f:
            have = current_section(f.read())
        if have != new:
            found.append('the "%s" section of %s is not what tests/errors_matrix.py generates: run '
                         'tests/errors_matrix.py --write' % (HEADING, os.path.relpath(doc_path, args.root)))
        if not found:
            n = sum(len(e) for e in MATRIX.values())
            print('%d documented errors of %d methods, each provoked by a test; %s is current'
                  % (n, len(MATRIX), os.path.relpath(doc_path, args.root)))
    else:
        sys.stdout.write(new)
    for problem in found:
        print('errors_matrix: ' + problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
