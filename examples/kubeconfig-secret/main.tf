# Keeps a Talos cluster's kubeconfig and talosconfig in Infisical.
#
# Credentials come from INFISICAL_UNIVERSAL_AUTH_CLIENT_ID / _SECRET (and INFISICAL_HOST for a
# self-hosted server) unless set in the provider block.

terraform {
  required_providers {
    castle = {
      source = "castle/castle"
    }
  }
}

variable "infisical_project_id" {
  type        = string
  description = "Infisical project (workspace) id."
}

provider "castle" {
  infisical {}
}

# castle_talos_cluster.x is defined elsewhere in this configuration.
resource "castle_kubeconfig_secret" "home" {
  project_id  = var.infisical_project_id
  environment = "prod"
  path        = "/clusters/home"

  kubeconfig      = castle_talos_cluster.x.kubeconfig
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = castle_talos_cluster.x.talosconfig

  comment = "Managed by Terraform"
}

output "kubeconfig_secret_id" {
  value = castle_kubeconfig_secret.home.id
}
