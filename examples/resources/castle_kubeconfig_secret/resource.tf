# The cluster's credentials in Infisical, updated whenever castle renews them.
resource "castle_kubeconfig_secret" "home" {
  project_id  = var.infisical_project_id
  environment = "prod"
  path        = "/clusters/home"

  kubeconfig      = castle_talos_cluster.home.kubeconfig
  talosconfig_key = "TALOSCONFIG"
  talosconfig     = castle_talos_cluster.home.talosconfig

  comment = "Managed by Terraform"
}

variable "infisical_project_id" {
  description = "Infisical project (workspace) id."
  type        = string
}
