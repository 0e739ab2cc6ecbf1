import {
  to = castle_kubeconfig_secret.home
  id = "3f2a1c9e-0000-4000-8000-000000000000:prod:/clusters/home:KUBECONFIG"
}
