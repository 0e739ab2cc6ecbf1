"""examples/talos-cluster-existing-nodes applied as a user would, with its lab.tfvars, against
`castle-lab talos` on the addresses that file names (127.0.0.210-215)."""

import os
import shutil

import pytest

from harness.lab import LONGHORN, TalosLab

pytestmark = pytest.mark.acceptance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'examples', 'talos-cluster-existing-nodes')
ADDRESSES = ['127.0.0.%d' % n for n in range(211, 216)]


def test_the_existing_nodes_example_builds_the_lab_cluster_and_tears_it_down(tf):
    lab = TalosLab(ADDRESSES, template_extensions=LONGHORN)
    try:
        t = tf()
        for name in ('main.tf', 'variables.tf', 'lab.tfvars'):
            shutil.copy(os.path.join(EXAMPLE, name), t.workdir)
        assert 'Success' in t.run('validate', '-no-color')
        # The cluster's secrets and the cluster itself.
        assert 'Plan: 2 to add' in t.plan('-var-file=lab.tfvars')
        t.apply('-var-file=lab.tfvars')
        nodes = lab.nodes()
        assert {nodes[a]['state'] for a in ADDRESSES} == {'running'}
        assert sorted(nodes[a]['hostname'] for a in ADDRESSES) == ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2']
        assert t.output('endpoint') == 'https://127.0.0.210:6443'
        assert 'server: https://127.0.0.210:6443' in t.output('kubeconfig')
        changes = t.run('plan', '-no-color', '-detailed-exitcode', '-var-file=lab.tfvars')
        assert 'No changes' in changes
        t.run('destroy', '-auto-approve', '-no-color', '-var-file=lab.tfvars')
        nodes = lab.nodes()
        assert {nodes[a]['state'] for a in ADDRESSES} <= {'maintenance', 'booting'}
    finally:
        lab.stop()
