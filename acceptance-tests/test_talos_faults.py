"""castle_talos_cluster when nodes misbehave: every failure names the node and the check, and
the next `terraform apply` finishes the job without hand repair."""

import threading
import time

import pytest

from harness.lab import LONGHORN, TalosLab

pytestmark = pytest.mark.acceptance

PREFIX = '127.0.5.'
VIP = PREFIX + '10'
NODES = {'cp-1': 11, 'cp-2': 12, 'cp-3': 13, 'w-1': 21}


def ip(name, nodes=NODES):
    return PREFIX + str(dict(NODES, **nodes)[name])


def cluster_hcl(nodes=NODES, timeouts='', talos_version='v1.12.0', extensions=None):
    entries = '\n'.join('  node {\n    name    = "%s"\n    address = "%s%d/24"\n    role    = "%s"\n  }' % (
        name, PREFIX, host, 'controlplane' if name.startswith('cp') else 'worker') for name, host in nodes.items())
    block = '  timeouts {\n    %s\n  }' % timeouts if timeouts else ''
    if extensions is not None:
        block += '\n  extensions = [%s]' % ', '.join('"%s"' % e for e in extensions)
    return '''
terraform {
  required_providers {
    castle = { source = "castle-lab/castle" }
  }
}

provider "castle" {}

resource "castle_talos_cluster" "home" {
  name               = "faults"
  vip                = "%s"
  talos_version      = "%s"
  kubernetes_version = "v1.33.2"
  gateway            = "%s1"
%s
%s
}
''' % (VIP, talos_version, PREFIX, entries, block)


@pytest.fixture
def talos():
    lab = TalosLab([PREFIX + str(n) for n in NODES.values()] + [PREFIX + '22'], template_extensions=LONGHORN)
    try:
        yield lab
    finally:
        lab.stop()


def flat(out):
    """Terraform's output with its line wrapping undone."""
    return ' '.join(out.split())


def tainted(t):
    resources = (t.state().get('values') or {}).get('root_module', {}).get('resources', [])
    return {r['address']: r.get('tainted', False) for r in resources}


def cluster_ids(talos, names=NODES):
    nodes = talos.nodes()
    return {name: nodes[ip(name)]['cluster_id'] for name in names}


def assert_healthy(talos, t, names=NODES):
    nodes = talos.nodes()
    assert {name: nodes[ip(name)]['state'] for name in names} == {name: 'running' for name in names}
    assert len(set(cluster_ids(talos, names).values())) == 1
    members = {m['hostname'] for m in nodes[ip('cp-1')]['etcd_members']}
    assert members == {n for n in names if n.startswith('cp')}
    t.assert_plan_empty()


def test_a_node_that_never_answers_fails_the_apply_within_the_timeout_naming_it(tf, talos):
    talos.fault(ip('w-1'), 'never_answer')
    t = tf()
    # 30 s: room for one whole probe of w-1 (its answer is what the error names) after the
    # PKI, which a loaded machine's debug build takes seconds to generate.
    t.write(cluster_hcl(timeouts='create = "30s"'))
    started = time.monotonic()
    out = flat(t.apply(expect_fail=True))
    elapsed = time.monotonic() - started
    assert 'Unable to create cluster faults' in out
    assert 'timed out waiting for the node to answer in maintenance mode on w-1 (127.0.5.21)' in out, out
    assert 'last answer: unreachable' in out and 'within' in out, out
    # The create timeout bounds the whole apply, not each attempt (Terraform adds a few seconds).
    assert elapsed < 45, elapsed
    assert tainted(t) == {'castle_talos_cluster.home': True}

    # Once the node answers, the next apply replaces the tainted cluster: no hand repair.
    talos.clear_faults(ip('w-1'))
    t.write(cluster_hcl())
    t.apply()
    assert_healthy(talos, t)


def test_a_node_that_drops_connections_for_a_while_is_retried_and_the_create_completes(tf, talos):
    # w-1 closes every connection as it opens (a firewall restarting, apid crash-looping). Once
    # castle has met that three times, the fault clears: the same apply must carry on and finish.
    talos.fault(ip('w-1'), 'drop_connections')
    met = []

    def clear_when_met():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            dropped = talos.nodes()[ip('w-1')]['connections_dropped']
            if dropped >= 3:
                met.append(dropped)
                break
            time.sleep(0.1)
        talos.clear_faults(ip('w-1'))

    clearer = threading.Thread(target=clear_when_met)
    clearer.start()
    try:
        t = tf()
        t.write(cluster_hcl())
        t.apply()
    finally:
        clearer.join()
    assert met, 'castle never reached w-1 while it dropped connections'
    assert_healthy(talos, t)
    t.assert_plan_empty()


