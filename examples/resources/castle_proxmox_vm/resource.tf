locals {
  control_planes = { cp-1 = "10.0.0.11", cp-2 = "10.0.0.12", cp-3 = "10.0.0.13" }
  workers        = { w-1 = "10.0.0.21", w-2 = "10.0.0.22" }
}

# Five Talos-ready VMs cloned in parallel from a template made from the Talos nocloud image.
resource "castle_proxmox_vm" "node" {
  for_each = merge(local.control_planes, local.workers)

  node = "pve1"
  name = each.key

  clone {
    template_name = "talos-nocloud"
  }

  cores  = contains(keys(local.control_planes), each.key) ? 2 : 4
  memory = contains(keys(local.control_planes), each.key) ? 4096 : 8192

  disk {
    slot    = "scsi0"
    size_gb = 40
  }

  network {
    bridge = "vmbr0"
    vlan   = 20
  }

  ipv4 {
    address = "${each.value}/24"
    gateway = "10.0.0.1"
  }
  nameservers = ["10.0.0.1"]
  tags        = ["talos"]

  # For VMs that feed a castle_talos_cluster: a VM removed from the map is deleted only after
  # the cluster took its node out (drained, left etcd, reset), not before.
  lifecycle {
    create_before_destroy = true
  }
}
