"""castle_proxmox_vm through real Terraform against fakepve.

Every test runs against both answer styles of Proxmox VE, on the three-node lab cluster the
`pve` fixture builds (pve1, pve2, pve3, each with its own local storage): PVE 9 (and 8.4+) put
an error's text in the JSON body's `message`; PVE 8.0-8.3 only in the HTTP reason phrase.

Tests marked `pve_style_free` run once (PVE 9): the answer style only changes how PVE words an
error, and these never meet one. Their input is refused by castle's own plan-time validation
before any request could fail, or their endpoint does not answer at all.
"""

import re
import subprocess
import time

import pytest

from conftest import provider_block
from harness.pve import TEMPLATE_ID, TEMPLATE_NAME
from harness.terraform import kill_group, terraform_command

pytestmark = pytest.mark.acceptance

STYLE_FREE = pytest.mark.pve_style_free


def pytest_generate_tests(metafunc):
    """Both answer styles for every test that uses the lab's PVE (see the module docstring)."""
    if 'pve' in metafunc.fixturenames and not metafunc.definition.get_closest_marker('pve_style_free'):
        metafunc.parametrize('pve', ['9', '8.3'], indirect=True, ids=['pve9', 'pve8.3'])


# The seeds' lab: 3 control planes and 2 workers on static addresses.
FIVE_NODES = '''
locals {
  nodes = {
    cp-1 = "10.5.0.11"
    cp-2 = "10.5.0.12"
    cp-3 = "10.5.0.13"
    w-1  = "10.5.0.21"
    w-2  = "10.5.0.22"
  }
}

resource "castle_proxmox_vm" "node" {
  for_each = local.nodes
  node     = "pve1"
  name     = each.key
  clone {
    template_name = "%s"
  }
  cores  = 2
  memory = 4096
  disk {
    slot    = "scsi0"
    size_gb = 10
  }
  network {
    bridge = "vmbr0"
  }
  ipv4 {
    address = "${each.value}/24"
    gateway = "10.5.0.1"
  }
  nameservers = ["10.5.0.1"]
  tags        = ["talos", startswith(each.key, "cp") ? "controlplane" : "worker"]
}

output "addresses" {
  value = { for k, vm in castle_proxmox_vm.node : k => vm.ipv4_address }
}
''' % TEMPLATE_NAME


def one_vm(name='solo', extra='', template='template_id = %d' % TEMPLATE_ID, address='10.5.0.31/24'):
    return '''
resource "castle_proxmox_vm" "solo" {
  node = "pve1"
  name = "%s"
  clone {
    %s
  }
  ipv4 {
    address = "%s"
    gateway = "10.5.0.1"
  }
  %s
}
''' % (name, template, address, extra)


def vms_by_name(pve):
    return {name: (vmid, node, status, config) for vmid, name, node, status, config in pve.vms()}


def test_five_vms_clone_at_once_with_distinct_ids_and_a_quiet_second_plan(tf, pve):
    t = tf()
    t.write(provider_block(pve) + FIVE_NODES)
    t.apply()
    vms = vms_by_name(pve)
    assert sorted(vms) == ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2']
    assert len({vmid for vmid, *_ in vms.values()}) == 5
    for name, (vmid, node, status, config) in vms.items():
        assert status == 'running', name
        assert config['cores'] in (2, '2') and config['memory'] in (4096, '4096')
        assert 'size=10G' in config['scsi0'], config['scsi0']
        assert 'lock' not in config, config
    assert vms['cp-2'][3]['ipconfig0'] == 'ip=10.5.0.12/24,gw=10.5.0.1'
    assert vms['w-1'][3]['nameserver'] == '10.5.0.1'
    assert t.output('addresses') == {'cp-1': '10.5.0.11', 'cp-2': '10.5.0.12', 'cp-3': '10.5.0.13',
                                     'w-1': '10.5.0.21', 'w-2': '10.5.0.22'}
    state = t.resources()
    assert state['castle_proxmox_vm.node["cp-1"]']['id'] == 'pve1/%d' % vms['cp-1'][0]
    assert re.fullmatch(r'[0-9A-F]{2}(:[0-9A-F]{2}){5}', state['castle_proxmox_vm.node["w-2"]']['mac_address'])
    t.assert_plan_empty()


def test_update_in_place_restarts_only_when_a_change_needs_it(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='cores = 1\n  tags = ["a"]'))
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    # Tags apply live: no restart announced.
    t.write(provider_block(pve) + one_vm(extra='cores = 1\n  tags = ["b", "a"]'))
    assert 'will be restarted' not in t.plan()
    t.apply()
    assert vms_by_name(pve)['solo'][3]['tags'] == 'a;b;castle-managed;' + workspace_tag(t)

    # Cores need a reboot: the plan says so, the apply does it, the VM keeps its id.
    t.write(provider_block(pve) + one_vm(extra='cores = 4\n  memory = 3072\n  tags = ["b", "a"]'))
    plan = t.plan()
    assert 'will be restarted' in plan and 'cores' in plan
    t.apply()
    vmid_after, _, status, config = vms_by_name(pve)['solo']
    assert vmid_after == vmid
    assert status == 'running'
    assert str(config['cores']) == '4' and str(config['memory']) == '3072'
    t.assert_plan_empty()


def test_disk_grows_in_place_and_a_shrink_is_refused_at_plan_time(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='disk {\n slot = "scsi0"\n size_gb = 6\n }'))
    t.apply()
    assert 'size=6G' in vms_by_name(pve)['solo'][3]['scsi0']
    t.write(provider_block(pve) + one_vm(extra='disk {\n slot = "scsi0"\n size_gb = 8\n }'))
    t.apply()
    assert 'size=8G' in vms_by_name(pve)['solo'][3]['scsi0']
    t.write(provider_block(pve) + one_vm(extra='disk {\n slot = "scsi0"\n size_gb = 5\n }'))
    out = t.plan(expect_fail=True)
    assert 'Disks cannot shrink' in out and 'size_gb' in out
    assert 'size=8G' in vms_by_name(pve)['solo'][3]['scsi0']


