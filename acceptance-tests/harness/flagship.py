"""examples/ha-cluster as a user runs it, on a whole lab (`castle-lab up`: Proxmox, the Talos
fleet wired to its VMs, Infisical) of its own, and the checks of a cluster after a day-2 move,
each asked of the real thing: etcd's member list of the real etcd (etcdctl with a control
plane's certificates), `kubectl` through the VIP, the lab's Proxmox API.

The one harness of the day-2 acceptance tests, `make bench` and whatever else runs the
flagship example on a lab. Callers run inside a network namespace of their own (the lab binds
fixed loopback addresses), as the acceptance suite and `make bench` do.
"""

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

from harness.lab import lab_binary, stack_factory_env
from harness.terraform import ROOT, Terraform

EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')
KUBECTL = os.environ.get('KUBECTL', 'kubectl')
ETCDCTL = os.environ.get('ETCDCTL', 'etcdctl')


class Flagship(object):
    """A running lab and a copy of examples/ha-cluster pointed at it.

    With `net=None` the lab runs on its default addresses and the example uses its own
    lab.tfvars: control planes at 127.0.0.211, .212, ..., workers at .221, ..., the VIP at .210.
    With `net=N` everything moves to 127.0.N.x: Proxmox at .2, the admin API at .3, Infisical
    at .4, control planes at .11, ..., workers at .21, ..., the VIP at .10. `time_scale` shrinks
    the lab's emulated durations; `tf_env` adds to Terraform's environment."""

    def __init__(self, workdir, net=None, time_scale=0.3, tf_env=None):
        self.workdir = str(workdir)
        self.state_dir = os.path.join(self.workdir, 'lab')
        self.time_scale = time_scale
        if net is None:
            self.prefix, self.first_host = '127.0.0.', 210
            self._lab('up', '--time-scale', str(time_scale))
        else:
            self.prefix, self.first_host = '127.0.%d.' % net, 10
            self._lab('up', '--pve', self.prefix + '2:8006', '--admin', self.prefix + '3:7000',
                      '--infisical', self.prefix + '4:8200', '--time-scale', str(time_scale))
        with open(os.path.join(self.state_dir, 'lab.json')) as f:
            self.info = json.load(f)
        self.admin = self.info['talos']['admin']
        self.tf = Terraform(os.path.join(self.workdir, 'ha-cluster'),
                            env=dict(stack_factory_env(self.info), **(tf_env or {})))
        for name in ('main.tf', 'variables.tf', 'outputs.tf'):
            with open(os.path.join(EXAMPLE, name)) as f:
                self.tf.write(f.read(), name)
        self.tf.write(self._tfvars(net), 'lab.auto.tfvars')
        self._pve = None

    def _tfvars(self, net):
        if net is None:
            with open(os.path.join(EXAMPLE, 'lab.tfvars')) as f:
                return f.read().replace('"../../.lab/pve-ca.pem"', json.dumps(self.info['proxmox']['ca_cert']))
        pve, infisical = self.info['proxmox'], self.info['infisical']
        values = {
            'proxmox_endpoint': pve['endpoint'], 'proxmox_username': pve['username'],
            'proxmox_password': pve['password'], 'proxmox_ca_cert_file': str(pve['ca_cert']),
            'subnet': self.prefix + '0/24', 'first_host': self.first_host + 1,
            'first_worker_host': self.first_host + 11, 'vip': self.prefix + str(self.first_host),
            'gateway': self.prefix + '1', 'nameservers': [self.prefix + '1'], 'disk_gb': 10,
            'infisical_host': infisical['host'], 'infisical_client_id': infisical['client_id'],
            'infisical_client_secret': infisical['client_secret'],
            'infisical_project_id': infisical['project_id'], 'infisical_environment': infisical['environment'],
        }
        return ''.join('%s = %s\n' % (k, json.dumps(v)) for k, v in values.items())

    def _lab(self, *args, check=True):
        env = dict(os.environ, CASTLE_LAB_PYTHON=sys.executable)
        proc = subprocess.run([lab_binary(), *args, '--state-dir', self.state_dir], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError('castle-lab %s failed:\n%s%s' % (' '.join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def stop(self, destroy=False):
        """Stops the lab; with `destroy`, `terraform destroy` first (it must still work)."""
        try:
            if destroy and os.path.exists(os.path.join(self.tf.workdir, 'terraform.tfstate')):
                self.tf.run('destroy', '-auto-approve', '-no-color', timeout=600)
        finally:
            self._lab('down', check=False)

    # --- the user's moves ------------------------------------------------------------------

    def edit(self, text, name='edit.auto.tfvars'):
        """One edit of the user's variables, read by every later plan and apply."""
        self.tf.write(text, name=name)

    def scale(self, control_planes, workers, expect_fail=False):
        """The one edit (the counts in a tfvars file) and `terraform apply`; Terraform's output."""
        self.edit('control_planes = %d\nworkers = %d\n' % (control_planes, workers), 'scale.auto.tfvars')
        return self.tf.apply(expect_fail=expect_fail, timeout=900)

    def address(self, name):
        """The address the example gives node `name` (cp-N, w-N) unless node_hosts moves it."""
        role, number = name.split('-')
        return self.prefix + str(self.first_host + (0 if role == 'cp' else 10) + int(number))

    def place_workload(self, node, name, min_available):
        """A one-replica Deployment on `node` with a PodDisruptionBudget (lab admin API)."""
        body = json.dumps({'name': name, 'node': node, 'replicas': 1, 'min_available': min_available,
                           'namespace': 'default'}).encode()
        req = urllib.request.Request('%s/nodes/%s/workloads' % (self.admin, self.address(node)), data=body,
                                     method='POST', headers={'Content-Type': 'application/json'})
        urllib.request.urlopen(req, timeout=10).read()

    def power_cycle(self, name, seconds):
        """Node `name`'s machine loses power and comes back on `seconds` later, as after a
        tripped breaker or a host reboot: a hard stop of its VM in Proxmox, then a start (the
        lab's wiring powers the Talos node off and boots it again from its disk). The lab's
        `power_cycle` fault does the same to a node without Proxmox."""
        vm = self.pve.vm('home-' + name)
        self.pve.wait(self.pve.call('POST', '/nodes/%s/qemu/%d/status/stop' % (vm['node'], vm['vmid'])), vm['node'])
        time.sleep(seconds)
        self.pve.wait(self.pve.call('POST', '/nodes/%s/qemu/%d/status/start' % (vm['node'], vm['vmid'])), vm['node'])

    # --- what the cluster is -----------------------------------------------------------------

    def kubeconfig(self):
        return os.path.join(self.tf.workdir, 'kubeconfig')

    def kubectl(self, *args, check=True, timeout=60):
        """kubectl through the VIP: its output (with its errors when `check` is off)."""
        proc = subprocess.run([KUBECTL, '--kubeconfig', self.kubeconfig(), *args], capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError('kubectl %s failed:\n%s' % (' '.join(args), proc.stdout + proc.stderr))
        return proc.stdout if check else proc.stdout + proc.stderr

    def kubectl_json(self, *args):
        return json.loads(self.kubectl(*args, '-o', 'json'))

    def fleet(self):
        """The lab's Talos nodes by address (admin API)."""
        with urllib.request.urlopen(self.admin + '/nodes', timeout=5) as resp:
            return {n['address']: n for n in json.loads(resp.read())}

    def address_clashes(self):
        """Every time the lab saw a VM start while another running VM held its address."""
        with urllib.request.urlopen(self.admin + '/address-clashes', timeout=5) as resp:
            return json.loads(resp.read())

    def nodes_output(self):
        """The example's `nodes` output: name -> address, role, VM."""
        return self.tf.output('nodes')

    def etcd_member_list(self, address):
        """`etcdctl member list` against the real etcd of the control plane at `address`, with
        the certificates the lab keeps on the node's disk."""
        pki = os.path.join(self.state_dir, 'disks', address, 'pki')
        proc = subprocess.run([ETCDCTL, '--endpoints', 'https://%s:2379' % address,
                               '--cacert', os.path.join(pki, 'ca.crt'), '--cert', os.path.join(pki, 'etcd.crt'),
                               '--key', os.path.join(pki, 'etcd.key'), 'member', 'list', '-w', 'json'],
                              env=dict(os.environ, ETCDCTL_API='3'), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)['members']

    def etcd_members(self, control_plane):
        """Names of etcd's members as `control_plane` sees them; none may be a learner."""
        members = self.etcd_member_list(self.address(control_plane))
        assert not any(m.get('isLearner') for m in members), members
        return sorted(m.get('name', '') for m in members)

    def member_id(self, name, through='cp-1'):
        """The etcd member ID of control plane `name`."""
        return next(m['ID'] for m in self.etcd_member_list(self.address(through)) if m.get('name') == name)

    def nodes(self):
        """name -> (Ready, unschedulable) as kubectl sees them through the VIP."""
        items = self.kubectl_json('get', 'nodes')['items']
        return {n['metadata']['name']: (any(c['type'] == 'Ready' and c['status'] == 'True'
                                            for c in n['status']['conditions']),
                                        bool(n['spec'].get('unschedulable')))
                for n in items}

    def api_server_endpoints(self):
        endpoints = self.kubectl_json('get', 'endpoints', 'kubernetes')
        return sorted(a['ip'] for s in endpoints.get('subsets') or [] for a in s.get('addresses') or [])

    @property
    def pve(self):
        """The lab's Proxmox API."""
        if self._pve is None:
            self._pve = Pve(self.info['proxmox'])
        return self._pve

    def proxmox_vms(self):
        """VMID -> name of every VM but templates, through the lab's Proxmox API."""
        return {int(v['vmid']): v['name'] for v in self.pve.vms()}

    def state_vms(self):
        """VMID -> name of every VM in Terraform's state."""
        return {int(v['vm_id']): v['name'] for a, v in self.tf.resources().items()
                if a.startswith('castle_proxmox_vm.node')}

    def assert_cluster(self, control_planes, workers):
        """After a move: etcd holds exactly the control planes, none a learner, kubectl sees
        exactly the nodes, all Ready and schedulable, the `kubernetes` Endpoints list exactly
        the control planes, the lab saw no two VMs on one address, Proxmox holds no VM that
        state does not know, and a second plan is empty."""
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
        assert self.address_clashes() == []
        vms = self.proxmox_vms()
        assert vms == self.state_vms(), (vms, self.state_vms())
        assert sorted(vms.values()) == sorted('home-' + n for n in cps + ws)
        self.tf.assert_plan_empty()


class Pve(object):
    """The lab's Proxmox through its HTTPS API, as any client uses it, trusting the lab's CA."""

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
        """Waits for a task to end; it must end well."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.call('GET', '/nodes/%s/tasks/%s/status' % (node, urllib.parse.quote(upid)))
            if status['status'] == 'stopped':
                assert status['exitstatus'] == 'OK', status
                return
            time.sleep(0.1)
        raise AssertionError('task %s still running' % upid)

    def vms(self):
        return [vm for vm in self.call('GET', '/cluster/resources', {'type': 'vm'}) if not vm.get('template')]

    def vm(self, name):
        return next(vm for vm in self.vms() if vm.get('name') == name)

    def tasks(self, vmid, node='pve1'):
        """The tasks Proxmox ran on VM `vmid`, newest first (`GET /nodes/{node}/tasks`)."""
        return self.call('GET', '/nodes/%s/tasks' % node, {'vmid': vmid, 'limit': 500})


class KubectlWatch(object):
    """Runs `kubectl get --raw /readyz` through the VIP over and over in a thread, and keeps
    every failure, until stopped."""

    def __init__(self, flagship, interval=0.2):
        self.flagship = flagship
        self.interval = interval
        self.calls = 0
        self.failures = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self):
        kubeconfig = self.flagship.kubeconfig()
        while not self._stop.is_set():
            out = subprocess.run([KUBECTL, '--kubeconfig', kubeconfig, '--request-timeout=5s',
                                  'get', '--raw', '/readyz'], capture_output=True, text=True, timeout=30)
            self.calls += 1
            if out.returncode != 0 or out.stdout.strip() != 'ok':
                self.failures.append('%.1f: %s' % (time.monotonic(), (out.stdout + out.stderr).strip()))
            self._stop.wait(self.interval)
