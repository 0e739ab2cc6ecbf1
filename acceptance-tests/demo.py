#!/usr/bin/env python3
"""`make demo`: from a fresh machine to a healthy HA cluster in one command.

Starts the lab (`castle-lab up`), applies examples/ha-cluster with lab.tfvars through real
Terraform, shows the nodes through kubectl and the kubeconfig read back from Infisical, checks
that a second plan is empty, then destroys everything and stops the lab (KEEP=1 leaves it up).
Each step prints one line starting with '==>'; Terraform's own output follows it. Exits 0 only
if every step worked.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from harness.lab import lab_binary  # noqa: E402
from harness.terraform import Terraform  # noqa: E402

LAB = os.path.join(ROOT, '.lab')
EXAMPLE = 'ha-cluster'
KUBECTL = os.environ.get('KUBECTL', 'kubectl')


def step(text):
    print('\n==> ' + text, flush=True)


def castle_lab(*args, check=True):
    proc = subprocess.run([lab_binary(), *args, '--state-dir', LAB], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit('castle-lab %s failed:\n%s%s' % (' '.join(args), proc.stdout, proc.stderr))
    return proc.stdout


def infisical_secret(lab, key, path):
    """Reads one secret back through Infisical's own API, as any client would."""
    host = lab['infisical']['host']
    body = json.dumps({'clientId': lab['infisical']['client_id'],
                       'clientSecret': lab['infisical']['client_secret']}).encode()
    req = urllib.request.Request(host + '/api/v1/auth/universal-auth/login', data=body,
                                 headers={'Content-Type': 'application/json'})
    token = json.load(urllib.request.urlopen(req, timeout=10))['accessToken']
    query = urllib.parse.urlencode({'workspaceId': lab['infisical']['project_id'],
                                    'environment': lab['infisical']['environment'], 'secretPath': path})
    req = urllib.request.Request('%s/api/v3/secrets/raw/%s?%s' % (host, key, query),
                                 headers={'Authorization': 'Bearer ' + token})
    return json.load(urllib.request.urlopen(req, timeout=10))['secret']


def redact(kubeconfig):
    """The kubeconfig with its certificates and keys cut short, for showing."""
    return re.sub(r'(-data: )(\S{12})\S+', r'\1\2…', kubeconfig)


def main():
    keep = os.environ.get('KEEP') == '1'
    if os.path.exists(os.path.join(LAB, 'castle-lab.pid')):
        # A lab left up by an earlier `make demo KEEP=1` still holds that run's cluster on the
        # same nodes: the demo starts from a clean lab instead of meeting it.
        step('A lab from an earlier run is still up (make demo KEEP=1?): stopping it to start clean')
        print(castle_lab('down', check=False), flush=True)
    step('Starting the lab (castle-lab up): Proxmox, Talos nodes behind VIP 127.0.0.210, Infisical')
    print(castle_lab('up'), flush=True)
    with open(os.path.join(LAB, 'lab.json')) as f:
        lab = json.load(f)

    work = os.path.join(LAB, 'demo', EXAMPLE)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, 'examples', EXAMPLE), work,
                    ignore=shutil.ignore_patterns('.terraform*', 'terraform.tfstate*', '*.tfplan'))
    # lab.tfvars, loaded by every command, with the lab's CA path made absolute for this copy.
    with open(os.path.join(work, 'lab.tfvars')) as f:
        tfvars = f.read().replace('"../../.lab/pve-ca.pem"', json.dumps(os.path.join(LAB, 'pve-ca.pem')))
    with open(os.path.join(work, 'lab.auto.tfvars'), 'w') as f:
        f.write(tfvars)
    with open(lab['factory']['ca_cert']) as f:
        factory = {'TALOS_IMAGE_FACTORY_URL': lab['factory']['url'], 'TALOS_IMAGE_FACTORY_CA_CERT_PEM': f.read()}
    tf = Terraform(work, env=factory)
    ok = False
    try:
        step('terraform apply of examples/%s with lab.tfvars' % EXAMPLE)
        started = time.monotonic()
        print(tf.apply(), flush=True)
        print('    applied in %.1f s' % (time.monotonic() - started))

        step('The nodes')
        print(tf.run('output', '-no-color', 'nodes'), flush=True)

        kubeconfig_path = tf.run('output', '-raw', 'kubeconfig_path').strip()
        mode = oct(os.stat(kubeconfig_path).st_mode & 0o777)
        step('kubectl get nodes -o wide, through the VIP (castle wrote the kubeconfig to %s, mode %s)'
             % (kubeconfig_path, mode))
        if mode != '0o600':
            raise SystemExit('the kubeconfig file is not private: mode %s' % mode)
        out = subprocess.run([KUBECTL, '--kubeconfig', kubeconfig_path, 'get', 'nodes', '-o', 'wide'],
                             capture_output=True, text=True, timeout=60)
        print(out.stdout + out.stderr, flush=True)
        if out.returncode != 0 or out.stdout.count(' Ready ') < 5:
            raise SystemExit('kubectl did not list 5 Ready nodes')

        step('kubectl get pods -A, get ns, get svc -A, get endpoints kubernetes (the three API servers), '
             'cluster-info')
        for args in (['get', 'pods', '-A'], ['get', 'ns'], ['get', 'svc', '-A'], ['get', 'endpoints', 'kubernetes'],
                     ['cluster-info']):
            out = subprocess.run([KUBECTL, '--kubeconfig', kubeconfig_path, *args],
                                 capture_output=True, text=True, timeout=60)
            print(out.stdout + out.stderr, flush=True)
            if out.returncode != 0:
                raise SystemExit('kubectl %s failed' % ' '.join(args))

        step('The kubeconfig, read back from Infisical')
        secret = infisical_secret(lab, 'KUBECONFIG', '/clusters/home')
        with open(kubeconfig_path) as f:
            same = secret['secretValue'].strip() == f.read().strip()
        print('    KUBECONFIG at /clusters/home, version %s, %d bytes, %s the cluster output'
              % (secret.get('version'), len(secret['secretValue']), 'equal to' if same else 'DIFFERENT FROM'))
        print('    ' + '\n    '.join(redact(secret['secretValue']).splitlines()[:8]) + '\n    …', flush=True)
        if not same:
            raise SystemExit('the kubeconfig in Infisical differs from the cluster output')

        step('A second plan must be empty')
        if not tf.plan_is_empty():
            print(tf.plan())
            raise SystemExit('the second plan is not empty')
        print('    No changes. Your infrastructure matches the configuration.')
        ok = True
    finally:
        if keep:
            step('KEEP=1: the lab stays up; state in %s' % work)
            print(castle_lab('status', check=False))
            print('    destroy with: cd %s && terraform destroy; stop with: make lab-down' % work)
        else:
            step('terraform destroy')
            try:
                print(tf.destroy(), flush=True)
            finally:
                step('Stopping the lab (castle-lab down)')
                print(castle_lab('down', check=False), flush=True)
    step('Demo finished: ' + ('every step worked' if ok else 'FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
