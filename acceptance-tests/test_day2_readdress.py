"""Day 2 on the flagship example: changing a node's address (the seeds' story: after a control
plane's address changed, the `kubernetes` endpoints kept the old one and the cluster broke).

One edit (`node_hosts`) and one `terraform apply` move a control plane and a worker. Terraform
restarts their VMs with the new cloud-init address first; the machines keep their config and
identity (Talos merges the platform address with its static one), then castle applies their new
config and waits until etcd, the kubelets and the API servers' endpoints show the new addresses.
"""

import pytest

from harness.flagship import Flagship, KubectlWatch

pytestmark = pytest.mark.acceptance

NEW_CONTROL_PLANE_HOST = 220
NEW_WORKER_HOST = 221


@pytest.fixture
def flagship(tmp_path):
    lab = Flagship(tmp_path)
    try:
        yield lab
    finally:
        lab.stop(destroy=True)


def test_a_control_plane_and_a_worker_change_address_with_kubectl_answering_throughout(flagship):
    flagship.tf.apply(timeout=900)
    before = flagship.nodes_output()
    fleet = flagship.fleet()
    # The control plane that does not hold the VIP: moving the VIP holder is a failover (the
    # VIP follows etcd's election), which this test does not measure.
    moved_cp = next(name for name, n in sorted(before.items())
                    if n['role'] == 'controlplane' and not fleet[n['address']]['vip'])
    moved = {moved_cp: '127.0.0.%d' % NEW_CONTROL_PLANE_HOST, 'w-1': '127.0.0.%d' % NEW_WORKER_HOST}
    member_id = next(m['ID'] for m in flagship.etcd_member_list(before['cp-1']['address']
                                                            if moved_cp != 'cp-1' else before['cp-2']['address'])
                     if m['name'] == moved_cp)

    flagship.edit('node_hosts = { %s = %d, w-1 = %d }\n' % (moved_cp, NEW_CONTROL_PLANE_HOST, NEW_WORKER_HOST))
    with KubectlWatch(flagship) as watch:
        out = flagship.tf.apply(timeout=900)
    assert 'Nodes change their address' in out, out
    assert watch.calls > 10, watch.calls
    assert watch.failures == [], '\n'.join(watch.failures)

    after = flagship.nodes_output()
    addresses = {name: n['address'] for name, n in after.items()}
    for name, address in moved.items():
        assert addresses[name] == address
    control_planes = {name: a for name, a in addresses.items() if after[name]['role'] == 'controlplane'}

    # etcd, asked with etcdctl: exactly the control planes, each at its address; the moved one
    # kept its member ID (updated, not removed and added).
    for address in control_planes.values():
        members = flagship.etcd_member_list(address)
        assert {m['name']: m['peerURLs'] for m in members} == {
            name: ['https://%s:2380' % a] for name, a in control_planes.items()}
        assert not any(m.get('isLearner') for m in members)
    assert any(m['ID'] == member_id and m['name'] == moved_cp
               for m in flagship.etcd_member_list(control_planes[moved_cp]))

    # Kubernetes through the VIP: exactly the nodes, Ready, each at its address.
    nodes = flagship.kubectl_json('get', 'nodes')['items']
    seen = {}
    for node in nodes:
        ready = [c['status'] for c in node['status']['conditions'] if c['type'] == 'Ready']
        assert ready == ['True'], node['metadata']['name']
        seen[node['metadata']['name']] = [a['address'] for a in node['status']['addresses']
                                          if a['type'] == 'InternalIP']
    assert seen == {name: [a] for name, a in addresses.items()}

    # The `kubernetes` Endpoints and EndpointSlice: exactly the control planes' addresses.
    endpoints = flagship.kubectl_json('get', 'endpoints', 'kubernetes', '-n', 'default')
    listed = sorted(a['ip'] for s in endpoints.get('subsets', []) for a in s.get('addresses', []))
    assert listed == sorted(control_planes.values())
    slice_ = flagship.kubectl_json('get', 'endpointslice', 'kubernetes', '-n', 'default')
    assert sorted(a for e in slice_['endpoints'] for a in e['addresses']) == sorted(control_planes.values())

    # The kubeconfig stays on the VIP, and nothing is left to do.
    config = flagship.kubectl('config', 'view', '-o', 'jsonpath={.clusters[0].cluster.server}')
    assert config.strip() == 'https://127.0.0.210:6443'
    flagship.tf.assert_plan_empty()
