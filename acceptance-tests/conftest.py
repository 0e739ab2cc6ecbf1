"""Fixtures of castle's acceptance tests: real Terraform, the freshly built provider, the lab."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.pve import ServedPve, add_talos_template  # noqa: E402
from harness.terraform import Terraform  # noqa: E402


@pytest.fixture
def tf(tmp_path):
    """A factory of Terraform working directories under this test's tmp dir."""
    made = []

    def make(name='tf', env=None):
        t = Terraform(tmp_path / name, env=env)
        made.append(t)
        return t
    yield make


@pytest.fixture
def pve(tmp_path, request):
    """fakepve (with castle's resize model) holding a Talos template, for one test.

    time_scale 0.01 makes PVE's task durations a hundredth of real ones, so clones and starts
    still run as tasks that hold locks while Terraform polls them. Parametrised indirectly with
    an answer style ('9', or '8.3': error text only in the reason phrase), it answers that way.
    """
    style = getattr(request, 'param', '9')
    served = ServedPve(tmp_path / 'pve', time_scale=0.01, answer_style=style)
    served.sync(add_talos_template, served.pve)
    # Three nodes, as on rented servers: each has its own local and local-lvm storage.
    for node in ('pve2', 'pve3'):
        served.sync(served.pve.add_node, node)
    try:
        yield served
    finally:
        served.stop()


TERRAFORM_BLOCK = '''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}
'''


def proxmox_provider_block(pve, ca_pem, extra=''):
    """The provider block for a test against `pve`, trusting `ca_pem` (PEM certificates) or,
    when None, only what the environment or the system trusts."""
    trust = '' if ca_pem is None else '''    ca_cert_pem = <<-PEM
%s
PEM
''' % ca_pem.strip()
    return TERRAFORM_BLOCK + '''
provider "castle" {
  proxmox {
    endpoint    = "%s"
    username    = "root@pam"
    password    = "secret"
%s  }
%s
}
''' % (pve.url, trust, extra)


def provider_block(pve, extra=''):
    """The provider block for a test against `pve`, trusting its certificate."""
    return proxmox_provider_block(pve, pve.ca_pem, extra)


def infisical_provider_block(lab):
    """The provider block for a test against the Infisical emulator `lab` alone."""
    return TERRAFORM_BLOCK + '''
provider "castle" {
  infisical {
    host          = "%s"
    client_id     = "%s"
    client_secret = "%s"
  }
}
''' % (lab.url, lab.client_id, lab.client_secret)


@pytest.fixture
def infisical_lab():
    """The Infisical emulator (`castle-lab infisical`) for one test."""
    from harness.lab import InfisicalLab
    lab = InfisicalLab()
    try:
        yield lab
    finally:
        lab.stop()
