"""What a converged lab looks like, read through each system's own API: Proxmox's VM list, the Talos
fleet's admin API (node states, cluster ids, etcd members), Infisical's secrets. Each check returns
a list of problems (orphans, strays), empty when all is well. etcd's members are asked of the real
etcd of each control plane, not of the lab's view of it."""

import base64
import datetime
import json
import os
import re
import ssl
import tempfile
import urllib.parse
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Talos constants.EtcdClientPort: every control plane's etcd serves clients here.
ETCD_CLIENT_PORT = 2379


class Lab(object):
    """The lab of one run, from its lab.json."""

    def __init__(self, info):
        self.info = info

    def _get(self, url, headers=None, context=None):
        req = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(req, timeout=15, context=context) as resp:
            return json.load(resp)

    def vms(self):
        """VMID -> name of every VM in Proxmox but the template."""
        pve = self.info['proxmox']
        context = ssl.create_default_context(cafile=pve['ca_cert'])
        context.check_hostname = False
        body = urllib.parse.urlencode({'username': pve['username'], 'password': pve['password']}).encode()
        req = urllib.request.Request(pve['endpoint'] + '/api2/json/access/ticket', data=body)
        with urllib.request.urlopen(req, timeout=15, context=context) as resp:
            ticket = json.load(resp)['data']['ticket']
        data = self._get(pve['endpoint'] + '/api2/json/cluster/resources?type=vm',
                         headers={'Cookie': 'PVEAuthCookie=' + ticket}, context=context)['data']
        return {int(vm['vmid']): vm.get('name') for vm in data if not vm.get('template')}

    def nodes(self):
        """The Talos fleet's nodes (NodeSummary), by address."""
        admin = self.info['talos']['admin']
        if not admin.startswith('http'):
            admin = 'http://' + admin
        return {n['address']: n for n in self._get(admin + '/nodes')}

    def secrets(self):
        """(environment, path, key) of every secret in Infisical."""
        host = self.info['infisical']['host']
        stored = self._get(host + '/__lab/secrets')['secrets']
        return {(s['environment'], s['path'], s['key']) for s in stored}


class Etcd(object):
    """The real etcd of the lab's control planes, asked directly through its v3 JSON gateway over
    mutual TLS, with a client certificate this check issues from the etcd CA of the cluster's
    secrets (as Talos issues its own `admin` etcd client certificate)."""

    def __init__(self, secrets_yaml):
        ca_crt, ca_key = _etcd_ca(secrets_yaml)
        ca_cert = x509.load_pem_x509_certificate(ca_crt)
        ca_private = serialization.load_pem_private_key(ca_key, password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'crash-check')]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_private, hashes.SHA256()))
        self.context = ssl.create_default_context(cadata=ca_crt.decode())
        self.context.check_hostname = False
        with tempfile.TemporaryDirectory() as d:
            crt_path, key_path = os.path.join(d, 'client.crt'), os.path.join(d, 'client.key')
            with open(crt_path, 'wb') as f:
                f.write(cert.public_bytes(serialization.Encoding.PEM))
            with open(key_path, 'wb') as f:
                f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
            self.context.load_cert_chain(crt_path, key_path)

    def members(self, address):
        """The member list as the etcd at `address` answers it: [(name, is_learner)]."""
        req = urllib.request.Request('https://%s:%d/v3/cluster/member/list' % (address, ETCD_CLIENT_PORT),
                                     data=b'{}', headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(req, timeout=10, context=self.context) as resp:
            answer = json.load(resp)
        return [(m.get('name', ''), bool(m.get('isLearner'))) for m in answer.get('members', [])]


def _etcd_ca(secrets_yaml):
    """certs.etcd.crt and .key of a `talosctl gen secrets` document (base64 of PEM), without a YAML
    library: the format is fixed (two-space indents, one value a line)."""
    match = re.search(r'^certs:\n(?:  .*\n)*?  etcd:\n    crt: (\S+)\n    key: (\S+)', secrets_yaml, re.M)
    if not match:
        raise ValueError('no certs.etcd in the cluster secrets')
    return base64.b64decode(match.group(1)), base64.b64decode(match.group(2))


def _state(tf):
    return tf.resources()


def check_converged(lab, tf):
    problems = []
    resources = _state(tf)
    cluster = resources.get('castle_talos_cluster.this')
    identity = resources.get('castle_talos_secrets.this')
    if not cluster or not identity:
        return ['the cluster or its secrets are missing from state']
    # Every VM in Proxmox is known to state, and every VM in state exists.
    known = {int(v['vm_id']) for a, v in resources.items() if a.startswith('castle_proxmox_vm.')}
    found = lab.vms()
    for vmid in sorted(set(found) - known):
        problems.append('VM %d (%s) is in Proxmox but not in state' % (vmid, found[vmid]))
    for vmid in sorted(known - set(found)):
        problems.append('VM %d is in state but not in Proxmox' % vmid)
    # Every lab node is a running member of this cluster (with the name state gives it) or back in
    # maintenance mode.
    members = {n['address'].split('/')[0]: n for n in cluster['node']}
    etcd = Etcd(identity['secrets'])
    control_planes = {n['name'] for n in cluster['node'] if n['role'] == 'controlplane'}
    for address, node in sorted(lab.nodes().items()):
        mine = members.get(address)
        if mine is None:
            if node['state'] not in ('maintenance', 'off'):
                problems.append('node %s is %s but not in the cluster' % (address, node['state']))
            continue
        if node['state'] != 'running' or node.get('cluster_id') != identity['id']:
            problems.append('node %s (%s) is %s with cluster id %s, not a running member of this cluster'
                            % (mine['name'], address, node['state'], node.get('cluster_id')))
            continue
        if mine['role'] == 'controlplane':
            try:
                listed = etcd.members(address)
            except (OSError, ValueError) as e:
                problems.append('the etcd of %s (%s) does not answer its member list: %s' % (mine['name'], address, e))
                continue
            names = sorted(name for name, _ in listed)
            learners = sorted(name for name, learner in listed if learner)
            if names != sorted(control_planes) or learners:
                problems.append('etcd members seen by %s are %s%s, not the control planes %s'
                                % (mine['name'], names, ' (learners: %s)' % learners if learners else '',
                                   sorted(control_planes)))
    # No secret in Infisical that state does not know: the kubeconfig secrets, and the escrow of
    # the cluster's secrets.
    expected = set()
    for address, values in resources.items():
        if address.startswith('castle_talos_secrets.'):
            for escrow in values.get('escrow') or []:
                expected.add((escrow['environment'], escrow.get('path') or '/', escrow['key']))
        if address.startswith('castle_kubeconfig_secret.'):
            path = values.get('path') or '/'
            expected.add((values['environment'], path, values.get('kubeconfig_key') or 'KUBECONFIG'))
            if values.get('talosconfig_key'):
                expected.add((values['environment'], path, values['talosconfig_key']))
    for stray in sorted(lab.secrets() - expected):
        problems.append('secret %s:%s/%s is in Infisical but not in state' % stray)
    return problems


def check_empty(lab):
    """After a destroy: no VM, no configured node, no secret."""
    problems = ['VM %d (%s) is left in Proxmox' % (vmid, name) for vmid, name in sorted(lab.vms().items())]
    for address, node in sorted(lab.nodes().items()):
        if node['state'] not in ('maintenance', 'off'):
            problems.append('node %s is left %s (cluster id %s)' % (address, node['state'], node.get('cluster_id')))
    problems += ['secret %s:%s/%s is left in Infisical' % s for s in sorted(lab.secrets())]
    return problems
