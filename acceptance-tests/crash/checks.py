"""What a converged lab looks like, read through each system's own API: Proxmox's VM list, the Talos
fleet's admin API (node states, cluster ids, etcd members), Infisical's secrets. Each check returns
a list of problems (orphans, strays), empty when all is well."""

import json
import ssl
import urllib.parse
import urllib.request


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
            seen = {m['hostname'] for m in node.get('etcd_members', [])}
            if seen != control_planes:
                problems.append('etcd members seen by %s are %s, not the control planes %s'
                                % (mine['name'], sorted(seen), sorted(control_planes)))
    # No secret in Infisical that state does not know.
    expected = set()
    for address, values in resources.items():
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
