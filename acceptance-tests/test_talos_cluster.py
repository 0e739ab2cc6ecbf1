"""castle_talos_cluster through real Terraform against the Talos node emulator."""

import json
import os
import subprocess

import pytest

from harness.lab import LONGHORN, TalosLab

pytestmark = pytest.mark.acceptance

PREFIX = '127.0.4.'
VIP = PREFIX + '10'
NODES = {'cp-1': 11, 'cp-2': 12, 'cp-3': 13, 'w-1': 21, 'w-2': 22}


def addresses(nodes=NODES):
    return [PREFIX + str(n) for n in nodes.values()]


def cluster_hcl(nodes=NODES, extra=''):
    entries = '\n'.join('  node {\n    name    = "%s"\n    address = "%s%d/24"\n    role    = "%s"\n  }' % (
        name, PREFIX, host, 'controlplane' if name.startswith('cp') else 'worker') for name, host in nodes.items())
    return '''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

provider "castle" {}

resource "castle_talos_cluster" "home" {
  name               = "home"
  vip                = "%s"
  talos_version      = "v1.12.0"
  kubernetes_version = "v1.33.2"
  gateway            = "%s1"
  nameservers        = ["%s1"]
  extensions         = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]
%s
  %s
}

output "kubeconfig" {
  value     = castle_talos_cluster.home.kubeconfig
  sensitive = true
}
''' % (VIP, PREFIX, PREFIX, entries, extra)


@pytest.fixture
def talos():
    lab = TalosLab(addresses() + [PREFIX + '23'], template_extensions=LONGHORN)
    try:
        yield lab
    finally:
        lab.stop()


def kubectl(tmp_path, kubeconfig, *args):
    path = tmp_path / 'kubeconfig'
    path.write_text(kubeconfig)
    os.chmod(path, 0o600)
    return subprocess.run(['/usr/bin/kubectl', '--kubeconfig', str(path), *args],
                          capture_output=True, text=True, timeout=60)


def test_five_nodes_become_a_healthy_ha_cluster_that_kubectl_sees(tf, talos, tmp_path):
    t = tf()
    t.write(cluster_hcl())
    t.apply()
    nodes = talos.nodes()
    assert {nodes[a]['state'] for a in addresses()} == {'running'}
    members = {m['hostname'] for m in nodes[PREFIX + '11']['etcd_members']}
    assert members == {'cp-1', 'cp-2', 'cp-3'}
    out = kubectl(tmp_path, t.output('kubeconfig'), 'get', 'nodes', '-o', 'wide')
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()[1:]
    assert sorted(line.split()[0] for line in lines) == sorted(NODES)
    assert all(line.split()[1] == 'Ready' for line in lines), out.stdout
    state = t.resources()['castle_talos_cluster.home']
    assert state['endpoint'] == 'https://%s:6443' % VIP
    assert 'os:admin' not in state['talosconfig']  # the role lives in the certificate, not in clear text
    assert set(state['machine_configs']) == set(NODES)
    assert state['node_versions'] == {name: 'v1.12.0' for name in NODES}
    t.assert_plan_empty()

    # Destroy puts every node back in maintenance mode, ready to be reused.
    t.destroy()
    nodes = talos.nodes()
    assert {nodes[a]['state'] for a in addresses()} <= {'maintenance', 'booting'}


def test_adding_and_removing_a_worker_changes_that_node_only(tf, talos, tmp_path):
    t = tf()
    t.write(cluster_hcl())
    t.apply()
    bigger = dict(NODES, **{'w-3': 23})
    t.write(cluster_hcl(bigger))
    t.apply()
    out = kubectl(tmp_path, t.output('kubeconfig'), 'get', 'nodes')
    assert 'w-3' in out.stdout
    t.write(cluster_hcl())
    t.apply()
    assert talos.nodes()[PREFIX + '23']['state'] in ('maintenance', 'booting')
    out = kubectl(tmp_path, t.output('kubeconfig'), 'get', 'nodes')
    assert 'w-3' not in out.stdout
    t.assert_plan_empty()


def test_a_node_of_another_cluster_is_named_with_the_remedy(tf, talos):
    talos.fault(PREFIX + '12', 'foreign_cluster')
    t = tf()
    t.write(cluster_hcl())
    out = t.apply(expect_fail=True)
    assert 'cp-2' in out and 'another Talos cluster' in out and 'reset' in out


def test_a_node_reset_outside_terraform_is_configured_again(tf, talos, tmp_path):
    t = tf()
    t.write(cluster_hcl())
    t.apply()
    # Reset w-2 behind Terraform's back: it comes back in maintenance mode.
    from harness.lab import TalosLab  # noqa: F401
    talos._call('DELETE', '/nodes/%s22' % PREFIX)
    talos.add_node(PREFIX + '22')
    changes = t.plan_changes()
    assert [c['change']['actions'] for c in changes] == [['update']]
    t.apply()
    assert talos.nodes()[PREFIX + '22']['state'] == 'running'
    t.assert_plan_empty()


