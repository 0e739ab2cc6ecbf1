# Keeps a cluster's kubeconfig (and talosconfig) in Infisical. With castle_talos_cluster in the
# same configuration, pass castle_talos_cluster.x.kubeconfig instead of reading files.
#
# Credentials come from INFISICAL_UNIVERSAL_AUTH_CLIENT_ID / _SECRET (and INFISICAL_HOST for a
# self-hosted server) unless set in the provider block.

terraform {
  required_providers {
    castle = {
      source = "castle-lab/castle"
    }
  }
}

variable "infisical_project_id" {
  type        = string
  description = "Infisical project (workspace) id."
}

variable "kubeconfig_file" {
  type        = string
  description = "Path of the kubeconfig to keep in Infisical."
}

variable "talosconfig_file" {
  type        = string
  description = "Path of the talosconfig to keep beside it."
}

provider "castle" {
  infisical {}
}

resource "castle_kubeconfig_secret" "home" {
  project_id  = var.infisical_project_id
  environment = "prod"
  path        = "/clusters/home"

  kubeconfig      = file(var.kubeconfig_file)
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = file(var.talosconfig_file)

  comment = "Managed by Terraform"
}

output "kubeconfig_secret_id" {
  value = castle_kubeconfig_secret.home.id
}
