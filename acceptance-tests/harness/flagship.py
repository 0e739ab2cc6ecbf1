"""examples/ha-cluster as a user runs it, on a whole lab (`castle-lab up`) of its own addresses,
and the checks of a cluster after a day-2 move, each asked of the real thing: etcd's member list
of the real etcd (etcdctl with a control plane's certificates), `kubectl` through the VIP, the
lab's Proxmox API.

Used by the day-2 acceptance tests and by `make bench`.
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

from harness.lab import lab_binary, stack_factory_env
from harness.terraform import ROOT, Terraform

EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')
KUBECTL = os.environ.get('KUBECTL', 'kubectl')
ETCDCTL = os.environ.get('ETCDCTL', 'etcdctl')


class Flagship(object):
    """A lab on 127.0.<net>.x and a copy of examples/ha-cluster pointed at it: control planes
    at .11, .12, ..., workers at .21, .22, ..., the VIP at .10."""

    def __init__(self, workdir, net=6, time_scale=0.2):
        self.workdir = str(workdir)
        self.prefix = '127.0.%d.' % net
        self.state = os.path.join(self.workdir, 'lab')
        self.pve_address = self.prefix + '2:8006'
        self.admin = 'http://%s3:7000' % self.prefix
        up = self._lab('up', '--pve', self.pve_address, '--admin', self.prefix + '3:7000',
                       '--infisical', self.prefix + '4:8200', '--time-scale', str(time_scale))
        if up.returncode != 0:
            raise RuntimeError('castle-lab up failed:\n' + up.stdout + up.stderr)
        with open(os.path.join(self.state, 'lab.json')) as f:
            self.info = json.load(f)
        self.tf = Terraform(os.path.join(self.workdir, 'ha-cluster'), env=stack_factory_env(self.info))
        for name in ('main.tf', 'variables.tf', 'outputs.tf'):
            shutil.copy(os.path.join(EXAMPLE, name), self.tf.workdir)
        pve, infisical = self.info['proxmox'], self.info['infisical']
        values = {
            'proxmox_endpoint': pve['endpoint'], 'proxmox_username': pve['username'],
            'proxmox_password': pve['password'], 'proxmox_ca_cert_file': str(pve['ca_cert']),
            'subnet': self.prefix + '0/24', 'first_host': 11, 'first_worker_host': 21,
            'vip': self.prefix + '10', 'gateway': self.prefix + '1', 'nameservers': [self.prefix + '1'],
            'disk_gb': 10, 'infisical_host': infisical['host'], 'infisical_client_id': infisical['client_id'],
            'infisical_client_secret': infisical['client_secret'],
            'infisical_project_id': infisical['project_id'], 'infisical_environment': infisical['environment'],
        }
        self.tf.write(''.join('%s = %s\n' % (k, json.dumps(v)) for k, v in values.items()), 'lab.auto.tfvars')
        self._pve = None

    def _lab(self, *args):
        env = dict(os.environ, CASTLE_LAB_PYTHON=sys.executable)
        return subprocess.run([lab_binary(), *args, '--state-dir', self.state], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    def stop(self):
        self._lab('down')

    # --- the user's moves ------------------------------------------------------------------

    def scale(self, control_planes, workers, expect_fail=False):
        """The one edit (the counts in a tfvars file) and `terraform apply`; Terraform's output."""
        self.tf.write('control_planes = %d\nworkers = %d\n' % (control_planes, workers), 'scale.auto.tfvars')
        return self.tf.apply(expect_fail=expect_fail, timeout=900)

    def address(self, name):
        role, number = name.split('-')
        return self.prefix + str((10 if role == 'cp' else 20) + int(number))

    def kubectl(self, *args, check=True):
        kubeconfig = os.path.join(self.tf.workdir, 'kubeconfig')
        proc = subprocess.run([KUBECTL, '--kubeconfig', kubeconfig, *args], capture_output=True, text=True,
                              timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError('kubectl %s failed:\n%s' % (' '.join(args), proc.stdout + proc.stderr))
        return proc.stdout + proc.stderr

    def place_workload(self, node, name, min_available):
        """A one-replica Deployment on `node` with a PodDisruptionBudget (lab admin API)."""
        body = json.dumps({'name': name, 'node': node, 'replicas': 1, 'min_available': min_available,
                           'namespace': 'default'}).encode()
        req = urllib.request.Request('%s/nodes/%s/workloads' % (self.admin, self.address(node)), data=body,
                                     method='POST', headers={'Content-Type': 'application/json'})
        urllib.request.urlopen(req, timeout=10).read()

    # --- what the cluster is -----------------------------------------------------------------

    def etcd_members(self, control_plane):
        """Names of etcd's members, asked of the real etcd on `control_plane` with its own
        certificates (the lab keeps them on the node's disk)."""
        address = self.address(control_plane)
        pki = os.path.join(self.state, 'disks', address, 'pki')
        proc = subprocess.run([ETCDCTL, '--endpoints', 'https://%s:2379' % address,
                               '--cacert', os.path.join(pki, 'ca.crt'), '--cert', os.path.join(pki, 'etcd.crt'),
                               '--key', os.path.join(pki, 'etcd.key'), 'member', 'list', '-w', 'json'],
                              env=dict(os.environ, ETCDCTL_API='3'), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        members = json.loads(proc.stdout)['members']
        assert not any(m.get('isLearner') for m in members), members
        return sorted(m.get('name', '') for m in members)

    def nodes(self):
        """name -> (Ready, unschedulable) as kubectl sees them through the VIP."""
        items = json.loads(self.kubectl('get', 'nodes', '-o', 'json'))['items']
        return {n['metadata']['name']: (any(c['type'] == 'Ready' and c['status'] == 'True'
                                            for c in n['status']['conditions']),
                                        bool(n['spec'].get('unschedulable')))
                for n in items}

    def api_server_endpoints(self):
        endpoints = json.loads(self.kubectl('get', 'endpoints', 'kubernetes', '-o', 'json'))
        return sorted(a['ip'] for s in endpoints.get('subsets') or [] for a in s.get('addresses') or [])

    def proxmox_vms(self):
        """VMID -> name of every VM but templates, through the lab's Proxmox API."""
        if self._pve is None:
            self._pve = _Pve(self.info['proxmox'])
        return {int(v['vmid']): v['name'] for v in self._pve.call('GET', '/cluster/resources?type=vm')
                if not v.get('template')}

    def state_vms(self):
        return {int(v['vm_id']): v['name'] for a, v in self.tf.resources().items()
                if a.startswith('castle_proxmox_vm.node')}

    def assert_cluster(self, control_planes, workers):
        """After a move: etcd holds exactly the control planes, kubectl sees exactly the nodes,
        all Ready and schedulable, the `kubernetes` Endpoints list exactly the control planes,
        Proxmox holds no VM that state does not know, and a second plan is empty."""
        cps = ['cp-%d' % i for i in range(1, control_planes + 1)]
        ws = ['w-%d' % i for i in range(1, workers + 1)]
        for cp in cps:
            assert self.etcd_members(cp) == sorted(cps), cp
        assert self.nodes() == {n: (True, False) for n in cps + ws}
        # The API server's lease reconciler drops a stopped server's address once its lease
        # expires (the lab's durations); wait for that rather than for a fixed time.
        wanted = sorted(self.address(cp) for cp in cps)
        deadline = time.monotonic() + 60
        while self.api_server_endpoints() != wanted:
            assert time.monotonic() < deadline, (self.api_server_endpoints(), wanted)
            time.sleep(0.5)
        vms = self.proxmox_vms()
        assert vms == self.state_vms(), (vms, self.state_vms())
        assert sorted(vms.values()) == sorted('home-' + n for n in cps + ws)
        self.tf.assert_plan_empty()


class _Pve(object):
    """The lab's Proxmox through its HTTPS API, trusting the CA the lab wrote."""

    def __init__(self, info):
        self.base = info['endpoint'] + '/api2/json'
        self.tls = ssl.create_default_context(cafile=info['ca_cert'])
        data = self.call('POST', '/access/ticket', {'username': info['username'], 'password': info['password']},
                         auth=False)
        self.headers = {'Cookie': 'PVEAuthCookie=' + data['ticket'],
                        'CSRFPreventionToken': data['CSRFPreventionToken']}

    def call(self, method, path, params=None, auth=True):
        body = urllib.parse.urlencode(params or {}).encode() if method != 'GET' else None
        req = urllib.request.Request(self.base + path, data=body, method=method,
                                     headers=self.headers if auth else {})
        with urllib.request.urlopen(req, context=self.tls, timeout=10) as resp:
            return json.loads(resp.read())['data']
