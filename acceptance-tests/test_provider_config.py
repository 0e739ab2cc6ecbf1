"""The provider block: settings that are only known at apply time."""

import pytest

pytestmark = pytest.mark.acceptance


def test_credentials_from_another_resource_are_waited_for_not_refused(tf, infisical_lab):
    t = tf()
    t.write('''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

# Built into Terraform: its output is unknown until it is applied, like a secret read from
# another system in the same configuration.
resource "terraform_data" "credentials" {
  input = "%(secret)s"
}

provider "castle" {
  infisical {
    host          = "%(url)s"
    client_id     = "%(id)s"
    client_secret = terraform_data.credentials.output
  }
}

resource "castle_kubeconfig_secret" "k" {
  project_id  = "%(project)s"
  environment = "dev"
  kubeconfig  = "apiVersion: v1\\nkind: Config\\n"
}
''' % dict(secret=infisical_lab.client_secret, url=infisical_lab.url, id=infisical_lab.client_id,
           project=infisical_lab.project_id))
    out = t.plan()
    assert 'Error' not in out, out
    t.apply()
    assert [s['key'] for s in infisical_lab.secrets()] == ['KUBECONFIG']
    t.assert_plan_empty()


def test_the_proxmox_ca_can_come_from_the_environment(tf, pve):
    from test_proxmox_vm import one_vm
    t = tf()
    t.write('''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

provider "castle" {
  proxmox {
    endpoint = "%s"
    username = "root@pam"
    password = "secret"
  }
}
''' % pve.url + one_vm())
    # fakepve's certificate is signed by a private CA: only the environment makes it trusted.
    t.env['PROXMOX_VE_CA_CERT_PEM'] = pve.ca_pem
    t.apply()
    assert [vm[1] for vm in pve.vms()] == ['solo']