def test_changing_the_template_replaces_the_vm(tf, pve):
    from harness.pve import add_talos_template
    template = pve.sync(add_talos_template, pve.pve, vmid=9001, name='talos-next')
    pve.sync(template.config.update, {'memory': 1536})
    t = tf()
    t.write(provider_block(pve) + one_vm())
    t.apply()
    old = vms_by_name(pve)['solo'][0]
    t.write(provider_block(pve) + one_vm(template='template_id = 9001'))
    assert 'must be replaced' in t.plan()
    t.apply()
    vms = vms_by_name(pve)
    assert list(vms) == ['solo'], vms
    # The new VM carries the new template's memory: it was cloned again, not edited.
    assert str(vms['solo'][3]['memory']) == '1536'
    # The old VM was destroyed and the new one cloned from the new template.
    tasks = [(task['type'], task['id'], task.get('exitstatus')) for task in pve.sync(lambda: list(pve.pve.tasklog))]
    assert ('qmdestroy', str(old), 'OK') in tasks
    assert [task for task in tasks if task[0] == 'qmclone'] == [('qmclone', str(TEMPLATE_ID), 'OK'),
                                                                 ('qmclone', '9001', 'OK')]
    t.assert_plan_empty()


def test_a_vm_deleted_outside_terraform_is_planned_again(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm())
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    def remove():
        pve.pve.vms.remove(pve.pve.vm(vmid))
    pve.sync(remove)
    changes = t.plan_changes()
    assert [c['change']['actions'] for c in changes] == [['create']]
    t.apply()
    assert 'solo' in vms_by_name(pve)
    t.assert_plan_empty()


def test_drift_made_in_proxmox_is_shown_and_put_back(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='cores = 2'))
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    def drift():
        pve.pve.vm(vmid).config['cores'] = 8
    pve.sync(drift)
    assert [c['change']['actions'] for c in t.plan_changes()] == [['update']]
    t.apply()
    assert str(vms_by_name(pve)['solo'][3]['cores']) == '2'


MATCHING = 'disk {\n slot = "scsi0"\n size_gb = 4\n }\n  network {\n bridge = "vmbr0"\n }'


def without_clone(hcl):
    return re.sub(r'clone \{[^}]*\}', '', hcl)


def test_import_by_node_and_vmid_then_an_empty_plan(tf, pve):
    first = tf('made')
    first.write(provider_block(pve) + one_vm(extra='cores = 2\n  memory = 2048'))
    first.apply()
    vmid = vms_by_name(pve)['solo'][0]

    # Proxmox does not record which template a VM came from, so the matching configuration of
    # an imported VM has no clone block.
    t = tf('imported')
    t.write(provider_block(pve) + without_clone(one_vm(
        extra='cores = 2\n  memory = 2048\n  disk {\n slot = "scsi0"\n size_gb = 4\n }\n'
              '  network {\n bridge = "vmbr0"\n }')))
    out = t.import_('castle_proxmox_vm.solo', 'pve1', expect_fail=True)
    assert 'NODE/VMID' in out, out
    t.import_('castle_proxmox_vm.solo', 'pve1/%d' % vmid)
    t.assert_plan_empty()
    # Adding the clone block later records it without touching or replacing the VM.
    t.write(provider_block(pve) + one_vm(extra='cores = 2\n  memory = 2048'))
    assert 'must be replaced' not in t.plan()
    t.apply()
    assert vms_by_name(pve)['solo'][0] == vmid
    t.assert_plan_empty()


def test_import_block_is_supported(tf, pve):
    first = tf('made')
    first.write(provider_block(pve) + one_vm())
    first.apply()
    vmid = vms_by_name(pve)['solo'][0]
    t = tf('imported')
    t.write(provider_block(pve) + without_clone(one_vm(extra=MATCHING))
            + 'import {\n  to = castle_proxmox_vm.solo\n  id = "pve1/%d"\n}\n' % vmid)
    out = t.apply()
    assert '1 imported' in out
    t.assert_plan_empty()


def test_destroy_leaves_no_vms(tf, pve):
    t = tf()
    t.write(provider_block(pve) + FIVE_NODES)
    t.apply()
    assert len(pve.vms()) == 5
    t.destroy()
    assert pve.vms() == []


def failed_tasks(pve, kind):
    return [task['exitstatus'] for task in pve.sync(lambda: list(pve.pve.tasklog))
            if task['type'] == kind and task.get('exitstatus') not in (None, 'OK')]


def test_vmids_taken_by_other_clients_and_lock_timeouts_in_clone_tasks_still_give_the_five_vms(tf, pve):
    # The site keeps 100-499 for hand-made VMs: datacenter.cfg next-id lower=500, upper=600.
    pve.pve.next_id = (500, 600)
    # Another client took the id castle picked, in each of the three ways PVE reports it
    # (qemu-server src/PVE/API2/Qemu.pm clone_vm): at once when N.conf exists on this node, in
    # the task when another clone holds lock-N.conf, in the task when N lives on another node.
    pve.sync(pve.pve.fail, 'POST', '/clone', error='unable_create_config_file_already', times=1)
    pve.sync(pve.pve.fail_in_task, 'POST', '/clone',
             "can't lock file '/var/lock/qemu-server/lock-{newid}.conf' - got timeout")
    pve.sync(pve.pve.fail_in_task, 'POST', '/qemu/%d/clone' % TEMPLATE_ID,
             "clone failed: close (rename) atomic file '/etc/pve/nodes/pve2/qemu-server/{newid}.conf' "
             "failed: File exists")
    t = tf()
    t.write(provider_block(pve) + FIVE_NODES)
    t.apply()
    vms = vms_by_name(pve)
    assert sorted(vms) == ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2']
    ids = sorted(vmid for vmid, *_ in vms.values())
    assert len(set(ids)) == 5 and all(500 <= vmid < 600 for vmid in ids), ids
    assert all(status == 'running' for _, _, status, _ in vms.values())
    assert len(failed_tasks(pve, 'qmclone')) == 2
    # The storage lock times out inside a clone task (pve-storage src/PVE/Storage/Plugin.pm
    # cluster_lock_storage): the task is sent again with the same id.
    pve.sync(pve.pve.fail_in_task, 'POST', '/clone',
             "clone failed: can't lock file '/var/lock/pve-manager/pve-storage-local-lvm' - got timeout",
             times=2)
    t.write(provider_block(pve) + FIVE_NODES.replace('"10.5.0.22"', '"10.5.0.22"\n    w-3 = "10.5.0.23"'))
    t.apply()
    vms = vms_by_name(pve)
    assert sorted(vms) == ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2', 'w-3']
    assert vms['w-3'][2] == 'running'
    assert len(failed_tasks(pve, 'qmclone')) == 4
    t.assert_plan_empty()