def test_a_rejected_config_names_the_node_and_reason_and_the_next_apply_starts_over(tf, talos):
    talos.fault(ip('cp-2'), 'reject_next_config', reason='install disk /dev/sda is too small')
    t = tf()
    t.write(cluster_hcl())
    out = flat(t.apply(expect_fail=True))
    assert 'node cp-2 (127.0.5.12) rejected its machine configuration' in out, out
    assert 'install disk /dev/sda is too small' in out, out
    # The state a failed create saves is whole: Terraform finds no unknown value in it.
    assert 'invalid result object' not in out, out
    assert tainted(t) == {'castle_talos_cluster.home': True}
    first = cluster_ids(talos)
    configured = {name for name, cid in first.items() if cid}
    assert 'cp-2' not in configured and configured, first  # the others took the first attempt's config

    talos.clear_faults(ip('cp-2'))
    out = t.apply()
    # Replacing the tainted cluster resets its nodes before creating it again.
    assert out.index('Destruction complete') < out.index('Creation complete'), out
    again = cluster_ids(talos)
    assert not set(again.values()) & set(first.values()), (first, again)
    assert_healthy(talos, t)


def test_a_slow_reboot_and_power_cuts_during_the_create_and_an_upgrade_still_converge(tf, talos):
    # cp-3's install takes 20 s before time scaling (0.3): several seconds where it answers
    # nothing at all. cp-2 loses power while it installs its config (before the bootstrap). cp-1
    # loses it right after it answers the Bootstrap, before etcd writes its data, so it comes
    # back waiting to be bootstrapped; and again once etcd runs on it. Each cut lasts 5 s
    # (1.5 s scaled); the machine then boots from its disk: its config, and etcd's data.
    talos.fault(ip('cp-3'), 'slow_reboot', delay_ms=20000)
    talos.fault(ip('cp-1'), 'power_cycle_in_bootstrap', off_ms=5000)
    cuts = {}

    def cut_when(name, ready):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            node = talos.nodes()[ip(name)]
            if ready(node):
                talos.fault(ip(name), 'power_cycle', off_ms=5000)
                cuts[name] = node['boots']
                return
            time.sleep(0.05)

    cutters = [threading.Thread(target=cut_when, args=('cp-2', lambda n: n['cluster_id'] is not None)),
               threading.Thread(target=cut_when, args=('cp-1', lambda n: n['etcd_healthy']))]
    for cutter in cutters:
        cutter.start()
    try:
        t = tf()
        t.write(cluster_hcl())
        t.apply()
    finally:
        for cutter in cutters:
            cutter.join()
    assert set(cuts) == {'cp-1', 'cp-2'}, cuts
    assert talos.nodes()[ip('cp-1')]['faults']['power_cycle_in_bootstrap'] is None, 'the power cut never struck'
    # Both came back; etcd is one cluster of the three control planes: cp-1 was asked again,
    # no other control plane was bootstrapped.
    assert talos.nodes()[ip('cp-1')]['boots'] > cuts['cp-1']
    assert_healthy(talos, t)
    talos.clear_faults(ip('cp-3'))

    # During an upgrade: cp-2 loses power halfway through the drain of its Upgrade, after it
    # answered and before it wrote the installer, so it boots v1.12.0 again. The same apply
    # upgrades it again and finishes.
    talos.fault(ip('cp-2'), 'power_cycle_in_upgrade', off_ms=3000)
    t.write(cluster_hcl(talos_version='v1.13.0'))
    t.apply()
    nodes = talos.nodes()
    assert nodes[ip('cp-2')]['faults']['power_cycle_in_upgrade'] is None, 'the power cut never struck'
    assert {name: nodes[ip(name)]['talos_version'] for name in NODES} == {name: 'v1.13.0' for name in NODES}
    assert_healthy(talos, t)

    # During a reinstall on the same release (one extension less): the same cut. cp-2 boots its
    # old schematic under a new boot id and the same release; the same apply sends it again.
    talos.fault(ip('cp-2'), 'power_cycle_in_upgrade', off_ms=3000)
    t.write(cluster_hcl(talos_version='v1.13.0', extensions=['siderolabs/iscsi-tools']))
    t.apply()
    nodes = talos.nodes()
    assert nodes[ip('cp-2')]['faults']['power_cycle_in_upgrade'] is None, 'the power cut never struck'
    assert {name: nodes[ip(name)]['extensions'] for name in NODES} == {name: ['siderolabs/iscsi-tools'] for name in NODES}
    assert len({nodes[ip(name)]['schematic'] for name in NODES}) == 1
    assert_healthy(talos, t)


