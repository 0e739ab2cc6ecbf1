#!/usr/bin/env python3
"""`make demo`: start the lab, apply an example with real Terraform, show the result, check that
a second plan is empty, destroy everything and stop the lab (KEEP=1 leaves it all up).

Each step prints one line starting with '==>'; Terraform's own output follows it.
"""

import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from harness.terraform import Terraform  # noqa: E402

LAB = os.path.join(ROOT, '.lab')
EXAMPLE = os.environ.get('DEMO_EXAMPLE', 'proxmox-vms')


def step(text):
    print('\n==> ' + text, flush=True)


def start_pve():
    ca = os.path.join(LAB, 'pve-ca.pem')
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, 'harness', 'pve_serve.py'), '--host', '127.0.0.2',
                             '--port', '8006', '--state-dir', os.path.join(LAB, 'pve'), '--ca-out', ca],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if 'listening' not in line:
        proc.kill()
        raise SystemExit('the lab Proxmox did not start (is 127.0.0.2:8006 taken?): %r' % line)
    print('    ' + line, flush=True)
    with open(ca) as f:
        return proc, f.read()


def main():
    os.makedirs(LAB, exist_ok=True)
    step('Starting the lab: Proxmox (fakepve) on https://127.0.0.2:8006 with a Talos template')
    pve, ca_pem = start_pve()
    keep = os.environ.get('KEEP') == '1'
    work = os.path.join(LAB, 'demo', EXAMPLE)
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, 'examples', EXAMPLE), work)
    # Loaded by every command (apply, plan, destroy) without repeating -var-file.
    shutil.copy(os.path.join(work, 'lab.tfvars'), os.path.join(work, 'lab.auto.tfvars'))
    tf = Terraform(work, env={'TF_VAR_proxmox_ca_cert_pem': ca_pem})
    ok = False
    try:
        step('terraform apply with lab.tfvars (examples/%s)' % EXAMPLE)
        started = time.monotonic()
        print(tf.apply(), flush=True)
        print('    applied in %.1f s' % (time.monotonic() - started))
        step('The VMs, as Terraform sees them')
        print(tf.run('output', '-no-color', 'nodes'), flush=True)
        step('A second plan must be empty')
        if not tf.plan_is_empty():
            print(tf.plan())
            raise SystemExit('the second plan is not empty')
        print('    No changes.')
        ok = True
    finally:
        if keep:
            step('KEEP=1: the lab stays up (Proxmox https://127.0.0.2:8006, root@pam / secret); state in ' + work)
            print('    stop it with: kill %d' % pve.pid)
        else:
            step('terraform destroy')
            try:
                print(tf.destroy(), flush=True)
            finally:
                step('Stopping the lab')
                pve.terminate()
                pve.wait(10)
    step('Demo finished: ' + ('every step worked' if ok else 'FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