def test_lock_timeouts_inside_tasks_and_a_backup_lock_are_waited_out(tf, pve):
    # Resize and start lock inside their workers (qemu-server src/PVE/API2/Qemu.pm
    # resize_vm, src/PVE/QemuServer.pm vm_start): a busy lock fails the task, not the request.
    pve.sync(pve.pve.fail_in_task, 'PUT', '/resize',
             "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
    pve.sync(pve.pve.fail_in_task, 'POST', '/status/start',
             "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='cores = 1\n  disk {\n slot = "scsi0"\n size_gb = 6\n }'))
    t.apply()
    vmid, _, status, config = vms_by_name(pve)['solo']
    assert status == 'running' and config['scsi0'].endswith(',size=6G')
    assert failed_tasks(pve, 'resize') == ["can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout" % vmid]
    assert len(failed_tasks(pve, 'qmstart')) == 1
    # A nightly backup holds the VM (pve-guest-common src/PVE/AbstractConfig.pm check_lock
    # refuses at once: `VM is locked (backup)`); the change waits for it, then the shutdown and
    # the destroy fail on a lock inside their tasks once each.
    pve.sync(pve.pve.fail, 'PUT', '/config', error='locked', times=2)
    pve.sync(pve.pve.fail_in_task, 'POST', '/status/shutdown',
             "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
    t.write(provider_block(pve) + one_vm(extra='cores = 2\n  disk {\n slot = "scsi0"\n size_gb = 6\n }'))
    t.apply()
    vmid_after, _, status, config = vms_by_name(pve)['solo']
    assert (vmid_after, status, str(config['cores'])) == (vmid, 'running', '2')
    assert len(failed_tasks(pve, 'qmshutdown')) == 1
    pve.sync(pve.pve.fail_in_task, 'DELETE', '/qemu/%d' % vmid,
             "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout")
    t.destroy()
    assert pve.vms() == []
    assert len(failed_tasks(pve, 'qmdestroy')) == 1


def test_a_failing_task_gives_a_clear_error_and_leaves_nothing_behind(tf, pve):
    pve.sync(pve.pve.fail, 'POST', '/status/start', error='qemu_exited_code')
    t = tf()
    t.write(provider_block(pve) + one_vm())
    out = t.apply(expect_fail=True)
    assert 'Unable to create VM solo' in out
    assert 'QEMU exited with code 1' in out
    assert pve.vms() == []
    assert not t.resources()


def test_a_ticket_that_expires_in_the_middle_of_an_apply_is_renewed_and_nothing_fails(tf, pve):
    # Every ticket expires after the apply's third write: the provider process that is cloning
    # the five VMs must log in again and resend, within the same `terraform apply`.
    pve.sync(pve.pve.revoke_tickets_after, 3)
    t = tf()
    t.write(provider_block(pve) + FIVE_NODES)
    t.apply()
    assert len(pve.vms()) == 5
    answers = pve.sync(lambda: list(pve.pve.answers))
    refused = [i for i, (_, _, status) in enumerate(answers) if status == 401]
    assert refused, 'the tickets never expired during the apply'
    first = refused[0]
    writes_before = [a for a in answers[:first] if a[0] != 'GET' and not a[1].endswith('/access/ticket')]
    assert len(writes_before) >= 3
    # A new login followed, every refused request was answered when sent again, and no request
    # failed for any other reason.
    assert ('POST', '/api2/json/access/ticket', 200) in answers[first:]
    for i in refused:
        method, path, _ = answers[i]
        assert (method, path, 200) in answers[i:], (method, path)
    assert [a for a in answers if a[2] >= 400 and a[2] != 401] == []
    t.assert_plan_empty()


def offending_line(hcl, attribute):
    """The line number of `attribute` (e.g. disk[1].slot) in hcl: the n-th `name =` line."""
    name = attribute.split('.')[-1]
    block = attribute.split('.')[0]
    index = int(block.split('[')[1].rstrip(']')) if '[' in block else 0
    hits = [n for n, line in enumerate(hcl.splitlines(), 1) if line.strip().startswith(name + ' =')]
    return hits[index]


@STYLE_FREE
@pytest.mark.parametrize('extra, address, attribute, words', [
    ('', '10.5.0.31', 'ipv4[0].address', 'not an IPv4 address with prefix'),
    ('', '10.5.0.31/33', 'ipv4[0].address', 'not an IPv4 address with prefix'),
    ('memory = 8', '10.5.0.31/24', 'memory', 'below the minimum of 16'),
    ('disk {\n slot = "scsi0"\n size_gb = 5\n }\n disk {\n slot = "scsi0"\n size_gb = 6\n }', '10.5.0.31/24',
     'disk[1].slot', 'listed twice'),
    ('network {\n vlan = 5000\n }', '10.5.0.31/24', 'network[0].vlan', 'between 1 and 4094'),
])
def test_bad_input_is_a_plan_time_error_naming_the_attribute(tf, pve, extra, address, attribute, words):
    t = tf()
    hcl = provider_block(pve) + one_vm(extra=extra, address=address)
    t.write(hcl)
    out = t.plan(expect_fail=True)
    assert words in out, out
    # Terraform points at the offending attribute's own line (the second disk's slot, not the
    # first's).
    assert 'on main.tf line %d, in resource "castle_proxmox_vm" "solo"' % offending_line(hcl, attribute) in out, out
    assert pve.vms() == []


@STYLE_FREE
def test_gateway_outside_the_subnet_is_refused(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm().replace('gateway = "10.5.0.1"', 'gateway = "10.6.0.1"'))
    out = t.plan(expect_fail=True)
    assert 'Gateway outside the subnet' in out and 'gateway' in out


def test_unknown_node_and_missing_template_are_named_at_plan_time(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm().replace('node = "pve1"', 'node = "pve9"'))
    out = t.plan(expect_fail=True)
    assert 'Unknown Proxmox node' in out and 'pve9' in out
    t.write(provider_block(pve) + one_vm(template='template_name = "nope"'))
    out = t.plan(expect_fail=True)
    assert 'Template not found' in out and 'nope' in out
    assert pve.vms() == []


def workspace_tag(t, workspace='default'):
    """The marker castle tags a workspace's VMs with: castle-ws- and 8 hex digits of SHA-256 over
    the Terraform working directory and the workspace name."""
    import hashlib
    import os
    digest = hashlib.sha256((os.path.realpath(str(t.workdir)) + '\n' + workspace).encode()).hexdigest()
    return 'castle-ws-' + digest[:8]


def test_a_vm_left_by_an_interrupted_create_is_adopted_but_never_another_workspaces(tf, pve):
    t = tf()
    other = tf('other-workspace')

    def leftover(vmid, marker):
        # A crash between clone and start: the VM exists, stopped, marked by castle, not in state.
        pve.pve.add_vm(vmid, 'solo', node='pve1', status='stopped', config={
            'scsi0': 'local-lvm:vm-%d-disk-0,size=4G' % vmid, 'ide2': 'local-lvm:vm-%d-cloudinit,media=cdrom' % vmid,
            'net0': 'virtio=BC:24:11:00:01:%d,bridge=vmbr0' % (vmid - 100),
            'tags': 'castle-managed;' + marker, 'cores': 1, 'memory': 2048})
    # Another workspace's leftover with the same name comes first and is left alone.
    pve.sync(leftover, 122, workspace_tag(other))
    pve.sync(leftover, 123, workspace_tag(t))
    # Someone else's stopped VM with another name is left alone.
    pve.sync(pve.pve.add_vm, 124, 'other', node='pve1', status='stopped', config={'tags': 'castle-managed'})
    t.write(provider_block(pve) + one_vm())
    out = t.apply()
    assert 'adopted' in out
    assert sorted((vmid, name, status) for vmid, name, _, status, _ in pve.vms()) == [
        (122, 'solo', 'stopped'), (123, 'solo', 'running'), (124, 'other', 'stopped')]
    config = pve.sync(pve.pve.vm, 123).config
    assert config['ipconfig0'] == 'ip=10.5.0.31/24,gw=10.5.0.1'
    assert t.resources()['castle_proxmox_vm.solo']['id'] == 'pve1/123'
    assert t.resources()['castle_proxmox_vm.solo'].get('tags') in (None, [])
    t.assert_plan_empty()


def test_a_clone_killed_before_its_tags_were_set_is_adopted_by_its_notes_and_they_are_cleared(tf, pve):
    # PVE's clone call takes a name and notes but no tags: a kill during the clone task leaves a
    # VM whose only mark is the notes castle cloned it with (found by `make crash`).
    t = tf()
    other = tf('other-workspace')

    def cloned(vmid, workspace):
        pve.pve.add_vm(vmid, 'solo', node='pve1', status='stopped', config={
            'scsi0': 'local-lvm:vm-%d-disk-0,size=4G' % vmid, 'ide2': 'local-lvm:vm-%d-cloudinit,media=cdrom' % vmid,
            'net0': 'virtio=BC:24:11:00:02:%d,bridge=vmbr0' % (vmid - 100), 'cores': 1, 'memory': 2048,
            'description': 'castle: clone in progress (%s); the next terraform apply finishes it' % workspace})
    pve.sync(cloned, 125, workspace_tag(other))
    pve.sync(cloned, 126, workspace_tag(t))
    t.write(provider_block(pve) + one_vm())
    assert 'adopted' in t.apply()
    assert sorted((vmid, status) for vmid, name, _, status, _ in pve.vms()) == [(125, 'stopped'), (126, 'running')]
    config = pve.sync(pve.pve.vm, 126).config
    assert 'description' not in config
    assert config['tags'] == 'castle-managed;' + workspace_tag(t)
    t.assert_plan_empty()


def test_a_create_killed_after_the_start_is_adopted_but_a_running_vm_whose_create_finished_is_not(tf, pve):
    # Killed between the start and Terraform's state write: the VM runs, its notes still the
    # clone marker. A running VM of this workspace without it finished its create (the one a
    # create_before_destroy replaces, say) and is never taken.
    t = tf()
    marker = 'castle: clone in progress (%s); the next terraform apply finishes it' % workspace_tag(t)

    def vm(vmid, name, **extra):
        pve.pve.add_vm(vmid, name, node='pve1', status='running', config=dict({
            'scsi0': 'local-lvm:vm-%d-disk-0,size=4G' % vmid, 'ide2': 'local-lvm:vm-%d-cloudinit,media=cdrom' % vmid,
            'net0': 'virtio=BC:24:11:00:03:%d,bridge=vmbr0' % (vmid - 100), 'cores': 1, 'memory': 2048}, **extra))
    pve.sync(vm, 127, 'solo', tags='castle-managed;' + workspace_tag(t))
    # Everything but the notes was done: the configuration is the wanted one.
    pve.sync(vm, 128, 'solo', tags='castle-managed;' + workspace_tag(t), description=marker,
             ipconfig0='ip=10.5.0.31/24,gw=10.5.0.1')
    t.write(provider_block(pve) + one_vm())
    assert 'adopted' in t.apply()
    assert t.resources()['castle_proxmox_vm.solo']['id'] == 'pve1/128'
    assert 'description' not in pve.sync(pve.pve.vm, 128).config
    assert sorted(vmid for vmid, *_ in pve.vms()) == [127, 128]
    t.assert_plan_empty()


# Two VMs on static addresses, replaced create-before-destroy as the flagship example's are.
TWO_REPLACEABLE = '''
resource "castle_proxmox_vm" "node" {
  for_each = { a = "10.5.0.41", b = "10.5.0.42" }
  node     = "pve1"
  name     = each.key
  clone {
    template_id = %d
  }
  ipv4 {
    address = "${each.value}/24"
    gateway = "10.5.0.1"
  }
  lifecycle {
    create_before_destroy = true
  }
}
''' % TEMPLATE_ID


def running_vmids(pve):
    vms = vms_by_name(pve)
    assert len(vms) == len(pve.vms()), pve.vms()
    assert all(status == 'running' for _, _, status, _ in vms.values()), vms
    return {name: vmid for name, (vmid, *_) in vms.items()}


def running_clones(pve):
    return pve.sync(lambda: [t['upid'] for t in pve.pve.tasklog if t['type'] == 'qmclone' and t['status'] == 'running'])


@STYLE_FREE
def test_a_clone_still_running_from_a_killed_terraform_is_waited_for_and_adopted_not_cloned_again(tf, pve):
    # `make crash` (vm-create seed 6): Terraform killed while its clones ran, the next apply at
    # once. Proxmox shows a clone in progress as a temporary config (lock, no name, no notes),
    # so the leftover looked like someone else's VM and was cloned again.
    pve.sync(pve.pve.slow_clones, 1500)
    t = tf()
    t.write(provider_block(pve) + TWO_REPLACEABLE)
    killed = subprocess.Popen(terraform_command() + ['apply', '-auto-approve', '-no-color'], cwd=t.workdir,
                              env=t.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        give_up = time.monotonic() + 300
        while len(running_clones(pve)) < 2 and killed.poll() is None and time.monotonic() < give_up:
            time.sleep(0.05)
    finally:
        kill_group(killed)
    first = running_clones(pve)
    assert len(first) == 2, pve.sync(lambda: list(pve.pve.tasklog))
    # What the next run sees: two VMs with neither name nor notes.
    assert len(pve.sync(lambda: set(pve.pve.clone_placeholders))) == 2
    cloned = {name: vmid for name, (vmid, *_) in vms_by_name(pve).items()}
    assert 'castle adopted it instead of cloning again' in ' '.join(t.apply().split())
    clones = pve.sync(lambda: [(t['upid'], t['exitstatus']) for t in pve.pve.tasklog if t['type'] == 'qmclone'])
    assert sorted(clones) == sorted((upid, 'OK') for upid in first)
    assert running_vmids(pve) == cloned
    assert {address: vm['id'] for address, vm in t.resources().items()} == {
        'castle_proxmox_vm.node["%s"]' % name: 'pve1/%d' % vmid for name, vmid in cloned.items()}
    t.assert_plan_empty()


@STYLE_FREE
def test_a_vm_whose_state_was_lost_is_adopted_not_cloned_again(tf, pve):
    # What a remote backend that had not uploaded the VM's state when Terraform was killed
    # leaves: the VM finished, state does not know it. `terraform state rm` makes that state.
    # pvestatd has not listed the new VMs' names yet (it refreshes every 10 s; the next run
    # comes sooner): castle finds them by their configs.
    pve.sync(pve.pve.slow_pvestatd, 100000)
    t = tf()
    t.write(provider_block(pve) + TWO_REPLACEABLE)
    t.apply()
    before = running_vmids(pve)
    t.run('state', 'rm', 'castle_proxmox_vm.node["a"]')
    out = t.apply()
    assert 'castle adopted it instead of cloning another' in out, out
    assert running_vmids(pve) == before
    assert t.resources()['castle_proxmox_vm.node["a"]']['id'] == 'pve1/%d' % before['a']
    t.assert_plan_empty()
    # A first create killed after its VMs were made, before Terraform saved any: the state
    # shows nothing, so the refresh reads nothing; the apply still refreshes, so both are lost.
    t.run('state', 'rm', 'castle_proxmox_vm.node')
    out = t.apply()
    assert out.count('castle adopted it instead of cloning another') == 2, out
    assert running_vmids(pve) == before
    t.assert_plan_empty()


@STYLE_FREE
def test_a_replaced_or_tainted_vm_is_cloned_anew_and_the_old_one_deleted_never_adopted(tf, pve):
    # The VM a create_before_destroy replacement replaces is a finished VM of this workspace
    # with the wanted name, like a lost one; the plan saw it in state, so it is never adopted.
    t = tf()
    t.write(provider_block(pve) + TWO_REPLACEABLE)
    t.apply()
    first = running_vmids(pve)
    out = t.apply('-replace=castle_proxmox_vm.node["a"]')
    assert 'adopted' not in out, out
    replaced = running_vmids(pve)
    assert sorted(replaced) == ['a', 'b'] and replaced['b'] == first['b']
    assert replaced['a'] not in first.values()
    t.run('taint', 'castle_proxmox_vm.node["b"]')
    t.apply()
    tainted = running_vmids(pve)
    assert tainted['a'] == replaced['a'] and tainted['b'] not in replaced.values()
    # Without a refresh a tainted VM is shown to no one: castle cannot know it is in state,
    # so it clones.
    t.run('taint', 'castle_proxmox_vm.node["b"]')
    assert 'adopted' not in t.apply('-refresh=false')
    unrefreshed = running_vmids(pve)
    assert unrefreshed['a'] == replaced['a'] and unrefreshed['b'] not in tainted.values()
    t.assert_plan_empty()


def test_vms_castle_creates_carry_the_managed_tag_which_state_does_not_show(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='tags = ["talos"]'))
    t.apply()
    assert vms_by_name(pve)['solo'][3]['tags'] == 'castle-managed;%s;talos' % workspace_tag(t)
    assert t.resources()['castle_proxmox_vm.solo']['tags'] == ['talos']
    t.assert_plan_empty()


def test_a_flaky_network_still_converges(tf, pve):
    # One request in five has its connection reset before PVE sees it.
    pve.sync(pve.pve.flaky_network, drop_rate=0.2, seed=7)
    t = tf()
    t.write(provider_block(pve) + FIVE_NODES)
    t.apply()
    assert len(pve.vms()) == 5
    t.assert_plan_empty()
    t.destroy()
    assert pve.vms() == []


def test_a_bad_gateway_on_clone_and_start_still_gives_exactly_the_wanted_vms(tf, pve):
    # fakepve answers 502 before doing anything, so castle finds no VM and clones again; a
    # clone PVE did start is not sent twice (unit-tested: proxmox::provision, proxmox::retry).
    pve.sync(pve.pve.fail, 'POST', '/clone', status=502, message='Bad Gateway', times=1)
    pve.sync(pve.pve.fail, 'POST', '/status/start', status=502, message='Bad Gateway', times=1)
    t = tf()
    t.write(provider_block(pve) + FIVE_NODES)
    t.apply()
    vms = vms_by_name(pve)
    assert sorted(vms) == ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2']
    assert all(status == 'running' for _, _, status, _ in vms.values())
    t.assert_plan_empty()


def test_a_vm_with_a_fixed_vm_id_is_replaced_under_the_same_id(tf, pve):
    from harness.pve import add_talos_template
    pve.sync(add_talos_template, pve.pve, vmid=9001, name='talos-next')
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='vm_id = 150'))
    t.apply()
    t.write(provider_block(pve) + one_vm(template='template_id = 9001', extra='vm_id = 150'))
    assert 'must be replaced' in t.plan()
    t.apply()
    assert [(vmid, name) for vmid, name, *_ in pve.vms()] == [(150, 'solo')]
    assert t.resources()['castle_proxmox_vm.solo']['vm_id'] == 150
    t.assert_plan_empty()


def test_a_lowercase_mac_is_kept_as_written_and_the_second_plan_is_empty(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='network {\n    mac = "bc:24:11:aa:bb:01"\n  }'))
    t.apply()
    assert vms_by_name(pve)['solo'][3]['net0'].startswith('virtio=BC:24:11:AA:BB:01,')
    state = t.resources()['castle_proxmox_vm.solo']
    assert state['mac_address'] == 'bc:24:11:aa:bb:01'
    t.assert_plan_empty()


