"""A cluster comes up in the lab on each Talos release line castle supports (the newest patch
castle was checked against), with the release's default Kubernetes, and stays without diff."""

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
    finally:
        lab.stop()
