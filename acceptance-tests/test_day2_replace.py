"""Day 2 on the flagship example: replacing the machine of a control plane.

examples/ha-cluster as a user has it (VMs from for_each with create_before_destroy, node blocks
from the VMs with vm_id), applied with real Terraform against the whole lab (`castle-lab up`:
Proxmox, Talos nodes running real etcd, Infisical). Two moves on one cluster:

1. `terraform apply -replace` of cp-2's VM: the new VM waits, stopped, while the old one holds
   the address; castle takes the old machine out of etcd and Kubernetes, stops it, starts the
   new one, which joins etcd as a learner and is promoted.
2. cp-3's VM deleted in Proxmox behind Terraform's back, then `terraform apply`: the VM is
   rebuilt at the same address, its ghost etcd member removed before the new machine joins.

After each: the real etcd's member list holds exactly the control planes (the replaced one
with a new member id), kubectl through the VIP lists exactly the nodes, all Ready, the
`kubernetes` endpoints are exactly the control planes' addresses, the lab saw no two VMs on
one address, Proxmox has no VM that state does not know, and a second plan is empty.
"""

import pytest

from harness.flagship import Flagship

pytestmark = pytest.mark.acceptance

# Proxmox tasks that would take a machine down.
STOPPING = {'qmstop', 'qmshutdown', 'qmreset', 'qmreboot', 'qmsuspend'}


def vm_ids(flagship):
    """Node name -> the VMID of its VM in state."""
    return {name: vm['vm_id'] for name, vm in flagship.nodes_output().items()}


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    c = Flagship(tmp_path_factory.mktemp('day2-replace'))
    try:
        c.tf.apply()
        yield c
    finally:
        c.stop()


def test_replacing_a_control_planes_vm_hands_its_address_over_and_it_rejoins_etcd(cluster):
    before = {cp: cluster.member_id(cp) for cp in ('cp-1', 'cp-2')}
    old_vm = vm_ids(cluster)['cp-2']
    plan = cluster.tf.plan('-replace=castle_proxmox_vm.node["cp-2"]')
    assert 'The machine of cp-2 will be replaced' in plan
    out = cluster.tf.apply('-replace=castle_proxmox_vm.node["cp-2"]')
    assert 'VM home-cp-2 waits for its address' in out
    new_vm = vm_ids(cluster)['cp-2']
    assert new_vm != old_vm
    assert cluster.member_id('cp-2') != before['cp-2']
    assert cluster.member_id('cp-1') == before['cp-1']
    cluster.assert_cluster(3, 2)


def test_a_control_plane_vm_lost_in_proxmox_is_rebuilt_and_its_ghost_member_removed(cluster):
    before = cluster.member_id('cp-3')
    lost = vm_ids(cluster)['cp-3']
    pve = cluster.pve
    # Proxmox gives a new VM the lowest free VMID. Hold every free id below the lost VM's (the
    # first test freed cp-2's old one) so that the rebuilt VM gets the lost one's id back, as
    # it does on a real cluster where the lost VM had the highest id.
    taken = {vm['vmid'] for vm in pve.vms()}
    placeholders = [vmid for vmid in range(100, lost) if vmid not in taken]
    for vmid in placeholders:
        pve.wait(pve.call('POST', '/nodes/pve1/qemu', {'vmid': vmid, 'name': 'placeholder-%d' % vmid}))
    pve.wait(pve.call('POST', '/nodes/pve1/qemu/%d/status/stop' % lost))
    pve.wait(pve.call('DELETE', '/nodes/pve1/qemu/%d' % lost))
    seen = {t['upid'] for t in pve.tasks(lost)}
    out = cluster.tf.apply()
    assert 'was not reset' not in out, out
    for vmid in placeholders:
        pve.wait(pve.call('DELETE', '/nodes/pve1/qemu/%d' % vmid))
    # The rebuilt VM has the lost one's VMID (and a new MAC): castle must take it for the new
    # machine, not for the old one to stop. Nothing stopped or reset it during the apply, and
    # it runs the new etcd member.
    assert vm_ids(cluster)['cp-3'] == lost
    stopped = [t for t in pve.tasks(lost) if t['upid'] not in seen and t['type'] in STOPPING]
    assert stopped == [], stopped
    assert pve.vm('home-cp-3')['status'] == 'running'
    assert cluster.member_id('cp-3') != before
    cluster.assert_cluster(3, 2)