def test_a_heredoc_description_is_kept_as_written_and_the_second_plan_is_empty(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='description = <<-EOT\n    Talos node.\n    Managed by castle.\n  EOT'))
    t.apply()
    assert vms_by_name(pve)['solo'][3]['description'].startswith('Talos node.\nManaged by castle.')
    assert t.resources()['castle_proxmox_vm.solo']['description'] == 'Talos node.\nManaged by castle.\n'
    t.assert_plan_empty()
    t.write(provider_block(pve) + one_vm(extra='description = ""'))
    t.apply()
    assert t.resources()['castle_proxmox_vm.solo']['description'] == ''
    t.assert_plan_empty()


def test_removing_the_ipv4_block_leaves_the_address_in_place_and_the_second_plan_is_empty(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm())
    t.apply()
    t.write(provider_block(pve) + re.sub(r'ipv4 \{[^}]*\}', '', one_vm()))
    t.apply()
    assert vms_by_name(pve)['solo'][3]['ipconfig0'] == 'ip=10.5.0.31/24,gw=10.5.0.1'
    assert t.resources()['castle_proxmox_vm.solo']['ipv4_address'] == '10.5.0.31'
    t.assert_plan_empty()


def test_a_vm_whose_read_back_failed_stays_in_state_and_is_replaced_not_duplicated(tf, pve):
    # The create's first config read passes; the read-back after the start fails.
    pve.sync(pve.pve.fail_after, 1, 'GET', '/config', status=500, message='boom', times=1)
    t = tf()
    t.write(provider_block(pve) + one_vm())
    out = t.apply(expect_fail=True)
    assert 'Unable to read back VM' in out and 'boom' in out
    created = vms_by_name(pve)['solo'][0]
    assert t.resources()['castle_proxmox_vm.solo']['id'] == 'pve1/%d' % created
    assert 'tainted' in t.run('state', 'show', 'castle_proxmox_vm.solo')
    t.apply()
    assert list(vms_by_name(pve)) == ['solo']
    t.assert_plan_empty()


