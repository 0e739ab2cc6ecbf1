"""Every example is valid, formatted HCL for the provider's current schema, and the Registry
docs are what `make docs` writes from that schema."""

import os
import shutil
import subprocess
import sys

import pytest

from harness.terraform import ROOT, terraform_command

pytestmark = pytest.mark.acceptance

EXAMPLES = sorted(d for d in os.listdir(os.path.join(ROOT, 'examples'))
                  if os.path.exists(os.path.join(ROOT, 'examples', d, 'main.tf')))
DOC_EXAMPLES = os.path.join(ROOT, 'examples', 'resources')


@pytest.mark.parametrize('example', EXAMPLES)
def test_example_validates(tf, example):
    t = tf(example)
    for name in os.listdir(os.path.join(ROOT, 'examples', example)):
        if name.endswith('.tf') or name.endswith('.tfvars'):
            shutil.copy(os.path.join(ROOT, 'examples', example, name), t.workdir)
    out = t.run('validate', '-no-color')
    assert 'Success! The configuration is valid' in out


def test_documentation_examples_validate_together(tf):
    """The provider block and each resource's example (with its import block) of the Registry
    docs form one configuration, as a user would write them one after the other."""
    t = tf('doc-examples')
    shutil.copy(os.path.join(ROOT, 'examples', 'provider', 'provider.tf'), t.workdir)
    for resource in sorted(os.listdir(DOC_EXAMPLES)):
        for name in ('resource.tf', 'import.tf'):
            path = os.path.join(DOC_EXAMPLES, resource, name)
            if os.path.exists(path):
                shutil.copy(path, os.path.join(t.workdir, '%s_%s' % (resource, name)))
    out = t.run('validate', '-no-color')
    assert 'Success! The configuration is valid' in out


def test_examples_are_formatted(tf):
    t = tf('fmt')
    proc = subprocess.run(terraform_command() + ['fmt', '-check', '-recursive', '-diff', '-no-color',
                                                 os.path.join(ROOT, 'examples')],
                          cwd=t.workdir, env=t.env, capture_output=True, text=True)
    assert proc.returncode == 0, 'run `terraform fmt -recursive examples`:\n' + proc.stdout + proc.stderr


def test_committed_docs_are_what_make_docs_writes():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'acceptance-tests', 'generate_docs.py'), '--check'],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
