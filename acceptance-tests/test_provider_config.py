"""The provider block: settings that are only known at apply time."""

import pytest

from conftest import TERRAFORM_BLOCK, proxmox_provider_block

pytestmark = pytest.mark.acceptance


def test_credentials_from_another_resource_are_waited_for_not_refused(tf, infisical_lab):
    t = tf()
    t.write(TERRAFORM_BLOCK + '''
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
    t.write(proxmox_provider_block(pve, None) + one_vm())
    # fakepve's certificate is signed by a private CA: only the environment makes it trusted.
    t.env['PROXMOX_VE_CA_CERT_PEM'] = pve.ca_pem
    t.apply()
    assert [vm[1] for vm in pve.vms()] == ['solo']


def test_an_unknown_proxmox_ca_fails_at_once_naming_the_setting_and_a_ca_bundle_is_trusted(tf, pve, tmp_path):
    from fakepve.certs import make_cert
    from test_proxmox_vm import one_vm
    t = tf()
    # No CA given: the lab's certificate is signed by a private CA, which nothing trusts.
    t.write(proxmox_provider_block(pve, None) + one_vm())
    out = ' '.join(t.plan(expect_fail=True).split())
    assert "Error: Proxmox's TLS certificate is not trusted" in out, out
    assert 'invalid peer certificate: UnknownIssuer' in out and 'proxmox { ca_cert_pem }' in out, out
    assert 'Proxmox does not answer' not in out
    # A bundle: an unrelated CA first, then the lab's (an internal CA with its intermediates).
    other, _, _ = make_cert(str(tmp_path), name='other-ca', hosts=('127.0.0.9',))
    with open(other) as f:
        bundle = f.read().strip() + '\n' + pve.ca_pem.strip()
    t.write(proxmox_provider_block(pve, bundle) + one_vm())
    t.apply()
    assert [vm[1] for vm in pve.vms()] == ['solo']
    t.assert_plan_empty()
