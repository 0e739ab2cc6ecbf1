# A highly available Talos cluster on Proxmox VE, its kubeconfig in Infisical, in one apply:
# 3 control planes and 2 workers cloned from a Talos nocloud template with static addresses,
# a VIP in front of the Kubernetes API, Longhorn-ready extensions, encrypted system disks.

terraform {
  required_providers {
    castle = {
      source = "castle-lab/castle"
    }
  }
}

provider "castle" {
  proxmox {
    endpoint    = var.proxmox_endpoint
    api_token   = var.proxmox_api_token
    username    = var.proxmox_username
    password    = var.proxmox_password
    ca_cert_pem = var.proxmox_ca_cert_file == null ? null : file(var.proxmox_ca_cert_file)
  }

  infisical {
    host          = var.infisical_host
    client_id     = var.infisical_client_id
    client_secret = var.infisical_client_secret
  }
}

# Addresses follow first_host in order; node_hosts moves single nodes elsewhere.
locals {
  prefix_length  = split("/", var.subnet)[1]
  control_planes = { for i in range(var.control_planes) : "cp-${i + 1}" => cidrhost(var.subnet, lookup(var.node_hosts, "cp-${i + 1}", var.first_host + i)) }
  first_worker   = coalesce(var.first_worker_host, var.first_host + var.control_planes)
  workers        = { for i in range(var.workers) : "w-${i + 1}" => cidrhost(var.subnet, lookup(var.node_hosts, "w-${i + 1}", local.first_worker + i)) }
  nodes          = merge(local.control_planes, local.workers)
}

resource "castle_proxmox_vm" "node" {
  for_each = local.nodes

  node = var.proxmox_node
  name = "${var.cluster_name}-${each.key}"

  clone {
    template_name = var.template_name
  }

  cores  = contains(keys(local.control_planes), each.key) ? var.control_plane_cores : var.worker_cores
  memory = contains(keys(local.control_planes), each.key) ? var.control_plane_memory : var.worker_memory

  disk {
    slot    = "scsi0"
    size_gb = var.disk_gb
  }

  network {
    bridge = var.bridge
    vlan   = var.vlan
  }

  ipv4 {
    address = "${each.value}/${local.prefix_length}"
    gateway = var.gateway
  }
  nameservers = var.nameservers

  tags = ["talos", var.cluster_name, contains(keys(local.control_planes), each.key) ? "controlplane" : "worker"]

  # Scale-in stays graceful: when a node leaves local.nodes, Terraform first updates
  # castle_talos_cluster (castle drains the node, takes a control plane out of etcd, resets the
  # machine and deletes its Kubernetes Node) and only then deletes the VM. Without this,
  # Terraform deletes the VM first and castle meets a machine that is already gone
  # (docs/adr/0012-day-2-order.md).
  # A replaced VM is created while the old one still holds its address: it waits, stopped,
  # until castle_talos_cluster hands the address over (docs/adr/0013-address-hand-over.md).
  lifecycle {
    create_before_destroy = true
  }
}

# The cluster's identity (CAs, keys, tokens), stored by Terraform before any node sees it: an
# apply killed halfway through the cluster's create is finished by the next one. To bring an
# existing cluster, set secrets_yaml = file("secrets.yaml") (talosctl gen secrets output).
resource "castle_talos_secrets" "this" {
  # A copy in Infisical, written before the create returns: if Terraform's state is lost (a
  # remote backend uploads at most every 20 s), the next apply takes the same secrets from
  # here instead of generating others that the nodes would refuse (docs/adr/0017-secrets-escrow.md).
  escrow {
    project_id  = var.infisical_project_id
    environment = var.infisical_environment
    path        = "/clusters/${var.cluster_name}"
    name        = var.cluster_name
  }
}

resource "castle_talos_cluster" "this" {
  name               = var.cluster_name
  secrets            = castle_talos_secrets.this.secrets
  vip                = var.vip
  talos_version      = var.talos_version
  kubernetes_version = var.kubernetes_version
  gateway            = var.gateway
  nameservers        = var.nameservers

  # Longhorn needs these on every node; castle turns them into an Image Factory installer.
  extensions      = ["siderolabs/iscsi-tools", "siderolabs/util-linux-tools"]
  disk_encryption = "nodeID"

  # castle keeps the admin kubeconfig here, mode 0600, and rewrites it when it is renewed.
  kubeconfig_file = abspath("${path.module}/kubeconfig")

  # One node block per VM; the addresses come from the VMs, so the cluster forms after them.
  dynamic "node" {
    for_each = local.nodes
    content {
      name        = node.key
      address     = castle_proxmox_vm.node[node.key].ipv4[0].address
      mac_address = castle_proxmox_vm.node[node.key].mac_address
      vm_id       = castle_proxmox_vm.node[node.key].id
      role        = contains(keys(local.control_planes), node.key) ? "controlplane" : "worker"
    }
  }
}

resource "castle_kubeconfig_secret" "this" {
  project_id  = var.infisical_project_id
  environment = var.infisical_environment
  path        = "/clusters/${var.cluster_name}"

  kubeconfig      = castle_talos_cluster.this.kubeconfig
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = castle_talos_cluster.this.talosconfig
  comment         = "Admin credentials of the ${var.cluster_name} Talos cluster, managed by Terraform (castle)"
}
