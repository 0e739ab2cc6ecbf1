"""Day 2 on the flagship example: replacing the machine of a control plane.

examples/ha-cluster as a user has it (VMs from for_each with create_before_destroy, node blocks
from the VMs with vm_id), applied with real Terraform against the whole lab (`castle-lab up`:
Proxmox, Talos nodes running real etcd, Infisical). Two moves on one cluster:

1. `terraform apply -replace` of cp-2's VM: the new VM waits, stopped, while the old one holds
   the address; castle takes the old machine out of etcd and Kubernetes, stops it, starts the
   new one, which joins etcd as a learner and is promoted.
2. cp-3's VM deleted in Proxmox behind Terraform's back, then `terraform apply`: the VM is
   rebuilt at the same address, its ghost etcd member removed before the new machine joins.

After each: the real etcd's member list holds exactly the control planes (the replaced one
with a new member id), kubectl through the VIP lists exactly the nodes, all Ready, the
`kubernetes` endpoints are exactly the control planes' addresses, the lab saw no two VMs on
one address, Proxmox has no VM that state does not know, and a second plan is empty.
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

from harness.lab import lab_binary, stack_factory_env
from harness.terraform import Terraform

pytestmark = pytest.mark.acceptance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')
CONTROL_PLANES = {'cp-1': '127.0.0.211', 'cp-2': '127.0.0.212', 'cp-3': '127.0.0.213'}
NODES = ['cp-1', 'cp-2', 'cp-3', 'w-1', 'w-2']
TIME_SCALE = '0.3'


def castle_lab(state, *args):
    proc = subprocess.run([lab_binary(), *args, '--state-dir', str(state)], cwd=ROOT,
                          env=dict(os.environ, CASTLE_LAB_PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, 'castle-lab %s failed:\n%s%s' % (' '.join(args), proc.stdout, proc.stderr)
    return proc.stdout


class Pve(object):
    """The lab's Proxmox through its HTTPS API, as any client would use it."""

    def __init__(self, info):
        self.base = info['endpoint'] + '/api2/json'
        self.tls = ssl.create_default_context(cafile=info['ca_cert'])
        data = self.call('POST', '/access/ticket', {'username': info['username'], 'password': info['password']},
                         auth=False)
        self.headers = {'Cookie': 'PVEAuthCookie=' + data['ticket'],
                        'CSRFPreventionToken': data['CSRFPreventionToken']}

    def call(self, method, path, params=None, auth=True):
        body = urllib.parse.urlencode(params or {}).encode() if method != 'GET' else None
        if method == 'GET' and params:
            path += '?' + urllib.parse.urlencode(params)
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=self.headers if auth else {})
        with urllib.request.urlopen(req, context=self.tls, timeout=10) as resp:
            return json.loads(resp.read())['data']

    def wait(self, upid, node='pve1'):
        for _ in range(600):
            status = self.call('GET', '/nodes/%s/tasks/%s/status' % (node, urllib.parse.quote(upid)))
            if status['status'] == 'stopped':
                assert status['exitstatus'] == 'OK', status
                return
            time.sleep(0.1)
        raise AssertionError('task %s still running' % upid)

    def vms(self):
        return [vm for vm in self.call('GET', '/cluster/resources', {'type': 'vm'})
                if not vm.get('template')]


