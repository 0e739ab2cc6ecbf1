"""castle_talos_cluster against the lab's Talos lifecycle: workers that get their certificate
only through the VIP, and reboots that come after the answer (drain first)."""

import threading
import time

import pytest

from harness.lab import TalosLab
from test_talos_cluster import PREFIX, cluster_hcl

pytestmark = pytest.mark.acceptance

NODES = {'cp-1': 11, 'cp-2': 12, 'cp-3': 13, 'w-1': 21}
CONTROL_PLANES = [PREFIX + str(h) for n, h in NODES.items() if n.startswith('cp')]
NO_EXTENSIONS = 'extensions         = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]'


@pytest.fixture
def talos():
    # A template without extensions: the cluster starts without them, then gets them.
    lab = TalosLab([PREFIX + str(h) for h in NODES.values()])
    try:
        yield lab
    finally:
        lab.stop()


class DownWatch:
    """Polls the lab while an apply runs: the most control planes seen down at once."""

    def __init__(self, lab):
        self.lab = lab
        self.most_down = 0
        self.seen_down = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            nodes = self.lab.nodes()
            down = {a for a in CONTROL_PLANES if nodes[a]['state'] != 'running'}
            self.seen_down |= down
            self.most_down = max(self.most_down, len(down))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def test_a_vip_cluster_with_workers_comes_up_and_reboots_one_control_plane_at_a_time(tf, talos):
    # The worker serves mutual TLS only once trustd answers behind the VIP, i.e. after the
    # bootstrap: castle must bootstrap before it waits for the worker.
    t = tf()
    t.write(cluster_hcl(NODES).replace(NO_EXTENSIONS, ''))
    t.apply()
    nodes = talos.nodes()
    assert {nodes[PREFIX + str(h)]['state'] for h in NODES.values()} == {'running'}

    # A reinstall (same release, new extensions): each node answers the Upgrade, drains, then
    # reboots; the next control plane waits until the first is back and the cluster healthy.
    t.write(cluster_hcl(NODES))
    assert 'will be reinstalled one by one' in t.plan()
    with DownWatch(talos) as watch:
        t.apply()
    assert watch.seen_down == set(CONTROL_PLANES), watch.seen_down
    assert watch.most_down == 1, watch.most_down
    for address, node in talos.nodes().items():
        # Booted from the disk image (nothing installed), then the reinstall.
        assert node['installed_images'][-1].endswith(':v1.12.0') and len(node['installed_images']) == 1, node

    # A patch outside what Talos changes in place (machine.env) makes AUTO reboot each node
    # after its answer: still one control plane at a time.
    t.write(cluster_hcl(NODES, extra='controlplane_patches = ["machine:\\n  env:\\n    LAB: \\"1\\"\\n"]'))
    with DownWatch(talos) as watch:
        t.apply()
    assert watch.seen_down == set(CONTROL_PLANES), watch.seen_down
    assert watch.most_down == 1, watch.most_down
    t.assert_plan_empty()


def test_a_cluster_destroyed_and_applied_again_on_the_same_lab_comes_up(tf, talos):
    # The destroyed cluster's API server leaves the VIP with its last control plane, and
    # castle waits until each reset node is back in maintenance before reusing it.
    small = {'cp-1': 11, 'w-1': 21}
    t = tf()
    t.write(cluster_hcl(small))
    t.apply()
    first = talos.nodes()[PREFIX + '11']['cluster_id']
    t.destroy()
    nodes = talos.nodes()
    assert {nodes[PREFIX + str(h)]['state'] for h in small.values()} == {'maintenance'}, nodes
    t.apply()
    nodes = talos.nodes()
    assert nodes[PREFIX + '11']['cluster_id'] not in (None, first), nodes
    assert {nodes[PREFIX + str(h)]['state'] for h in small.values()} == {'running'}, nodes
    t.assert_plan_empty()
