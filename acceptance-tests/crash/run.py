#!/usr/bin/env python3
"""`make crash`: kill Terraform (and so the provider) with SIGKILL at a seeded random instant of
each operation on the HA example, then check the next run converges with nothing to repair.

For every operation, on one lab (`castle-lab up`) reused from seed to seed while it stays clean:

1. bring the example to the operation's starting point (nothing for the creates, the running
   cluster for the others);
2. start the operation's `terraform apply` (or `destroy`) in its own process group and SIGKILL
   the whole group at an instant drawn from the seed, uniformly over the operation's measured
   duration (a calibration run on the same lab, uncut and checked like the others, measures it);
3. run the same command again, once: it must succeed (no manual step);
4. check: a second plan is empty, every VM in Proxmox is known to state, every lab node is either
   a running member of this cluster or back in maintenance mode, etcd's members (asked of the real
   etcd of each control plane) are exactly the control planes, Infisical holds no secret that
   state does not know;
5. back to the starting point: the updates that can be undone are (scale-in after a scale-out, the
   config without the patch after a config roll); the others are destroyed, and the lab must then
   be empty (no VM, no configured node, no secret).

A run that fails keeps its lab's files and Terraform's logs in `<out dir>/<op>-<seed>/`, and the
next seed starts on a fresh lab.

    acceptance-tests/crash/run.py [--seeds 20] [--ops create,vm-create,...] [--first-seed 1]
                                  [--time-scale 0.2] [--jobs 1] [--out .lab/crash/results.json]

`--jobs N` runs N parts (an operation, or half of one) at once, each in a network namespace of its
own (`unshare -n`, so each has its own lab on the same loopback addresses). Prints one line per
run and a summary table (the one docs/reliability.md publishes). Exits 0 only if every run
converged with no orphan.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
sys.path.insert(0, HERE)

from harness.flagship import Flagship  # noqa: E402
from harness.lab import lab_binary  # noqa: E402
from harness.terraform import (Terraform, TerraformError, kill_group, run_in_own_group,  # noqa: E402
                               terraform_command)
from checks import Lab, check_converged, check_empty  # noqa: E402


# A config roll: a patch for every node (a sysctl), which castle applies node by node. The example
# has no patch of its own; the suite adds a variable and an override file to its copy.
ROLL_VARIABLE = '''variable "crash_config_roll" {
  type    = bool
  default = false
}
'''
OVERRIDE = '''resource "castle_talos_cluster" "this" {
  patches = var.crash_config_roll ? ["machine:\\n  sysctls:\\n    net.core.somaxconn: \\"65535\\"\\n"] : []
}
'''

# Each operation: the variables of its starting point (None: nothing applied), the command that
# gets killed and the variables it runs with; `undo`: the starting point is reached again by
# applying its variables (otherwise by a destroy).
SMALL = {'workers': 1}
# Where the instants of the updates, the VM create and the destroy are counted from: Terraform's
# first change, so that kills land while resources change rather than while it refreshes.
FIRST_CHANGE = r'^[^ ].*: (Creating|Modifying|Destroying)\.\.\.'
OPERATIONS = {
    # The whole example from nothing, killed at any instant: the "Done when".
    'create': dict(start=None, command='apply', vars={}),
    # The issue's own case: killed while castle_talos_cluster forms (instants counted from its
    # "Creating..." line, since the secrets' RSA key can take much of a whole create's time).
    'cluster-create': dict(start=None, command='apply', vars={}, marker=r'castle_talos_cluster\.this: Creating\.\.\.'),
    # The VMs alone (clone, configure, start), then the whole example. fakepve clones at once;
    # PVE's full clone of a small disk takes seconds (20 PVE seconds here: 0.2 s at the lab's
    # Proxmox time scale, 0.05 of the suite's), so the kills land inside the clones too.
    'vm-create': dict(start=None, command='apply', vars={}, target='castle_proxmox_vm.node', marker=FIRST_CHANGE,
                      clone_secs=20),
    'scale-out': dict(start=SMALL, command='apply', vars={}, undo=True, marker=FIRST_CHANGE),
    'scale-in': dict(start={}, command='apply', vars=SMALL, undo=True, marker=FIRST_CHANGE),
    'config-roll': dict(start=SMALL, command='apply', vars=dict(SMALL, crash_config_roll='true'), undo=True,
                        marker=FIRST_CHANGE),
    # Talos and Kubernetes together; the start names its Kubernetes (the default follows the
    # Talos release, and Kubernetes cannot go back a minor).
    'upgrade': dict(start=dict(SMALL, kubernetes_version='v1.34.1'), command='apply',
                    vars=dict(SMALL, talos_version='v1.13.0', kubernetes_version='v1.35.0'), marker=FIRST_CHANGE),
    'destroy': dict(start={}, command='destroy', vars={}, marker=FIRST_CHANGE),
}


def var_args(values):
    return ['-var=%s=%s' % (k, v) for k, v in sorted(values.items())]


class Session(object):
    """One lab and one copy of the example, reused from seed to seed."""

    def __init__(self, base, name, time_scale):
        self.dir = os.path.join(base, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.lab_dir = os.path.join(self.dir, 'lab')
        self.work = os.path.join(self.dir, 'ha-cluster')
        self.time_scale = time_scale
        self.tf = None
        self.lab = None
        self.up = False
        # Whether the example is at the operation's starting point (a fresh lab is empty).
        self.at_start = False
        # Whether a run is under way on it.
        self.busy = False

    def castle_lab(self, *args, check=True):
        proc = subprocess.run([lab_binary(), *args, '--state-dir', self.lab_dir], capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError('castle-lab %s failed:\n%s%s' % (' '.join(args), proc.stdout, proc.stderr))
        return proc.stdout

    def start(self):
        os.makedirs(self.dir)
        self.up = True
        # The provider's own log (castle logs no secret), for whoever looks into a failed run.
        flagship = Flagship(self.dir, time_scale=self.time_scale,
                            tf_env={'TF_LOG_PROVIDER': 'INFO', 'TF_LOG_PATH': os.path.join(self.dir, 'terraform.log')})
        self.lab = Lab(flagship.info)
        self.tf = flagship.tf
        self.tf.write(ROLL_VARIABLE, 'crash_variables.tf')
        self.tf.write(OVERRIDE, 'crash_override.tf')
        return self

    def stop(self, keep_as=None):
        """Stops the lab; its files are kept under `keep_as` (a failed run's name), else removed."""
        if self.up:
            self.castle_lab('down', check=False)
            self.up = False
        if keep_as:
            kept = os.path.join(os.path.dirname(self.dir), keep_as)
            shutil.rmtree(kept, ignore_errors=True)
            os.rename(self.dir, kept)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, op, values):
        args = [op['command'], '-auto-approve', '-no-color'] + var_args(values)
        if op.get('target'):
            args.append('-target=' + op['target'])
        return args

    def timed(self, args, log_name, kill_after=None, marker=None):
        """Runs terraform; with `kill_after`, SIGKILLs its whole process group that many seconds
        after it started (after a line matching the regular expression `marker` appeared in its
        output, when given). Returns (seconds
        since the start or the marker, returncode, output, killed)."""
        path = os.path.join(self.dir, log_name)
        log = open(path, 'w+')
        started = time.monotonic()
        proc = subprocess.Popen(terraform_command() + args, cwd=self.work, env=self.tf.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while marker and proc.poll() is None:
            with open(path) as f:
                if re.search(marker, f.read(), re.M):
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
            kill_group(proc)
            killed = True
        except BaseException:
            kill_group(proc)
            raise
        elapsed = time.monotonic() - started
        log.seek(0)
        output = log.read()
        log.close()
        return elapsed, proc.returncode, output, killed

    def to_start(self, op):
        if not self.at_start and op['start'] is not None:
            self.tf.apply(vars=op['start'])
        self.at_start = True

    def finish(self, op, result):
        """The run after the kill, the checks, and back to the starting point."""
        self.at_start = False
        if op['command'] == 'destroy':
            self.tf.destroy()
            result['orphans'] += settled(lambda: check_empty(self.lab))
            return
        final = dict(op['vars'])
        if op.get('target'):
            self.tf.run(*self.command(op, final))
        self.tf.apply(vars=final)
        if not _plan_empty(self.tf, final):
            result['orphans'].append('the second plan is not empty')
        result['orphans'] += settled(lambda: check_converged(self.lab, self.tf))
        if result['orphans']:
            return
        if op.get('undo'):
            self.tf.apply(vars=op['start'])
            self.at_start = True
        else:
            self.tf.run('destroy', '-auto-approve', '-no-color', *var_args(final))
            result['orphans'] += settled(lambda: check_empty(self.lab))
            self.at_start = op['start'] is None

    def close(self, op, result):
        """After the last seed of an undoable operation: destroy, and the lab must be empty."""
        self.tf.run('destroy', '-auto-approve', '-no-color', *var_args(op['start'] or {}))
        result['orphans'] += settled(lambda: check_empty(self.lab))


def in_progress(output):
    """The resources Terraform had started and not finished when it died."""
    started, done = [], set()
    for line in output.splitlines():
        if ': Creating...' in line or ': Modifying...' in line or ': Destroying...' in line:
            started.append(line.split(':')[0])
        elif 'complete after' in line:
            done.add(line.split(':')[0])
    return sorted(set(a for a in started if a not in done))


def one_run(session, op_name, op, seed, duration):
    """Seed 0 is the calibration: uncut, it measures the operation; its checks count as a run."""
    rng = random.Random('%s-%d' % (op_name, seed))
    kill_at = round(rng.uniform(0.2, duration), 2) if seed else None
    result = dict(operation=op_name, seed=seed, kill_at=kill_at, duration=round(duration or 0, 1),
                  converged=False, orphans=[], manual_steps=0, killed_during=[], error=None)
    started = time.monotonic()
    try:
        # The starting point: a failure here (no kill yet) is castle's too.
        session.to_start(op)
        elapsed, code, output, killed = session.timed(session.command(op, op['vars']), 'seed-%d.log' % seed,
                                                      kill_after=kill_at, marker=op.get('marker'))
        if not kill_at and code != 0:
            raise TerraformError('the uncut %s failed:\n%s' % (op_name, output[-3000:]))
        result['measured'] = round(elapsed, 1)
        result['killed'] = killed
        result['killed_during'] = in_progress(output) if killed else []
        # The local backend's lock: an fcntl lock the kernel drops with the process, and a
        # .terraform.tfstate.lock.info file the kill leaves behind, which the next run ignores.
        result['lock_info_left'] = killed and os.path.exists(os.path.join(session.work, '.terraform.tfstate.lock.info'))
        # Terraform's local backend rewrites terraform.tfstate in place (seek, truncate, write): a
        # kill inside that window leaves it empty or cut, and Terraform forgets every resource.
        result['state_file_lost'] = killed and not _state_file_readable(os.path.join(session.work, 'terraform.tfstate'))
        session.finish(op, result)
    except (TerraformError, RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        result['error'] = str(e)[-4000:]
        result['manual_steps'] = 1
    result['converged'] = not result['error'] and not result['orphans']
    result['seconds'] = round(time.monotonic() - started, 1)
    return result


def _state_file_readable(path):
    try:
        with open(path) as f:
            return 'resources' in json.load(f)
    except FileNotFoundError:
        return True  # nothing written yet: the kill came before the first resource finished
    except ValueError:
        return False


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
    """Whether a plan changes no resource. `-detailed-exitcode` answers in one run (0: no change);
    on 2 (a change, perhaps only to outputs) the JSON plan says whether a resource changes."""
    args = ['plan', '-no-color', '-detailed-exitcode', '-out=tfplan'] + var_args(values)
    proc = run_in_own_group(terraform_command() + args, cwd=tf.workdir, env=tf.env, timeout=600)
    if proc.returncode == 0:
        return True
    if proc.returncode != 2:
        raise TerraformError('terraform plan failed (%d):\n%s%s' % (proc.returncode, proc.stdout, proc.stderr))
    plan = json.loads(tf.run('show', '-json', 'tfplan'))
    return not [rc for rc in plan.get('resource_changes', []) if rc['change']['actions'] != ['no-op']]


def summary(results, ops):
    """The table docs/reliability.md publishes: the seeded runs of each operation (not the uncut
    calibration runs), how many converged, the orphans and manual steps found, how many kills
    landed while a resource was being changed, left the local state lock's file, or emptied the
    state file."""
    lines = ['| operation | runs | converged | orphans found | manual steps | killed mid-change | lock file left '
             '| state file emptied |', '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for op in ops:
        rs = [r for r in results if r['operation'] == op and r['seed']]
        if not rs:
            continue
        lines.append('| %s | %d | %d | %d | %d | %d | %d | %d |' % (
            op, len(rs), sum(r['converged'] for r in rs), sum(len(r['orphans']) for r in rs),
            sum(r['manual_steps'] for r in rs), sum(bool(r['killed_during']) for r in rs),
            sum(bool(r.get('lock_info_left')) for r in rs), sum(bool(r.get('state_file_lost')) for r in rs)))
    return '\n'.join(lines)


def report(r):
    if not r['seed']:
        line = '    uncut run %.1f s' % r.get('measured', 0)
    else:
        line = '    seed %3d kill at %6.2f s during %-50s' % (
            r['seed'], r['kill_at'],
            ', '.join(r['killed_during']) or ('(finished first)' if not r.get('killed') else '-'))
    print('%s [%s] %5.1f s  %s' % (
        line, r['operation'], r.get('seconds', 0),
        'converged' if r['converged'] else 'FAILED: %s' % (r['error'] or '; '.join(r['orphans']))[:600]),
        flush=True)


def run_part(op_name, seeds, base, time_scale, save):
    """One operation's seeds on one lab (a fresh one after a failure). Returns the results, the
    calibration (seed 0) first; `save` gets them after every run."""
    op = OPERATIONS[op_name]
    results = []
    live = []  # the session whose lab runs, if any
    # Directories are named after the part (its first seed), so that parts of one operation
    # running at once never share one.
    part = '%s-%d' % (op_name, seeds[0])
    try:
        _run_seeds(op_name, op, [0] + list(seeds), base, time_scale, save, results, live, part)
    finally:
        for session in live:
            # Whatever happened, no lab is left running; an interrupted one is kept.
            session.stop(keep_as=None if results and results[-1]['converged'] and not session.busy
                         else '%s-aborted' % part)
    return results


def _run_seeds(op_name, op, pending, base, time_scale, save, results, live, part):
    duration = None
    # The durations of the uncut runs seen so far: the calibration, and every seed whose kill came
    # after the end. Their median spreads the kills over the operation as it runs now (one
    # calibration on a busy machine can be twice the typical run).
    uncut = []
    while pending:
        seed = pending.pop(0)
        if not live:
            # Read by harness/pve_serve.py when the lab starts.
            os.environ['CASTLE_LAB_PVE_CLONE_SECS'] = str(op.get('clone_secs', 0))
            live.append(Session(base, '%s-lab-from-seed-%d' % (part, seed), time_scale))
            live[0].start()
        session = live[0]
        session.busy = True
        r = one_run(session, op_name, op, seed, duration)
        if not r.get('killed') and r.get('measured'):
            uncut.append(r['measured'])
            duration = statistics.median(uncut)
        if seed == 0:
            if r['error']:
                live.pop().stop(keep_as='%s-calibration' % part)
                raise SystemExit('calibration of %s failed:\n%s' % (op_name, r['error']))
            print('==> %s: uncut run %.1f s; killing at seeded instants in [0.2, %.1f] s'
                  % (op_name, duration, duration), flush=True)
        if op.get('undo') and not pending and r['converged']:
            try:
                session.close(op, r)
            except (TerraformError, subprocess.TimeoutExpired) as e:
                r['error'] = str(e)[-4000:]
                r['manual_steps'] = 1
            r['converged'] = not r['error'] and not r['orphans']
        session.busy = False
        results.append(r)
        save(results)
        report(r)
        if not r['converged']:
            # Keep the lab's files and Terraform's logs for whoever looks at it; a fresh lab next.
            with open(os.path.join(session.dir, 'result.json'), 'w') as f:
                json.dump(r, f, indent=1)
            live.pop().stop(keep_as='%s-%d' % (op_name, seed) if seed else '%s-calibration' % part)


def parts(ops, first, count, jobs):
    """The work as (operation, seeds) parts: whole operations, halved when they run in parallel
    (so that the slow operations do not finish last alone)."""
    seeds = list(range(first, first + count))
    out = []
    for op in ops:
        if jobs > 1 and count > 1:
            half = (count + 1) // 2
            out += [(op, seeds[:half]), (op, seeds[half:])]
        else:
            out.append((op, seeds))
    return out


def run_parallel(work, args, base):
    """Each part in its own network namespace, `jobs` at once; their results merged."""
    running, results = [], []
    pending = list(work)
    while pending or running:
        while pending and len(running) < args.jobs:
            op, seeds = pending.pop(0)
            out = os.path.join(base, 'part-%s-%d.json' % (op, seeds[0]))
            inner = [sys.executable, os.path.abspath(__file__), '--ops', op, '--first-seed', str(seeds[0]),
                     '--seeds', str(len(seeds)), '--time-scale', str(args.time_scale), '--out', out, '--part']
            command = ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$@"', 'sh'] + inner
            log = open(os.path.join(base, 'part-%s-%d.log' % (op, seeds[0])), 'w')
            running.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), out, log, op))
            print('==> %s seeds %d-%d started in a network namespace of its own' % (op, seeds[0], seeds[-1]),
                  flush=True)
        time.sleep(2)
        for entry in list(running):
            proc, out, log, op = entry
            if proc.poll() is None:
                continue
            running.remove(entry)
            log.close()
            with open(log.name) as f:
                sys.stdout.write(f.read())
            if os.path.exists(out):
                with open(out) as f:
                    results += json.load(f)
            else:
                print('==> %s: the part ended (%d) without results' % (op, proc.returncode), flush=True)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seeds', type=int, default=int(os.environ.get('SEEDS', 20)))
    parser.add_argument('--first-seed', type=int, default=1)
    parser.add_argument('--only-seeds', default='', help='these seeds (e.g. 2,4,7) instead of --first-seed/--seeds')
    parser.add_argument('--ops', default=','.join(OPERATIONS))
    parser.add_argument('--time-scale', type=float, default=0.2)
    parser.add_argument('--jobs', type=int, default=int(os.environ.get('JOBS', 1)))
    parser.add_argument('--out', default=os.path.join(ROOT, '.lab', 'crash', 'results.json'))
    parser.add_argument('--part', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--summary', action='store_true', help='print the table of the results in --out and stop')
    args = parser.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so every lab is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ops = [o for o in args.ops.split(',') if o]
    unknown = [o for o in ops if o not in OPERATIONS]
    if unknown:
        parser.error('unknown operation(s) %s; known: %s' % (', '.join(unknown), ', '.join(OPERATIONS)))
    if args.summary:
        with open(args.out) as f:
            print(summary(json.load(f), ops))
        return 0
    base = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(base, exist_ok=True)
    started = time.monotonic()
    if args.only_seeds:
        work = [(op, [int(x) for x in args.only_seeds.split(',')]) for op in ops]
    else:
        work = parts(ops, args.first_seed, args.seeds, args.jobs)
    if args.jobs > 1:
        fresh = run_parallel(work, args, base)
    else:
        fresh = []

        def save(part_results):
            if args.part:
                with open(args.out, 'w') as f:
                    json.dump(fresh + part_results, f, indent=1)

        for op, seeds in work:
            fresh += run_part(op, seeds, base, args.time_scale, save)
    if args.part:
        return 0
    done = [(r['operation'], r['seed']) for r in fresh]
    results = []
    if os.path.exists(args.out):
        with open(args.out) as f:
            results = [r for r in json.load(f) if (r['operation'], r['seed']) not in done]
    results += fresh
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=1)
    print('\n' + summary(results, ops))
    print('\n%d runs in %.0f s; results: %s' % (len(fresh), time.monotonic() - started, args.out))
    return 0 if all(r['converged'] for r in fresh) else 1


if __name__ == '__main__':
    sys.exit(main())