class Cluster(object):
    """The example applied once on a lab of its own; each test moves it and checks it."""

    def __init__(self, base, time_scale=TIME_SCALE):
        self.state_dir = os.path.join(base, 'lab')
        print(castle_lab(self.state_dir, 'up', '--time-scale', str(time_scale)))
        with open(os.path.join(self.state_dir, 'lab.json')) as f:
            self.lab = json.load(f)
        work = os.path.join(base, 'ha-cluster')
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns('.terraform*', 'terraform.tfstate*'))
        with open(os.path.join(EXAMPLE, 'lab.tfvars')) as f:
            tfvars = f.read().replace('"../../.lab/pve-ca.pem"', json.dumps(self.lab['proxmox']['ca_cert']))
        with open(os.path.join(work, 'lab.auto.tfvars'), 'w') as f:
            f.write(tfvars)
        self.tf = Terraform(work, env=stack_factory_env(self.lab))
        self.pve = Pve(self.lab['proxmox'])

    def stop(self):
        subprocess.run([lab_binary(), 'down', '--state-dir', self.state_dir], capture_output=True, timeout=120)

    def etcd_members(self, through='cp-1'):
        """The member list as the real etcd of a control plane answers it."""
        address = CONTROL_PLANES[through]
        pki = os.path.join(self.state_dir, 'disks', address, 'pki')
        out = subprocess.run(['etcdctl', '--endpoints', 'https://%s:2379' % address,
                              '--cacert', os.path.join(pki, 'ca.crt'), '--cert', os.path.join(pki, 'etcd.crt'),
                              '--key', os.path.join(pki, 'etcd.key'), 'member', 'list', '-w', 'json'],
                             env=dict(os.environ, ETCDCTL_API='3'), capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)['members']

    def kubectl(self, *args):
        out = subprocess.run(['kubectl', '--kubeconfig', self.tf.output('kubeconfig_path'), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def address_clashes(self):
        with urllib.request.urlopen(self.lab['talos']['admin'] + '/address-clashes', timeout=5) as resp:
            return json.loads(resp.read())

    def vm_ids(self):
        """cp-N -> the VMID of its VM in state."""
        return {name: vm['vm_id'] for name, vm in self.tf.output('nodes').items()}

    def assert_whole(self):
        """What every day-2 move must leave behind."""
        members = self.etcd_members()
        assert sorted(m.get('name') for m in members) == sorted(CONTROL_PLANES), members
        assert not [m for m in members if m.get('isLearner')], members
        nodes = json.loads(self.kubectl('get', 'nodes', '-o', 'json'))['items']
        assert sorted(n['metadata']['name'] for n in nodes) == NODES
        for n in nodes:
            ready = [c for c in n['status']['conditions'] if c['type'] == 'Ready']
            assert ready and ready[0]['status'] == 'True', n['metadata']['name']
        endpoints = json.loads(self.kubectl('get', 'endpoints', 'kubernetes', '-o', 'json'))
        addresses = sorted(a['ip'] for s in endpoints['subsets'] for a in s['addresses'])
        assert addresses == sorted(CONTROL_PLANES.values())
        assert self.address_clashes() == []
        in_state = sorted(self.vm_ids().values())
        in_proxmox = sorted(vm['vmid'] for vm in self.pve.vms())
        assert in_proxmox == in_state, 'Proxmox has VMs state does not know'
        self.tf.assert_plan_empty()

    def member_id(self, name, members):
        return next(m['ID'] for m in members if m.get('name') == name)


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp('day2-replace')))
    try:
        c.tf.apply()
        yield c
    finally:
        c.stop()


def test_replacing_a_control_planes_vm_hands_its_address_over_and_it_rejoins_etcd(cluster):
    before = cluster.etcd_members()
    old_vm = cluster.vm_ids()['cp-2']
    plan = cluster.tf.plan('-replace=castle_proxmox_vm.node["cp-2"]')
    assert 'The machine of cp-2 will be replaced' in plan
    out = cluster.tf.apply('-replace=castle_proxmox_vm.node["cp-2"]')
    assert 'VM home-cp-2 waits for its address' in out
    new_vm = cluster.vm_ids()['cp-2']
    assert new_vm != old_vm
    after = cluster.etcd_members()
    assert cluster.member_id('cp-2', after) != cluster.member_id('cp-2', before)
    assert cluster.member_id('cp-1', after) == cluster.member_id('cp-1', before)
    cluster.assert_whole()


def test_a_control_plane_vm_lost_in_proxmox_is_rebuilt_and_its_ghost_member_removed(cluster):
    before = cluster.etcd_members()
    lost = cluster.vm_ids()['cp-3']
    cluster.pve.wait(cluster.pve.call('POST', '/nodes/pve1/qemu/%d/status/stop' % lost))
    cluster.pve.wait(cluster.pve.call('DELETE', '/nodes/pve1/qemu/%d' % lost))
    out = cluster.tf.apply()
    assert 'was not reset' not in out, out
    # Proxmox may give the rebuilt VM the freed VMID again: the new MAC tells the machines apart.
    after = cluster.etcd_members()
    assert cluster.member_id('cp-3', after) != cluster.member_id('cp-3', before)
    cluster.assert_whole()
