"""castle_talos_cluster wired to castle_kubeconfig_secret: the kubeconfig reaches Infisical the
moment the cluster is born, and follows it when the cluster's credentials are re-issued."""

import pytest

from conftest import infisical_provider_block
from harness.lab import TalosLab

pytestmark = pytest.mark.acceptance

PREFIX = '127.0.6.'


def config(lab, workers, control_planes=1):
    nodes = [('cp-%d' % i, 10 + i, 'controlplane') for i in range(1, control_planes + 1)] + \
        [('w-%d' % i, 20 + i, 'worker') for i in range(1, workers + 1)]
    blocks = '\n'.join('''  node {
    name    = "%s"
    address = "%s%d/24"
    role    = "%s"
  }''' % (name, PREFIX, host, role) for name, host, role in nodes)
    return infisical_provider_block(lab) + '''
resource "castle_talos_cluster" "lab" {
  name               = "lab"
  endpoint           = "https://%(prefix)s11:6443"
  talos_version      = "v1.12.0"
  kubernetes_version = "v1.33.2"
  gateway            = "%(prefix)s1"
%(blocks)s
}

resource "castle_kubeconfig_secret" "lab" {
  project_id      = "%(project)s"
  environment     = "dev"
  path            = "/clusters/lab"
  kubeconfig      = castle_talos_cluster.lab.kubeconfig
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = castle_talos_cluster.lab.talosconfig
}

output "kubeconfig" {
  value     = castle_talos_cluster.lab.kubeconfig
  sensitive = true
}
''' % dict(project=lab.project_id, prefix=PREFIX, blocks=blocks)


def stored(lab, key):
    found = [s for s in lab.secrets() if s['key'] == key and s['path'] == '/clusters/lab']
    return found[0] if found else None


def test_kubeconfig_follows_the_cluster_into_infisical(tf, infisical_lab):
    talos = TalosLab([PREFIX + '11', PREFIX + '12', PREFIX + '21'])
    try:
        t = tf()
        t.write(config(infisical_lab, workers=1))
        t.apply()
        first = stored(infisical_lab, 'KUBECONFIG')
        assert first['value'].strip() == t.output('kubeconfig').strip()
        assert 'contexts' in stored(infisical_lab, 'TALOSCONFIG')['value']
        t.assert_plan_empty()

        # A new control plane changes the talosconfig's endpoints: the credentials are
        # re-issued and the secret follows in the same apply.
        t.write(config(infisical_lab, workers=1, control_planes=2))
        t.apply()
        second = stored(infisical_lab, 'KUBECONFIG')
        assert second['value'].strip() == t.output('kubeconfig').strip()
        assert second['value'] != first['value']
        assert second['version'] > first['version']
        t.assert_plan_empty()

        t.destroy()
        assert stored(infisical_lab, 'KUBECONFIG') is None
        assert all(n['state'] in ('maintenance', 'booting') for n in talos.nodes().values())
    finally:
        talos.stop()