def test_a_vm_stopped_outside_terraform_is_started_again(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm())
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    def stop():
        vm = pve.pve.vm(vmid)
        vm.status = vm.qmpstatus = 'stopped'
    pve.sync(stop)
    assert [c['change']['actions'] for c in t.plan_changes()] == [['update']]
    t.apply()
    assert vms_by_name(pve)['solo'][2] == 'running'
    t.assert_plan_empty()


def test_a_vm_migrated_to_another_node_is_followed_not_duplicated(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm())
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    def migrate():
        pve.pve.vm(vmid).node = 'pve2'
    pve.sync(migrate)
    plan = t.plan()
    assert 'moved to node pve2' in plan and 'node = "pve2"' in plan
    # Keeping node = "pve1" would put a new VM there, in place of the migrated one.
    assert 'must be replaced' in plan and 'Plan: 1 to add, 0 to change, 1 to destroy' in plan
    t.write(provider_block(pve) + one_vm().replace('node = "pve1"', 'node = "pve2"'))
    t.assert_plan_empty()
    t.apply()
    assert t.resources()['castle_proxmox_vm.solo']['id'] == 'pve2/%d' % vmid
    assert [(vmid_, node) for vmid_, _, node, *_ in pve.vms()] == [(vmid, 'pve2')]


