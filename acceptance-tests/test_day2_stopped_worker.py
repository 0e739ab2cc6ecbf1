"""Day 2 on the flagship example (issue 13): a worker stopped outside Terraform, a node lost
long enough for Kubernetes to move its pods (issue 15), and the control plane holding the VIP
stopped outside Terraform (issue 10: the VIP waits for its etcd lease).

One lab of its own addresses (harness/flagship.py, 127.0.7.x) and examples/ha-cluster as users
write it, at `--time-scale 0.2`: Kubernetes' node-monitor grace period (50 s) is one second and
the pods' 300 s not-ready toleration six. What the cluster looks like is asked of real kubectl
through the VIP, of the real etcd, and of the lab's Proxmox API.
"""

import json
import threading
import time
import urllib.parse
import urllib.request

import pytest

from harness.flagship import Flagship

pytestmark = pytest.mark.acceptance


def wait_until(what, check, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError('timed out after %ss waiting for %s' % (limit, what))


class Cluster(object):
    """The flagship example on its lab, with what these scenarios do to it."""

    def __init__(self, flagship):
        self.f = flagship
        self.tf = flagship.tf

    def stop_vm(self, name):
        """Stop, as a user presses it in the Proxmox UI: a hard power-off of the VM."""
        pve = self.f.pve
        vm = next(v for v in pve.call('GET', '/cluster/resources?type=vm') if v.get('name') == 'home-' + name)
        upid = pve.call('POST', '/nodes/%s/qemu/%d/status/stop' % (vm['node'], vm['vmid']))
        wait_until('the stop task of %s' % name, lambda: pve.call(
            'GET', '/nodes/%s/tasks/%s/status' % (vm['node'], urllib.parse.quote(upid)))['status'] == 'stopped')

    def place_workload(self, node, **spec):
        """A Deployment whose pods go to `node` (lab admin API)."""
        body = json.dumps(dict(spec, node=node)).encode()
        req = urllib.request.Request('%s/nodes/%s/workloads' % (self.f.admin, self.f.address(node)), data=body,
                                     method='POST', headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201, resp.read()

    def kubectl(self, *args):
        return self.f.kubectl(*args)

    def items(self, *args):
        return json.loads(self.f.kubectl('get', *args, '-o', 'json'))['items']

    def ready_nodes(self):
        """Node name -> whether its Ready condition is True, as `kubectl get nodes` shows it."""
        return {name: ready for name, (ready, _) in self.f.nodes().items()}


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    flagship = Flagship(tmp_path_factory.mktemp('day2-stopped'), net=7, time_scale=0.2)
    try:
        flagship.scale(3, 2)
        yield Cluster(flagship)
    finally:
        flagship.stop()


def test_a_worker_stopped_in_proxmox_is_named_in_the_plan_and_apply_brings_it_back_with_its_volume(cluster):
    c = cluster
    # A stateful pod on w-1 with a ReadWriteOnce volume; it tolerates an unreachable node for a
    # day, so Kubernetes leaves it bound to w-1 while the machine is off.
    c.place_workload('w-1', name='data', volume=True, toleration_seconds=86400)
    pod = wait_until('the data pod to run', lambda: [
        p for p in c.items('pods', '-l', 'app=data')
        if p['status']['phase'] == 'Running' and all(s['ready'] for s in p['status']['containerStatuses'])])[0]
    attachments = c.items('volumeattachments')
    assert [(a['spec']['nodeName'], a['status']['attached']) for a in attachments] == [('w-1', True)]

    c.stop_vm('w-1')
    wait_until('kubectl to show w-1 NotReady', lambda: c.ready_nodes()['w-1'] is False)

    plan = c.tf.plan()
    words = ' '.join(plan.split())
    assert 'Warning: Node w-1 is NotReady' in words, plan
    assert 'Kubernetes reports w-1 NotReady (Ready is Unknown (NodeStatusUnknown: Kubelet stopped posting ' \
        'node status.)), and its Talos API at 127.0.7.21 does not answer' in words, plan
    assert 'castle_proxmox_vm.node["w-1"] will be updated in-place' in words, plan
    assert '~ started = false -> true' in words, plan
    assert 'castle_talos_cluster.this will be updated in-place' in words, plan
    assert '+ "w-1" = (known after apply)' in words, plan
    for other in ('cp-1', 'cp-2', 'cp-3', 'w-2'):
        assert 'Node %s ' % other not in words, plan

    c.tf.apply()
    # Apply returned only once w-1 was Ready again: no waiting here.
    assert c.ready_nodes()['w-1'] is True
    pods = c.items('pods', '-l', 'app=data')
    assert [(p['metadata']['name'], p['spec']['nodeName'], p['status']['phase']) for p in pods] == \
        [(pod['metadata']['name'], 'w-1', 'Running')]
    # castle deleted no VolumeAttachment: the same one still holds the volume on w-1.
    after = c.items('volumeattachments')
    assert [(a['metadata']['name'], a['spec']['nodeName'], a['status']['attached']) for a in after] == \
        [(attachments[0]['metadata']['name'], 'w-1', True)]
    c.f.assert_cluster(3, 2)


def test_pods_of_a_lost_node_are_recreated_elsewhere_as_kubectl_shows(cluster):
    c = cluster
    c.place_workload('w-2', name='web', replicas=1)
    wait_until('the web pod to run on w-2', lambda: [
        p for p in c.items('pods', '-l', 'app=web')
        if p['spec'].get('nodeName') == 'w-2' and p['status']['phase'] == 'Running'])
    tolerations = c.items('pods', '-l', 'app=web')[0]['spec']['tolerations']
    assert {(t['key'], t['tolerationSeconds']) for t in tolerations} == {
        ('node.kubernetes.io/not-ready', 300), ('node.kubernetes.io/unreachable', 300)}

    c.stop_vm('w-2')
    # After the node-monitor grace period the node is NotReady ...
    wait_until('kubectl to show w-2 NotReady', lambda: c.ready_nodes()['w-2'] is False)
    nodes = c.kubectl('get', 'nodes')
    assert [line.split()[1] for line in nodes.splitlines() if line.startswith('w-2 ')] == ['NotReady'], nodes

    # ... and after the not-ready toleration its Deployment pod is Terminating there and a new
    # one runs on another node; its DaemonSet pods stay on it.
    def moved():
        pods = c.kubectl('get', 'pods', '-l', 'app=web', '-o', 'wide', '--no-headers').splitlines()
        rows = [line.split() for line in pods]
        status = {(r[2], r[6]) for r in rows}
        return ('Terminating', 'w-2') in status and ('Running', 'w-1') in status and rows
    rows = wait_until('the web pod to be recreated on w-1', moved)
    assert len(rows) == 2, rows
    coredns = [p for p in c.items('pods', '-n', 'kube-system', '-l', 'k8s-app=kube-dns')
               if 'deletionTimestamp' not in p['metadata']]
    assert len(coredns) == 2 and all(p['spec']['nodeName'] != 'w-2' for p in coredns), coredns
    daemons = [p['metadata']['name'] for p in c.items('pods', '-n', 'kube-system', '--field-selector',
                                                        'spec.nodeName=w-2')
               if p['metadata']['ownerReferences'][0]['kind'] == 'DaemonSet']
    assert len(daemons) == 2, daemons

    # The next apply starts the VM again; once w-2's kubelet is back, the old pod is gone.
    plan = c.tf.plan()
    assert 'Warning: Node w-2 is NotReady' in plan, plan
    c.tf.apply()
    assert c.ready_nodes()['w-2'] is True
    wait_until('the terminated web pod to be removed', lambda: [
        p['spec']['nodeName'] for p in c.items('pods', '-l', 'app=web')] == ['w-1'])
    c.f.assert_cluster(3, 2)


def test_the_vip_holder_stopped_in_proxmox_leaves_kubectl_dark_until_its_lease_expires_then_apply_restarts_it(
        cluster):
    c = cluster
    holder = next(n['hostname'] for n in c.f.fleet().values() if n['vip'])
    # A hard power-off: Talos never resigns the VIP election, so its etcd key stays until the
    # lease expires (60 s at Talos's pace, 12 s at this lab's 0.2) and the VIP answers nothing.
    c.stop_vm(holder)
    stopped = time.monotonic()
    # The lab sees the VM stopped at its next look at Proxmox.
    wait_until('the lab to power %s off' % holder, lambda: c.f.fleet()[c.f.address(holder)]['state'] == 'off',
               limit=10)
    out = c.f.kubectl('get', 'nodes', check=False, timeout=30)
    assert 'refused' in out or 'Unable to connect' in out, out
    assert not any(n['vip'] for n in c.f.fleet().values())

    def answers():
        out = c.f.kubectl('get', 'nodes', check=False, timeout=30)
        return 'NAME' in out and out
    wait_until('kubectl to answer through the VIP again', answers, limit=60)
    dark = time.monotonic() - stopped
    # The lease was renewed at most a third of its TTL before the power-off.
    assert dark > 6, 'the VIP answered again after %.1f s, before the lease could expire' % dark
    new_holder = next(n['hostname'] for n in c.f.fleet().values() if n['vip'])
    assert new_holder != holder

    # The next apply starts the VM again and waits for health through the VIP.
    plan = c.tf.plan()
    assert 'Warning: Node %s is NotReady' % holder in ' '.join(plan.split()) or \
        'castle_proxmox_vm.node["%s"] will be updated in-place' % holder in plan, plan
    c.tf.apply()
    assert c.ready_nodes()[holder] is True
    c.f.assert_cluster(3, 2)


def test_the_vip_holder_reset_in_proxmox_while_another_control_plane_upgrades_is_waited_out_by_the_same_apply(
        cluster):
    c = cluster
    before = {n['hostname']: n for n in c.f.fleet().values()}
    cut = {}

    def cut_the_holder():
        # Once cp-1 (the first node castle upgrades) took its Upgrade, the control plane that
        # then holds the VIP is stopped hard in Proxmox and started 3 s later, as after a
        # host's reset: its etcd is killed, its VIP key stays until its lease expires (12 s at
        # 0.2), so health through the VIP goes dark in the middle of cp-1's upgrade.
        def holder():
            fleet = {n['hostname']: n for n in c.f.fleet().values()}
            if len(fleet['cp-1']['installed_images']) == len(before['cp-1']['installed_images']):
                return None
            return next((name for name, n in fleet.items() if n['vip'] and name != 'cp-1'), None)
        name = wait_until('cp-1 to take its Upgrade and another control plane to hold the VIP', holder)
        cut['name'] = name
        cut['boots'] = c.f.fleet()[c.f.address(name)]['boots']
        c.f.power_cycle(name, 3)

    cutter = threading.Thread(target=cut_the_holder)
    cutter.start()
    try:
        c.f.edit('talos_version = "v1.12.1"\n', 'version.auto.tfvars')
        c.tf.apply()
    finally:
        cutter.join()
    assert cut.get('name'), 'the reset never struck'
    fleet = {n['hostname']: n for n in c.f.fleet().values()}
    assert fleet[cut['name']]['boots'] > cut['boots'] + 1, 'reset and then upgraded: two boots at least'
    assert {name: n['talos_version'] for name, n in fleet.items()} == {name: 'v1.12.1' for name in fleet}
    c.f.assert_cluster(3, 2)
