"""castle_talos_secrets with an escrow in Infisical: a Terraform state lost after the secrets were
made (a remote backend's last 20 s, an emptied terraform.tfstate) finds the same secrets on the
next apply instead of generating a new identity the nodes would refuse. No cluster is needed: the
secrets resource alone shows it. Secret values are compared by hash, never printed."""

import hashlib
import re

import pytest

from conftest import infisical_provider_block

pytestmark = pytest.mark.acceptance

KEY = 'TALOS_SECRETS_HOME'


def hcl(lab, path='/clusters/home', secrets_yaml=None, environment='dev'):
    given = '  secrets_yaml = file("%s")\n' % secrets_yaml if secrets_yaml else ''
    return infisical_provider_block(lab) + '''
resource "castle_talos_secrets" "home" {
%(given)s
  escrow {
    project_id  = "%(project)s"
    environment = "%(environment)s"
    path        = "%(path)s"
    name        = "home"
  }
}
''' % dict(project=lab.project_id, path=path, given=given, environment=environment)


def digest(text):
    return hashlib.sha256(text.strip().encode()).hexdigest()


def escrowed(lab, path='/clusters/home', environment='dev'):
    found = [s for s in lab.secrets() if s['key'] == KEY and s['path'] == path and s['environment'] == environment]
    return found[0] if found else None


def secret_words(secrets_yaml):
    """The bundle's random values (keys, tokens), none of which may reach Terraform's output."""
    return [w for w in re.findall(r'(?:key|secret|token|bootstraptoken|secretboxencryptionsecret): (\S+)', secrets_yaml)
            if len(w) > 16]


def test_escrowed_secrets_are_found_again_after_a_lost_state_and_follow_the_escrow(tf, infisical_lab, tmp_path):
    t = tf('escrow')
    t.write(hcl(infisical_lab))
    first = t.apply()
    made = t.resources()['castle_talos_secrets.home']
    # The escrow holds the very bundle state holds, written before the create returned.
    assert digest(escrowed(infisical_lab)['value']) == digest(made['secrets'])
    assert made['escrow'][0]['key'] == KEY
    assert made['escrow'][0]['version'] == escrowed(infisical_lab)['version']
    t.assert_plan_empty()

    # The state is lost (what a SIGKILL does to a remote backend's last 20 s): the next apply
    # takes the escrowed bundle instead of generating another, and says so.
    t.run('state', 'rm', 'castle_talos_secrets.home')
    adopted = t.apply()
    assert 'Adopted the cluster secrets escrowed in Infisical' in adopted, adopted
    again = t.resources()['castle_talos_secrets.home']
    assert again['id'] == made['id']
    assert digest(again['secrets']) == digest(made['secrets']), 'the next apply generated other secrets'
    t.assert_plan_empty()
    for out in (first, adopted):
        for word in secret_words(made['secrets']):
            assert word not in out, 'a secret reached Terraform output'

    # Deleted in Infisical: drift, written again by the next apply.
    infisical_lab.delete_secret('/clusters/home', KEY)
    drift = t.plan()
    assert 'castle_talos_secrets.home' in drift and 'update in-place' in drift, drift
    for word in secret_words(made['secrets']):
        assert word not in drift, 'a secret reached the plan'
    t.apply()
    assert digest(escrowed(infisical_lab)['value']) == digest(made['secrets'])
    t.assert_plan_empty()

    # Changed in Infisical (another bundle's worth of text): drift too, restored.
    infisical_lab.set_secret('/clusters/home', KEY, 'not the bundle')
    assert [c['change']['actions'] for c in t.plan_changes()] == [['update']]
    t.apply()
    assert digest(escrowed(infisical_lab)['value']) == digest(made['secrets'])

    # A new location moves the bundle in place: no new secrets, the old key gone.
    t.write(hcl(infisical_lab, path='/clusters/moved'))
    assert [c['change']['actions'] for c in t.plan_changes()] == [['update']]
    t.apply()
    assert escrowed(infisical_lab) is None
    assert digest(escrowed(infisical_lab, '/clusters/moved')['value']) == digest(made['secrets'])
    assert t.resources()['castle_talos_secrets.home']['id'] == made['id']
    t.assert_plan_empty()

    # Migrating another cluster's secrets into an escrow that holds this one's: refused at plan
    # time, naming the key and the remedy; nothing written.
    other = re.sub(r'(?m)^(  id: )\S+$', r'\g<1>' + 'b3RoZXItY2x1c3Rlci1pZC0wMTIzNDU2Nzg5YWJjZGVmMDE=',
                   made['secrets'])
    assert other != made['secrets']
    other_file = tmp_path / 'other-secrets.yaml'
    other_file.write_text(other)
    migrate = tf('migrate')
    migrate.write(hcl(infisical_lab, path='/clusters/moved', secrets_yaml=other_file))
    refused = ' '.join(migrate.plan(expect_fail=True).split())
    assert 'Unable to escrow the cluster secrets' in refused, refused
    assert "secret %s at /clusters/moved in environment dev already holds the secrets of another cluster" % KEY \
        in refused, refused
    assert 'delete that secret in Infisical and apply again' in refused, refused
    assert digest(escrowed(infisical_lab, '/clusters/moved')['value']) == digest(made['secrets'])
    # The same bundle migrated with the same escrow is no conflict.
    same_file = tmp_path / 'same-secrets.yaml'
    same_file.write_text(made['secrets'])
    same = tf('same')
    same.write(hcl(infisical_lab, path='/clusters/moved', secrets_yaml=same_file))
    same.plan()

    # Imported from the same file into a configuration with the escrow: the apply after the
    # import finds its own bundle escrowed and changes nothing else.
    imported = tf('import')
    imported.write(hcl(infisical_lab, path='/clusters/moved'))
    imported.import_('castle_talos_secrets.home', str(same_file))
    assert [c['change']['actions'] for c in imported.plan_changes()] == [['update']]
    imported.apply()
    assert imported.resources()['castle_talos_secrets.home']['id'] == made['id']
    assert digest(escrowed(infisical_lab, '/clusters/moved')['value']) == digest(made['secrets'])
    imported.assert_plan_empty()
    imported.run('state', 'rm', 'castle_talos_secrets.home')

    # Destroy deletes the escrow.
    t.destroy()
    assert [s for s in infisical_lab.secrets() if s['key'] == KEY] == []


