"""Every example is valid HCL for the provider's current schema."""

import os
import shutil

import pytest

from harness.terraform import ROOT

pytestmark = pytest.mark.acceptance

EXAMPLES = sorted(d for d in os.listdir(os.path.join(ROOT, 'examples'))
                  if os.path.exists(os.path.join(ROOT, 'examples', d, 'main.tf')))


@pytest.mark.parametrize('example', EXAMPLES)
def test_example_validates(tf, example):
    t = tf(example)
    for name in os.listdir(os.path.join(ROOT, 'examples', example)):
        if name.endswith('.tf') or name.endswith('.tfvars'):
            shutil.copy(os.path.join(ROOT, 'examples', example, name), t.workdir)
    out = t.run('validate', '-no-color')
    assert 'Success! The configuration is valid' in out
