# A Talos cluster on machines that already exist: booted from the Talos ISO or nocloud image, in
# maintenance mode, at known static addresses. castle makes the PKI, applies each node's config,
# bootstraps etcd once and waits until the cluster is healthy.

terraform {
  required_providers {
    castle = {
      source = "castle-lab/castle"
    }
  }
}

# Nothing to configure: castle_talos_cluster talks to the nodes directly.
provider "castle" {}

# The nodes by name (hostname and Kubernetes node name) and role; their addresses come from
# var.addresses. Add or remove a line to add or remove a node.
locals {
  roles = var.roles
}

# The cluster's identity (CAs, keys, tokens), stored by Terraform before any node sees it: an
# apply killed halfway through the cluster's create is finished by the next one. To bring an
# existing cluster, set secrets_yaml = file("secrets.yaml") (talosctl gen secrets output).
resource "castle_talos_secrets" "this" {}

resource "castle_talos_cluster" "this" {
  name               = var.cluster_name
  secrets            = castle_talos_secrets.this.secrets
  vip                = var.vip
  talos_version      = var.talos_version
  kubernetes_version = var.kubernetes_version
  gateway            = var.gateway
  nameservers        = var.nameservers
  extensions         = var.extensions

  dynamic "node" {
    for_each = local.roles
    content {
      name         = node.key
      address      = var.addresses[node.key]
      role         = node.value
      install_disk = lookup(var.install_disks, node.key, "/dev/sda")
    }
  }

  timeouts {
    create = var.create_timeout
  }
}

output "endpoint" {
  description = "Kubernetes API URL."
  value       = castle_talos_cluster.this.endpoint
}

output "kubeconfig" {
  description = "Admin kubeconfig: terraform output -raw kubeconfig > kubeconfig && chmod 600 kubeconfig"
  value       = castle_talos_cluster.this.kubeconfig
  sensitive   = true
}

output "talosconfig" {
  description = "talosconfig for talosctl: terraform output -raw talosconfig > talosconfig && chmod 600 talosconfig"
  value       = castle_talos_cluster.this.talosconfig
  sensitive   = true
}

output "client_certificate_expires_at" {
  description = "When the kubeconfig and talosconfig certificates expire; castle renews them within 30 days of it."
  value       = castle_talos_cluster.this.client_certificate_expires_at
}