def test_an_escrow_in_a_protected_environment_waits_for_its_change_request_and_is_never_queued_twice(
        tf, infisical_lab):
    infisical_lab.change_policy('prod', bypass_for_machine_identities=False)
    t = tf('protected')
    t.write(hcl(infisical_lab, environment='prod'))
    first = ' '.join(t.apply().split())
    requests = infisical_lab.change_requests()
    assert len(requests) == 1, requests
    assert 'Warning: Secret %s waits for approval in Infisical' % KEY in first, first
    assert escrowed(infisical_lab, environment='prod') is None
    # The next apply knows the request: no drift, no second request, a warning that the escrow
    # protects nothing yet.
    again = ' '.join(t.apply().split())
    assert 'No changes' in again and 'Until then, a lost Terraform state cannot be recovered from it' in again, again
    assert len(infisical_lab.change_requests()) == 1
    # Merged in Infisical: the escrow holds the bundle state holds, and the plan stays empty.
    infisical_lab.merge_change_request(requests[0]['id'])
    t.assert_plan_empty()
    t.apply()
    assert len(infisical_lab.change_requests()) == 1
    made = t.resources()['castle_talos_secrets.home']
    assert digest(escrowed(infisical_lab, environment='prod')['value']) == digest(made['secrets'])
    assert made['escrow'][0]['version'] == escrowed(infisical_lab, environment='prod')['version']


PREFIX = '127.0.6.'


def cluster_hcl(lab):
    return hcl(lab).replace('resource "castle_talos_secrets" "home" {', '''resource "castle_talos_cluster" "home" {
  name               = "home"
  secrets            = castle_talos_secrets.home.secrets
  endpoint           = "https://%(prefix)s11:6443"
  talos_version      = "v1.12.0"
  kubernetes_version = "v1.33.2"
  gateway            = "%(prefix)s1"
  node {
    name    = "cp-1"
    address = "%(prefix)s11/24"
    role    = "controlplane"
  }
}

resource "castle_kubeconfig_secret" "home" {
  project_id      = "%(project)s"
  environment     = "dev"
  path            = "/clusters/home"
  kubeconfig      = castle_talos_cluster.home.kubeconfig
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = castle_talos_cluster.home.talosconfig
}

resource "castle_talos_secrets" "home" {''' % dict(prefix=PREFIX, project=lab.project_id))


def test_a_cluster_whose_whole_state_was_lost_is_found_again_by_the_next_apply(tf, infisical_lab):
    from harness.lab import TalosLab
    talos = TalosLab([PREFIX + '11'])
    try:
        t = tf('lost')
        t.write(cluster_hcl(infisical_lab))
        t.apply()
        before = t.resources()
        identity = before['castle_talos_secrets.home']['id']
        kubeconfig = [s for s in infisical_lab.secrets() if s['key'] == 'KUBECONFIG'][0]

        # The whole state is lost (an emptied terraform.tfstate, a remote backend's lost
        # snapshot): the next apply finds the escrowed secrets, recognises its own running node,
        # and takes over the kubeconfig and talosconfig secrets it left.
        for address in before:
            t.run('state', 'rm', address)
        out = ' '.join(t.apply().split())
        assert 'Adopted the cluster secrets escrowed in Infisical' in out, out
        assert "Secret KUBECONFIG replaced: it held this cluster's older credentials" in out, out
        assert "Secret TALOSCONFIG replaced: it held this cluster's older credentials" in out, out
        after = t.resources()
        assert after['castle_talos_secrets.home']['id'] == identity
        node = talos.nodes()[PREFIX + '11']
        assert node['state'] == 'running' and node['cluster_id'] == identity
        now = [s for s in infisical_lab.secrets() if s['key'] == 'KUBECONFIG'][0]
        assert now['version'] > kubeconfig['version']
        assert digest(now['value']) == digest(after['castle_talos_cluster.home']['kubeconfig'])
        t.assert_plan_empty()

        t.destroy()
        assert infisical_lab.secrets() == []
        assert talos.nodes()[PREFIX + '11']['state'] in ('maintenance', 'booting')
    finally:
        talos.stop()
