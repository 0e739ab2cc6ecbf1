"""Day 2 on the flagship example: a worker stopped outside Terraform, and a node lost for good.

One lab (`castle-lab up`, on the default addresses: run it in a network namespace of its own)
and one copy of examples/ha-cluster with lab.tfvars, as `make demo` applies it. The lab runs at
`--time-scale 0.2`, so Kubernetes' node-monitor grace period (50 s) is one second and the 300 s
not-ready toleration six. What the cluster looks like is asked of real kubectl through the VIP.
"""

import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness.lab import lab_binary  # noqa: E402
from harness.terraform import Terraform  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')
KUBECTL = os.environ.get('KUBECTL', 'kubectl')
TIME_SCALE = '0.2'
NODES = ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2']
ADDRESS = {'w-1': '127.0.0.214', 'w-2': '127.0.0.215'}

pytestmark = pytest.mark.acceptance


class Lab(object):
    """`castle-lab up` in a state directory of its own: the Proxmox API and the admin API."""

    def __init__(self, state_dir):
        self.state_dir = str(state_dir)
        self.run('up', '--time-scale', TIME_SCALE)
        with open(os.path.join(self.state_dir, 'lab.json')) as f:
            self.info = json.load(f)
        pve = self.info['proxmox']
        self.pve_base = pve['endpoint'] + '/api2/json'
        self.tls = ssl.create_default_context(cafile=pve['ca_cert'])
        ticket = self.pve('POST', '/access/ticket', {'username': pve['username'], 'password': pve['password']},
                          auth=False)
        self.pve_headers = {'Cookie': 'PVEAuthCookie=' + ticket['ticket'],
                            'CSRFPreventionToken': ticket['CSRFPreventionToken']}

    def run(self, *args):
        proc = subprocess.run([lab_binary(), *args, '--state-dir', self.state_dir], cwd=ROOT,
                              env=dict(os.environ, CASTLE_LAB_PYTHON=sys.executable),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def pve(self, method, path, params=None, auth=True):
        body = urllib.parse.urlencode(params or {}).encode() if method != 'GET' else None
        req = urllib.request.Request(self.pve_base + path, data=body, method=method,
                                     headers=self.pve_headers if auth else {})
        with urllib.request.urlopen(req, context=self.tls, timeout=10) as resp:
            return json.loads(resp.read())['data']

    def stop_vm(self, name):
        """Stop, as a user presses it in the Proxmox UI: a hard power-off of the VM."""
        vm = next(v for v in self.pve('GET', '/cluster/resources?type=vm') if v.get('name') == name)
        upid = self.pve('POST', '/nodes/%s/qemu/%d/status/stop' % (vm['node'], vm['vmid']))
        wait_until('the stop task of %s' % name, lambda: self.pve(
            'GET', '/nodes/%s/tasks/%s/status' % (vm['node'], urllib.parse.quote(upid)))['status'] == 'stopped')

    def place_workload(self, address, **spec):
        req = urllib.request.Request('%s/nodes/%s/workloads' % (self.info['talos']['admin'].rstrip('/'), address),
                                     data=json.dumps(spec).encode(), method='POST',
                                     headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 201, resp.read()

    def etcd_members(self, address):
        with urllib.request.urlopen('%s/nodes/%s' % (self.info['talos']['admin'].rstrip('/'), address), timeout=10) as r:
            return sorted(m['hostname'] for m in json.loads(r.read())['etcd_members'])

    def down(self):
        self.run('down')


def wait_until(what, check, limit=120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError('timed out after %ss waiting for %s' % (limit, what))


class Cluster(object):
    """The applied example: Terraform in its copy, kubectl with the kubeconfig castle wrote."""

    def __init__(self, lab, work):
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
            '.terraform*', 'terraform.tfstate*', '*.tfplan', 'kubeconfig'))
        with open(os.path.join(work, 'lab.tfvars')) as f:
            tfvars = f.read().replace('"../../.lab/pve-ca.pem"', json.dumps(lab.info['proxmox']['ca_cert']))
        with open(os.path.join(work, 'lab.auto.tfvars'), 'w') as f:
            f.write(tfvars)
        self.tf = Terraform(work, env={'TF_LOG_PROVIDER': 'INFO',
                                       'TF_LOG_PATH': os.path.join(str(work), 'terraform.log')})
        self.kubeconfig = os.path.join(str(work), 'kubeconfig')

    def kubectl(self, *args):
        proc = subprocess.run([KUBECTL, '--kubeconfig', self.kubeconfig, *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, 'kubectl %s: %s' % (' '.join(args), proc.stderr)
        return proc.stdout

    def items(self, *args):
        return json.loads(self.kubectl('get', *args, '-o', 'json'))['items']

    def ready_nodes(self):
        """Node name -> whether its Ready condition is True, as `kubectl get nodes` shows it."""
        return {n['metadata']['name']: any(c['type'] == 'Ready' and c['status'] == 'True'
                                           for c in n['status']['conditions'])
                for n in self.items('nodes')}

    def assert_whole(self, lab):
        """What every day-2 move must leave: the nodes, all Ready, etcd's members, the
        `kubernetes` endpoints, and an empty second plan."""
        assert self.ready_nodes() == {n: True for n in NODES}
        cps = ['127.0.0.211', '127.0.0.212', '127.0.0.213']
        assert lab.etcd_members(cps[0]) == ['cp-1', 'cp-2', 'cp-3']
        endpoints = json.loads(self.kubectl('get', 'endpoints', 'kubernetes', '-o', 'json'))
        assert sorted(a['ip'] for s in endpoints['subsets'] for a in s['addresses']) == cps
        self.tf.assert_plan_empty()


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp('day2-stopped')
    lab = Lab(base / 'lab')
    try:
        cluster = Cluster(lab, base / 'ha-cluster')
        cluster.tf.apply()
        yield lab, cluster
    finally:
        lab.down()


def test_a_worker_stopped_in_proxmox_is_named_in_the_plan_and_apply_brings_it_back_with_its_volume(cluster):
    lab, c = cluster
    # A stateful pod on w-1 with a ReadWriteOnce volume; it tolerates an unreachable node for a
    # day, so Kubernetes leaves it bound to w-1 while the machine is off.
    lab.place_workload(ADDRESS['w-1'], name='data', node='w-1', volume=True, toleration_seconds=86400)
    pod = wait_until('the data pod to run', lambda: [
        p for p in c.items('pods', '-l', 'app=data')
        if p['status']['phase'] == 'Running' and all(s['ready'] for s in p['status']['containerStatuses'])])[0]
    attachments = c.items('volumeattachments')
    assert [(a['spec']['nodeName'], a['status']['attached']) for a in attachments] == [('w-1', True)]

    lab.stop_vm('home-w-1')
    wait_until('kubectl to show w-1 NotReady', lambda: c.ready_nodes()['w-1'] is False)

    plan = c.tf.plan()
    words = ' '.join(plan.split())
    assert 'Warning: Node w-1 is NotReady' in words, plan
    assert 'Kubernetes reports w-1 NotReady (Ready is Unknown (NodeStatusUnknown: Kubelet stopped posting ' \
        'node status.)), and its Talos API at 127.0.0.214 does not answer' in words, plan
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
    c.assert_whole(lab)


def test_pods_of_a_lost_node_are_recreated_elsewhere_as_kubectl_shows(cluster):
    lab, c = cluster
    lab.place_workload(ADDRESS['w-2'], name='web', node='w-2', replicas=1)
    wait_until('the web pod to run on w-2', lambda: [
        p for p in c.items('pods', '-l', 'app=web')
        if p['spec'].get('nodeName') == 'w-2' and p['status']['phase'] == 'Running'])
    tolerations = c.items('pods', '-l', 'app=web')[0]['spec']['tolerations']
    assert {(t['key'], t['tolerationSeconds']) for t in tolerations} == {
        ('node.kubernetes.io/not-ready', 300), ('node.kubernetes.io/unreachable', 300)}

    lab.stop_vm('home-w-2')
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
    c.assert_whole(lab)
