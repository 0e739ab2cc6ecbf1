# By project_id:environment:path:kubeconfig_key (the path may contain "/").
terraform import castle_kubeconfig_secret.home '3f2a1c9e-0000-4000-8000-000000000000:prod:/clusters/home:KUBECONFIG'