def test_an_ha_managed_vm_is_restarted_through_the_ha_manager_and_leaves_ha_before_its_destroy(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='cores = 1'))
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    def put_under_ha():
        pve.pve.vm(vmid).ha_state = 'started'
        # The HA manager acts a while after the power task ends (qemu-server
        # src/PVE/API2/Qemu.pm: start/stop/shutdown only queue `ha-manager set --state`).
        pve.pve.ha_delay = 30
    pve.sync(put_under_ha)
    t.write(provider_block(pve) + one_vm(extra='cores = 2'))
    t.apply()
    vmid_after, _, status, config = vms_by_name(pve)['solo']
    assert (vmid_after, status, str(config['cores'])) == (vmid, 'running', '2')
    assert [task['type'] for task in pve.sync(lambda: list(pve.pve.tasklog))][-2:] == ['hastop', 'hastart']
    t.assert_plan_empty()
    seen = len(pve.pve.answers)
    t.destroy()
    assert pve.vms() == []
    # The HA resource goes first (as `ha-manager remove`), so the HA manager cannot start the VM
    # again between the stop and the destroy; the stop then acts on the VM directly.
    writes = [(method, path.split('/api2/json')[-1]) for method, path, status in pve.pve.answers[seen:]
              if method != 'GET' and status == 200 and not path.endswith('/access/ticket')]
    assert writes == [('DELETE', '/cluster/ha/resources/vm:%d' % vmid),
                      ('POST', '/nodes/pve1/qemu/%d/status/shutdown' % vmid),
                      ('DELETE', '/nodes/pve1/qemu/%d' % vmid)], writes
    assert 'hastop' not in [task['type'] for task in pve.sync(lambda: list(pve.pve.tasklog))][-2:]


