#!/usr/bin/env python3
"""`make crash`: kill Terraform (and so the provider) with SIGKILL at a seeded random instant of
each operation on the HA example, then check the next run converges with nothing to repair.

For every operation and seed, on a fresh lab (`castle-lab up`):

1. bring the example to the operation's starting point (nothing for `create`, the running
   cluster for the others);
2. start the operation's `terraform apply` (or `destroy`) in its own process group and SIGKILL
   the whole group at an instant drawn from the seed, uniformly over the operation's measured
   duration (a calibration run, uncut, measures it once per operation);
3. run the same command again, once: it must succeed (no manual step);
4. check: a second plan is empty, every VM in Proxmox is known to state, every lab node is either
   a running member of this cluster or back in maintenance mode, etcd's members are exactly the
   control planes, Infisical holds no secret that state does not know;
5. destroy, and check that nothing is left (no VM, no node, no secret).

    acceptance-tests/crash/run.py [--seeds 20] [--ops create,vm-create,...] [--first-seed 1]
                                  [--time-scale 0.5] [--out .lab/crash/results.json]

Prints one line per run and a summary table (the one docs/reliability.md publishes). Exits 0
only if every run converged with no orphan.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)

from harness.lab import lab_binary  # noqa: E402
from harness.terraform import Terraform, TerraformError, terraform_command  # noqa: E402
from checks import Lab, check_converged, check_empty  # noqa: E402

EXAMPLE = os.path.join(ROOT, 'examples', 'ha-cluster')

# Each operation: the variables of its starting point (None: nothing applied), the command that
# gets killed, and the variables it runs with.
SMALL = {'workers': 1}
OPERATIONS = {
    'create': dict(start=None, command='apply', vars={}),
    # The issue's own case: killed while castle_talos_cluster forms (instants counted from its
    # "Creating..." line, since the secrets' RSA key can take most of a whole create's time).
    'cluster-create': dict(start=None, command='apply', vars={}, marker='castle_talos_cluster.this: Creating...'),
    'vm-create': dict(start=None, command='apply', vars={}, target='castle_proxmox_vm.node'),
    'scale-out': dict(start=SMALL, command='apply', vars={}),
    'scale-in': dict(start={}, command='apply', vars=SMALL),
    'upgrade': dict(start=SMALL, command='apply',
                    vars=dict(SMALL, talos_version='v1.13.0', kubernetes_version='v1.34.1')),
    'destroy': dict(start={}, command='destroy', vars={}),
}


def var_args(values):
    return ['-var=%s=%s' % (k, v) for k, v in sorted(values.items())]


class Run(object):
    """One lab and one copy of the example."""

    def __init__(self, base, name, time_scale):
        self.dir = os.path.join(base, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.lab_dir = os.path.join(self.dir, 'lab')
        self.work = os.path.join(self.dir, 'ha-cluster')
        self.time_scale = time_scale
        self.tf = None
        self.lab = None
        self.keep = False

    def castle_lab(self, *args, check=True):
        proc = subprocess.run([lab_binary(), *args, '--state-dir', self.lab_dir], capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError('castle-lab %s failed:\n%s%s' % (' '.join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def __enter__(self):
        os.makedirs(self.lab_dir)
        self.castle_lab('up', '--time-scale', str(self.time_scale))
        with open(os.path.join(self.lab_dir, 'lab.json')) as f:
            self.lab = Lab(json.load(f))
        shutil.copytree(EXAMPLE, self.work,
                        ignore=shutil.ignore_patterns('.terraform*', 'terraform.tfstate*', '*.tfplan', 'kubeconfig'))
        with open(os.path.join(self.work, 'lab.tfvars')) as f:
            tfvars = f.read().replace('"../../.lab/pve-ca.pem"', json.dumps(self.lab.info['proxmox']['ca_cert']))
        with open(os.path.join(self.work, 'lab.auto.tfvars'), 'w') as f:
            f.write(tfvars)
        self.tf = Terraform(self.work)
        return self

    def __exit__(self, *exc):
        self.castle_lab('down', check=False)
        if not exc[0] and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, op, values):
        args = [op['command'], '-auto-approve', '-no-color'] + var_args(values)
        if op.get('target'):
            args.append('-target=' + op['target'])
        return args

    def timed(self, args, kill_after=None, marker=None):
        """Runs terraform; with `kill_after`, SIGKILLs its whole process group that many seconds
        after it started (after `marker` appeared in its output, when given). Returns (seconds
        since the start or the marker, returncode, output, killed)."""
        path = os.path.join(self.dir, 'killed.log' if kill_after else 'run.log')
        log = open(path, 'a+')
        started = time.monotonic()
        proc = subprocess.Popen(terraform_command() + args, cwd=self.work, env=self.tf.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while marker and proc.poll() is None:
            with open(path) as f:
                if marker in f.read():
                    started = time.monotonic()
                    break
            time.sleep(0.02)
        killed = False
        try:
            wait = 900 if kill_after is None else max(0.0, kill_after - (time.monotonic() - started))
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            # The provider is a child of Terraform in the same group: both die at once, like a
            # closed laptop lid or a CI runner timeout.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        elapsed = time.monotonic() - started
        log.seek(0)
        return elapsed, proc.returncode, log.read(), killed


def in_progress(output):
    """The resources Terraform had started and not finished when it died."""
    started, done = [], set()
    for line in output.splitlines():
        if ': Creating...' in line or ': Modifying...' in line or ': Destroying...' in line:
            started.append(line.split(':')[0])
        elif 'complete after' in line:
            done.add(line.split(':')[0])
    return sorted(set(a for a in started if a not in done))


def calibrate(op_name, op, base, time_scale):
    """The uncut duration of the operation, measured once."""
    with Run(base, '%s-calibration' % op_name, time_scale) as run:
        if op['start'] is not None:
            run.tf.apply(vars=op['start'])
        seconds, code, output, _ = run.timed(run.command(op, op['vars']), marker=op.get('marker'))
        if code != 0:
            raise RuntimeError('calibration of %s failed:\n%s' % (op_name, output[-3000:]))
        return seconds


def one_run(op_name, op, seed, duration, base, time_scale):
    rng = random.Random('%s-%d' % (op_name, seed))
    kill_at = round(rng.uniform(0.2, duration), 2)
    result = dict(operation=op_name, seed=seed, kill_at=kill_at, duration=round(duration, 1),
                  converged=False, orphans=[], manual_steps=0, killed_during=[], error=None)
    with Run(base, '%s-%d' % (op_name, seed), time_scale) as run:
        try:
            if op['start'] is not None:
                run.tf.apply(vars=op['start'])
            _, _, output, killed = run.timed(run.command(op, op['vars']), kill_after=kill_at, marker=op.get('marker'))
            result['killed'] = killed
            result['killed_during'] = in_progress(output) if killed else []
            # The next run: the same command, once. Then the whole configuration, as a user would.
            if op['command'] == 'destroy':
                run.tf.destroy()
                result['orphans'] = settled(lambda: check_empty(run.lab))
            else:
                final = dict(op['vars'])
                if op.get('target'):
                    run.tf.run(*run.command(op, final))
                run.tf.apply(vars=final)
                if not _plan_empty(run.tf, final):
                    result['orphans'].append('the second plan is not empty')
                result['orphans'] += settled(lambda: check_converged(run.lab, run.tf))
                run.tf.run('destroy', '-auto-approve', '-no-color', *var_args(final))
                result['orphans'] += settled(lambda: check_empty(run.lab))
            result['converged'] = not result['orphans']
        except (TerraformError, RuntimeError, subprocess.TimeoutExpired) as e:
            result['error'] = str(e)[-4000:]
            result['manual_steps'] = 1
        if result['error'] or result['orphans']:
            # Keep the lab's files and Terraform's logs for whoever looks at it.
            with open(os.path.join(run.dir, 'result.json'), 'w') as f:
                json.dump(result, f, indent=1)
            run.keep = True
    return result


def settled(check, seconds=20):
    """The check's problems once the lab has caught up: its Proxmox watcher turns a deleted VM
    into a removed node a poll later, and a reset node reboots into maintenance. Problems that
    outlast `seconds` are real."""
    deadline = time.monotonic() + seconds
    while True:
        problems = check()
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


def _plan_empty(tf, values):
    tf.run('plan', '-no-color', '-out=tfplan', *var_args(values))
    plan = json.loads(tf.run('show', '-json', 'tfplan'))
    return not [rc for rc in plan.get('resource_changes', []) if rc['change']['actions'] != ['no-op']]


def summary(results, ops):
    lines = ['| operation | runs | converged | orphans found | manual steps |', '| --- | --- | --- | --- | --- |']
    for op in ops:
        rs = [r for r in results if r['operation'] == op]
        if not rs:
            continue
        lines.append('| %s | %d | %d | %d | %d |' % (
            op, len(rs), sum(r['converged'] for r in rs), sum(len(r['orphans']) for r in rs),
            sum(r['manual_steps'] for r in rs)))
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', type=int, default=int(os.environ.get('SEEDS', 20)))
    parser.add_argument('--first-seed', type=int, default=1)
    parser.add_argument('--ops', default=','.join(OPERATIONS))
    parser.add_argument('--time-scale', type=float, default=0.5)
    parser.add_argument('--out', default=os.path.join(ROOT, '.lab', 'crash', 'results.json'))
    args = parser.parse_args()
    ops = [o for o in args.ops.split(',') if o]
    unknown = [o for o in ops if o not in OPERATIONS]
    if unknown:
        parser.error('unknown operation(s) %s; known: %s' % (', '.join(unknown), ', '.join(OPERATIONS)))
    base = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(base, exist_ok=True)
    results = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = [r for r in json.load(f) if not (r['operation'] in ops and
                                                       args.first_seed <= r['seed'] < args.first_seed + args.seeds)]
    for op_name in ops:
        op = OPERATIONS[op_name]
        duration = calibrate(op_name, op, base, args.time_scale)
        print('==> %s: uncut run %.1f s; killing at seeded instants in [0.2, %.1f] s' % (op_name, duration, duration),
              flush=True)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r = one_run(op_name, op, seed, duration, base, args.time_scale)
            results.append(r)
            with open(args.out, 'w') as f:
                json.dump(results, f, indent=1)
            print('    seed %3d kill at %6.2f s during %-60s %s' % (
                seed, r['kill_at'], ', '.join(r['killed_during']) or ('(finished first)' if not r.get('killed') else '-'),
                'converged' if r['converged'] else 'FAILED: %s' % (r['error'] or '; '.join(r['orphans']))[:600]),
                flush=True)
    print('\n' + summary(results, ops))
    print('\nresults: %s' % args.out)
    return 0 if all(r['converged'] for r in results if r['operation'] in ops) else 1


if __name__ == '__main__':
    sys.exit(main())