def test_etcd_losing_a_member_is_reported_by_the_member_list_check(tf, talos):
    t = tf()
    t.write(cluster_hcl())
    t.apply()
    talos.fault(ip('cp-2'), 'lose_etcd_member')
    # The lab removes the member through another member, as an operator would, in the
    # background: wait until cp-1's etcd no longer lists it before the update looks.
    deadline = time.monotonic() + 60
    while any(m['hostname'] == 'cp-2' for m in talos.nodes()[ip('cp-1')]['etcd_members']):
        assert time.monotonic() < deadline, talos.nodes()[ip('cp-1')]['etcd_members']
        time.sleep(0.2)
    # Any update waits for health at the end: add a worker.
    t.write(cluster_hcl(dict(NODES, **{'w-2': 22}), timeouts='update = "25s"'))
    out = flat(t.apply(expect_fail=True))
    assert 'Unable to update cluster faults' in out
    assert 'timed out waiting for the etcd member list to hold exactly the control planes' in out, out
    assert 'missing cp-2' in out, out


def test_a_create_that_fails_after_configs_were_applied_is_finished_by_the_next_apply(tf, talos):
    # cp-3 stays in its reboot (10 min, 3 min scaled) until its fault is cleared. The 30 s
    # create timeout leaves the other nodes ample time, even on a slow machine, to install and
    # run this cluster's CA: the create fails on cp-3 alone, after every config was applied.
    talos.fault(ip('cp-3'), 'slow_reboot', delay_ms=600000)
    t = tf()
    t.write(cluster_hcl(timeouts='create = "30s"'))
    out = flat(t.apply(expect_fail=True))
    assert 'timed out waiting for the node to come back configured after install on cp-3 (127.0.5.13)' in out, out
    assert all(cluster_ids(talos).values()), cluster_ids(talos)

    # Clearing the fault ends cp-3's reboot after the ordinary delay.
    talos.clear_faults(ip('cp-3'))
    t.write(cluster_hcl())
    t.apply()
    assert_healthy(talos, t)


def test_destroy_succeeds_when_a_node_is_already_gone(tf, talos):
    t = tf()
    t.write(cluster_hcl(timeouts='delete = "10s"'))
    t.apply()
    talos._call('DELETE', '/nodes/%s' % ip('w-1'))
    out = flat(t.destroy())
    assert 'w-1 (127.0.5.21)' in out and 'not reset' in out, out
    nodes = talos.nodes()
    assert {nodes[ip(n)]['state'] for n in ('cp-1', 'cp-2', 'cp-3')} <= {'maintenance', 'booting'}
    assert t.resources() == {}


def test_an_upgrade_refused_for_an_unhealthy_etcd_member_fails_at_once_and_the_next_apply_completes(tf, talos):
    # Three control planes: with two, Talos refuses any control-plane upgrade for the count.
    cps = {name: host for name, host in NODES.items() if name.startswith('cp')}
    t = tf()
    t.write(cluster_hcl(cps))
    t.apply()
    # cp-3's etcd goes down; its member stays listed. Talos validates etcd on the node it
    # upgrades (cp-1 first) and finds cp-3's member unhealthy. A refusal retried until the
    # timeout would end in "timed out waiting for the upgrade to be accepted".
    talos.fault(ip('cp-3'), 'stop_etcd')
    t.write(cluster_hcl(cps, timeouts='update = "3m"', talos_version='v1.12.1'))
    out = flat(t.apply(expect_fail=True))
    assert 'node cp-1 (127.0.5.11) refused the upgrade' in out, out
    assert 'is not healthy; all members must be healthy to perform an upgrade' in out, out
    assert 'cp-3' in out.split('refused the upgrade', 1)[1], out  # the member, by name
    assert 'timed out' not in out, out
    assert {talos.nodes()[ip(n)]['talos_version'] for n in cps} == {'v1.12.0'}

    talos.clear_faults(ip('cp-3'))
    t.apply()
    assert {talos.nodes()[ip(n)]['talos_version'] for n in cps} == {'v1.12.1'}
    assert_healthy(talos, t, cps)
