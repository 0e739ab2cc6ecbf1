# The VMs of the castle_proxmox_vm example become a cluster with three control planes behind a
# VIP, two workers and the system extensions Longhorn needs.
resource "castle_talos_cluster" "home" {
  name               = "home"
  secrets            = castle_talos_secrets.home.secrets
  vip                = "10.0.0.10"
  talos_version      = "v1.12.0"
  kubernetes_version = "v1.33.2"
  gateway            = "10.0.0.1"
  nameservers        = ["10.0.0.1"]
  extensions         = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]

  # One block per node: adding or removing a block changes that node only. Written out by hand:
  # node { name = "cp-1" address = "10.0.0.11/24" role = "controlplane" }
  dynamic "node" {
    for_each = castle_proxmox_vm.node
    content {
      name        = node.key
      address     = node.value.ipv4[0].address # the CIDR the VM boots with
      mac_address = node.value.mac_address
      role        = contains(keys(local.control_planes), node.key) ? "controlplane" : "worker"
    }
  }

  worker_patches = [yamlencode({
    machine = { kubelet = { extraMounts = [{
      destination = "/var/lib/longhorn", type = "bind", source = "/var/lib/longhorn",
      options     = ["bind", "rshared", "rw"]
    }] } }
  })]

  kubeconfig_file = "${path.root}/kubeconfig"

  timeouts {
    create = "30m"
  }
}

output "talosconfig" {
  value     = castle_talos_cluster.home.talosconfig
  sensitive = true
}
