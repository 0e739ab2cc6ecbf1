"""Day 2 on the flagship example: Kubernetes upgraded by one minor release with one edit of
`kubernetes_version` and one `terraform apply`, as `talosctl upgrade-k8s` does it; a jump over a
minor release refused at plan time; an upgrade cut short by a node that refuses its config
resumes on the next apply.

Runs the whole lab (`castle-lab up`: Proxmox, Talos nodes behind VIP 127.0.0.210, Infisical)
on its default addresses, so run it in a network namespace of its own (see README).
"""

import json
import os
import subprocess
import urllib.request

import pytest

from harness.flagship import Flagship

pytestmark = pytest.mark.acceptance

KUBECTL = os.environ.get('KUBECTL', 'kubectl')
CONTROL_PLANES = {'cp-1': '127.0.0.211', 'cp-2': '127.0.0.212', 'cp-3': '127.0.0.213'}
WORKERS = {'w-1': '127.0.0.221', 'w-2': '127.0.0.222'}


def said(out):
    """Terraform's output as one line: diagnostics are boxed with '│' and wrapped at 78 columns."""
    return ' '.join(out.replace('│', ' ').split())


@pytest.fixture
def flagship(tmp_path):
    lab = Flagship(tmp_path, time_scale=0.2)
    try:
        t = lab.tf
        t.lab = lab.info
        yield t
    finally:
        lab.stop(destroy=True)


def set_kubernetes_version(t, version):
    """The one edit: kubernetes_version in a tfvars file Terraform loads."""
    t.write('kubernetes_version = "%s"\n' % version, name='version.auto.tfvars')


def kubectl(t, *args):
    path = t.run('output', '-raw', 'kubeconfig_path').strip()
    proc = subprocess.run([KUBECTL, '--kubeconfig', path, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def fault(t, address, kind):
    req = urllib.request.Request('%s/nodes/%s/faults' % (t.lab['talos']['admin'], address),
                                 data=json.dumps({'kind': kind}).encode(), method='POST',
                                 headers={'Content-Type': 'application/json'})
    urllib.request.urlopen(req, timeout=10).close()


def etcd_members(t):
    with urllib.request.urlopen(t.lab['talos']['admin'] + '/nodes', timeout=10) as resp:
        nodes = {n['address']: n for n in json.loads(resp.read())}
    return {address: sorted(m['hostname'] for m in nodes[address]['etcd_members'])
            for address in CONTROL_PLANES.values()}


def assert_runs(t, version):
    """What a user checks after the upgrade: every component on `version`, the cluster whole."""
    server = json.loads(kubectl(t, 'version', '-o', 'json'))['serverVersion']
    assert server['gitVersion'] == version, server
    wide = kubectl(t, 'get', 'nodes', '-o', 'wide')
    rows = [line.split() for line in wide.splitlines()[1:]]
    assert sorted(r[0] for r in rows) == sorted(list(CONTROL_PLANES) + list(WORKERS)), wide
    assert {r[1] for r in rows} == {'Ready'}, wide
    assert {r[4] for r in rows} == {version}, wide
    pods = json.loads(kubectl(t, 'get', 'pods', '-n', 'kube-system', '-o', 'json'))['items']
    static = {(p['metadata']['labels']['k8s-app'], p['spec']['nodeName']): p['spec']['containers'][0]['image']
              for p in pods if p['metadata']['labels'].get('tier') == 'control-plane'}
    assert static == {(component, node): 'registry.k8s.io/%s:%s' % (component, version)
                      for component in ('kube-apiserver', 'kube-controller-manager', 'kube-scheduler')
                      for node in CONTROL_PLANES}, static
    proxy = json.loads(kubectl(t, 'get', 'daemonset', 'kube-proxy', '-n', 'kube-system', '-o', 'json'))
    assert proxy['spec']['template']['spec']['containers'][0]['image'] == 'registry.k8s.io/kube-proxy:' + version
    proxy_pods = {p['spec']['containers'][0]['image'] for p in pods
                  if p['metadata']['labels'].get('k8s-app') == 'kube-proxy'}
    assert proxy_pods == {'registry.k8s.io/kube-proxy:' + version}, proxy_pods
    coredns = json.loads(kubectl(t, 'get', 'deployment', 'coredns', '-n', 'kube-system', '-o', 'json'))
    # The CoreDNS that Talos v1.12 renders (constants.go DefaultCoreDNSVersion).
    assert coredns['spec']['template']['spec']['containers'][0]['image'] == 'registry.k8s.io/coredns/coredns:v1.13.2'
    members = etcd_members(t)
    assert all(m == sorted(CONTROL_PLANES) for m in members.values()), members
    endpoints = json.loads(kubectl(t, 'get', 'endpoints', 'kubernetes', '-o', 'json'))
    addresses = sorted(a['ip'] for s in endpoints['subsets'] for a in s['addresses'])
    assert addresses == sorted(CONTROL_PLANES.values()), addresses
    assert t.plan_is_empty(), t.plan()


def test_kubernetes_is_upgraded_one_minor_at_a_time_and_an_interrupted_upgrade_resumes(flagship):
    t = flagship
    set_kubernetes_version(t, 'v1.33.5')
    t.apply()
    assert {r.split()[4] for r in kubectl(t, 'get', 'nodes', '-o', 'wide').splitlines()[1:]} == {'v1.33.5'}

    # A jump over 1.34 is refused before anything changes, naming the attribute.
    set_kubernetes_version(t, 'v1.35.0')
    out = said(t.plan(expect_fail=True))
    assert 'kubernetes_version' in out and 'over 1.34' in out, out

    # One edit, one apply: the plan says what will move, the apply moves it.
    set_kubernetes_version(t, 'v1.34.2')
    plan = said(t.plan())
    assert 'Kubernetes will be upgraded component by component' in plan, plan
    assert 'The nodes run Kubernetes v1.33.5 and will run v1.34.2' in plan, plan
    t.apply()
    assert_runs(t, 'v1.34.2')

    # A worker refuses its next config half-way through the next upgrade: the apply fails
    # naming it, and the next apply finishes the job from where it stopped.
    set_kubernetes_version(t, 'v1.35.0')
    fault(t, WORKERS['w-2'], 'reject_next_config')
    out = said(t.apply(expect_fail=True))
    assert 'w-2' in out, out
    nodes = kubectl(t, 'get', 'nodes', '-o', 'wide')
    versions = {line.split()[0]: line.split()[4] for line in nodes.splitlines()[1:]}
    assert versions['w-2'] == 'v1.34.2' and versions['cp-1'] == 'v1.35.0', nodes
    t.apply()
    assert_runs(t, 'v1.35.0')
