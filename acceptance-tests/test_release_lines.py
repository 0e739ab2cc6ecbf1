"""A cluster comes up in the lab on each Talos release line castle supports (the newest patch
castle was checked against), with the release's default Kubernetes, and stays without diff."""

import json
import os
import subprocess

import pytest

from harness.lab import TalosLab

pytestmark = pytest.mark.acceptance

PREFIX = '127.0.6.'
DEFAULT_KUBERNETES = {
    'v1.10.9': 'v1.33.0',
    'v1.11.6': 'v1.34.0',
    'v1.12.11': 'v1.35.0',
    'v1.13.9': 'v1.36.0',
}

HCL = '''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

resource "castle_talos_cluster" "lab" {
  name          = "lines"
  vip           = "%(prefix)s10"
  talos_version = "%(talos)s"
  gateway       = "%(prefix)s1"
  nameservers   = ["%(prefix)s1"]

  node {
    name    = "cp-1"
    address = "%(prefix)s11/24"
    role    = "controlplane"
  }
}
'''


@pytest.mark.parametrize('talos', sorted(DEFAULT_KUBERNETES))
def test_a_cluster_comes_up_on_every_release_line_with_its_default_kubernetes(tf, talos):
    lab = TalosLab([PREFIX + '11'], talos_version=talos, template_extensions=())
    try:
        t = tf()
        t.write(HCL % {'prefix': PREFIX, 'talos': talos})
        t.apply()
        cluster = t.resources()['castle_talos_cluster.lab']
        assert cluster['kubernetes_version'] == DEFAULT_KUBERNETES[talos]
        assert cluster['node_versions'] == {'cp-1': talos}
        config = cluster['machine_configs']['cp-1']
        assert 'kube-apiserver:%s' % DEFAULT_KUBERNETES[talos] in config
        assert lab.nodes()[PREFIX + '11']['kube_apiserver_failure'] is None
        t.assert_plan_empty()
        if talos.startswith('v1.10.'):
            # v1.13's installer upgrades only from v1.11.0 on (MinimumHostUpgradeVersion): the
            # plan refuses the jump, naming the node and the line to go through.
            # Kubernetes pinned where it is (inside v1.13's window), so only Talos changes.
            t.write((HCL % {'prefix': PREFIX, 'talos': 'v1.13.9'}).replace(
                'talos_version = "v1.13.9"', 'talos_version = "v1.13.9"\n  kubernetes_version = "v1.33.0"'))
            out = ' '.join(t.plan(expect_fail=True).split())
            assert 'Unsupported Talos upgrade' in out, out
            assert 'Node cp-1 cannot be upgraded to v1.13.9' in out, out
            assert 'upgrade it to a v1.12 release first' in out, out
    finally:
        lab.stop()


MANIFEST_HCL = '''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

resource "castle_talos_cluster" "lab" {
  name          = "manifests"
  vip           = "%(prefix)s10"
  talos_version = "%(talos)s"
  gateway       = "%(prefix)s1"
  nameservers   = ["%(prefix)s1"]

  inline_manifests = {
    home = <<-EOT
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: settings
        namespace: home
      data:
        mode: %(mode)s
      ---
      apiVersion: v1
      kind: Namespace
      metadata:
        name: home
    EOT
  }

  node {
    name    = "cp-1"
    address = "%(prefix)s11/24"
    role    = "controlplane"
  }
}

output "kubeconfig" {
  value     = castle_talos_cluster.lab.kubeconfig
  sensitive = true
}
'''


@pytest.mark.parametrize('talos, deleted_comes_back', [('v1.12.11', True), ('v1.13.9', False)])
def test_inline_manifest_objects_are_created_once_and_a_deleted_one_comes_back_only_before_1_13(
        tf, tmp_path, talos, deleted_comes_back):
    """Talos creates what the manifests declare and never updates it (on either release); 1.12
    creates a deleted object again at its next run, 1.13 remembers it in its inventory and does
    not (Talos: internal/app/machined/pkg/controllers/k8s/manifest_apply.go)."""
    lab = TalosLab([PREFIX + '11'], talos_version=talos, template_extensions=())
    try:
        t = tf()

        def apply(mode):
            t.write(MANIFEST_HCL % {'prefix': PREFIX, 'talos': talos, 'mode': mode})
            t.apply()

        def kubectl(*args):
            path = tmp_path / 'kubeconfig'
            path.write_text(t.output('kubeconfig'))
            os.chmod(path, 0o600)
            return subprocess.run(['/usr/bin/kubectl', '--kubeconfig', str(path), *args],
                                  capture_output=True, text=True, timeout=60)

        def mode():
            out = kubectl('get', 'configmap', 'settings', '-n', 'home', '-o', 'jsonpath={.data.mode}')
            return out.stdout if out.returncode == 0 else out.stderr

        apply('first')
        out = kubectl('get', 'ns', 'home')
        assert out.returncode == 0 and ' Active ' in out.stdout, out.stdout + out.stderr
        out = kubectl('get', 'configmaps', '-n', 'home')
        assert out.returncode == 0, out.stderr
        assert out.stdout.split('\n')[1].split()[:2] == ['settings', '1'], out.stdout
        assert mode() == 'first'

        apply('second')
        assert mode() == 'first', 'Talos does not update an object it created'

        out = kubectl('delete', 'configmap', 'settings', '-n', 'home')
        assert out.returncode == 0 and 'configmap "settings" deleted' in out.stdout, out.stdout + out.stderr
        apply('third')
        if deleted_comes_back:
            assert mode() == 'third'
        else:
            assert 'configmaps "settings" not found' in mode()
            out = kubectl('get', 'configmap', 'talos-bootstrap-manifests-inventory', '-n', 'kube-system',
                          '-o', 'json')
            assert out.returncode == 0, out.stderr
            assert 'home_settings__ConfigMap' in json.loads(out.stdout)['data']
        t.assert_plan_empty()
    finally:
        lab.stop()
