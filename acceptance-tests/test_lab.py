"""`castle-lab up` / `status` / `down`: the whole lab, wired like a real one.

Runs the real binary on addresses of its own (127.0.0.5x), so a lab the user keeps running on
the default addresses is left alone.
"""

import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from harness.flagship import Pve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARY = os.path.join(ROOT, 'target', 'debug', 'castle-lab')
PVE = '127.0.0.52:8006'
ADMIN = '127.0.0.51:7000'
INFISICAL = '127.0.0.53:8200'
NODE_IP = '127.0.3.11'


@pytest.fixture(scope='module')
def binary():
    subprocess.run(['cargo', 'build', '-q', '-p', 'castle-lab'], cwd=ROOT, check=True)
    return BINARY


def lab(binary, state, *args):
    env = dict(os.environ, CASTLE_LAB_PYTHON=sys.executable)
    return subprocess.run([binary] + list(args) + ['--state-dir', str(state)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def nodes(admin):
    with urllib.request.urlopen('http://%s/nodes' % admin, timeout=5) as resp:
        return {n['address']: n for n in json.loads(resp.read())}


def wait_until(what, check, limit=15):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError('timed out after %ss waiting for %s' % (limit, what))


def answers_tls(address, port=50000):
    """Whether a TLS server (a Talos node in maintenance mode) answers there."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=1) as tcp:
            with context.wrap_socket(tcp):
                return True
    except OSError:
        return False


def port_free(address):
    """Whether a new lab could listen there (as castle-lab does, with SO_REUSEADDR: the
    connections the test made may linger in TIME_WAIT)."""
    host, port = address.rsplit(':', 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
            return True
        except OSError:
            return False


@pytest.mark.acceptance
def test_a_vm_started_in_the_lab_boots_a_talos_node_and_down_leaves_nothing(binary, tmp_path):
    state = tmp_path / 'lab'
    up = lab(binary, state, 'up', '--pve', PVE, '--admin', ADMIN, '--infisical', INFISICAL)
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        info = json.loads((state / 'lab.json').read_text())
        pid = int((state / 'castle-lab.pid').read_text())
        assert info['pid'] == pid
        assert 'root@pam / secret' in up.stdout

        again = lab(binary, state, 'up', '--pve', PVE, '--admin', ADMIN, '--infisical', INFISICAL)
        assert again.returncode == 0 and 'already up' in again.stdout

        status = lab(binary, state, 'status')
        assert status.returncode == 0, status.stdout + status.stderr
        for shown in (info['proxmox']['endpoint'], 'root@pam', 'secret', str(state / 'pve-ca.pem'),
                      'http://' + INFISICAL, 'castle-lab-client', 'castle-lab-secret', 'castle-lab-project',
                      'dev', 'http://' + ADMIN):
            assert shown in status.stdout

        pve = Pve(info['proxmox'])
        vmid = int(pve.call('GET', '/cluster/nextid'))
        pve.wait(pve.call('POST', '/nodes/pve1/qemu/9000/clone', {'newid': vmid, 'name': 'talos-cp-1'}))
        pve.call('PUT', '/nodes/pve1/qemu/%d/config' % vmid, {'ipconfig0': 'ip=%s/24,gw=127.0.3.1' % NODE_IP})
        assert NODE_IP not in nodes(ADMIN), 'no node before the VM runs'

        pve.wait(pve.call('POST', '/nodes/pve1/qemu/%d/status/start' % vmid))
        wait_until('a Talos node in maintenance at %s' % NODE_IP,
                   lambda: nodes(ADMIN).get(NODE_IP, {}).get('state') == 'maintenance')
        wait_until('the maintenance API to answer TLS', lambda: answers_tls(NODE_IP))

        status = lab(binary, state, 'status')
        assert str(vmid) in status.stdout and NODE_IP in status.stdout and 'maintenance' in status.stdout

        pve.wait(pve.call('POST', '/nodes/pve1/qemu/%d/status/stop' % vmid))
        wait_until('the node to power off', lambda: nodes(ADMIN).get(NODE_IP, {}).get('state') == 'off')
        wait_until('nothing to answer at %s' % NODE_IP, lambda: not answers_tls(NODE_IP))

        # Started again: the machine boots from its (blank) disk into maintenance mode.
        pve.wait(pve.call('POST', '/nodes/pve1/qemu/%d/status/start' % vmid))
        wait_until('the node to boot again', lambda: answers_tls(NODE_IP))
        assert nodes(ADMIN)[NODE_IP]['state'] == 'maintenance'
        pve.wait(pve.call('POST', '/nodes/pve1/qemu/%d/status/stop' % vmid))
        wait_until('the node to power off again', lambda: nodes(ADMIN)[NODE_IP]['state'] == 'off')

        pve.wait(pve.call('DELETE', '/nodes/pve1/qemu/%d' % vmid))
        wait_until('the node to be removed', lambda: NODE_IP not in nodes(ADMIN))
    finally:
        down = lab(binary, state, 'down')
    assert down.returncode == 0, down.stdout + down.stderr
    assert not os.path.exists('/proc/%d' % pid) or open('/proc/%d/stat' % pid).read().split(')')[-1].split()[0] == 'Z'
    for address in (PVE, ADMIN, INFISICAL):
        assert port_free(address), address
    assert not (state / 'castle-lab.pid').exists() and not (state / 'lab.json').exists()
    assert lab(binary, state, 'status').returncode == 1
    assert lab(binary, state, 'down').returncode == 0, 'down is idempotent'


@pytest.mark.acceptance
def test_up_names_the_port_that_is_taken(binary, tmp_path):
    with socket.socket() as taken:
        taken.bind(('127.0.0.54', 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = lab(binary, tmp_path / 'lab', 'up', '--pve', '127.0.0.55:8006', '--admin', '127.0.0.54:%d' % port,
                 '--infisical', '127.0.0.56:8200')
    assert up.returncode != 0
    assert 'port %d' % port in up.stderr and '--admin' in up.stderr, up.stderr
