"""Scale-in through examples/ha-cluster as users write it (issue 13): one edit of the counts and
`terraform apply`. castle drains the node (PodDisruptionBudgets respected), a control plane
leaves etcd, the machine is reset and its Node deleted, and only then does Terraform delete the
VM (the VMs are create_before_destroy, ADR 0012). One lab, several moves; after each, the
cluster is checked as a user would see it (harness/flagship.py `assert_cluster`)."""

import os

import pytest

from harness.flagship import Flagship

pytestmark = pytest.mark.acceptance


@pytest.fixture
def flagship(tmp_path):
    lab = Flagship(tmp_path, net=6, time_scale=0.2)
    try:
        yield lab
    finally:
        lab.stop()


def test_scaling_workers_and_control_planes_in_leaves_nothing_behind_and_a_budget_stops_the_drain(flagship):
    flagship.scale(3, 2)
    flagship.assert_cluster(3, 2)

    flagship.scale(3, 4)
    flagship.assert_cluster(3, 4)

    # A workload whose budget allows no disruption sits on w-3: the drain is refused until the
    # update's deadline (shortened here by a Terraform override file), the apply fails naming
    # the pod, w-3 stays cordoned with its VM, and w-4 is left as it was.
    flagship.place_workload('w-3', 'web', min_available=1)
    flagship.tf.write('resource "castle_talos_cluster" "this" {\n  timeouts {\n    update = "30s"\n  }\n}\n',
                      'timeouts_override.tf')
    out = ' '.join(flagship.scale(3, 2, expect_fail=True).split())
    assert 'draining node w-3: pod default/web-' in out, out
    assert 'disruption budget' in out and 'then apply again' in out, out
    assert 'home-w-3' in flagship.proxmox_vms().values()
    assert 'home-w-4' in flagship.proxmox_vms().values()
    nodes = flagship.nodes()
    assert nodes['w-3'] == (True, True), 'w-3 stays cordoned'
    assert nodes['w-4'] == (True, False), 'w-4 was not touched'

    # The budget removed, the same apply goes through: the pod moves, both workers leave.
    flagship.kubectl('delete', 'pdb', 'web')
    os.remove(os.path.join(flagship.tf.workdir, 'timeouts_override.tf'))
    flagship.scale(3, 2)
    flagship.assert_cluster(3, 2)

    # A fourth control plane is an even number (warned), and back to three.
    out = ' '.join(flagship.scale(4, 2).split())
    assert 'Even number of control-plane nodes (4)' in out, out
    flagship.assert_cluster(4, 2)
    flagship.scale(3, 2)
    flagship.assert_cluster(3, 2)

