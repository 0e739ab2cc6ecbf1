"""castle_talos_secrets: the cluster's identity in state before any node sees it, so a Terraform
killed during the cluster's create is finished by the next apply; and an existing cluster's
`talosctl gen secrets` file brought in (migration)."""

import os
import signal
import subprocess
import time

import pytest

from harness.lab import TalosLab
from harness.terraform import terraform_command

pytestmark = pytest.mark.acceptance

PREFIX = '127.0.6.'
NODES = {'cp-1': 11, 'w-1': 21}


def hcl(secrets_block='', patches=''):
    entries = '\n'.join('  node {\n    name    = "%s"\n    address = "%s%d/24"\n    role    = "%s"\n  }' % (
        name, PREFIX, host, 'controlplane' if name.startswith('cp') else 'worker') for name, host in NODES.items())
    return '''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

provider "castle" {}

resource "castle_talos_secrets" "home" {
%s
}

resource "castle_talos_cluster" "home" {
  name               = "home"
  secrets            = castle_talos_secrets.home.secrets
  talos_version      = "v1.12.0"
  kubernetes_version = "v1.33.2"
  gateway            = "%s1"
%s
%s
}
''' % (secrets_block, PREFIX, patches, entries)


@pytest.fixture
def talos():
    lab = TalosLab([PREFIX + str(h) for h in NODES.values()])
    try:
        yield lab
    finally:
        lab.stop()


