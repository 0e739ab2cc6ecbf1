"""Secrets never reach the provider's logs, even at trace level."""

import pytest

from conftest import provider_block
from harness.lab import TalosLab
from harness.pve import ServedPve, add_talos_template

pytestmark = pytest.mark.acceptance

PVE_PASSWORD = 'pve-pass-7f3a9c'
PREFIX = '127.0.7.'


def test_passwords_keys_kubeconfigs_and_escrowed_cluster_secrets_stay_out_of_trace_logs(tf, tmp_path, infisical_lab):
    pve = ServedPve(tmp_path / 'pve', time_scale=0.01, password=PVE_PASSWORD)
    talos = TalosLab([PREFIX + '11'])
    try:
        pve.sync(add_talos_template, pve.pve)
        log = tmp_path / 'provider.log'
        t = tf(env={'TF_LOG_PROVIDER': 'trace', 'TF_LOG_PATH': str(log)})
        block = provider_block(pve, extra='''
  infisical {
    host          = "%s"
    client_id     = "%s"
    client_secret = "%s"
  }''' % (infisical_lab.url, infisical_lab.client_id, infisical_lab.client_secret))
        t.write(block.replace('password    = "secret"', 'password    = "%s"' % PVE_PASSWORD) + '''
resource "castle_proxmox_vm" "vm" {
  node = "pve1"
  name = "logged"
  clone {
    template_name = "talos-nocloud"
  }
  ipv4 {
    address = "10.7.0.10/24"
  }
}

resource "castle_talos_secrets" "s" {
  escrow {
    project_id  = "%(project)s"
    environment = "dev"
    name        = "logs"
  }
}

resource "castle_talos_cluster" "c" {
  name               = "logs"
  secrets            = castle_talos_secrets.s.secrets
  endpoint           = "https://%(p)s11:6443"
  talos_version      = "v1.12.0"
  kubernetes_version = "v1.33.2"
  gateway            = "%(p)s1"
  node {
    name    = "cp-1"
    address = "%(p)s11/24"
    role    = "controlplane"
  }
}

resource "castle_kubeconfig_secret" "k" {
  project_id  = "%(project)s"
  environment = "dev"
  kubeconfig  = castle_talos_cluster.c.kubeconfig
}
''' % {'p': PREFIX, 'project': infisical_lab.project_id})
        t.apply()
        text = log.read_text()
        # The log is real: castle's own lines are in it.
        assert 'proxmox request' in text and 'etcd bootstrapped' in text
        kubeconfig = t.resources()['castle_talos_cluster.c']['kubeconfig']
        client_key = [line for line in kubeconfig.splitlines() if 'client-key-data' in line][0].split()[-1]
        # The cluster's secrets, escrowed in Infisical: none of their keys or tokens either.
        bundle = t.resources()['castle_talos_secrets.s']['secrets']
        bundle_words = [line.split()[-1][:40] for line in bundle.splitlines()
                        if line.strip().startswith(('key:', 'secret:', 'token:', 'bootstraptoken:'))]
        assert len(bundle_words) >= 6
        for secret in (PVE_PASSWORD, infisical_lab.client_secret, client_key[:40], 'PRIVATE KEY', *bundle_words):
            assert secret not in text, 'a secret reached the log: %s...' % secret[:8]
        t.destroy()
    finally:
        talos.stop()
        pve.stop()