def test_a_change_left_pending_by_an_interrupted_apply_is_applied_and_a_destroy_survives_an_offline_storage(tf, pve):
    t = tf()
    t.write(provider_block(pve) + one_vm(extra='cores = 2'))
    t.apply()
    vmid = vms_by_name(pve)['solo'][0]

    def interrupted():
        # An apply wrote cores = 4 to the running VM and died before the reboot: PVE keeps it
        # pending, and GET /config without current=1 would show it as if it ran.
        pve.pve.vm(vmid).pending['cores'] = 4
    pve.sync(interrupted)
    t.write(provider_block(pve) + one_vm(extra='cores = 4'))
    assert [c['change']['actions'] for c in t.plan_changes()] == [['update']]
    t.apply()
    vm = pve.sync(pve.pve.vm, vmid)
    assert (str(vm.config['cores']), vm.pending, vm.status) == ('4', {}, 'running')
    t.assert_plan_empty()
    # An NFS storage of the node is down: destroying with the unreferenced-disk scan fails, so
    # castle destroys without it.
    pve.pve.offline_storages.add('nfs-images')
    t.destroy()
    assert pve.vms() == []
    destroys = [task.get('exitstatus') for task in pve.sync(lambda: list(pve.pve.tasklog)) if task['type'] == 'qmdestroy']
    assert destroys == ["storage 'nfs-images' is not online", 'OK']


def readme_role():
    """The privileges of the Castle role the README tells users to create."""
    import os
    with open(os.path.join(os.path.dirname(__file__), '..', 'README.md')) as f:
        text = f.read()
    match = re.search(r'pveum role add Castle -privs "([^"]*)"', text)
    return match.group(1).replace('\\', ' ').split()


def token_provider_block(pve):
    return provider_block(pve).replace('username    = "root@pam"\n    password    = "secret"',
                                       'api_token   = "terraform@pve!castle=tokensecret"')


def test_the_readme_token_role_is_enough_for_the_whole_lifecycle_and_sdn_use_is_needed(tf, pve):
    # A token of a non-root user (privilege separation off), given the README's role on /.
    def token(privs):
        pve.pve.acl = {}
        pve.pve.apitokens['terraform@pve!castle'] = 'tokensecret'
        pve.pve.grant('terraform@pve', '/', *privs)
    role = readme_role()
    assert 'SDN.Use' in role and 'Pool.Allocate' not in role and 'VM.Config.CDROM' not in role
    pve.sync(token, [p for p in role if p != 'SDN.Use'])
    t = tf()
    t.write(token_provider_block(pve) + one_vm())
    out = t.apply(expect_fail=True)
    # Since PVE 8.0 a clone checks the template's bridge.
    assert 'Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)' in out, out
    assert pve.vms() == []
    pve.sync(token, role)
    t.apply()
    t.write(token_provider_block(pve) + one_vm(extra='cores = 2\n  network {\n    bridge = "vmbr1"\n  }'))
    t.apply()
    vmid, _, status, config = vms_by_name(pve)['solo']
    assert status == 'running' and 'bridge=vmbr1' in config['net0'].split(',')
    t.assert_plan_empty()
    t.destroy()
    assert pve.vms() == []


@STYLE_FREE
def test_names_tags_and_descriptions_proxmox_would_refuse_are_plan_time_errors(tf, pve):
    t = tf()
    for name, extra, attribute, words in [
        ('cp-1-', '', 'name', 'must be a DNS name'),
        ('solo', 'tags = ["Talos"]', 'tags', '"Talos" is not a Proxmox tag'),
        ('solo', 'description = "%s"' % ('x' * 8193), 'description', 'Proxmox accepts at most 8192'),
    ]:
        hcl = provider_block(pve) + one_vm(name=name, extra=extra)
        t.write(hcl)
        out = t.plan(expect_fail=True)
        assert words in out, out
        assert 'on main.tf line %d' % offending_line(hcl, attribute) in out, out
    assert pve.vms() == []


def test_a_wrong_password_is_a_plan_error_and_an_unreachable_endpoint_a_warning(tf, pve):
    t = tf()
    t.write(provider_block(pve).replace('password    = "secret"', 'password    = "wrong"') + one_vm())
    out = ' '.join(t.plan(expect_fail=True).split())
    assert 'Proxmox refused the credentials' in out and 'proxmox { password }' in out, out
    t.write(provider_block(pve).replace(pve.url, 'https://127.0.0.1:9') + one_vm())
    out = ' '.join(t.plan().split())
    assert 'Warning: Proxmox does not answer' in out and 'proxmox { endpoint }' in out, out


def test_a_vm_on_another_node_uses_that_nodes_template_or_is_refused_at_plan_time(tf, pve):
    # The template named talos-nocloud lives on pve1, its disks on local-lvm: PVE cannot clone it
    # to pve2.
    t = tf()
    hcl = provider_block(pve) + one_vm(template='template_name = "%s"' % TEMPLATE_NAME).replace(
        'node = "pve1"', 'node = "pve2"')
    t.write(hcl)
    out = t.plan(expect_fail=True)
    assert 'Template cannot be cloned to this node' in out and 'scsi0 (local-lvm)' in out, out
    # People keep one template per node under one name: the one on the VM's node is used.
    from harness.pve import add_talos_template
    pve.sync(add_talos_template, pve.pve, node='pve2', vmid=9002)
    t.apply()
    vmid, _, node, status, _ = [vm for vm in pve.vms() if vm[1] == 'solo'][0]
    assert (node, status) == ('pve2', 'running')
    clones = [(task['node'], task['id']) for task in pve.sync(lambda: list(pve.pve.tasklog)) if task['type'] == 'qmclone']
    assert clones == [('pve2', '9002')]
    t.assert_plan_empty()


def ceph_template(pve, node='pve2', vmid=9003, name='talos-ceph'):
    """A template on shared (RBD) storage on another node than the VMs."""
    pve.sync(pve.pve.add_ceph_storage, 'ceph-pool')
    from harness.pve import add_talos_template
    pve.sync(add_talos_template, pve.pve, node=node, vmid=vmid, name=name, storage='ceph-pool')