def apply_killed_when(t, text, extra_seconds):
    """`terraform apply`, SIGKILLed (Terraform and provider together) `extra_seconds` after
    `text` appears in its output."""
    log_path = os.path.join(t.workdir, 'killed.log')
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(terraform_command() + ['apply', '-auto-approve', '-no-color'], cwd=t.workdir,
                                env=t.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with open(log_path) as f:
                if text in f.read():
                    break
            time.sleep(0.05)
        time.sleep(extra_seconds)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with open(log_path) as f:
        return f.read()


# A patch that Talos cannot take in place: `machine.env` changes reboot the node.
PROXY_PATCH = '''  patches = [yamlencode({ machine = { env = { HTTPS_PROXY = "http://127.0.6.1:3128" } } })]'''


def test_an_apply_killed_while_the_cluster_forms_is_finished_by_the_next_one_with_the_current_config(tf, talos):
    t = tf()
    t.write(hcl())
    output = apply_killed_when(t, 'castle_talos_cluster.home: Creating...', 1.5)
    assert 'castle_talos_secrets.home: Creation complete' in output
    assert 'castle_talos_cluster.home: Creation complete' not in output, 'the kill came too late:\n' + output
    # The nodes got this cluster's CA before the kill; the secrets survived in state.
    assert 'castle_talos_secrets.home' in t.resources()
    identity = t.resources()['castle_talos_secrets.home']['id']
    left = {a for a, n in talos.nodes().items() if n['cluster_id'] == identity}
    assert left, talos.nodes()
    assert all(talos.running_config(a)['machine'].get('env') is None for a in left)
    # Their install reboots are over before the count that tells the change's reboot.
    deadline = time.monotonic() + 30
    while {talos.nodes()[a]['state'] for a in left} != {'running'}:
        assert time.monotonic() < deadline, talos.nodes()
        time.sleep(0.1)
    boots = {a: n['boots'] for a, n in talos.nodes().items()}

    # The user adds a patch before applying again: the nodes that run the killed run's config
    # get the current one, through the same apply as any running node (AUTO: Talos reboots
    # them for it), and the create finishes.
    t.write(hcl(patches=PROXY_PATCH))
    t.apply()
    nodes = talos.nodes()
    assert {n['state'] for n in nodes.values()} == {'running'}
    assert {n['cluster_id'] for n in nodes.values()} == {identity}
    for address in nodes:
        assert talos.running_config(address)['machine']['env'] == {'HTTPS_PROXY': 'http://127.0.6.1:3128'}, address
    for address in left:
        assert nodes[address]['boots'] > boots[address], 'rebooted for the change: %s' % address
    assert {m['hostname'] for m in nodes[PREFIX + '11']['etcd_members']} == {'cp-1'}
    t.assert_plan_empty()
    t.destroy()
    assert {n['state'] for n in talos.nodes().values()} <= {'maintenance', 'booting'}


def test_an_existing_clusters_secrets_file_is_adopted_and_importing_it_plans_nothing(tf, talos, tmp_path):
    # A cluster made elsewhere: its secrets file, as talosctl gen secrets writes it.
    made = tf('made')
    made.write(hcl())
    made.apply('-target=castle_talos_secrets.home')
    secrets_yaml = made.resources()['castle_talos_secrets.home']['secrets']
    secrets_file = tmp_path / 'secrets.yaml'
    secrets_file.write_text(secrets_yaml)
    os.chmod(secrets_file, 0o600)

    t = tf('adopt')
    t.write(hcl('  secrets_yaml = file("%s")' % secrets_file))
    out = t.apply()
    cluster_secret = secrets_yaml.split('secret: ', 1)[1].split()[0]
    assert cluster_secret not in out, 'a secret reached the output'
    state = t.resources()
    assert state['castle_talos_secrets.home']['secrets'] == secrets_yaml
    assert {n['cluster_id'] for n in talos.nodes().values()} == {state['castle_talos_secrets.home']['id']}
    t.assert_plan_empty()

    # The same file imported instead of written into the configuration: nothing to change.
    imported = tf('import')
    imported.write(hcl())
    imported.import_('castle_talos_secrets.home', str(secrets_file))
    assert imported.resources()['castle_talos_secrets.home']['secrets'] == secrets_yaml
    changes = [c['address'] for c in imported.plan_changes()]
    assert 'castle_talos_secrets.home' not in changes

    # A file that is not a secrets bundle is refused at plan time, naming the attribute.
    bad = tf('bad')
    bad.write(hcl('  secrets_yaml = "cluster: {}"'))
    out = bad.plan(expect_fail=True)
    assert 'Invalid secrets_yaml' in out
    t.destroy()


def test_a_state_file_emptied_by_a_killed_run_is_refused_with_the_restore_command(tf):
    # Terraform's local backend truncates terraform.tfstate before it writes the new snapshot;
    # a kill between the two leaves it empty, and the next plan would generate new secrets.
    t = tf()
    secrets_only = hcl().split('resource "castle_talos_cluster"')[0]
    t.write(secrets_only)
    t.apply()
    secrets = t.resources()['castle_talos_secrets.home']['secrets']
    # A second run that writes state backs up the first one's, as the killed run would have.
    t.write(secrets_only + '\noutput "cluster_id" {\n  value = castle_talos_secrets.home.id\n}\n')
    t.apply()
    assert os.path.getsize(os.path.join(t.workdir, 'terraform.tfstate.backup')) > 0
    open(os.path.join(t.workdir, 'terraform.tfstate'), 'w').close()
    # Emptied by that killed run, before the next command started (castle tells it from the
    # command's own rewrites by that).
    earlier = time.time() - 60
    os.utime(os.path.join(t.workdir, 'terraform.tfstate'), (earlier, earlier))

    out = t.plan(expect_fail=True)
    assert 'The state file was emptied by a killed run' in out, out
    assert 'cp terraform.tfstate.backup terraform.tfstate' in out
    cluster_secret = secrets.split('secret: ', 1)[1].split()[0]
    assert cluster_secret not in out, 'a secret reached the output'

    # The command it gives brings the secrets back: nothing to generate.
    subprocess.run(['cp', 'terraform.tfstate.backup', 'terraform.tfstate'], cwd=t.workdir, check=True)
    changes = [c['address'] for c in t.plan_changes()]
    assert 'castle_talos_secrets.home' not in changes
    assert t.resources()['castle_talos_secrets.home']['secrets'] == secrets
