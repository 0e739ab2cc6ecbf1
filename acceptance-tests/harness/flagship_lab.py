"""examples/ha-cluster against the whole lab (`castle-lab up`: Proxmox, the Talos fleet wired to
its VMs, Infisical), as a user runs it: the example's own files and lab.tfvars, real Terraform,
real kubectl through the VIP, real etcdctl against a control plane's etcd.

The lab runs on its default addresses, so callers run inside their own network namespace (as
the acceptance suite and `make bench` do)."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

from harness.lab import lab_binary, stack_factory_env
from harness.terraform import Terraform

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')
KUBECTL = os.environ.get('KUBECTL', '/usr/bin/kubectl')
ETCDCTL = os.environ.get('ETCDCTL', '/usr/bin/etcdctl')


class FlagshipLab(object):
    """A running lab and a copy of the flagship example configured for it."""

    def __init__(self, workdir, time_scale=0.3):
        self.state_dir = os.path.join(str(workdir), 'lab')
        self.time_scale = time_scale
        self._lab('up', '--time-scale', str(time_scale))
        with open(os.path.join(self.state_dir, 'lab.json')) as f:
            self.info = json.load(f)
        work = os.path.join(str(workdir), 'ha-cluster')
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(
            '.terraform*', 'terraform.tfstate*', '*.tfplan', 'kubeconfig'))
        with open(os.path.join(work, 'lab.tfvars')) as f:
            tfvars = f.read().replace('"../../.lab/pve-ca.pem"',
                                      json.dumps(os.path.join(self.state_dir, 'pve-ca.pem')))
        with open(os.path.join(work, 'lab.auto.tfvars'), 'w') as f:
            f.write(tfvars)
        self.tf = Terraform(work, env=stack_factory_env(self.info))

    def _lab(self, *args, check=True):
        env = dict(os.environ, CASTLE_LAB_PYTHON=sys.executable)
        proc = subprocess.run([lab_binary(), *args, '--state-dir', self.state_dir], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError('castle-lab %s failed:\n%s%s' % (' '.join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def edit(self, text, name='edit.auto.tfvars'):
        """One edit of the user's variables, read by every later plan and apply."""
        self.tf.write(text, name=name)

    def stop(self):
        try:
            if os.path.exists(os.path.join(self.tf.workdir, 'terraform.tfstate')):
                self.tf.run('destroy', '-auto-approve', '-no-color', timeout=600)
        finally:
            self._lab('down', check=False)

    # --- what the cluster looks like --------------------------------------------------------

    def fleet(self):
        """The lab's nodes by address (admin API)."""
        import urllib.request
        with urllib.request.urlopen(self.info['talos']['admin'] + '/nodes', timeout=5) as resp:
            return {n['address']: n for n in json.loads(resp.read())}

    def nodes_output(self):
        return self.tf.output('nodes')

    def kubeconfig(self):
        return self.tf.output('kubeconfig_path')

    def kubectl(self, *args, timeout=30):
        return subprocess.run([KUBECTL, '--kubeconfig', self.kubeconfig(), *args],
                              capture_output=True, text=True, timeout=timeout)

    def kubectl_json(self, *args):
        out = self.kubectl(*args, '-o', 'json')
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def etcd_members(self, address):
        """`etcdctl member list` against the etcd of the control plane at `address`, with the
        certificate the lab issued that node from the cluster's etcd CA."""
        pki = os.path.join(self.state_dir, 'disks', address, 'pki')
        out = subprocess.run(
            [ETCDCTL, '--endpoints', 'https://%s:2379' % address, '--cacert', os.path.join(pki, 'ca.crt'),
             '--cert', os.path.join(pki, 'etcd.crt'), '--key', os.path.join(pki, 'etcd.key'),
             'member', 'list', '-w', 'json'],
            capture_output=True, text=True, timeout=30, env=dict(os.environ, ETCDCTL_API='3'))
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)['members']


class KubectlWatch(object):
    """Runs `kubectl get --raw /readyz` through the VIP over and over in a thread, and keeps
    every failure, until stopped."""

    def __init__(self, lab, interval=0.2):
        self.lab = lab
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
        kubeconfig = self.lab.kubeconfig()
        while not self._stop.is_set():
            out = subprocess.run([KUBECTL, '--kubeconfig', kubeconfig, '--request-timeout=5s',
                                  'get', '--raw', '/readyz'], capture_output=True, text=True, timeout=30)
            self.calls += 1
            if out.returncode != 0 or out.stdout.strip() != 'ok':
                self.failures.append('%.1f: %s' % (time.monotonic(), (out.stdout + out.stderr).strip()))
            self._stop.wait(self.interval)
