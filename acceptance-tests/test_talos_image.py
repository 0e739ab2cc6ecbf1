"""The Talos image story: nodes boot the template's disk image, which does not install the
config's installer (Talos runs `Install` only on a machine not installed yet), so castle brings
each node to `talos_version` and `extensions` with an upgrade after it joined, through the Image
Factory it uploaded the schematic to. A template of an older release line first gets the config
in that line's documents."""

import pytest

from harness.lab import LONGHORN, TalosLab
from test_talos_cluster import PREFIX, cluster_hcl

pytestmark = pytest.mark.acceptance

NODES = {'cp-1': 11, 'w-1': 21}
# One release line older than talos_version: the template's release refuses the v1.12 network
# documents, so castle gives it the v1.11 contract in maintenance mode, and its own config once
# upgraded.
TEMPLATE = 'v1.11.5'
TARGET = 'v1.12.0'
EXTENSIONS = ['siderolabs/qemu-guest-agent', 'siderolabs/iscsi-tools']


@pytest.fixture
def talos():
    # The template: an older release with no extension, as the plain nocloud image.
    lab = TalosLab([PREFIX + str(h) for h in NODES.values()], talos_version=TEMPLATE, template_extensions=())
    try:
        yield lab
    finally:
        lab.stop()


def test_nodes_booted_from_an_older_template_end_on_talos_version_with_their_extensions(tf, talos):
    t = tf()
    t.write(cluster_hcl(NODES)
            .replace('talos_version      = "v1.12.0"', 'talos_version      = "%s"' % TARGET)
            .replace('extensions         = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]',
                     'extensions         = ["%s"]' % '", "'.join(EXTENSIONS)))
    plan = t.plan()
    assert 'Nodes are brought to talos_version and extensions after they join' in plan, plan

    t.apply()

    # castle uploaded the schematic before any node pulled its installer.
    uploads = talos.schematics()
    assert [u['extensions'] for u in uploads] == [sorted(EXTENSIONS)], uploads
    schematic = uploads[0]['id']
    nodes = talos.nodes()
    for host in NODES.values():
        node = nodes[PREFIX + str(host)]
        assert node['talos_version'] == TARGET, node
        assert 'LinkConfig' in node['config_documents'], node
        assert node['schematic'] == schematic, node
        # Booted from the disk image, then exactly one upgrade: the factory's installer.
        assert node['installed_images'] == ['%s/installer/%s:%s' % (talos.factory_url[len('https://'):], schematic,
                                                                    TARGET)], node
    cluster = t.resources()['castle_talos_cluster.home']
    assert cluster['node_versions'] == {name: TARGET for name in NODES}
    assert cluster['node_extensions'] == {name: ['iscsi-tools', 'qemu-guest-agent'] for name in NODES}
    t.assert_plan_empty()


def test_a_kubernetes_version_the_older_template_cannot_run_is_refused_before_any_node_changes(tf, talos):
    # v1.11 runs Kubernetes 1.29 to 1.34: a v1.11 node given the v1.11 documents with a v1.35
    # kubelet would refuse them (Talos RuntimeValidate), and castle upgrades it only after it
    # joined. The plan cannot know the template; the apply refuses before anything is applied
    # (and before the schematic upload), naming the node and kubernetes_version.
    t = tf()
    t.write(cluster_hcl(NODES)
            .replace('talos_version      = "v1.12.0"', 'talos_version      = "%s"' % TARGET)
            .replace('kubernetes_version = "v1.33.2"', 'kubernetes_version = "v1.35.0"'))
    out = ' '.join(t.apply(expect_fail=True).split())
    assert 'reports Talos %s. Node' % TEMPLATE in out, out
    assert 'runs Talos v1.11 (its template), which supports Kubernetes 1.29 to 1.34' in out, out
    assert 'kubernetes_version is v1.35.0' in out and 'both run (1.30 to 1.34)' in out, out
    assert 'Node cp-1' in out or 'Node w-1' in out, out
    nodes = talos.nodes()
    for host in NODES.values():
        node = nodes[PREFIX + str(host)]
        assert node['state'] == 'maintenance' and node['config_documents'] == [], node
    assert talos.schematics() == []


def test_an_installer_whose_schematic_the_factory_never_saw_is_refused_by_the_node(tf, talos):
    # A pinned install_image of the lab's factory that nobody uploaded: the node's pull fails,
    # and castle says so in seconds, naming the image.
    unknown = '%s/installer/%s:%s' % (talos.factory_url[len('https://'):], 'ab' * 32, TARGET)
    t = tf()
    t.write(cluster_hcl({'cp-1': 11}, extra='install_image = "%s"' % unknown)
            .replace('talos_version      = "v1.12.0"', 'talos_version      = "%s"' % TARGET)
            .replace('extensions         = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]', ''))
    out = t.apply(expect_fail=True)
    assert 'error validating installer image' in out and 'not found' in out, out
    assert talos.nodes()[PREFIX + '11']['talos_version'] == TEMPLATE


def test_a_template_with_the_same_extensions_under_another_schematic_installs_castles_installer(tf):
    # The factory does not sort a schematic's list: a template built from [util-linux-tools,
    # iscsi-tools] runs the same extension names as castle's installer under another schematic
    # id. castle compares the schematic the node reports, so the node still gets castle's.
    lab = TalosLab([PREFIX + '11'], template_extensions=tuple(reversed(LONGHORN)))
    try:
        template = lab.nodes()[PREFIX + '11']['schematic']
        t = tf()
        t.write(cluster_hcl({'cp-1': 11}))
        t.apply()
        schematic = lab.schematics()[0]['id']
        assert schematic != template
        node = lab.nodes()[PREFIX + '11']
        assert node['schematic'] == schematic, node
        assert node['installed_images'] == ['%s/installer/%s:v1.12.0' % (lab.factory_url[len('https://'):],
                                                                          schematic)], node
        cluster = t.resources()['castle_talos_cluster.home']
        assert cluster['node_extensions'] == {'cp-1': ['iscsi-tools', 'util-linux-tools']}
        assert cluster['node_schematics'] == {'cp-1': schematic}
        t.assert_plan_empty()
    finally:
        lab.stop()