def test_bad_cluster_input_is_a_plan_time_error_naming_the_attribute(tf, talos):
    t = tf()
    two_cps = {'cp-1': 11, 'cp-2': 12, 'w-1': 21}
    t.write(cluster_hcl(two_cps).replace('"v1.12.0"', '"v1.9.0"'))
    out = t.plan(expect_fail=True)
    assert 'talos_version' in out
    t.write(cluster_hcl(two_cps).replace('vip                = "%s"' % VIP, 'vip = "%s11"' % PREFIX))
    out = t.plan(expect_fail=True)
    assert 'vip' in out
    t.write(cluster_hcl(two_cps))
    out = t.plan()
    assert 'quorum' in out  # an even number of control planes is a warning that explains why
    assert all(n['state'] == 'maintenance' for n in talos.nodes().values())


def test_talos_and_kubernetes_upgrade_in_place(tf, talos, tmp_path):
    small = {'cp-1': 11, 'w-1': 21}
    t = tf()
    t.write(cluster_hcl(small))
    t.apply()
    before = t.resources()['castle_talos_cluster.home']['machine_configs']['cp-1']
    t.write(cluster_hcl(small).replace('"v1.12.0"', '"v1.13.0"').replace('"v1.33.2"', '"v1.34.1"'))
    plan = t.plan()
    assert 'will be upgraded node by node' in plan
    t.apply()
    nodes = talos.nodes()
    assert {nodes[PREFIX + str(h)]['talos_version'] for h in small.values()} == {'v1.13.0'}
    out = kubectl(tmp_path, t.output('kubeconfig'), 'get', 'nodes')
    assert out.returncode == 0, out.stderr
    assert out.stdout.count('v1.34.1') == 2, out.stdout
    assert t.resources()['castle_talos_cluster.home']['machine_configs']['cp-1'] != before
    assert t.resources()['castle_talos_cluster.home']['node_versions'] == {'cp-1': 'v1.13.0', 'w-1': 'v1.13.0'}
    t.assert_plan_empty()


def test_the_kubeconfig_file_is_kept_private_and_current(tf, talos, tmp_path):
    small = {'cp-1': 11, 'w-1': 21}
    path = tmp_path / 'home.kubeconfig'
    t = tf()
    t.write(cluster_hcl(small, extra='kubeconfig_file = "%s"' % path))
    t.apply()
    assert oct(path.stat().st_mode & 0o777) == '0o600'
    assert path.read_text() == t.output('kubeconfig')
    out = subprocess.run(['/usr/bin/kubectl', '--kubeconfig', str(path), 'get', 'nodes'],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and 'cp-1' in out.stdout, out.stderr
    t.assert_plan_empty()
    # Removed by hand: drift, written again.
    path.unlink()
    assert [c['change']['actions'] for c in t.plan_changes()] == [['update']]
    t.apply()
    assert path.read_text() == t.output('kubeconfig')
    t.assert_plan_empty()
    t.destroy()
    assert not path.exists()


def test_new_extensions_are_installed_on_every_node_one_by_one(tf, talos):
    small = {'cp-1': 11, 'w-1': 21}
    t = tf()
    t.write(cluster_hcl(small).replace(
        'extensions         = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]', ''))
    t.apply()
    first = {a: n['installed_images'] for a, n in talos.nodes().items() if n['state'] == 'running'}
    assert len(first) == 2 and all(len(images) == 1 for images in first.values())
    t.write(cluster_hcl(small))
    assert 'will be reinstalled one by one' in t.plan()
    t.apply()
    for address, images in first.items():
        now = talos.nodes()[address]['installed_images']
        assert len(now) == 2 and now[-1] != images[0], now
        assert now[-1].endswith(':v1.12.0')
    t.assert_plan_empty()


def test_an_endpoint_url_wins_over_the_vip_and_keeps_its_port(tf, talos, tmp_path):
    small = {'cp-1': 11, 'w-1': 21}
    t = tf()
    t.write(cluster_hcl(small, extra='endpoint = "https://%s11:6443/"' % PREFIX))
    t.apply()
    kubeconfig = t.output('kubeconfig')
    assert 'server: https://%s11:6443' % PREFIX in kubeconfig
    assert 'endpoint: https://%s11:6443' % PREFIX in t.resources()['castle_talos_cluster.home']['machine_configs']['w-1']
    out = kubectl(tmp_path, kubeconfig, 'get', 'nodes')
    assert out.returncode == 0, out.stderr
    t.assert_plan_empty()


def test_replacing_the_only_control_planes_machine_is_refused_at_plan_time_naming_it(tf, talos, pve):
    """A cluster of one control plane loses etcd when its machine is replaced (the old machine
    leaves etcd before the new one joins): the plan refuses and says to add a control plane."""
    from conftest import provider_block

    def hcl(cp_vm):
        text = cluster_hcl({'cp-1': 11, 'w-1': 21})
        text = text[text.index('resource "castle_talos_cluster"'):]
        text = text.replace('role    = "controlplane"\n', 'role    = "controlplane"\n    vm_id   = "%s"\n' % cp_vm)
        return provider_block(pve) + text

    t = tf()
    t.write(hcl('pve1/100'))
    t.apply()
    t.write(hcl('pve1/101'))
    out = ' '.join(t.plan(expect_fail=True).replace('│', ' ').split())
    assert "The machine of cp-1, the cluster's only control plane, would be replaced" in out, out
    assert 'Add a control plane first' in out, out
    t.write(hcl('pve1/100'))
    t.assert_plan_empty()
