"""examples/ha-cluster, the flagship example, with bad input: the node blocks hold the VMs' MACs,
unknown until the VMs exist, yet every check that needs only known values runs at plan time,
names the attribute in its message, and nothing is cloned. A destroy never trips on them."""

import os
import shutil

import pytest

pytestmark = pytest.mark.acceptance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')


@pytest.fixture
def flagship(tf, pve, tmp_path):
    t = tf()
    for name in ('main.tf', 'variables.tf', 'outputs.tf'):
        shutil.copy(os.path.join(EXAMPLE, name), t.workdir)
    ca = tmp_path / 'pve-ca.pem'
    ca.write_text(pve.ca_pem)
    t.write('\n'.join([
        'proxmox_endpoint = "%s"' % pve.url,
        'proxmox_username = "root@pam"',
        'proxmox_password = "secret"',
        'proxmox_ca_cert_file = "%s"' % ca,
        'subnet = "127.0.0.0/24"',
        'first_host = 211',
        'vip = "127.0.0.210"',
        'gateway = "127.0.0.1"',
        'nameservers = ["127.0.0.1"]',
        'infisical_host = "http://127.0.0.3:8200"',
        'infisical_client_id = "id"',
        'infisical_client_secret = "secret"',
        'infisical_project_id = "project"',
        'infisical_environment = "dev"',
    ]) + '\n', name='terraform.tfvars')
    return t


def said(out):
    """Terraform's output as one line: diagnostics are boxed with '│' and wrapped at 78 columns."""
    return ' '.join(out.replace('│', ' ').split())


def failed_plan(t, *variables):
    return said(t.plan(*['-var=%s' % v for v in variables], expect_fail=True))


def test_the_flagship_example_refuses_bad_cluster_input_at_plan_time_naming_the_attribute(flagship, pve):
    t = flagship
    out = failed_plan(t, 'talos_version=v1.9.0')
    assert 'unsupported talos_version "v1.9.0"' in out, out

    out = failed_plan(t, 'kubernetes_version=latest')
    assert 'unsupported kubernetes_version "latest"' in out, out

    out = failed_plan(t, 'talos_version=v1.12.0', 'kubernetes_version=v1.36.1')
    assert 'talos_version v1.12.0 runs Kubernetes 1.30 to 1.35, and kubernetes_version is v1.36.1' in out, out

    out = failed_plan(t, 'vip=127.0.1.10')
    assert 'vip 127.0.1.10 must be inside the subnet of every control plane' in out, out

    # The default plan (the release's own Kubernetes) is fine, with every MAC still unknown.
    out = said(t.plan())
    assert 'Plan: 8 to add' in out, out
    assert 'kubernetes_version = "v1.35.0"' in out, out

    # An apply with bad input clones nothing.
    out = said(t.apply(vars={'talos_version': 'v1.9.0'}, expect_fail=True))
    assert 'unsupported talos_version "v1.9.0"' in out, out
    assert pve.vms() == []


def test_endpoint_and_tpm_mistakes_are_refused_at_plan_time(flagship):
    t = flagship
    main = os.path.join(t.workdir, 'main.tf')
    with open(main) as f:
        text = f.read()
    with open(main, 'w') as f:
        f.write(text.replace('disk_encryption = "nodeID"',
                             'disk_encryption = var.disk_encryption\n  endpoint = var.endpoint\n'
                             '  install_image = var.install_image'))
    with open(os.path.join(t.workdir, 'extra.tf'), 'w') as f:
        f.write('variable "disk_encryption" {\n  default = "nodeID"\n}\n'
                'variable "endpoint" {\n  default = null\n}\n'
                'variable "install_image" {\n  default = null\n}\n')
    out = failed_plan(t, 'endpoint=http://k8s.lan:6443')
    assert 'endpoint "http://k8s.lan:6443" uses http://' in out, out
    out = failed_plan(t, 'endpoint=k8s.lan:443:6443')
    assert 'endpoint "k8s.lan:443:6443" is not a host with an optional port' in out, out
    # tpm alone is fine: castle installs the factory's SecureBoot installer. An install_image
    # that is none is refused.
    out = failed_plan(t, 'disk_encryption=tpm', 'install_image=ghcr.io/siderolabs/installer:v1.12.0')
    assert 'disk_encryption = "tpm" needs a SecureBoot installer' in out, out
    assert 'Plan: 8 to add' in t.plan('-var=endpoint=k8s.lan:443', '-var=disk_encryption=tpm')


def test_bad_cluster_input_does_not_block_removing_the_vms_without_refresh(flagship, pve):
    # Terraform plans every configured resource again before a destroy (its pre-destroy
    # refresh), so plan-time errors show there too; without that refresh nothing of the
    # cluster's configuration is checked and the VMs go.
    t = flagship
    t.apply('-target=castle_proxmox_vm.node')
    assert len(pve.vms()) == 5
    t.run('destroy', '-auto-approve', '-no-color', '-refresh=false', '-var=talos_version=v1.9.0',
          '-var=kubernetes_version=latest')
    assert pve.vms() == []


def test_a_node_whose_vm_has_two_nics_must_name_its_mac_at_plan_time(tf, pve):
    # Without mac_address castle selects the machine's only physical link; with two NICs Talos
    # would configure neither. castle reads the VM behind vm_id and says so before anything runs.
    from conftest import provider_block
    pve.sync(pve.pve.add_vm, 120, 'cp-1', node='pve1', config={
        'net0': 'virtio=BC:24:11:00:01:20,bridge=vmbr0', 'net1': 'virtio=BC:24:11:00:01:21,bridge=vmbr1'})
    cluster = '''
resource "castle_talos_cluster" "home" {
  name               = "home"
  talos_version      = "v1.12.0"
  gateway            = "127.0.7.1"
  node {
    name    = "cp-1"
    address = "127.0.7.11/24"
    role    = "controlplane"
    vm_id   = "pve1/120"
    %s
  }
}
'''
    t = tf()
    t.write(provider_block(pve) + cluster % '')
    out = said(t.plan(expect_fail=True))
    assert 'Node cp-1 needs mac_address' in out, out
    assert 'has 2 NICs (net0, net1)' in out, out
    t.write(provider_block(pve) + cluster % 'mac_address = "BC:24:11:00:01:20"')
    assert 'Plan: 1 to add' in t.plan()