def test_a_template_on_shared_storage_of_another_node_is_cloned_to_the_vms_node_and_a_timed_out_clone_leaves_nothing(
        tf, pve):
    ceph_template(pve)
    t = tf()
    hcl = provider_block(pve) + one_vm(template='template_name = "talos-ceph"')
    # Ceph is so slow that the clone outlives the create's timeout.
    pve.sync(pve.pve.ceph_slow, 10 ** 6)
    t.write(hcl.replace('ipv4 {', 'timeouts {\n    create = "15s"\n  }\n  ipv4 {'))
    out = ' '.join(t.apply(expect_fail=True).split())
    assert 'timed out' in out, out
    # castle stopped the clone task; its failure path removed what it made.
    clones = [task for task in pve.sync(lambda: list(pve.pve.tasklog)) if task['type'] == 'qmclone']
    assert [(c['node'], c['id'], c.get('exitstatus')) for c in clones] == [
        ('pve2', '9003', 'clone failed: interrupted by signal')]
    assert pve.vms() == [] and t.resources() == {}
    # Ceph is well again: the next apply clones once more, from pve2 onto the VM's node.
    pve.sync(pve.pve.ceph_recover)
    t.write(hcl)
    t.apply()
    vms = [(name, node, status) for _, name, node, status, _ in pve.vms()]
    assert vms == [('solo', 'pve1', 'running')], vms
    clones = [task for task in pve.sync(lambda: list(pve.pve.tasklog)) if task['type'] == 'qmclone']
    assert [(c['node'], c['id'], c.get('exitstatus')) for c in clones][1:] == [('pve2', '9003', 'OK')]
    t.assert_plan_empty()


def test_a_node_that_is_down_keeps_its_vm_in_state_and_a_create_there_says_what_to_do(tf, pve):
    from harness.pve import add_talos_template
    pve.sync(add_talos_template, pve.pve, node='pve2', vmid=9002)
    on_pve2 = provider_block(pve) + one_vm(template='template_name = "%s"' % TEMPLATE_NAME).replace(
        'node = "pve1"', 'node = "pve2"')
    t = tf()
    t.write(on_pve2)
    t.apply()
    [(vmid, *_)] = pve.vms()
    pve.sync(pve.pve.set_node_offline, 'pve2')
    seen = pve.sync(lambda: len(pve.pve.answers))
    # pveproxy answers 595 No route to host for pve2: the VM is neither gone nor changed.
    plan = ' '.join(t.plan().split())
    assert 'Warning: Proxmox node pve2 does not answer' in plan and 'No changes' in plan, plan
    # The node is not waited for: its config and status are asked once each, and the cluster
    # list (which shows pve2's guests as `unknown`) says the VM is still there.
    answers = pve.sync(lambda: list(pve.pve.answers)[seen:])
    unanswered = [path.split('/api2/json')[-1] for _, path, status in answers
                  if status == 595 and '/qemu/%d/' % vmid in path]
    # (The status read may be dropped once the config read failed.)
    asked_once = {'/nodes/pve2/qemu/%d/config' % vmid, '/nodes/pve2/qemu/%d/status/current' % vmid}
    assert unanswered and len(set(unanswered)) == len(unanswered) and set(unanswered) <= asked_once, unanswered
    assert any(path.endswith('/cluster/resources') for _, path, _ in answers), answers
    second = one_vm(name='two', template='template_name = "%s"' % TEMPLATE_NAME, address='10.5.0.32/24').replace(
        'node = "pve1"', 'node = "pve2"').replace('"solo" {', '"two" {')
    t.write(on_pve2 + second)
    out = ' '.join(t.apply(expect_fail=True).split())
    assert 'Proxmox node pve2 does not answer (No route to host): it is down or cut off' in out, out
    assert [vm[1] for vm in pve.vms()] == ['solo']
    pve.sync(pve.pve.set_node_offline, 'pve2', False)
    t.apply()
    assert sorted((name, node) for _, name, node, *_ in pve.vms()) == [('solo', 'pve2'), ('two', 'pve2')]
    t.assert_plan_empty()


def test_disk_sizes_proxmox_writes_in_other_units_are_grown_exactly_and_the_second_plan_is_empty(tf, pve):
    from harness.pve import add_talos_template
    # `qm importdisk` and resizes by hand leave sizes such as 10240M or 1228M in the config.
    pve.sync(add_talos_template, pve.pve, vmid=9004, name='ten-gib-in-mib', disk_size='10240M')
    pve.sync(add_talos_template, pve.pve, vmid=9005, name='not-whole-gib', disk_size='1228M')
    t = tf()
    hcl = provider_block(pve)
    for name, template, size, address in [('ten', 'ten-gib-in-mib', 10, '10.5.0.41/24'),
                                          ('odd', 'not-whole-gib', 2, '10.5.0.42/24')]:
        hcl += one_vm(name=name, template='template_name = "%s"' % template, address=address,
                      extra='disk {\n    slot = "scsi0"\n    size_gb = %d\n  }' % size).replace(
            '"solo" {', '"%s" {' % name)
    t.write(hcl)
    t.apply()
    vms = vms_by_name(pve)
    # A clone writes its disk's size in the largest unit that divides it (pve-common
    # JSONSchema.pm format_size): 10240M becomes 10G, 1228M stays 1228M. 10 GiB needs no growing;
    # 1228M is less than 2 GiB and is grown to 2G, not left as is.
    assert 'size=10G' in vms['ten'][3]['scsi0'] and 'size=2G' in vms['odd'][3]['scsi0'], vms
    resized = [task['id'] for task in pve.sync(lambda: list(pve.pve.tasklog)) if task['type'] == 'resize']
    assert resized == [str(vms['odd'][0])], resized
    state = t.resources()
    assert [state['castle_proxmox_vm.%s' % n]['disk'][0]['size_gb'] for n in ('ten', 'odd')] == [10, 2]
    t.assert_plan_empty()


@STYLE_FREE
def test_a_proxmox_that_does_not_answer_is_one_warning_per_plan_not_one_per_vm(tf, pve):
    t = tf()
    t.write(provider_block(pve).replace(pve.url, 'https://127.0.0.1:9') + FIVE_NODES)
    out = t.plan()
    assert out.count('Proxmox does not answer') == 1 and 'more similar warning' not in out, out
    assert 'Plan: 5 to add' in out


def test_an_ipv4_block_on_a_template_without_a_cloud_init_drive_is_an_error_and_leaves_no_vm(tf, pve):
    def no_cloud_init():
        template = pve.pve.vm(TEMPLATE_ID)
        del template.config['ide2']
    pve.sync(no_cloud_init)
    t = tf()
    t.write(provider_block(pve) + one_vm())
    out = ' '.join(t.apply(expect_fail=True).split())
    # PVE takes ipconfig0 without a cloud-init drive, and the address would never reach Talos.
    assert 'has no cloud-init drive, so ipv4, nameservers and search_domain would never reach it' in out, out
    assert 'qm set <template> --ide2 <storage>:cloudinit' in out, out
    assert pve.vms() == []
